"""``GET /jobs`` at scale: the records bucket's stream read backwards in windows, newest written first.

The bucket keeps one message per job (history 1), its latest write, so the stream read from its end backwards
yields every record once, the most recently changed first. A page reads windows of the stream below the cursor
(each window is one batched direct get, read forwards and turned round) and stops as soon as it holds ``limit``
matches, so a page costs about ``limit`` records read, not the whole bucket. The cursor is the stream sequence
of the last record given out: stable, and the next page continues just below it. A job changed while a client
pages moves above the cursor (it will be on a new first page, not on the next one).

A page also stops after ``SCAN_BUDGET`` records read without filling up: it may then hold fewer than ``limit``
jobs (even none) while ``next`` is still set, so a rare filter over a large bucket answers in bounded time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass

from functions.logs import recordstore
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
    is in the stored bytes as it is (any case); a tenant other than ``default`` (which records stored before
    tenants lack) as ``"tenant":"t"``.
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
        return folded is None or folded in data.lower()

    return may_match


def matches(
    record: JobRecord, *, statuses: Collection[str] | None, name: str | None, tenant: str | None = None
) -> bool:
    """In one of ``statuses`` (any when None), ``name`` (case-insensitive) within the job's name, and of
    ``tenant`` (a record without one, stored before tenants, is ``default``'s)."""
    if statuses is not None and record.get("status") not in statuses:
        return False
    if tenant is not None and (record.get("tenant") or tenants.DEFAULT) != tenant:
        return False
    return name is None or name.casefold() in str(record.get("name") or "").casefold()


async def list_records(
    conn: Messaging,
    bucket: Bucket,
    *,
    statuses: Collection[str] | None,
    name: str | None = None,
    tenant: str | None = None,
    limit: int,
    cursor: str | None,
) -> Page:
    """The ``limit`` most recently written matching records below ``cursor``, and the cursor after them."""
    below = decode_cursor(cursor) if cursor else None
    found: list[JobRecord] = []
    read = 0
    last_seq: int | None = None
    may_match = prefilter(statuses=statuses, name=name, tenant=tenant)
    records = newest_written(conn, bucket, below=below, may_match=may_match)
    async with contextlib.aclosing(records):
        async for seq, record in records:
            read += 1
            last_seq = seq
            if record is not None and matches(record, statuses=statuses, name=name, tenant=tenant):
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
