"""Fair share between the tenants of one lane: whose job starts next, and how many start before a queued one.

Pure, no I/O. The numbers it takes are the cluster's, read from JetStream (each tenant's waiting and running jobs in
the lane), so every dispatcher that computes from the same numbers chooses alike and a restart changes nothing.
Dispatch (``pick``, for each free slot) and the logs function (``ahead``, for a queued job's place) share the rule,
so the place shown is the place the job gets. How dispatch reads the numbers: ``functions/dispatch/shares.py``.

The rule is fair share of running slots, as Kueue's fair sharing for one resource: the next job comes from the
tenant, among those with waiting jobs and below their running cap, with the fewest running jobs per unit of weight
(ties: the one served longest ago, then by name). With equal weights and jobs of equal length this alternates the
tenants' starts; a tenant whose jobs run longer gets as many slots and fewer starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Load:
    """One tenant's jobs in a lane, as the cluster has them."""

    waiting: int
    running: int
    last_served: float = 0.0
    """When a job of the tenant was last taken in this lane (any clock, the same for all; lower: longer ago)."""


def pick(loads: Mapping[str, Load], *, weight: Callable[[str], int], cap: Callable[[str], int | None]) -> str | None:
    """The tenant whose job starts next, or None when no tenant may start one (none waits, or all are capped)."""
    eligible = [
        tenant
        for tenant, load in loads.items()
        if load.waiting > 0 and ((limit := cap(tenant)) is None or load.running < limit)
    ]
    if not eligible:
        return None
    return min(eligible, key=lambda t: (Fraction(loads[t].running, weight(t)), loads[t].last_served, t))


def ahead(tenant: str, own_ahead: int, waiting: Mapping[str, int], *, weight: Callable[[str], int]) -> dict[str, int]:
    """Jobs of each tenant of the lane expected to start before the ``own_ahead + 1``-th waiting job of ``tenant``.

    While tenants alternate by weight, tenant ``U`` starts ``w_U / w_T`` jobs for each of ``T``; job ``j`` of ``U``
    (0-based) is placed at the middle of its turn, ``(j + ½) / w_U``, and goes first when that is earlier than
    ``(k + ½) / w_T`` (integers: ``(2j + 1)·w_T < (2k + 1)·w_U``; a tie goes to the tenant first by name). Never
    more of ``U`` than it has waiting. The same placement as the lanes' in ``functions/logs/positions.py``.
    """
    own = weight(tenant)
    found = {tenant: own_ahead}
    for other, count in waiting.items():
        if other == tenant:
            continue
        bound = (2 * own_ahead + 1) * weight(other)
        largest = bound // own if other < tenant else (bound - 1) // own  # the largest odd 2j+1 that goes first
        found[other] = max(0, min(count, (largest + 1) // 2))
    return found
