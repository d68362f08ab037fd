"""Fair share inside a lane: whose job a free slot takes next, decided from the cluster's numbers (docs/tenants.md).

Each tenant of a lane has its own consumer on ``HADES_JOBS`` (``subjects.dispatch_consumer``), and what those hold
is the cluster's, the same for every dispatcher and kept across restarts: ``num_pending`` is the tenant's waiting
jobs, ``num_ack_pending`` its running ones (every dispatcher's deliveries not acked yet). Per free slot a dispatcher
reads them all (one ``CONSUMER.LIST``, reused for ``SNAPSHOT_TTL_S`` and counted on with its own takes meanwhile)
and ``runtime.fairshare.pick`` names the tenant with the fewest running jobs per unit of weight. A tenant's running
cap is its consumers' ``max_ack_pending``, so JetStream holds it for all dispatchers at once; the pick leaves a
tenant at its cap alone (its running jobs in every lane counted), so no slot waits on a consumer that cannot
deliver. A named tenant's consumer is made by the first dispatcher that sees its jobs on
``hades.jobs.<lane>.<tenant>`` (one ``STREAM.INFO`` per snapshot, and at once when a job is published).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from runtime import fairshare, subjects, tenants
from runtime.errors import Unavailable
from runtime.messaging import Delivery, Messaging, PullConsumer, topology
from runtime.settings import Settings
from runtime.subjects import Lane

log = logging.getLogger(__name__)

SNAPSHOT_TTL_S = 0.25
"""How long one reading of the consumers serves the picks (other dispatchers' takes show up after at most this)."""
_MIN_REREAD_S = 0.02
"""A published job asks for a fresh reading, but never more often than this (a burst of submits is one reading)."""

Scope = tuple[Lane, str]
"""A lane and a tenant: one dispatch consumer."""


@dataclass
class _Queue:
    """One tenant's jobs in one lane, as last read, with this dispatcher's own takes since counted in."""

    waiting: int
    running: int
    last_served: float


class Shares:
    """The dispatch consumers of every lane and tenant, bound on demand, and the choice between them."""

    def __init__(self, conn: Messaging, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.pulls: dict[Scope, PullConsumer] = {}
        self.queues: dict[Scope, _Queue] = {}
        self.read_at = float("-inf")
        self.stale = True

    async def start(self) -> None:
        """Bind each lane's default consumer first: an older Hades' consumer that also took every tenant's jobs is
        narrowed here, before any tenant's own consumer (filters of a work queue must not overlap)."""
        for lane in subjects.LANES:
            await self._bind((lane, tenants.DEFAULT))

    def job_published(self) -> None:
        self.stale = True

    async def refresh(self) -> None:
        """Read every consumer's numbers unless the last reading is recent; make the consumers of tenants whose jobs
        have none yet. ``Unavailable`` when NATS cannot answer."""
        age = time.monotonic() - self.read_at
        if age < SNAPSHOT_TTL_S and not self.stale:
            return
        if age < _MIN_REREAD_S:  # a burst of submits: one reading for all of them, a moment later
            await asyncio.sleep(_MIN_REREAD_S - age)
        self.stale = False
        queues: dict[Scope, _Queue] = {}
        for load in await self.conn.consumer_loads(subjects.JOBS_STREAM):
            scope = subjects.dispatch_scope(load.name)
            if scope is not None:
                queues[scope] = _Queue(waiting=load.pending, running=load.ack_pending, last_served=load.last_active)
        for scope in [scope for scope in self.pulls if scope not in queues and scope[1] != tenants.DEFAULT]:
            # Its consumer went away (inactivity, with its tenant's last job): a binding to it only fails to fetch,
            # so it goes before the tenant's next jobs have their consumer made again.
            await self.pulls.pop(scope).close()
        for subject, count in (await self.conn.subject_counts(subjects.JOBS_STREAM, _NAMED_TENANT_SUBJECTS)).items():
            scope = (subjects.lane_of(subject), subjects.tenant_of(subject))
            if count and scope not in queues and tenants.is_name(scope[1]):
                try:
                    await self._bind(scope)
                except Unavailable as exc:
                    log.warning("no consumer for tenant %s in the %s lane yet: %s", scope[1], scope[0], exc.detail)
                    continue
                queues[scope] = _Queue(waiting=count, running=0, last_served=0.0)
        self.queues = queues
        self.read_at = time.monotonic()

    def finished(self, job_subject: str) -> None:
        """One of this dispatcher's jobs ended (acked or handed back): one running job fewer for its tenant, and a
        fresh reading for the next pick (other dispatchers' jobs of a capped tenant may have ended too)."""
        self.stale = True
        queue = self.queues.get((subjects.lane_of(job_subject), subjects.tenant_of(job_subject)))
        if queue is not None:
            queue.running = max(0, queue.running - 1)

    def held_back(self) -> bool:
        """Whether jobs wait that no tenant may start only because of its running cap: they may start as soon as
        any dispatcher's job of that tenant ends, which only the next reading shows."""
        return any(queue.waiting for queue in self.queues.values())

    def ready_lanes(self) -> list[Lane]:
        """Lanes with a job some tenant may start now (waiting, and that tenant below its running cap)."""
        return [lane for lane in subjects.LANES if self.choose(lane) is not None]

    def choose(self, lane: Lane, passed: frozenset[str] = frozenset()) -> str | None:
        """The tenant of ``lane`` whose job starts next (``passed``: tenants just found empty), or None."""
        loads = {
            tenant: fairshare.Load(queue.waiting, queue.running, queue.last_served)
            for (each, tenant), queue in self.queues.items()
            if each == lane and tenant not in passed
        }
        return fairshare.pick(loads, weight=self.settings.tenants.weight, cap=lambda tenant: self._cap(lane, tenant))

    def _cap(self, lane: Lane, tenant: str) -> int | None:
        """The tenant's cap less its jobs running in the other lanes: the cap is the tenant's, across lanes."""
        limit = self.settings.tenants.running_limit(tenant)
        if limit is None:
            return None
        elsewhere = sum(queue.running for (each, who), queue in self.queues.items() if who == tenant and each != lane)
        return limit - elsewhere

    def held_only(self) -> list[Scope]:
        """Consumers holding deliveries that fair share takes nothing new from now (no job waits, or the tenant is at
        its running cap). A job handed back (a dispatcher stopped) or whose holder died comes back from them as a
        redelivery, which ``num_pending`` does not count: only a fetch from them finds it. Not a consumer a fetch
        could take a waiting job past the tenant's cap (at it across lanes, below it in this lane, where the server
        holds it: a fetch may deliver a waiting job instead); its redelivery comes with the tenant's next pick."""
        return sorted(
            scope for scope, queue in self.queues.items() if queue.running > 0 and self._only_redeliveries(scope, queue)
        )

    def _only_redeliveries(self, scope: Scope, queue: _Queue) -> bool:
        if not queue.waiting:
            return True
        cap = self._cap(*scope)
        if cap is None or queue.running < cap:
            return False  # fair share takes from it, redeliveries first
        limit = self.settings.tenants.running_limit(scope[1])
        return limit is not None and queue.running >= limit  # the server delivers nothing new from it

    async def take_redelivery(self, scope: Scope, *, timeout_s: float) -> Delivery | None:
        """A redelivery from a ``held_only`` consumer (already counted as running), or None; the counts stay. None
        without a fetch while a job was published since the reading: "no job waits there" may no longer be true,
        and a fetch could start it past its tenant's cap."""
        if self.stale:
            return None
        await self._bind(scope)
        return await self.pulls[scope].fetch_ready(timeout_s=timeout_s)

    async def take(self, scope: Scope, *, timeout_s: float) -> Delivery | None:
        """One job from the consumer of ``scope``, counted in at once (the next pick sees it before the next
        reading); None when none came (another dispatcher took the last): the tenant counts as empty until then."""
        await self._bind(scope)  # made by another dispatcher
        msg = await self.pulls[scope].fetch_ready(timeout_s=timeout_s)
        queue = self.queues.get(scope)
        if queue is None:
            return msg
        if msg is None:
            queue.waiting = 0
            return None
        queue.waiting = max(0, queue.waiting - 1)
        queue.running += 1
        queue.last_served = time.time()
        return msg

    async def close(self) -> None:
        for pull in self.pulls.values():
            await pull.close()
        self.pulls.clear()

    async def _bind(self, scope: Scope) -> None:
        if scope not in self.pulls:
            config = topology.dispatch_consumer_config(self.settings, *scope)
            self.pulls[scope] = await self.conn.pull_consumer(subjects.JOBS_STREAM, config)


_NAMED_TENANT_SUBJECTS = f"{subjects.JOBS_SUBJECT_PREFIX}.*.*"
"""``hades.jobs.<lane>.<tenant>`` of every lane: the named tenants with jobs stored."""
