"""``GET /jobs`` at scale: every record once, the most recently written first, filtered, in pages with stable cursors.

The bucket keeps one message per job (history 1), its latest write, so its stream order is "most recently changed
last". The cursor of a page is the stream sequence of the last record it gave out: stable, and the next page
continues just below it. A job changed while a client pages moves above the cursor (it will be on a new first page,
not on the next one).

A page is answered from the listing index (``jobindex``: derived from the bucket by each replica, complete, so a
page is full whenever that many records match, however rare they are). Until the index has caught up with the
bucket (start-up, a NATS outage), a page scans the bucket's stream backwards instead, in windows that grow to
``MAX_WINDOW`` messages; that scan stops after ``SCAN_BUDGET`` records read, and may then answer a short page with
``next`` set.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass

from functions.logs import jobindex, recordstore
from functions.logs.jobindex import Filter, IndexedBucket
from functions.logs.records import JobRecord
from runtime import tenants
from runtime.messaging import Bucket, Messaging, StoredMessage

FIRST_WINDOW = 64
"""Stream sequences read by a page's first window; each further window is twice as large, up to ``MAX_WINDOW``."""
MAX_WINDOW = 4096
SCAN_BUDGET = 5_000
"""Records one page reads at most before it answers with what it has and a cursor to go on from."""
_KV_OPERATION = "KV-Operation"


@dataclass(frozen=True)
class Page:
    records: list[JobRecord]
    next: str | None


def encode_cursor(below_seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"below": below_seq}).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    """The stream sequence an opaque cursor continues below; ``ValueError`` if it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a cursor from this API") from exc
    below = value.get("below") if isinstance(value, dict) else None
    if not isinstance(below, int) or isinstance(below, bool) or below < 1:
        raise ValueError("not a cursor from this API")
    return below


async def _first(messages: AsyncGenerator[StoredMessage, None]) -> StoredMessage | None:
    async with contextlib.aclosing(messages):
        return await anext(messages, None)


async def _window(conn: Messaging, bucket: Bucket, *, low: int, high: int) -> list[StoredMessage]:
    """The bucket's messages with sequences from ``low`` to ``high``, in stream order."""
    found: list[StoredMessage] = []
    messages = conn.read(stream=bucket.stream, subject=bucket.subjects, start_seq=low, batch=high - low + 1)
    async with contextlib.aclosing(messages):
        async for message in messages:
            if message.seq > high:
                break
            found.append(message)
    return found


def _record(message: StoredMessage) -> JobRecord | None:
    if message.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
        return None
    return recordstore.decode(message.data)


async def newest_written(
    conn: Messaging, bucket: Bucket, *, below: int | None = None, may_match: Callable[[bytes], bool] | None = None
) -> AsyncGenerator[tuple[int, JobRecord | None], None]:
    """Every stored record (with its stream sequence) below ``below``, the most recently written first.

    A record whose stored bytes ``may_match`` turns down is not decoded: it comes as None, with its sequence.
    """
    first = await _first(conn.read(stream=bucket.stream, subject=bucket.subjects, batch=1))
    if first is None:
        return
    last = await conn.last_message(bucket.stream, bucket.subjects)
    if last is None:
        return
    # A cursor names a place it came from, never beyond the end: a forged one must not walk empty windows forever.
    high = last.seq if below is None else min(below - 1, last.seq)
    size = FIRST_WINDOW
    while high >= first.seq:
        low = max(first.seq, high - size + 1)
        for message in reversed(await _window(conn, bucket, low=low, high=high)):
            if may_match is not None and not may_match(message.data):
                yield message.seq, None
                continue
            record = _record(message)
            if record is not None:
                yield message.seq, record
        high = low - 1
        size = min(size * 2, MAX_WINDOW)


def prefilter(
    *, statuses: Collection[str] | None, name: str | None, tenant: str | None = None
) -> Callable[[bytes], bool] | None:
    """A cheap test of a record's stored JSON that never turns down a match (``matches`` decides after it).

    Records are stored compact (orjson), so a job in status ``s`` holds ``"status":"s"``; a plain ASCII name
    is in the stored bytes as it is (any case) unless they hold a non-ASCII character; a tenant other than
    ``default`` (which records stored before tenants lack) as ``"tenant":"t"``.
    """
    needles = [f'"status":"{status}"'.encode() for status in statuses] if statuses is not None else None
    owner = f'"tenant":"{tenant}"'.encode() if tenant is not None and tenant != tenants.DEFAULT else None
    plain = name if name and name.isascii() and name.isprintable() and not set(name) & {'"', "\\"} else None
    folded = plain.lower().encode() if plain else None
    if needles is None and folded is None and owner is None:
        return None

    def may_match(data: bytes) -> bool:
        if needles is not None and not any(needle in data for needle in needles):
            return False
        if owner is not None and owner not in data:
            return False
        # A non-ASCII character may case-fold into ASCII ("ß" into "ss"): such a record is left to ``matches``.
        return folded is None or folded in data.lower() or not data.isascii()

    return may_match


def matches(record: JobRecord, flt: Filter) -> bool:
    """Whether ``flt`` admits the record as it is stored now."""
    entry = jobindex.entry_from(0, record)
    return entry is not None and flt.admits(entry)


async def list_records(
    conn: Messaging,
    bucket: Bucket,
    *,
    flt: Filter,
    limit: int,
    cursor: str | None,
    index: IndexedBucket | None = None,
) -> Page:
    """The ``limit`` most recently written matching records below ``cursor``, and the cursor after them."""
    below = decode_cursor(cursor) if cursor else None
    current = await index.current() if index is not None else None
    if current is not None:
        return await _from_index(conn, bucket, current, flt=flt, limit=limit, below=below)
    return await _scanned(conn, bucket, flt=flt, limit=limit, below=below)


async def _from_index(
    conn: Messaging, bucket: Bucket, index: jobindex.JobIndex, *, flt: Filter, limit: int, below: int | None
) -> Page:
    """A full page from the index: its entries in order, their records read by key (one request per page).

    A record changed since the index listed it is shown as it is now if it still matches, and left out if not (the
    page then reads on, so it stays full).
    """
    found: list[JobRecord] = []
    entries = index.newest_first(flt, below=below)
    last_seq: int | None = None
    while len(found) < limit:
        wanted = [entry for _, entry in zip(range(limit - len(found)), entries, strict=False)]
        if not wanted:
            return Page(found, None)
        stored = await conn.last_of_each(bucket.stream, [bucket.key_subject(entry.job_id) for entry in wanted])
        for entry in wanted:
            last_seq = entry.seq
            item = stored.get(bucket.key_subject(entry.job_id))
            record = _record(item) if item is not None else None
            if record is not None and matches(record, flt):
                found.append(record)
    more = next(entries, None)  # one entry past the page says whether there is a next one
    if more is None or last_seq is None:
        return Page(found, None)
    return Page(found, encode_cursor(last_seq))


async def _scanned(conn: Messaging, bucket: Bucket, *, flt: Filter, limit: int, below: int | None) -> Page:
    """A page read from the bucket's stream backwards, at most ``SCAN_BUDGET`` records (while the index lags)."""
    found: list[JobRecord] = []
    read = 0
    last_seq: int | None = None
    statuses = sorted(flt.statuses) if flt.statuses is not None else None
    records = newest_written(
        conn, bucket, below=below, may_match=prefilter(statuses=statuses, name=flt.name, tenant=flt.tenant)
    )
    async with contextlib.aclosing(records):
        async for seq, record in records:
            read += 1
            last_seq = seq
            if record is not None and matches(record, flt):
                found.append(record)
                if len(found) == limit:
                    break
            if read >= SCAN_BUDGET:
                break
        else:
            return Page(found, None)  # the whole bucket below the cursor was read
        more = await anext(records, None)  # one record past the page says whether there is a next one
    if more is None or last_seq is None:
        return Page(found, None)
    return Page(found, encode_cursor(last_seq))
