"""Job records in the KV bucket ``HADES_RECORDS``: created at start-up, read, and changed by compare-and-set.

Several collector replicas write the same records, so every write is an ``update`` against the revision it read
(``create`` for a new key): a replica that lost the race reads again and re-applies its change, and no update is
lost. Records expire with the events they were built from (TTL = ``HADES_EVENTS_MAX_AGE_SECONDS``). Until the
collector has written a job's record, ``load`` folds it from the job's status events, so a job is never "not
found" just after it was submitted. Listing: ``functions.logs.listing``; queue places: ``functions.logs.positions``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import cast

import orjson
from aiohttp import web

from functions.logs import records
from functions.logs.records import JobRecord
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
QUEUED_EVENT_SETTLE_S = 0.5
"""How long ``load`` keeps asking for a job with no status event yet (its queued event may be on its way)."""

Change = Callable[[JobRecord | None], JobRecord | None]
"""Given the stored record (None if there is none), the new one, or None to leave it as it is."""


def decode(data: bytes) -> JobRecord | None:
    """A stored record, or None when the stored value is not JSON or not a JSON object with an ``id``.

    The one place where stored JSON becomes a ``JobRecord`` (``listing`` reads through it too). Only that much is
    checked; the rest is trusted, not validated: only the logs function writes this bucket, always a ``JobRecord``
    it built (``update``), and the keys a record written by an earlier version may lack are ``NotRequired`` there.
    """
    try:
        value = orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError is one
        return None
    return cast(JobRecord, value) if isinstance(value, dict) and "id" in value else None


WRITTEN_CACHE_RECORDS = 4096
"""Records this replica wrote last that ``update`` keeps with their revision, so the next change to a running job
skips reading it back (half the collector's requests). A stale one costs one conflict, then a read."""


class RecordStore:
    def __init__(self, conn: Messaging, bucket: Bucket) -> None:
        self.conn = conn
        self.bucket = bucket
        self._written: collections.OrderedDict[str, tuple[JobRecord, int]] = collections.OrderedDict()

    @classmethod
    async def open(cls, conn: Messaging, settings: Settings) -> RecordStore:
        """Create the bucket (or adopt it, bringing its TTL up to date); safe from many replicas at once."""
        return cls(conn, await conn.bucket(topology.records_bucket_config(settings)))

    async def _entry(self, job_id: str) -> tuple[JobRecord | None, int]:
        """The stored record and its revision; (None, 0) when there is none. An unreadable one is (None, its
        revision): the next update overwrites it instead of trying to create a key that exists."""
        entry = await self.bucket.get(job_id)
        if entry is None:
            return None, 0
        record = decode(entry.value)
        if record is None:
            log.warning("job %s: stored record is not a JSON record; starting it afresh", job_id)
        return record, entry.revision

    async def get(self, job_id: str) -> JobRecord | None:
        return (await self._entry(job_id))[0]

    async def load(self, job_id: str) -> JobRecord | None:
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
        if record is None:
            # Submit sends the queued event without waiting for its ack (one acknowledged publish per POST): a
            # GET sent right after the 202 may overtake it, so ask again briefly before calling the job unknown.
            last = await self.conn.settled_last_message(
                subjects.EVENTS_STREAM, subjects.status_subject(job_id), within_s=QUEUED_EVENT_SETTLE_S
            )
            with contextlib.suppress(events.EventError, ValueError):
                record = records.apply_status(None, events.decode_status(last.data), now=now) if last else None
        return record

    async def update(self, job_id: str, change: Change) -> JobRecord | None:
        """Apply ``change`` by compare-and-set; the written record, or None when ``change`` left it as it was.

        The first attempt starts from the record this replica last wrote, when it still has it: ``change`` must not
        keep or alter what it is given (the reducer copies it). Nothing to change there is checked on the stored
        record (a read: duplicates, and claims of callbacks not due)."""
        written = self._written.pop(job_id, None)
        for _ in range(MAX_CAS_ATTEMPTS):
            current, revision = written if written is not None else await self._entry(job_id)
            new = change(current)
            if new is None:
                if written is not None:
                    # Only the stored record can say there is nothing to do: another replica may have changed it
                    # since (a claim on the remembered running record of a job that ended there finds nothing due).
                    written = None
                    continue
                if current is not None:
                    self._remember(job_id, (current, revision))
                return None
            try:
                revision = await self.bucket.put(job_id, encode(new), revision=revision)
            except RevisionConflict:
                written = None  # another replica (or a callback) wrote it since: read again and re-apply
                continue
            self._remember(job_id, (new, revision))
            return new
        raise Unavailable(f"job {job_id}: record update kept conflicting after {MAX_CAS_ATTEMPTS} attempts")

    def _remember(self, job_id: str, entry: tuple[JobRecord, int]) -> None:
        self._written[job_id] = entry
        while len(self._written) > WRITTEN_CACHE_RECORDS:
            self._written.popitem(last=False)

    async def scan(self, *, may_match: Callable[[bytes], bool] | None = None) -> AsyncGenerator[JobRecord, None]:
        """Every stored record, in the order they were last written; one read batch in memory at a time.

        ``may_match``: a cheap test of the stored bytes; a record it turns down is not decoded and not given out."""
        messages = self.conn.read(stream=self.bucket.stream, subject=self.bucket.subjects)
        async with contextlib.aclosing(messages):
            async for message in messages:
                if message.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                    continue
                if may_match is not None and not may_match(message.data):
                    continue
                record = decode(message.data)
                if record is not None:
                    yield record


RECORDS = web.AppKey("records", RecordStore)


async def records_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the messaging one: the bucket exists before anything reads or writes it."""
    app[RECORDS] = await RecordStore.open(app[MESSAGING], app[SETTINGS])
    yield
