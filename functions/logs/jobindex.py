"""The listing index: what ``GET /jobs`` filters on, per job, derived from the records bucket and kept current.

Never a second source of truth: each logs replica builds it at start-up by watching ``HADES_RECORDS`` (the last
write of every job, then each new write, in stream order) and holds only what a filter needs (status, the name
case-folded, the submission time, the tenant: ``default`` for records stored before tenants) under the stream
sequence of the job's latest write. A page walks that order from its cursor downwards (per status, a list of its
own) and tests every entry, so it is complete: a rare match is on the first page, however many records stand
before it. The page's records themselves are then read from the bucket by key.

Read-your-writes: before answering, a query asks the bucket's stream for its last sequence and waits (briefly)
until the index has applied it, so a replica never answers from a view older than the request.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from functions.logs import recordstore
from runtime import tasks, tenants
from runtime.errors import HadesError
from runtime.messaging import MESSAGING, Bucket, Messaging, Watch

log = logging.getLogger(__name__)

CATCH_UP_WAIT_S = 2.0
"""How long a query waits for the index to apply the bucket's latest write before the caller falls back to a scan."""
LAGGING_RETRY_S = 5.0
"""After the index failed to catch up in time, queries scan without waiting for it for this long (start-up with a
large bucket, a broken watch), unless it has caught up meanwhile."""
EXPIRY_CHECK_EVERY_S = 60.0
"""How often a query asks the bucket's first and last stored sequence: to forget the entries of records that expired
(the bucket's TTL removes them without a marker the watch would see), and to notice a bucket made again."""
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"


@dataclass(frozen=True, slots=True)
class Entry:
    """One job as the index knows it: the stream sequence of its latest write and what filters test."""

    seq: int
    job_id: str
    status: str
    name: str  # case-folded, "" when the job has none
    submitted_s: float | None  # Unix time
    tenant: str | None


@dataclass(frozen=True)
class Filter:
    """A listing's filters; None is "any"."""

    statuses: frozenset[str] | None = None
    name: str | None = None
    submitted_after_s: float | None = None
    submitted_before_s: float | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            object.__setattr__(self, "name", self.name.casefold())

    def admits(self, entry: Entry) -> bool:
        if self.statuses is not None and entry.status not in self.statuses:
            return False
        if self.name is not None and self.name not in entry.name:
            return False
        if self.submitted_after_s is not None or self.submitted_before_s is not None:
            if entry.submitted_s is None:
                return False
            if self.submitted_after_s is not None and entry.submitted_s < self.submitted_after_s:
                return False
            if self.submitted_before_s is not None and entry.submitted_s >= self.submitted_before_s:
                return False
        return self.tenant is None or entry.tenant == self.tenant


def parse_time(text: str) -> float | None:
    """An ISO 8601 time as a Unix time (a time without a zone is UTC); None when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def entry_of(seq: int, data: bytes) -> Entry | None:
    """The index entry of a stored record; None when the stored value is not a record."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return entry_from(seq, value) if isinstance(value, dict) else None


def entry_from(seq: int, value: Mapping[str, Any]) -> Entry | None:
    """The index entry of a record (as decoded); None when it has no id."""
    job_id, name, submitted, tenant = value.get("id"), value.get("name"), value.get("submitted_at"), value.get("tenant")
    if not isinstance(job_id, str):
        return None
    return Entry(
        seq=seq,
        job_id=job_id,
        status=str(value.get("status")),
        name=name.casefold() if isinstance(name, str) else "",
        submitted_s=parse_time(submitted) if isinstance(submitted, str) else None,
        tenant=tenant if isinstance(tenant, str) else tenants.DEFAULT,  # stored before tenants: default's
    )


class JobIndex:
    """Every job's latest write, in stream order overall and per status. Stale places are skipped and compacted."""

    def __init__(self) -> None:
        self.by_job: dict[str, Entry] = {}
        self.live: dict[int, Entry] = {}
        """The current entries by their sequence: a sequence not in here was overwritten or deleted."""
        self.order: list[int] = []
        self.by_status: dict[str, list[int]] = {}
        self.by_submitted: list[tuple[float, int]] = []
        """(submission time, sequence), sorted when ``_submitted_sorted``: a narrow time range is looked up."""
        self._submitted_sorted = True
        self.applied_seq = 0
        self._advanced = asyncio.Event()

    def __len__(self) -> int:
        return len(self.live)

    def apply(self, seq: int, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """One message of the bucket's stream: a write, a delete or a purge of a job's record."""
        if seq <= self.applied_seq:
            return  # a repeat (the watch restarted from an earlier place)
        self.applied_seq = seq
        self._advanced.set()
        job_id = subject.rpartition(".")[2]
        old = self.by_job.pop(job_id, None)
        if old is not None:
            del self.live[old.seq]
        if headers.get(_KV_OPERATION) in ("DEL", "PURGE") or headers.get(_MARKER_REASON):
            return
        entry = entry_of(seq, data)
        if entry is None or entry.job_id != job_id:
            return
        self.by_job[job_id] = entry
        self.live[seq] = entry
        self.order.append(seq)
        self.by_status.setdefault(entry.status, []).append(seq)
        if entry.submitted_s is not None:
            if self.by_submitted and self.by_submitted[-1][0] > entry.submitted_s:
                self._submitted_sorted = False  # sorted when a query needs it (timsort: nearly in order, cheap)
            self.by_submitted.append((entry.submitted_s, seq))
        if len(self.order) > 2 * len(self.live) + 4096:
            self._compact()

    def forget_below(self, first_seq: int) -> int:
        """Forget the entries written below ``first_seq`` (no longer stored: expired by the bucket's TTL, which
        leaves no marker); how many. Without this a long-running replica kept every job it ever saw."""
        gone = [seq for seq in self.order[: bisect.bisect_left(self.order, first_seq)] if seq in self.live]
        for seq in gone:
            entry = self.live.pop(seq)
            del self.by_job[entry.job_id]
        if gone:
            self._compact()
        return len(gone)

    def _compact(self) -> None:
        self.order = sorted(self.live)
        self.by_status = {}
        for seq in self.order:
            self.by_status.setdefault(self.live[seq].status, []).append(seq)
        self.by_submitted = sorted((e.submitted_s, e.seq) for e in self.live.values() if e.submitted_s is not None)
        self._submitted_sorted = True

    def newest_first(self, flt: Filter, *, below: int | None) -> Iterator[Entry]:
        """The current entries ``flt`` admits, below sequence ``below``, the most recently written first.

        A snapshot of the lists' lengths is taken first: writes applied while a caller awaits between items only
        add above it (their old places read as stale), so the walk never sees a job twice.
        """
        narrow = self._submitted_within(flt, below=below)
        if narrow is not None:
            for seq in narrow:
                entry = self.live.get(seq)
                if entry is not None and flt.admits(entry):
                    yield entry
            return
        if flt.statuses is None:
            sources = [self.order]
        else:
            sources = [self.by_status[s] for s in flt.statuses if s in self.by_status]
        walks = [_descending(source, below) for source in sources]
        seqs: Iterator[int] = walks[0] if len(walks) == 1 else heapq.merge(*walks, reverse=True)
        for seq in seqs:
            entry = self.live.get(seq)
            if entry is not None and flt.admits(entry):
                yield entry

    def _submitted_within(self, flt: Filter, *, below: int | None) -> list[int] | None:
        """The sequences of the jobs submitted within ``flt``'s time range, newest written first; None when there is
        no range, or it holds more than a quarter of the jobs (walking the write order is then as cheap)."""
        after, before = flt.submitted_after_s, flt.submitted_before_s
        if after is None and before is None:
            return None
        if not self._submitted_sorted:
            self.by_submitted.sort()
            self._submitted_sorted = True
        low = 0 if after is None else bisect.bisect_left(self.by_submitted, (after, -1))
        high = len(self.by_submitted) if before is None else bisect.bisect_left(self.by_submitted, (before, -1))
        if high - low > len(self.live) // 4:
            return None
        return sorted(
            (seq for _, seq in self.by_submitted[low:high] if below is None or seq < below),
            reverse=True,
        )

    async def caught_up(self, target_seq: int, *, within_s: float) -> bool:
        """Wait until the index has applied ``target_seq``; False when it has not within ``within_s``."""
        deadline = time.monotonic() + within_s
        while self.applied_seq < target_seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._advanced.clear()
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                return self.applied_seq >= target_seq
        return True


def _descending(seqs: list[int], below: int | None) -> Iterator[int]:
    end = len(seqs) if below is None else bisect.bisect_left(seqs, below)
    for i in range(end - 1, -1, -1):
        yield seqs[i]


class IndexedBucket:
    """A ``JobIndex`` kept current from a records bucket by one watch."""

    def __init__(self, conn: Messaging, bucket: Bucket) -> None:
        self.conn = conn
        self.bucket = bucket
        self.index = JobIndex()
        self._watch: Watch | None = None
        self._lagging_until = 0.0
        self._expiry_checked = 0.0
        self._rebuilding = asyncio.Lock()
        self._created: str | None = None
        """When the watched bucket's stream was created (noted at ``start``)."""

    async def start(self) -> None:
        with contextlib.suppress(HadesError):  # unknown: only a lower last sequence then tells it was made again
            self._created = (await self.conn.stream_bounds(self.bucket.stream))[2]
        self._watch = await self.conn.watch(self.bucket.stream, self.bucket.subjects, self.index.apply)

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.close()
            self._watch = None

    async def _rebuild(self, stale: JobIndex) -> None:
        """A new index from a new watch: the bucket was made again, and its sequences start over at 1 (the old
        index would take each new write for a repeat of one it had applied, and never list a new job)."""
        async with self._rebuilding:
            if self.index is not stale:
                return  # a query that saw the same thing rebuilt it meanwhile
            log.warning("listing index: the records bucket was made again; rebuilding the index")
            await self.close()
            self.index = JobIndex()
            try:
                await self.start()
            except HadesError as exc:
                log.warning("listing index not restarted (listings scan the bucket): %s", exc.detail)

    async def current(self, *, within_s: float = CATCH_UP_WAIT_S) -> JobIndex | None:
        """The index once it shows every write stored before this call; None if it lags (or NATS is away)."""
        if self._watch is None:
            return None
        try:
            last = await self.conn.last_message(self.bucket.stream, self.bucket.subjects)
        except HadesError as exc:
            log.warning("listing index: the bucket's end is unknown (%s)", exc.detail)
            return None
        if last is not None and last.seq < self.index.applied_seq:
            await self._rebuild(self.index)
            if self._watch is None:
                return None
        else:
            await self._check_bounds()
        if last is None or self.index.applied_seq >= last.seq:
            return self.index
        if time.monotonic() < self._lagging_until:
            return None  # it lagged a moment ago: scan at once rather than wait again
        if await self.index.caught_up(last.seq, within_s=within_s):
            return self.index
        self._lagging_until = time.monotonic() + LAGGING_RETRY_S
        log.warning("listing index: still behind the bucket (at %d of %d)", self.index.applied_seq, last.seq)
        return None

    async def keep_bounds(self) -> None:
        """Check the bounds now and then even when no listing asks (a replica nobody lists from grew too), and start
        the watch again when it is not running."""
        while True:
            await asyncio.sleep(max(EXPIRY_CHECK_EVERY_S, 1.0))
            if self._watch is None:  # not started (NATS away at start-up, a failed rebuild): try again
                async with self._rebuilding:
                    try:
                        await self.start()
                    except HadesError as exc:
                        log.debug("listing index still not started: %s", exc.detail)
                continue
            await self._check_bounds()

    async def _check_bounds(self) -> None:
        """Now and then: forget what expired, and rebuild when the bucket was made again (an empty one included)."""
        if time.monotonic() - self._expiry_checked < EXPIRY_CHECK_EVERY_S:
            return
        self._expiry_checked = time.monotonic()
        try:
            first, last, created = await self.conn.stream_bounds(self.bucket.stream)
        except HadesError as exc:
            log.warning("listing index: expired records not forgotten (%s)", exc.detail)
            return
        if last < self.index.applied_seq or (self._created is not None and created != self._created):
            await self._rebuild(self.index)
        elif forgotten := self.index.forget_below(first):
            log.info("listing index: forgot %d expired records", forgotten)


JOB_INDEX = web.AppKey("job_index", IndexedBucket)


async def job_index_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the records one: watch the bucket from the start for as long as the app runs.

    The app serves at once; until the index has caught up, listings wait for it (``current``) or scan the bucket.
    """
    indexed = IndexedBucket(app[MESSAGING], app[recordstore.RECORDS].bucket)
    app[JOB_INDEX] = indexed
    try:
        await indexed.start()
    except HadesError as exc:
        log.warning("listing index not started (listings scan the bucket): %s", exc.detail)
    keeping = asyncio.create_task(indexed.keep_bounds(), name="job-index-bounds")
    yield
    await tasks.cancel_and_wait(keeping)
    await indexed.close()
