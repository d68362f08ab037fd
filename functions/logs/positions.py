"""A queued job's place: its lane, the jobs ahead in the lane (fair share between its tenants), those ahead overall
(lane weights), and an ETA.

Everything comes from JetStream, not from a dispatcher, so it is right with any number of dispatch replicas. Each
lane has a dispatch consumer per tenant (``runtime.tenantqueues``: its ``num_pending`` are the tenant's waiting jobs
in the lane, its ``num_ack_pending`` those dispatchers hold; before a dispatcher made it, every message on the
tenant's subject waits), and dispatch picks per free slot the tenant with the fewest running jobs per weight
(``runtime.fairshare``). So:

- ahead of its own tenant (``tenant_position``, k) = the tenant's waiting jobs in the lane minus the job itself
  and the tenant's messages stored after it (a consumer delivers its own subject in stream order);
- ahead in the lane: every other tenant ``U`` of the lane starts about ``w_U / w_T`` jobs per job of the job's
  tenant ``T`` (``HADES_TENANT_WEIGHTS``), never more than it has waiting (``fairshare.ahead``, ``ahead_tenants``);
  ``lane_position`` = k + the others ahead;
- queued in a lane = every tenant's waiting jobs there;
- ahead overall: dispatchers serve the lanes that have work by smooth weighted round-robin
  (``HADES_LANE_WEIGHTS``), so while both have work, another lane ``L`` is served ``w_L / w_own`` times for each
  job of the own lane. The ``j + 1``-th job of a lane is placed at the middle of its turn, ``(j + ½) / w_lane``
  (the round-robin's phase is unknown: half a turn on average), and the jobs of all lanes are ordered by that
  place, a tie going to the lane of higher priority: one strict order, so no two queued jobs share a position
  (issue 20, finding 7). Never more of ``L`` than it holds. The tenants' placement inside a lane is the same rule;
- ETA: jobs ahead overall + 1, over the jobs started per second in the last ``THROUGHPUT_WINDOW_S``, as this
  logs replica sees the ``running`` events go by (a plain subscription: every replica sees every event); for a
  tenant with a running cap (``HADES_TENANT_MAX_RUNNING``) at least ``(k + 1) · d̄ / cap``, ``d̄`` the mean time
  from ``running`` to the end of the jobs that ended in the window (the cap starts at most ``cap`` jobs per
  ``d̄``). Only while some dispatcher holds a job (a dispatch consumer has unacked deliveries): with none,
  nothing is moving the queue (no dispatcher runs, or all died), and an ETA from the past starts would promise
  what will not happen.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypedDict

import orjson
from aiohttp import web

from runtime import fairshare, jobs, subjects, tenantqueues, tenants
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
    tenant_position: int
    position: int
    ahead: dict[str, int]
    ahead_tenants: dict[str, int]
    eta_seconds: float | None


@dataclasses.dataclass(frozen=True)
class QueuePlace:
    lane: str
    lane_position: int
    """Jobs ahead of it in its own lane, every tenant's (0: next there)."""
    position: int
    """Jobs expected to start before it, all lanes and their weights considered."""
    ahead: dict[str, int]
    """Of ``position``, how many in each lane."""
    eta_s: float | None
    """Seconds until it is expected to start, from the recent start rate; None before any start was seen, and
    while no dispatcher holds a job."""
    tenant_position: int = 0
    """Jobs of its own tenant ahead of it in its lane."""
    ahead_tenants: dict[str, int] = dataclasses.field(default_factory=dict)
    """Of ``lane_position``, how many of each tenant with jobs waiting in the lane (its own included)."""

    def public(self) -> QueueBody:
        return {
            "lane": self.lane,
            "lane_position": self.lane_position,
            "tenant_position": self.tenant_position,
            "position": self.position,
            "ahead": self.ahead,
            "ahead_tenants": self.ahead_tenants,
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
    """Job starts and run times seen lately: the rate behind the ETA, and the mean duration behind a capped
    tenant's."""

    def __init__(self, *, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self.window_s = window_s
        self.since = time.monotonic()
        self.starts: collections.deque[float] = collections.deque(maxlen=_MAX_STARTS)
        self.running: collections.OrderedDict[str, float] = collections.OrderedDict()
        """When each job seen starting started (the latest attempt), until its end is seen; the oldest go first."""
        self.durations: collections.deque[tuple[float, float]] = collections.deque(maxlen=_MAX_STARTS)
        """(when it ended, seconds from ``running`` to the end) of the jobs seen ending."""

    def started(self, at: float | None = None, *, job_id: str | None = None) -> None:
        at = time.monotonic() if at is None else at
        self.starts.append(at)
        if job_id is not None:
            self.running.pop(job_id, None)
            self.running[job_id] = at
            while len(self.running) > _MAX_STARTS:
                self.running.popitem(last=False)

    def ended(self, job_id: str, at: float | None = None) -> None:
        """A job seen starting reached its end: its run time counts toward ``mean_duration_s``."""
        began = self.running.pop(job_id, None)
        if began is not None:
            at = time.monotonic() if at is None else at
            self.durations.append((at, max(0.0, at - began)))

    def rate(self, *, now: float | None = None) -> float | None:
        """Jobs started per second over the window (or since this replica started, when that is shorter)."""
        now = time.monotonic() if now is None else now
        while self.starts and self.starts[0] < now - self.window_s:
            self.starts.popleft()
        if not self.starts:
            return None
        span = min(self.window_s, now - self.since)
        return len(self.starts) / max(span, 1.0)

    def mean_duration_s(self, *, now: float | None = None) -> float | None:
        """Mean seconds from ``running`` to the end of the jobs that ended within the window; None without one."""
        now = time.monotonic() if now is None else now
        while self.durations and self.durations[0][0] < now - self.window_s:
            self.durations.popleft()
        if not self.durations:
            return None
        return sum(seconds for _, seconds in self.durations) / len(self.durations)

    def eta_s(
        self, position: int, *, now: float | None = None, tenant_position: int = 0, cap: int | None = None
    ) -> float | None:
        """``position + 1`` over the start rate; for a tenant with a running cap, at least ``(tenant_position + 1)``
        mean durations over the cap (it starts at most ``cap`` jobs per mean duration)."""
        rate = self.rate(now=now)
        if rate is None:
            return None
        eta = (position + 1) / rate
        if cap:
            duration = self.mean_duration_s(now=now)
            if duration is not None:
                eta = max(eta, (tenant_position + 1) * duration / cap)
        return eta

    async def on_status(self, subject: str, data: bytes) -> None:
        if b'"job"' not in data:  # cheap first: most status events are a step's, not a job's
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("kind") != "job":
            return
        status = event.get("status")
        if status == "running":
            self.started(job_id=subjects.job_id_of(subject))
        elif status in _TERMINAL:
            self.ended(subjects.job_id_of(subject))


_TERMINAL = frozenset(str(status) for status in jobs.JobStatus if status.terminal)


def _equal(_tenant: str) -> int:
    return 1


def _uncapped(_tenant: str) -> int | None:
    return None


async def queue_place(
    conn: Messaging,
    *,
    lane: str,
    stream_seq: int,
    weights: Mapping[str, int],
    throughput: Throughput | None,
    tenant: str = tenants.DEFAULT,
    tenant_weight: Callable[[str], int] = _equal,
    running_cap: Callable[[str], int | None] = _uncapped,
) -> QueuePlace | None:
    """Where a queued job stands; None when it has left the queue (see the module doc). Three requests: the job's
    place on its tenant's subject, and ``tenantqueues.snapshot``."""
    own = await conn.place(
        subjects.JOBS_STREAM, subject=subjects.jobs_subject(subjects.Lane(lane), tenant), seq=stream_seq
    )
    if own is None:
        return None  # taken and finished (the work queue removed it) or otherwise gone
    queues = await tenantqueues.snapshot(conn)
    place = placed(lane=lane, tenant=tenant, own=own, queues=queues, weights=weights, tenant_weight=tenant_weight)
    if place is None or throughput is None or not queues.running():
        return place  # no ETA while no dispatcher holds a job: nothing moves the queue
    eta = throughput.eta_s(place.position, tenant_position=place.tenant_position, cap=running_cap(tenant))
    return dataclasses.replace(place, eta_s=eta)


def placed(
    *,
    lane: str,
    tenant: str,
    own: Place,
    queues: tenantqueues.Queues,
    weights: Mapping[str, int],
    tenant_weight: Callable[[str], int] = _equal,
) -> QueuePlace | None:
    """The place (no ETA) of a job of ``tenant`` in ``lane`` that stands at ``own`` on its tenant's subject, from
    every tenant's counts; None when its tenant's consumer has delivered it (taken, no longer queued)."""
    own_lane = subjects.Lane(lane)
    counts = queues.by_key.get((own_lane, tenant))
    own_waiting = own.total if counts is None else counts.waiting  # None: stored after the snapshot's count
    if own_waiting <= own.after:
        return None  # its message is still stored, but a dispatcher has taken it
    tenant_position = own_waiting - 1 - own.after
    waiting = {each: found.waiting for each, found in queues.lane(own_lane).items() if found.waiting > 0}
    waiting[tenant] = max(waiting.get(tenant, 0), tenant_position + 1)
    ahead_tenants = fairshare.ahead(tenant, tenant_position, waiting, weight=tenant_weight)
    lane_position = sum(ahead_tenants.values())
    queued = {str(each): queues.waiting_in(each) for each in subjects.LANES}
    ahead = ahead_overall(lane, lane_position, queued, weights)
    return QueuePlace(
        lane=lane,
        lane_position=lane_position,
        position=sum(ahead.values()),
        ahead=ahead,
        eta_s=None,
        tenant_position=tenant_position,
        ahead_tenants=dict(sorted(ahead_tenants.items())),
    )


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
