"""A function that cannot set up its streams at start waits for the broker instead of exiting: it serves its
probes, says why on ``/readyz``, answers 503 elsewhere, logs one line per attempt (no traceback), and becomes
ready by itself. Against a fresh three-node cluster, every function started at once ends ready, none restarted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import Deployment, NatsCluster
from tests.faults.harness import Service, job
from tests.helpers import poll
from tests.natsserver import NatsServer, free_port
from tests.processes import functions_env

pytestmark = [pytest.mark.timeout(240)]


async def _readyz(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as answer:
            return answer.status, await answer.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.slow
async def test_submit_waits_for_nats_says_why_and_becomes_ready(tmp_path: Path) -> None:
    nats_port = free_port()
    ports = {name: free_port() for name in ("submit", "logs", "dispatch")}
    env = functions_env(f"nats://127.0.0.1:{nats_port}", ports, HADES_NATS_CONNECT_TIMEOUT_SECONDS="0.5")
    submit = Service("submit", ports["submit"], env, tmp_path / "submit.log")
    server = NatsServer(tmp_path / "store", port=nats_port)
    submit.spawn()
    try:
        async with aiohttp.ClientSession() as session:

            async def says_why() -> tuple[int, dict[str, Any]] | None:
                assert submit.process is not None and submit.process.poll() is None, submit.tail()
                answer = await _readyz(session, submit.url)
                return answer if answer and answer[0] == 503 else None

            _, body = await poll(says_why, timeout_s=60, interval_s=0.2)
            assert any("starting: connecting to NATS" in reason for reason in body["reasons"]), body
            async with session.post(f"{submit.url}/jobs", json=job("echo hi")) as refused:
                assert refused.status == 503, await refused.text()
                assert refused.headers["Retry-After"]
                assert "connecting to NATS" in (await refused.json())["detail"]

            server.start()
            await submit.ready(timeout_s=60)
            async with session.post(f"{submit.url}/jobs", json=job("echo hi")) as accepted:
                assert accepted.status == 202, await accepted.text()
        assert submit.starts == 1 and submit.process is not None and submit.process.poll() is None
        log = submit.log.read_text()
        assert "start-up attempt 1 failed: connecting to NATS" in log, log
        assert "Traceback" not in log, log
    finally:
        await submit.stop()
        server.stop()


@pytest.mark.slow
@pytest.mark.docker
async def test_every_function_started_at_once_on_a_fresh_r3_cluster_becomes_ready(
    tmp_path: Path, busybox_image: str
) -> None:
    nats = NatsCluster.create(tmp_path / "nats")
    deployment = Deployment.create(nats, tmp_path, {"submit": 2, "logs": 2, "dispatch": 2})
    try:
        await nats.start()  # a meta leader, no stream yet
        deployment.spawn_all()  # every pod of a fresh install at once
        await deployment.ready(timeout_s=180)
        for replica in deployment.all():
            assert replica.starts == 1 and replica.process is not None and replica.process.poll() is None
            log = replica.log.read_text()
            assert "Traceback" not in log, replica.tail()
            started = re.search(r"started on attempt (\d+)", log)  # absent when the first attempt did it
            assert log.count("start-up attempt") == (int(started.group(1)) - 1 if started else 0), log  # one line each
            assert "disconnected" not in log, log  # closing a failed attempt's connection is not an outage
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{deployment['submit'][1].url}/jobs", json=job("echo ran")) as accepted:
                assert accepted.status == 202, await accepted.text()
                job_id = (await accepted.json())["id"]

            async def ended() -> str | None:
                async with session.get(f"{deployment['logs'][0].url}/jobs/{job_id}") as answer:
                    record = await answer.json() if answer.status == 200 else {}
                return record.get("status") if record.get("status") in ("succeeded", "failed") else None

            assert await poll(ended, timeout_s=60, interval_s=0.5) == "succeeded"
    finally:
        await deployment.stop()
        await asyncio.to_thread(nats.stop)
