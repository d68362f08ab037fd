"""Job records in the KV bucket ``HADES_RECORDS``: created at start-up, read, and changed by compare-and-set.

Several collector replicas write the same records, so every write is an ``update`` against the revision it read
(``create`` for a new key): a replica that lost the race reads again and re-applies its change, and no update is
lost. Records expire with the events they were built from (TTL = ``HADES_EVENTS_MAX_AGE_SECONDS``). Until the
collector has written a job's record, ``load`` folds it from the job's status events, so a job is never "not
found" just after it was submitted. Also here: listing (newest first, by cursor) and a queued job's lane position.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import heapq
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from dataclasses import dataclass

from aiohttp import web

from functions.logs import records
from functions.logs.records import Record
from runtime import events, subjects
from runtime.app import SETTINGS
from runtime.errors import Unavailable
from runtime.jobs import utc_now
from runtime.messaging import MESSAGING, Bucket, Messaging, RevisionConflict, encode, topology
from runtime.settings import Settings

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 50
"""Compare-and-set retries of one update before it is given up as ``Unavailable`` (the event is redelivered)."""
_KV_OPERATION = "KV-Operation"

Change = Callable[[Record | None], Record | None]
"""Given the stored record (None if there is none), the new one, or None to leave it as it is."""


class RecordStore:
    def __init__(self, conn: Messaging, bucket: Bucket) -> None:
        self.conn = conn
        self.bucket = bucket

    @classmethod
    async def open(cls, conn: Messaging, settings: Settings) -> RecordStore:
        """Create the bucket (or adopt it, bringing its TTL up to date); safe from many replicas at once."""
        return cls(conn, await conn.bucket(topology.records_bucket_config(settings)))

    async def _entry(self, job_id: str) -> tuple[Record, int] | None:
        entry = await self.bucket.get(job_id)
        if entry is None:
            return None
        try:
            return json.loads(entry.value), entry.revision
        except ValueError:
            log.warning("job %s: stored record is not JSON; starting it afresh", job_id)
            return None

    async def get(self, job_id: str) -> Record | None:
        entry = await self._entry(job_id)
        return entry[0] if entry else None

    async def load(self, job_id: str) -> Record | None:
        """The stored record, or one folded from the job's status events while the collector catches up."""
        record = await self.get(job_id)
        if record is not None:
            return record
        now = utc_now()
        messages = self.conn.read(stream=subjects.EVENTS_STREAM, subject=subjects.status_subject(job_id))
        async with contextlib.aclosing(messages):
            async for message in messages:
                try:
                    event = events.decode_status(message.data)
                except (events.EventError, ValueError):
                    continue
                record = records.apply_status(record, event, now=now) or record
        return record

    async def update(self, job_id: str, change: Change) -> Record | None:
        """Apply ``change`` by compare-and-set; the written record, or None when ``change`` left it as it was."""
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._entry(job_id)
            current, revision = entry if entry else (None, 0)
            new = change(current)
            if new is None:
                return None
            try:
                await self.bucket.put(job_id, encode(new), revision=revision)
                return new
            except RevisionConflict:
                continue  # another replica wrote it first: read again and re-apply
        raise Unavailable(f"job {job_id}: record update kept conflicting after {MAX_CAS_ATTEMPTS} attempts")

    async def scan(self) -> AsyncGenerator[Record, None]:
        """Every stored record, in the order they were last written; one read batch in memory at a time."""
        messages = self.conn.read(stream=self.bucket.stream, subject=self.bucket.subjects)
        async with contextlib.aclosing(messages):
            async for message in messages:
                if message.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                    continue
                try:
                    record = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    yield record


@dataclass(frozen=True)
class Page:
    records: list[Record]
    next: str | None


SortKey = tuple[str, int, str]
"""Submission time, then the job message's place in HADES_JOBS (same-millisecond jobs), then the id."""


def _sort_key(record: Record) -> SortKey:
    stream_seq = record.get("_stream_seq")
    return (
        str(record.get("submitted_at") or ""),
        stream_seq if isinstance(stream_seq, int) else 0,
        str(record["id"]),
    )


def encode_cursor(key: SortKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> SortKey:
    """The position an opaque cursor stands for; ``ValueError`` if it is not one of ours."""
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a cursor from this API") from exc
    if not (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], str)
    ):
        raise ValueError("not a cursor from this API")
    return value[0], value[1], value[2]


async def list_records(
    found: AsyncIterator[Record], *, statuses: Collection[str] | None, limit: int, cursor: str | None
) -> Page:
    """Newest submitted first: the ``limit`` records after ``cursor``, keeping only ``limit + 1`` in memory."""
    below = decode_cursor(cursor) if cursor else None
    newest: list[tuple[SortKey, int, Record]] = []
    count = 0
    async for record in found:
        if statuses is not None and record.get("status") not in statuses:
            continue
        key = _sort_key(record)
        if below is not None and key >= below:
            continue
        count += 1
        item = (key, count, record)
        if len(newest) <= limit:
            heapq.heappush(newest, item)
        else:
            heapq.heappushpop(newest, item)
    ordered = [record for _, _, record in sorted(newest, key=lambda item: item[0], reverse=True)]
    if len(ordered) > limit:
        return Page(ordered[:limit], encode_cursor(_sort_key(ordered[limit - 1])))
    return Page(ordered, None)


async def queue_position(conn: Messaging, *, lane: str, stream_seq: int) -> int | None:
    """How many jobs are ahead of this one in its lane (0: next to run); None when it has left the queue."""
    subject = subjects.jobs_subject(subjects.Lane(lane))
    place = await conn.place(subjects.JOBS_STREAM, subject=subject, seq=stream_seq)
    if place is None:
        return None  # taken (the work queue removed it) or otherwise gone
    return max(0, place.total - 1 - place.after)


RECORDS = web.AppKey("records", RecordStore)


async def records_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the messaging one: the bucket exists before anything reads or writes it."""
    app[RECORDS] = await RecordStore.open(app[MESSAGING], app[SETTINGS])
    yield
