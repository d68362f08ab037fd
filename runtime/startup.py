"""Start-up that waits for its broker instead of crashing: a function's set-up steps, retried until they succeed.

A function's set-up (connect to NATS, create the streams, open its buckets, bind its consumers) is a chain of
aiohttp cleanup contexts. On a fresh NATS cluster it can fail for a while: replicated streams wait for their
groups to form, several functions create them at once and the requests time out. ``retrying`` runs the chain once
before the server listens (the usual case: nothing else changes); if a step fails with ``Unavailable``, it leaves
the steps already taken, serves anyway and tries the chain again in the background with backoff, one log line per
attempt. Meanwhile ``/readyz`` answers 503 with the reason and every other route 503 with ``Retry-After``
(``runtime.app.starting_middleware``); the function becomes ready by itself once a whole attempt succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

from runtime import tasks
from runtime.app import READINESS_CHECKS, STARTING
from runtime.errors import Unavailable

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 15.0
"""Backoff between attempts: 1 s, doubling, at most this (a broker that comes back is noticed within it)."""
_FROZEN_APP_WARNING = "Changing state of started or joined application"


def retrying(*steps: CleanupContext) -> CleanupContext:
    """One cleanup context running ``steps`` in order, retried with backoff while one fails with ``Unavailable``."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        retry: asyncio.Task[None] | None = None
        try:
            await _attempt(app, steps)
        except Unavailable as exc:
            _failed(app, exc, attempt=1, pause_s=FIRST_RETRY_S)
            retry = asyncio.create_task(_retry(app, steps), name="startup-retry")
        yield
        if retry is not None:
            await tasks.cancel_and_wait(retry)
        await _leave(app)

    return context


async def _retry(app: web.Application, steps: tuple[CleanupContext, ...]) -> None:
    pause_s = FIRST_RETRY_S
    attempt = 1
    while True:
        await asyncio.sleep(pause_s)
        attempt += 1
        try:
            # The steps store what they set up on the app (app[MESSAGING] = ...), which aiohttp warns about once
            # the app runs; nothing reads those keys before ``reason`` clears, so here it is what is wanted.
            with _frozen_app_writes():
                await _attempt(app, steps)
        except Unavailable as exc:
            pause_s = min(pause_s * 2, MAX_RETRY_S)
            _failed(app, exc, attempt=attempt, pause_s=pause_s)
            continue
        log.info("started on attempt %d", attempt)
        return


async def _attempt(app: web.Application, steps: tuple[CleanupContext, ...]) -> None:
    """Enter every step; on failure leave the ones entered (and drop their readiness checks) and re-raise."""
    checks = app[READINESS_CHECKS]
    known_checks = len(checks)
    entered = app[STARTING].entered
    try:
        for step in steps:
            entering = step(app)
            await anext(entering)
            entered.append(entering)
    except BaseException:
        await _leave(app)
        del checks[known_checks:]
        raise
    app[STARTING].reason = None


async def _leave(app: web.Application) -> None:
    """Leave the entered steps, last first; one that fails to leave is logged and the others still leave."""
    entered = app[STARTING].entered
    while entered:
        leaving = entered.pop()
        try:
            await anext(leaving)
        except StopAsyncIteration:
            continue
        except Exception:
            log.exception("a start-up step failed to stop")
            continue
        log.error("a start-up step yielded twice; left as it is")


def _failed(app: web.Application, exc: Unavailable, *, attempt: int, pause_s: float) -> None:
    app[STARTING].reason = f"starting: {exc.detail} (attempt {attempt}, next in {pause_s:.0f} s)"
    log.warning("start-up attempt %d failed: %s; retrying in %.0f s", attempt, exc.detail, pause_s)


@contextlib.contextmanager
def _frozen_app_writes() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FROZEN_APP_WARNING, category=DeprecationWarning)
        yield
