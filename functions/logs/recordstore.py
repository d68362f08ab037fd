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

import nats.errors
import nats.js.errors
from aiohttp import web
from nats.js import api as js_api
from nats.js.kv import KeyValue

from runtime import events, logstore, messaging, records, topology
from runtime.errors import Unavailable
from runtime.jobs import utc_now
from runtime.messaging import MESSAGING
from runtime.records import Record
from runtime.settings import Settings
from runtime.web import SETTINGS

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 50
"""Compare-and-set retries of one update before it is given up as ``Unavailable`` (the event is redelivered)."""
KV_STREAM = f"KV_{topology.RECORDS_BUCKET}"
KV_SUBJECTS = f"$KV.{topology.RECORDS_BUCKET}.>"
_KV_OPERATION = "KV-Operation"

Change = Callable[[Record | None], Record | None]
"""Given the stored record (None if there is none), the new one, or None to leave it as it is."""

_NATS_ERRORS = (TimeoutError, nats.errors.Error)


class RecordStore:
    def __init__(self, conn: messaging.Messaging, kv: KeyValue) -> None:
        self.conn = conn
        self.kv = kv

    @classmethod
    async def open(cls, conn: messaging.Messaging, settings: Settings) -> RecordStore:
        """Create the bucket (or adopt it, bringing its TTL up to date); safe from many replicas at once."""
        config = js_api.KeyValueConfig(
            bucket=topology.RECORDS_BUCKET,
            description="Latest record per job, kept by the log collector",
            history=1,
            ttl=settings.nats.events_max_age_s,
            storage=js_api.StorageType.FILE,
            replicas=settings.nats.replicas,
            direct=True,
        )
        try:
            kv = await conn.js.create_key_value(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code != 10058:  # "stream name already in use with a different configuration"
                raise
            info = await conn.js.stream_info(KV_STREAM)
            info.config.max_age = settings.nats.events_max_age_s
            await conn.js.update_stream(info.config)
            kv = await conn.js.key_value(topology.RECORDS_BUCKET)
        return cls(conn, kv)

    async def _entry(self, job_id: str) -> tuple[Record, int] | None:
        try:
            entry = await self.kv.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise Unavailable(f"cannot read job records: {type(exc).__name__}") from exc
        try:
            return json.loads(entry.value or b""), entry.revision or 0
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
        messages = logstore.read_messages(
            self.conn.nc, stream=topology.EVENTS_STREAM, subject=topology.status_subject(job_id)
        )
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
            data = messaging.encode(new)
            try:
                if revision:
                    await self.kv.update(job_id, data, last=revision)
                else:
                    await self.kv.create(job_id, data)
                return new
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another replica wrote it first: read again and re-apply
            except _NATS_ERRORS as exc:
                raise Unavailable(f"cannot write job records: {type(exc).__name__}") from exc
        raise Unavailable(f"job {job_id}: record update kept conflicting after {MAX_CAS_ATTEMPTS} attempts")

    async def scan(self) -> AsyncGenerator[Record, None]:
        """Every stored record, in the order they were last written; one read batch in memory at a time."""
        messages = logstore.read_messages(self.conn.nc, stream=KV_STREAM, subject=KV_SUBJECTS)
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


async def queue_position(conn: messaging.Messaging, *, lane: str, stream_seq: int) -> int | None:
    """How many jobs are ahead of this one in its lane (0: next to run); None when it has left the queue."""
    subject = topology.jobs_subject(topology.Lane(lane))
    try:
        info = await conn.js.stream_info(topology.JOBS_STREAM, subjects_filter=subject)
        request = {"seq": stream_seq, "next_by_subj": subject, "batch": 1}
        reply = await conn.nc.request(
            f"$JS.API.DIRECT.GET.{topology.JOBS_STREAM}", json.dumps(request).encode(), timeout=conn.publish_timeout_s
        )
    except _NATS_ERRORS as exc:
        raise Unavailable(f"cannot read the queue: {type(exc).__name__}") from exc
    headers = reply.headers or {}
    if headers.get("Status") or headers.get("Nats-Sequence") != str(stream_seq):
        return None  # taken (the work queue removed it) or otherwise gone
    total = (info.state.subjects or {}).get(subject, 0)
    after = int(headers.get("Nats-Num-Pending", "0"))
    return max(0, total - 1 - after)


RECORDS = web.AppKey("records", RecordStore)


async def records_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the messaging one: the bucket exists before anything reads or writes it."""
    app[RECORDS] = await RecordStore.open(app[MESSAGING], app[SETTINGS])
    yield
