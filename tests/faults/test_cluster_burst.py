"""An exam burst on a three-node JetStream cluster (every stream R3) with 2 submit, 3 dispatch and 2 logs
processes, through one failure each: the node leading HADES_JOBS killed and restarted, a dispatcher SIGKILLed, a
logs replica restarted, a dispatcher paused past AckWait and resumed. Every accepted job ends once, runs once,
stores each line once, calls back once, and its record is current once the burst is over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import subjects
from tests.cluster import Deployment, NatsCluster
from tests.faults.burst import Burst, BurstFigures, CallbackReceiver, settle
from tests.faults.harness import RUN_TOKEN
from tests.helpers import poll

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(300)]

JOBS = 80
ACK_WAIT_S = 15
"""Long enough that a leader election on a loaded machine does not expire a live dispatcher's delivery (with 6 s,
one run saw three jobs redelivered to a second dispatcher while the first still ran them: the lease's case)."""
PAUSE_ACK_WAIT_S = 6
"""The pause scenario's: short, so that pausing past it keeps the test short."""
REPLICAS = {"submit": 2, "dispatch": 3, "logs": 2}


class Install:
    def __init__(self, nats: NatsCluster, deployment: Deployment, receiver: CallbackReceiver) -> None:
        self.nats = nats
        self.deployment = deployment
        self.receiver = receiver

    def burst(self, scenario: str, **options: object) -> Burst:
        figures = BurstFigures(f"{scenario} ({JOBS} jobs, R3, 2 submit / 3 dispatch / 2 logs)")
        return Burst(self.deployment, self.receiver, figures, jobs=JOBS, **options)  # type: ignore[arg-type]


@pytest.fixture
def ack_wait_s() -> int:
    return ACK_WAIT_S


@pytest.fixture
async def install(tmp_path: Path, busybox_image: str, ack_wait_s: int) -> AsyncIterator[Install]:
    receiver = CallbackReceiver()
    await receiver.start()
    nats = NatsCluster.create(tmp_path / "nats")
    deployment = Deployment.create(
        nats,
        tmp_path,
        REPLICAS,
        HADES_CONCURRENCY="4",
        HADES_ACK_WAIT_SECONDS=str(ack_wait_s),
        HADES_CALLBACK_ALLOWED_NETWORKS="127.0.0.1/32",
        HADES_NATS_PUBLISH_TIMEOUT_SECONDS="2",
    )
    try:
        await nats.start()
        await deployment.start(timeout_s=120)
        yield Install(nats, deployment, receiver)
    finally:
        await deployment.stop()
        await asyncio.to_thread(nats.stop)
        await receiver.stop()


async def _through(install: Install, burst: Burst, fault: object) -> BurstFigures:
    began = time.monotonic()
    submitting = asyncio.create_task(burst.run())
    try:
        await poll(lambda: burst.submitted_at_least(0.3), timeout_s=60, interval_s=0.2)
        await fault  # type: ignore[misc]
        await submitting
    finally:
        submitting.cancel()
    figures = await settle(burst, install.nats)
    figures.seconds = time.monotonic() - began
    return figures


async def test_jobs_stream_leader_killed_and_restarted(install: Install) -> None:
    burst = install.burst("NATS node leading HADES_JOBS SIGKILLed, restarted 5 s later")

    async def fault() -> None:
        leader = await install.nats.stream_leader(subjects.JOBS_STREAM)
        await asyncio.to_thread(leader.kill)
        await asyncio.sleep(5)
        leader.start()

    (await _through(install, burst, fault())).check()


async def test_dispatcher_killed(install: Install) -> None:
    burst = install.burst("one dispatcher SIGKILLed")

    async def fault() -> None:
        await install.deployment["dispatch"][0].kill()

    (await _through(install, burst, fault())).check()


async def test_logs_replica_restarted(install: Install) -> None:
    burst = install.burst("one logs replica restarted (SIGTERM, start)")

    async def fault() -> None:
        await install.deployment["logs"][0].restart()

    (await _through(install, burst, fault())).check()


@pytest.mark.parametrize("ack_wait_s", [PAUSE_ACK_WAIT_S])
async def test_dispatcher_paused_past_ack_wait_stands_down(install: Install, ack_wait_s: int) -> None:
    # Jobs long enough that the paused dispatcher holds some running ones while its deliveries go to the others.
    script = f"echo {RUN_TOKEN}; for i in 1 2 3 4 5 6; do echo line $i; sleep 1; done"
    burst = install.burst(
        f"one dispatcher SIGSTOPped for {3 * ack_wait_s} s (AckWait {ack_wait_s} s), resumed", script=script
    )

    async def fault() -> None:
        paused = install.deployment["dispatch"][0]
        paused.pause()
        await asyncio.sleep(3 * ack_wait_s)
        paused.resume()

    (await _through(install, burst, fault())).check()
