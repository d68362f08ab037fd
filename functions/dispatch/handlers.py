"""The dispatch function: no API of its own, only health, readiness and metrics around the dispatch loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from runtime import web as hades_web
from runtime.dispatcher import Dispatcher
from runtime.executors import Executor, create_executor
from runtime.messaging import MESSAGING, messaging_context
from runtime.settings import Settings

EXECUTOR = web.AppKey("executor", Executor)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


async def executor_context(app: web.Application) -> AsyncIterator[None]:
    app[EXECUTOR] = await create_executor(app[hades_web.SETTINGS])
    app[hades_web.READINESS_CHECKS].append(executor_ready)
    yield
    await app[EXECUTOR].close()


async def executor_ready(app: web.Application) -> str | None:
    return await app[EXECUTOR].check()


async def dispatcher_context(app: web.Application) -> AsyncIterator[None]:
    dispatcher = Dispatcher(app[MESSAGING], app[EXECUTOR], app[hades_web.SETTINGS])
    await dispatcher.start()
    app[DISPATCHER] = dispatcher
    yield
    await dispatcher.stop()


def create_app(settings: Settings) -> web.Application:
    app = hades_web.create_app(settings, service="dispatch")
    # Clients first, the loop last: cleanup runs in reverse, so the loop stops before its clients close.
    app.cleanup_ctx.append(messaging_context(settings, name="hades-dispatch"))
    app.cleanup_ctx.append(executor_context)
    app.cleanup_ctx.append(dispatcher_context)
    return app
