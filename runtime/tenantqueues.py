"""How many of a tenant's jobs wait and run in ``HADES_JOBS``, counted from JetStream (so every replica agrees).

A job of tenant ``t`` in lane ``l`` is stored on ``hades.jobs.<l>.<t>`` (the default tenant's on ``hades.jobs.<l>``,
with every job stored before tenants) until it ends, and dispatchers take it from that tenant's consumer of the
lane, ``dispatch-<l>--<t>`` (``dispatch-<l>`` for the default tenant; ``subjects.dispatch_consumer``). So the
consumer's numbers are the tenant's: ``num_pending`` its jobs waiting in the lane, ``num_ack_pending`` those a
dispatcher holds (running, or their holder died within AckWait). Until a dispatcher has made a tenant's consumer in
a lane, every job stored on its subject waits.

Everything is read with two requests, whatever the number of lanes and tenants: one ``CONSUMER.LIST``
(``Messaging.consumer_loads``) and one ``STREAM.INFO`` with the per-subject counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime import subjects
from runtime.errors import Unavailable
from runtime.messaging import ConsumerLoad, Messaging

Key = tuple[subjects.Lane, str]
"""A lane and a tenant."""


@dataclass(frozen=True)
class Counts:
    """One tenant's jobs in one lane."""

    stored: int
    """Every message on its subject: waiting, running, or handed back for redelivery."""
    waiting: int
    """Not taken by a dispatcher yet (its consumer's ``num_pending``; all stored ones while it has no consumer)."""
    running: int
    """Delivered and not acked yet (its consumer's ``num_ack_pending``): the cluster's running jobs of it."""
    last_served: float = 0.0
    """When its consumer last delivered a job (epoch seconds; 0: never, or no consumer yet)."""
    consumer: str | None = None
    """Its dispatch consumer's name, None while no dispatcher has made it."""


@dataclass(frozen=True)
class Queues:
    """Every (lane, tenant) with jobs stored or a dispatch consumer, from one snapshot."""

    by_key: dict[Key, Counts]

    def lane(self, lane: subjects.Lane) -> dict[str, Counts]:
        """The tenants of one lane."""
        return {tenant: counts for (each, tenant), counts in self.by_key.items() if each == lane}

    def waiting_in(self, lane: subjects.Lane) -> int:
        """Jobs of ``lane`` no dispatcher has taken yet, every tenant's."""
        return sum(counts.waiting for counts in self.lane(lane).values())

    def running(self) -> int:
        """Jobs dispatchers hold, in every lane."""
        return sum(counts.running for counts in self.by_key.values())


def _counts(stored: dict[str, int], loads: list[ConsumerLoad]) -> dict[Key, Counts]:
    found: dict[Key, Counts] = {}
    for load in loads:
        scope = subjects.dispatch_scope(load.name)
        if scope is None:
            continue  # not a dispatch consumer
        lane, tenant = scope
        found[scope] = Counts(
            stored=stored.get(subjects.jobs_subject(lane, tenant), 0),
            waiting=load.pending,
            running=load.ack_pending,
            last_served=load.last_active,
            consumer=load.name,
        )
    for subject, count in stored.items():
        try:
            key = (subjects.lane_of(subject), subjects.tenant_of(subject))
        except ValueError:
            continue  # not a lane subject (nothing else is stored there today)
        if key not in found:
            found[key] = Counts(stored=count, waiting=count, running=0)
    return found


async def snapshot(conn: Messaging, tenant: str | None = None) -> Queues:
    """Every lane's and tenant's counts (only ``tenant``'s when given): two requests."""
    stored_filter = f"{subjects.JOBS_SUBJECT_PREFIX}.>" if tenant is None else subjects.tenant_jobs_filter(tenant)
    stored = await conn.subject_counts(subjects.JOBS_STREAM, stored_filter)
    loads = await conn.consumer_loads(subjects.JOBS_STREAM)
    found = _counts(stored, loads)
    if tenant is not None:
        found = {key: counts for key, counts in found.items() if key[1] == tenant}
    return Queues(by_key=found)


async def stored(conn: Messaging, tenant: str) -> int:
    """The tenant's jobs stored in every lane, waiting or running (one request): never fewer than ``waiting``."""
    return sum((await conn.subject_counts(subjects.JOBS_STREAM, subjects.tenant_jobs_filter(tenant))).values())


async def waiting(conn: Messaging, tenant: str) -> int:
    """The tenant's jobs no dispatcher has taken yet, in every lane (two requests)."""
    return sum(counts.waiting for counts in (await snapshot(conn, tenant)).by_key.values())


async def by_tenant(conn: Messaging) -> dict[Key, Counts]:
    """Every (lane, tenant) with jobs stored or a dispatch consumer: waiting and running (two requests)."""
    return (await snapshot(conn)).by_key


async def oldest_waiting_age_s(conn: Messaging, queues: Queues, lane: subjects.Lane) -> float:
    """Seconds the oldest waiting job of ``lane`` (any tenant's) has waited; 0 when none waits. A request or two per
    tenant with waiting jobs: its consumer's first undelivered message, or (no consumer yet) its subject's first."""
    oldest = 0.0
    for tenant, counts in queues.lane(lane).items():
        if not counts.waiting:
            continue
        age_s: float | None = None
        if counts.consumer is not None:
            try:
                age_s = (await conn.backlog(subjects.JOBS_STREAM, counts.consumer)).oldest_age_s
            except Unavailable:
                if not conn.connected:
                    raise
                # gone since the snapshot (idle tenants' consumers expire): its subject's first message then
        if age_s is None:
            age_s = await conn.stored_age_s(subjects.JOBS_STREAM, subject=subjects.jobs_subject(lane, tenant))
        oldest = max(oldest, age_s)
    return oldest
