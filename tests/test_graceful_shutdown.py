"""Graceful scale-down of dispatch, as Kubernetes does it (SIGTERM, then SIGKILL after
terminationGracePeriodSeconds): the dispatcher stops pulling, a running job that ends within
HADES_SHUTDOWN_GRACE_SECONDS ends there; one that does not is stopped, leaves nothing behind and is finished by
another dispatcher. Either way the job has exactly one terminal status, and the process exits well before the
grace the manifests give it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.submit.handlers import create_app as create_submit
from tests.helpers import make_settings, poll
from tests.natsserver import free_port
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
HTTP_SHUTDOWN_S = 1.0
"""HADES_SHUTDOWN_TIMEOUT_SECONDS in these tests (the manifests: 10)."""


@pytest.fixture
async def submit_client(aiohttp_client: Any, clean_nats: str) -> TestClient:
    return await aiohttp_client(create_submit(make_settings(clean_nats)))


Dispatchers = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def dispatchers(dispatcher_processes: Dispatchers, busybox_image: str) -> Dispatchers:
    """`python -m functions.dispatch` processes, as the container runs it; killed at the end if still alive."""
    return lambda **env: dispatcher_processes(HADES_SHUTDOWN_TIMEOUT_SECONDS=str(HTTP_SHUTDOWN_S), **env)


async def submit(client: TestClient, script: str, busybox_image: str) -> str:
    step = {"id": 1, "name": "work", "image": busybox_image, "script": script}
    response = await client.post("/jobs", json={"name": "scale-down", "steps": [step]})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


def containers_of(docker_client: Any, job_id: str) -> list[str]:
    label = f"hades.job-id={job_id}"
    found = [c.name for c in docker_client.containers.list(all=True, sparse=True, filters={"label": label})]
    return found + [v.name for v in docker_client.volumes.list(filters={"label": label})]


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float]:
    started = time.monotonic()

    async def exited() -> bool:
        return process.poll() is not None

    await poll(exited, timeout_s=timeout_s, interval_s=0.1)
    return int(process.returncode), time.monotonic() - started


async def test_a_job_that_ends_within_the_grace_finishes_and_nothing_new_is_taken(
    dispatchers: Dispatchers, submit_client: TestClient, stored: StoredEvents, busybox_image: str, docker_client: Any
) -> None:
    grace_s = 20.0
    port = free_port()
    first = dispatchers(HADES_SHUTDOWN_GRACE_SECONDS=str(grace_s), HADES_DISPATCH_PORT=str(port))
    job_id = await submit(submit_client, "echo working; sleep 3; echo done", busybox_image)
    await poll(lambda: _has_line(stored, job_id, "working"), timeout_s=60, interval_s=0.2)

    first.send_signal(signal.SIGTERM)
    # Its HTTP site closes first thing on SIGTERM, and from then on it takes no job (it still runs its own).
    await poll(lambda: _refuses_connections(port), timeout_s=10, interval_s=0.05)
    later = await submit(submit_client, "echo later", busybox_image)  # queued during the shutdown
    code, took_s = await wait_exit(first, timeout_s=grace_s + HTTP_SHUTDOWN_S + 10)

    assert code == 0
    assert took_s < grace_s, "it waited for the job, not for the whole grace"
    terminal = await stored.terminals(job_id)
    assert [(e["status"], e["attempt"]) for e in terminal] == [("succeeded", 1)]
    assert "done" in await stored.lines(job_id)
    assert containers_of(docker_client, job_id) == []
    await stored.queued(later)  # sent by submit without waiting for its ack
    assert [e["status"] for e in await stored.jobs(later)] == ["queued"], "a stopping dispatcher pulled"

    second = dispatchers()
    try:
        await poll(lambda: _ended(stored, later), timeout_s=60, interval_s=0.2)
        assert [e["status"] for e in await stored.terminals(later)] == ["succeeded"]
    finally:
        second.send_signal(signal.SIGTERM)
        assert (await wait_exit(second, timeout_s=30))[0] == 0


async def test_a_job_longer_than_the_grace_is_handed_back_and_finished_by_another_dispatcher(
    dispatchers: Dispatchers, submit_client: TestClient, stored: StoredEvents, busybox_image: str, docker_client: Any
) -> None:
    grace_s = 2.0
    first = dispatchers(HADES_SHUTDOWN_GRACE_SECONDS=str(grace_s))
    # Long enough past the grace that the job cannot end in it, even when "working" is seen late under load.
    job_id = await submit(submit_client, "echo working; sleep 10; echo done", busybox_image)
    await poll(lambda: _has_line(stored, job_id, "working"), timeout_s=60, interval_s=0.2)

    first.send_signal(signal.SIGTERM)
    code, took_s = await wait_exit(first, timeout_s=grace_s + HTTP_SHUTDOWN_S + 15)

    assert code == 0
    # Inside the pod's budget: grace + HTTP shutdown + the manifests' margin (tools/manifests_check.py).
    assert grace_s <= took_s < grace_s + HTTP_SHUTDOWN_S + 10
    assert await stored.terminals(job_id) == [], "the stopped attempt must not end the job"
    assert containers_of(docker_client, job_id) == [], "the stopped attempt left containers or volumes"

    second = dispatchers()
    try:
        await poll(lambda: _ended(stored, job_id), timeout_s=60, interval_s=0.2)
        terminal = await stored.terminals(job_id)
        assert [(e["status"], e["attempt"]) for e in terminal] == [("succeeded", 2)]
        assert "done" in await stored.lines(job_id)
        await poll(lambda: _no_containers(docker_client, job_id), timeout_s=20)
    finally:
        second.send_signal(signal.SIGTERM)
        assert (await wait_exit(second, timeout_s=30))[0] == 0


async def _refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def _has_line(stored: StoredEvents, job_id: str, line: str) -> bool:
    return line in await stored.lines(job_id)


async def _ended(stored: StoredEvents, job_id: str) -> bool:
    return bool(await stored.terminals(job_id))


async def _no_containers(docker_client: Any, job_id: str) -> bool:
    return containers_of(docker_client, job_id) == []
