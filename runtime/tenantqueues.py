"""How many of a tenant's jobs wait in ``HADES_JOBS``, counted from JetStream (so every replica agrees).

A job of tenant ``t`` in lane ``l`` is stored on ``hades.jobs.<l>.<t>`` (the default tenant's on ``hades.jobs.<l>``,
with every job stored before tenants) until it ends. Waiting means not yet taken: the lane consumers deliver in
stream order, so a tenant's waiting jobs in a lane are its messages stored after the last one the lane's consumer
delivered (``dispatch-<l>``'s ``delivered.stream_seq``) — one direct get on the per-subject index each. A job handed
back for redelivery (its dispatcher died, a nak) is below that mark and counts as taken. Before any dispatcher made
a lane's consumer, every stored job of the lane waits.

Dispatch's fair share (docs/tenants.md, "Left to do") must keep this true: if it stops taking a lane's jobs in
stream order, the mark here must come from wherever it records what it took.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime import subjects
from runtime.errors import Unavailable
from runtime.messaging import Messaging


async def _delivered(conn: Messaging, lane: subjects.Lane) -> int:
    try:
        return await conn.delivered_seq(subjects.JOBS_STREAM, subjects.dispatch_consumer(lane))
    except Unavailable:
        if not conn.connected:
            raise
        return 0  # no dispatcher has made the lane's consumer yet: nothing was taken


async def stored(conn: Messaging, tenant: str) -> int:
    """The tenant's jobs stored in every lane, waiting or running (one request): never fewer than ``waiting``."""
    return sum((await conn.subject_counts(subjects.JOBS_STREAM, subjects.tenant_jobs_filter(tenant))).values())


async def waiting(conn: Messaging, tenant: str) -> int:
    """The tenant's jobs no dispatcher has taken yet, in every lane."""
    total = 0
    for lane in subjects.LANES:
        mark = await _delivered(conn, lane)
        total += await conn.count_from(subjects.JOBS_STREAM, subject=subjects.jobs_subject(lane, tenant), seq=mark + 1)
    return total


@dataclass(frozen=True)
class Counts:
    stored: int
    """Waiting or taken (running, or handed back for redelivery): every message on the subject."""
    waiting: int
    """Not taken yet."""

    @property
    def taken(self) -> int:
        return self.stored - self.waiting


async def by_tenant(conn: Messaging) -> dict[tuple[subjects.Lane, str], Counts]:
    """Every (lane, tenant) with jobs stored: how many, and how many of them wait (a request per pair, and four)."""
    counts = await conn.subject_counts(subjects.JOBS_STREAM, f"{subjects.JOBS_SUBJECT_PREFIX}.>")
    marks = {lane: await _delivered(conn, lane) for lane in subjects.LANES}
    found: dict[tuple[subjects.Lane, str], Counts] = {}
    for subject, count in sorted(counts.items()):
        try:
            lane = subjects.lane_of(subject)
        except ValueError:
            continue  # not a lane subject (nothing else is stored there today)
        waiting_here = await conn.count_from(subjects.JOBS_STREAM, subject=subject, seq=marks[lane] + 1)
        found[lane, subjects.tenant_of(subject)] = Counts(stored=count, waiting=min(count, waiting_here))
    return found
