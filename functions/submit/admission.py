"""Admission control: a tenant's most jobs waiting (``HADES_TENANT_MAX_QUEUED``), checked before anything is stored.

The count is the cluster's, read from JetStream (``runtime.tenantqueues``), so it holds with any number of submit
replicas. A tenant with no limit costs nothing here. For one with a limit, a submission well below it is admitted
after one request (its stored jobs, waiting or running, with this process's submissions in flight); near the limit
they go one at a time through this process (drain, count the waiting jobs exactly, store, next), so one process
never lets more in than the limit. Several replicas checking at the same instant may each let one in, so the
limit can be passed by at most one job per other replica.

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


class _Gate:
    """One tenant's submissions in this process: those between their check and their store, and the lock of the
    exact path."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.in_flight = 0
        self.left = 0  # submissions that were in flight and are done (stored or failed), ever
        self.drained = asyncio.Event()
        self.drained.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.drained.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        self.left += 1
        if not self.in_flight:
            self.drained.set()


class Admission:
    """One per submit process: the tenants' limits, and per tenant with one, its gate."""

    def __init__(self, settings: TenantSettings) -> None:
        self.settings = settings
        self._gates: weakref.WeakValueDictionary[str, _Gate] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def admitted(self, conn: Messaging, tenant: str) -> AsyncIterator[None]:
        """Enter to store one job of ``tenant``; ``QueueFull`` when its queue is full (nothing to store then).

        Fast path, no waiting: the tenant's stored jobs (waiting or running), plus this process's submissions in
        flight, plus those that finished since the count was read (they may or may not be in it), below the
        limit: there is room. It can only overcount, never admit past the limit. Otherwise the exact path: one
        at a time, once every submission in flight here is stored, count the waiting jobs.
        """
        limit = self.settings.queued_limit(tenant)
        if limit is None:
            yield
            return
        gate = self._gates.get(tenant)
        if gate is None:
            gate = self._gates[tenant] = _Gate()
        if limit > 0 and not gate.lock.locked():
            left = gate.left
            stored = await tenantqueues.stored(conn, tenant)
            if stored + gate.in_flight + (gate.left - left) < limit and not gate.lock.locked():
                gate.enter()
                try:
                    yield
                finally:
                    gate.leave()
                return
        async with gate.lock:
            await gate.drained.wait()
            await self._check(conn, tenant, limit)
            gate.enter()
            try:
                yield
            finally:
                gate.leave()

    async def _check(self, conn: Messaging, tenant: str, limit: int) -> None:
        queued = await tenantqueues.waiting(conn, tenant)
        if queued < limit:
            return
        metrics.JOBS_REJECTED.labels("tenant-quota").inc()
        log.info("tenant %s: submit refused, %d jobs waiting (most %d)", tenant, queued, limit)
        raise QueueFull(
            tenant=tenant, max_queued=limit, queued=queued, retry_after_s=self.settings.queue_full_retry_after_s
        )


ADMISSION = web.AppKey("admission", Admission)
