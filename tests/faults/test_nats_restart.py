"""NATS SIGKILLed and restarted (same store) while 30 jobs are submitted and run: every accepted job ends once,
no step runs twice, no line is stored twice in an attempt, nothing is left on the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import nats
import pytest

from tests.faults.harness import RUN_TOKEN, Figures, count, job, submit
from tests.helpers import poll
from tests.natsserver import NatsServer
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

JOBS = 30


@pytest.fixture
async def observed(own_nats: NatsServer) -> AsyncIterator[StoredEvents]:
    nc = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    yield StoredEvents(nc.jetstream())
    await nc.close()


async def test_nats_killed_and_restarted_under_load(
    cluster_on: Callable[..., Any], own_nats: NatsServer, observed: StoredEvents
) -> None:
    figures = Figures(f"NATS SIGKILL + restart under load ({JOBS} jobs)")
    began = time.monotonic()
    cluster = await cluster_on(own_nats.url, HADES_CONCURRENCY="6", HADES_ACK_WAIT_SECONDS="10")
    script = f"echo {RUN_TOKEN}; for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.25; done"
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def submit_all() -> None:
            for n in range(JOBS):
                figures.submitted += 1
                key = f"faults-nats-{began}-{n}"  # a client retrying a 503 as told, with the same key
                while not (job_id := await submit(http, cluster["submit"].url, job(script, name=f"load {n}"), key=key)):
                    figures.refused += 1
                    await asyncio.sleep(0.5)
                ids.append(job_id)
                await asyncio.sleep(0.2)  # a steady stream of submissions, so the outage falls in the middle

        load = asyncio.create_task(submit_all())
        await poll(lambda: _at_least(ids, 8), timeout_s=30)
        assert own_nats.process is not None
        own_nats.process.kill()  # SIGKILL: no flush, no goodbye
        await asyncio.to_thread(own_nats.process.wait)
        await asyncio.sleep(3)  # the outage: submissions meanwhile get 503
        own_nats.start()
        await load

    async def all_ended() -> bool:
        return all([await observed.terminals(i) for i in ids])

    await poll(all_ended, timeout_s=120, interval_s=1.0)
    await count(figures, observed, ids)
    figures.seconds = time.monotonic() - began
    figures.check()
    assert figures.accepted == JOBS  # POSTs refused in the outage (503) were retried: every job is stored


async def _at_least(ids: list[str], n: int) -> bool:
    return len(ids) >= n
