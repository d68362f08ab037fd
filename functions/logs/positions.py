"""A queued job's place: its lane, the jobs ahead in the lane, those ahead overall (lane weights), and an ETA.

Everything comes from JetStream, not from a dispatcher, so it is right with any number of dispatch replicas:

- queued in a lane = the lane consumer's undelivered messages (``dispatch-<lane>``'s ``num_pending``: jobs a
  dispatcher has taken stay in the work queue until they end, but are no longer pending); before any dispatcher
  created the consumer, every message on the lane's subject;
- ahead in the lane = queued in the lane minus the job itself and the messages stored after it;
- ahead overall: dispatchers serve the lanes that have work by smooth weighted round-robin
  (``HADES_LANE_WEIGHTS``), so while both have work, another lane ``L`` is served ``w_L / w_own`` times for each
  job of the own lane. The ``j + 1``-th job of a lane is placed at the middle of its turn, ``(j + ½) / w_lane``
  (the round-robin's phase is unknown: half a turn on average), and the jobs of all lanes are ordered by that
  place, a tie going to the lane of higher priority: one strict order, so no two queued jobs share a position
  (issue 20, finding 7). Never more of ``L`` than it holds;
- ETA: jobs ahead overall + 1, over the jobs started per second in the last ``THROUGHPUT_WINDOW_S``, as this
  logs replica sees the ``running`` events go by (a plain subscription: every replica sees every event); and only
  while some dispatcher holds a job (a lane consumer has unacked deliveries). With none, nothing is moving the
  queue (no dispatcher runs, or all died), and an ETA from the past starts would promise what will not happen.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TypedDict

import orjson
from aiohttp import web

from runtime import subjects, tenants
from runtime.errors import HadesError
from runtime.messaging import MESSAGING, Messaging, Place, Subscription

log = logging.getLogger(__name__)

THROUGHPUT_WINDOW_S = 300.0
"""Job starts counted for the throughput behind the ETA: those of the last five minutes."""
_MAX_STARTS = 100_000
"""Start times kept at most (beyond ~330 starts a second the window is shorter than five minutes)."""


class QueueBody(TypedDict):
    """``queue`` in a served record (``QueuePlace.public``)."""

    lane: str
    lane_position: int
    position: int
    ahead: dict[str, int]
    eta_seconds: float | None


@dataclass(frozen=True)
class QueuePlace:
    lane: str
    lane_position: int
    """Jobs ahead of it in its own lane (0: next there)."""
    position: int
    """Jobs expected to start before it, all lanes and their weights considered."""
    ahead: dict[str, int]
    """Of ``position``, how many in each lane."""
    eta_s: float | None
    """Seconds until it is expected to start, from the recent start rate; None before any start was seen, and
    while no dispatcher holds a job."""

    def public(self) -> QueueBody:
        return {
            "lane": self.lane,
            "lane_position": self.lane_position,
            "position": self.position,
            "ahead": self.ahead,
            "eta_seconds": None if self.eta_s is None else round(self.eta_s, 1),
        }


def ahead_overall(
    lane: str, lane_position: int, queued: Mapping[str, int], weights: Mapping[str, int]
) -> dict[str, int]:
    """Jobs of each lane expected to start before the ``lane_position + 1``-th job of ``lane`` (see module doc).

    Job ``j`` of lane ``L`` is ahead when ``(2j + 1) · w_own`` is below ``(2k + 1) · w_L`` (integers: no rounding
    decides a tie), or equal to it and ``L`` has the higher priority.
    """
    own = weights[lane]
    rank = {str(each): index for index, each in enumerate(subjects.LANES)}
    ahead = {lane: lane_position}
    for other, count in queued.items():
        if other == lane:
            continue
        bound = (2 * lane_position + 1) * weights[other]
        largest = bound // own if rank[other] < rank[lane] else (bound - 1) // own  # the largest odd 2j+1 may be
        ahead[other] = max(0, min(count, (largest + 1) // 2))
    return ahead


class Throughput:
    """Job starts seen lately: the rate behind the ETA."""

    def __init__(self, *, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self.window_s = window_s
        self.since = time.monotonic()
        self.starts: collections.deque[float] = collections.deque(maxlen=_MAX_STARTS)

    def started(self, at: float | None = None) -> None:
        self.starts.append(time.monotonic() if at is None else at)

    def rate(self, *, now: float | None = None) -> float | None:
        """Jobs started per second over the window (or since this replica started, when that is shorter)."""
        now = time.monotonic() if now is None else now
        while self.starts and self.starts[0] < now - self.window_s:
            self.starts.popleft()
        if not self.starts:
            return None
        span = min(self.window_s, now - self.since)
        return len(self.starts) / max(span, 1.0)

    def eta_s(self, position: int, *, now: float | None = None) -> float | None:
        rate = self.rate(now=now)
        return None if rate is None else (position + 1) / rate

    async def on_status(self, subject: str, data: bytes) -> None:
        if b'"running"' not in data:  # cheap first: most status events are not a job starting
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict) and event.get("kind") == "job" and event.get("status") == "running":
            self.started()


async def _stored(conn: Messaging, subject: str) -> int:
    """Messages of a lane (taken ones included), every tenant's: the count when its consumer does not exist yet."""
    total = 0
    for each in subjects.lane_subjects(subjects.lane_of(subject)):
        total += await conn.count_from(subjects.JOBS_STREAM, subject=each, seq=1)
    return total


async def _lane_place(conn: Messaging, *, lane: subjects.Lane, tenant: str, seq: int) -> Place | None:
    """Where message ``seq`` of ``tenant`` stands in its lane: ``after`` counts every tenant's jobs stored after it
    (dispatch takes a lane's jobs in stream order, whoever's they are)."""
    own = await conn.place(subjects.JOBS_STREAM, subject=subjects.jobs_subject(lane, tenant), seq=seq)
    if own is None:
        return None
    after = [
        await conn.count_from(subjects.JOBS_STREAM, subject=each, seq=seq + 1) for each in subjects.lane_subjects(lane)
    ]
    return Place(total=own.total, after=sum(after))


async def queued_in(conn: Messaging, lane: subjects.Lane) -> tuple[int, int]:
    """Jobs of ``lane`` no dispatcher has taken yet, and jobs of it dispatchers hold."""
    try:
        backlog = await conn.backlog(subjects.JOBS_STREAM, subjects.dispatch_consumer(lane))
    except HadesError:
        return await _stored(conn, subjects.jobs_subject(lane)), 0  # no dispatcher has made the consumer yet
    return backlog.pending, backlog.in_flight


async def queue_place(
    conn: Messaging,
    *,
    lane: str,
    stream_seq: int,
    weights: Mapping[str, int],
    throughput: Throughput | None,
    tenant: str = tenants.DEFAULT,
) -> QueuePlace | None:
    """Where a queued job stands; None when it has left the queue."""
    own = subjects.Lane(lane)
    place = await _lane_place(conn, lane=own, tenant=tenant, seq=stream_seq)
    if place is None:
        return None  # taken and finished (the work queue removed it) or otherwise gone
    counts = {str(each): await queued_in(conn, each) for each in subjects.LANES}
    queued = {each: waiting for each, (waiting, _) in counts.items()}
    held = sum(taken for _, taken in counts.values())
    if queued[lane] <= place.after:
        return None  # its message is still stored, but a dispatcher has taken it
    lane_position = queued[lane] - 1 - place.after
    ahead = ahead_overall(lane, lane_position, queued, weights)
    position = sum(ahead.values())
    eta = throughput.eta_s(position) if throughput is not None and held else None
    return QueuePlace(lane=lane, lane_position=lane_position, position=position, ahead=ahead, eta_s=eta)


def lane_weights(weights: tuple[int, int, int]) -> dict[str, int]:
    return {str(lane): weight for lane, weight in zip(subjects.LANES, weights, strict=True)}


THROUGHPUT = web.AppKey("throughput", Throughput)


async def throughput_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the messaging one: watch job starts go by for the ETA."""
    throughput = Throughput()
    app[THROUGHPUT] = throughput
    subscription: Subscription | None = None
    try:
        subscription = await app[MESSAGING].subscribe(f"{subjects.STATUS_SUBJECT_PREFIX}.*", throughput.on_status)
    except HadesError as exc:
        log.warning("job starts are not watched (queue ETAs stay unknown): %s", exc.detail)
    yield
    if subscription is not None:
        with contextlib.suppress(HadesError):
            await subscription.close()
