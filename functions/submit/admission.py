"""Admission control: a tenant's most jobs waiting (``HADES_TENANT_MAX_QUEUED``), checked before anything is stored.

The count is the cluster's, read from JetStream (``runtime.tenantqueues``), so it holds with any number of submit
replicas. A tenant with no limit costs nothing here. For one with a limit, its submissions go one at a time
through this replica (check, store, next), so one replica never lets more in than the limit; several replicas
checking at the same instant may each let one in, so the limit can be passed by at most one job per other replica.
Cheap first: the tenant's stored jobs (waiting or running, one request) below the limit admit at once; only at the
limit are the waiting ones counted (two requests a lane).

A refusal is a 429 with ``Retry-After`` and a problem body naming the tenant and its limit. Other tenants are never
refused for it: each tenant's count is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from runtime import app as hades_app
from runtime import metrics, tenantqueues
from runtime.errors import Problem, RequestError, to_problem
from runtime.messaging import Messaging
from runtime.settings import TenantSettings

log = logging.getLogger(__name__)


class QueueFull(RequestError):
    status = 429
    kind = "tenant-queue-full"
    title = "Too Many Requests"

    def __init__(self, *, tenant: str, max_queued: int, queued: int, retry_after_s: int) -> None:
        super().__init__(
            f"tenant {tenant!r} has {queued} jobs waiting, its most (HADES_TENANT_MAX_QUEUED) is {max_queued}: "
            f"nothing was stored; submit again once some have started"
        )
        self.tenant, self.max_queued, self.queued, self.retry_after_s = tenant, max_queued, queued, retry_after_s


class QueueFullProblem(Problem):
    tenant: str
    max_queued: int
    queued: int


def refusal(error: QueueFull) -> web.Response:
    body: QueueFullProblem = {
        **to_problem(error),
        "tenant": error.tenant,
        "max_queued": error.max_queued,
        "queued": error.queued,
    }
    return hades_app.problem_response(body, headers={"Retry-After": str(error.retry_after_s)})


class Admission:
    """One per submit process: the tenants' limits and a lock per tenant that has one."""

    def __init__(self, settings: TenantSettings) -> None:
        self.settings = settings
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def admitted(self, conn: Messaging, tenant: str) -> AsyncIterator[None]:
        """Enter to store one job of ``tenant``; ``QueueFull`` when its queue is full (nothing to store then)."""
        limit = self.settings.queued_limit(tenant)
        if limit is None:
            yield
            return
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        async with lock:  # held while the job is stored, so this replica's next check counts it
            await self._check(conn, tenant, limit)
            yield

    async def _check(self, conn: Messaging, tenant: str, limit: int) -> None:
        if limit > 0 and await tenantqueues.stored(conn, tenant) < limit:
            return
        queued = await tenantqueues.waiting(conn, tenant)
        if queued < limit:
            return
        metrics.JOBS_REJECTED.labels("tenant-quota").inc()
        log.info("tenant %s: submit refused, %d jobs waiting (most %d)", tenant, queued, limit)
        raise QueueFull(
            tenant=tenant, max_queued=limit, queued=queued, retry_after_s=self.settings.queue_full_retry_after_s
        )


ADMISSION = web.AppKey("admission", Admission)
