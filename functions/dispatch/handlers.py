"""The dispatch function: no API of its own, only health, readiness and metrics around the dispatch loop.

The container engine may come up after dispatch (or go away for a while): dispatch then starts anyway, reports
not ready, and begins taking jobs once the engine answers; queued jobs simply wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from functions.dispatch.dispatcher import Dispatcher
from functions.dispatch.executors import Executor, create_executor
from runtime import app as hades_app
from runtime import startup, tasks
from runtime.errors import Unavailable
from runtime.messaging import MESSAGING, messaging_context
from runtime.settings import Settings

log = logging.getLogger(__name__)

ENGINE_RETRY_S = 5.0
"""How often dispatch asks again for an engine that did not answer at start-up."""


class Dispatch:
    """The executor and the loop, started as soon as the engine answers."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.executor: Executor | None = None
        self.dispatcher: Dispatcher | None = None
        self.waiting_reason = "starting"
        self.taking = True

    async def start(self) -> None:
        settings = self.app[hades_app.SETTINGS]
        while self.executor is None:
            try:
                self.executor = await create_executor(settings)
            except Unavailable as exc:
                self.waiting_reason = f"waiting for the container engine: {exc.detail}"
                log.warning("%s; retrying in %.0f s (queued jobs wait)", self.waiting_reason, ENGINE_RETRY_S)
                await asyncio.sleep(ENGINE_RETRY_S)
        while True:  # binding the consumers can meet a broker hiccup too: retried, never left half started
            dispatcher = Dispatcher(self.app[MESSAGING], self.executor, settings)
            try:
                await dispatcher.start()
            except Unavailable as exc:
                self.waiting_reason = f"waiting for the message broker: {exc.detail}"
                log.warning("%s; retrying in %.0f s (queued jobs wait)", self.waiting_reason, ENGINE_RETRY_S)
                await dispatcher.stop()  # closes whatever it had bound
                await asyncio.sleep(ENGINE_RETRY_S)
                continue
            self.dispatcher = dispatcher
            if not self.taking:  # started as the shutdown began
                dispatcher.stop_taking()
            return

    def stop_taking(self) -> None:
        self.taking = False
        if self.dispatcher is not None:
            self.dispatcher.stop_taking()

    async def ready(self, app: web.Application) -> str | None:
        if self.dispatcher is None or self.executor is None:
            return self.waiting_reason
        return await self.executor.check()

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.executor is not None:
            await self.executor.close()


DISPATCH = web.AppKey("dispatch", Dispatch)


async def dispatch_context(app: web.Application) -> AsyncIterator[None]:
    dispatch = app[DISPATCH] = Dispatch(app)
    app[hades_app.READINESS_CHECKS].append(dispatch.ready)
    starting = asyncio.create_task(dispatch.start(), name="dispatch-start")
    # The usual case (engine up) is ready before the first request; a missing engine is waited for meanwhile.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(starting), timeout=ENGINE_RETRY_S)
    yield
    await tasks.cancel_and_wait(starting)
    await dispatch.stop()


async def stop_taking_jobs(app: web.Application) -> None:
    """On SIGTERM, first thing: no new job is taken. The loop itself stops later, in the cleanup, after the HTTP
    server's shutdown, which waits up to ``HADES_SHUTDOWN_TIMEOUT_SECONDS`` for open connections (a scraper's
    keep-alive one): without this, a dispatcher being scaled down would go on pulling jobs all that while."""
    dispatch = app.get(DISPATCH)
    if dispatch is not None:
        dispatch.stop_taking()


def create_app(settings: Settings) -> web.Application:
    app = hades_app.create_app(settings, service="dispatch")
    app.on_shutdown.append(stop_taking_jobs)
    # Clients first, the loop last: cleanup runs in reverse, so the loop stops before its clients close.
    app.cleanup_ctx.append(startup.retrying(messaging_context(settings, name="hades-dispatch"), dispatch_context))
    return app
