"""Per-tenant metrics of the logs function: jobs waiting and running (from JetStream) and finished (as folded).

The label set stays bounded: the tenants the operator named (``TenantSettings.known``) have their own series,
every other tenant is summed into ``other``. Every known label is set on each sample (0 when it has no jobs), so a
tenant whose queue emptied does not keep its last value.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from runtime import metrics, subjects, tenantqueues, tenants
from runtime.messaging import Messaging

log = logging.getLogger(__name__)


def labels(known: Collection[str]) -> list[str]:
    return [*sorted({*known, tenants.DEFAULT}), tenants.OTHER_LABEL]


def prime(known: Collection[str]) -> None:
    """Create the series at zero, so they exist before the first sample or job end."""
    for label in labels(known):
        for lane in subjects.LANES:
            metrics.TENANT_JOBS_QUEUED.labels(label, lane)
            metrics.TENANT_JOBS_RUNNING.labels(label, lane)
        for result in ("succeeded", "failed", "timed_out", "cancelled"):
            metrics.TENANT_JOBS_FINISHED.labels(label, result)


async def sample(conn: Messaging, known: Collection[str]) -> None:
    """Set the waiting and running gauges from JetStream; ``Unavailable`` in an outage."""
    record(await tenantqueues.by_tenant(conn), known)


def record(found: Mapping[tenantqueues.Key, tenantqueues.Counts], known: Collection[str]) -> None:
    """Set the waiting and running gauges from counts read by ``tenantqueues``."""
    waiting = {(label, lane): 0 for label in labels(known) for lane in subjects.LANES}
    taken = dict(waiting)
    for (lane, tenant), counts in found.items():
        key = (tenants.label(tenant, known), lane)
        waiting[key] += counts.waiting
        taken[key] += counts.running
    for (label, lane), count in waiting.items():
        metrics.TENANT_JOBS_QUEUED.labels(label, lane).set(count)
        metrics.TENANT_JOBS_RUNNING.labels(label, lane).set(taken[label, lane])


def finished(tenant: str | None, status: str, known: Collection[str]) -> None:
    metrics.TENANT_JOBS_FINISHED.labels(tenants.label(tenant or tenants.DEFAULT, known), status).inc()
