"""The Kubernetes executor end to end: real submit, real dispatch (HADES_EXECUTOR=kubernetes), real nats-server, and
the real cluster of ``KUBECONFIG``; what a user sees in the events, and nothing left in the namespace."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from aiohttp.test_utils import TestClient, TestServer

from functions.dispatch.handlers import create_app as create_dispatch
from functions.submit.handlers import create_app as create_submit
from tests.helpers import make_settings, poll
from tests.k8sfixtures import K8S_IMAGE, k8s_leftovers
from tests.observe import TERMINAL, StoredEvents

ROOT = Path(__file__).resolve().parent.parent
Events = StoredEvents

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]


def k8s_env(namespace: str, **extra: str) -> dict[str, str]:
    return {
        "HADES_EXECUTOR": "kubernetes",
        "HADES_K8S_NAMESPACE": namespace,
        "HADES_K8S_IMAGE_PULL_POLICY": "IfNotPresent",
        "HADES_K8S_IMAGE_PULL_TIMEOUT_SECONDS": "5",
        "HADES_K8S_REQUEST_FRACTION": "0.01",  # a 2-core test node
        "HADES_PULL_TIMEOUT_SECONDS": "0.5",
        **extra,
    }


@pytest.fixture
def events(stored: StoredEvents) -> StoredEvents:
    return stored


Hades = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def hades(aiohttp_client: Any, aiohttp_server: Any, clean_nats: str, k8s_namespace: str) -> Hades:
    async def start(**env: str) -> TestClient:
        settings = make_settings(clean_nats, **k8s_env(k8s_namespace, **env))
        await aiohttp_server(create_dispatch(settings))
        return await aiohttp_client(create_submit(settings))

    return start


def step(script: str, step_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "name": f"step {step_id}", "image": K8S_IMAGE, "script": script, **extra}


async def submit(client: TestClient, *steps: dict[str, Any], **job: Any) -> str:
    response = await client.post("/jobs", json={"name": "k8s job", "steps": list(steps), **job})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def nothing_left(k8s_client: Any, namespace: str, job_id: str) -> None:
    async def gone() -> bool:
        return not await asyncio.to_thread(k8s_leftovers, k8s_client, namespace, job_id)

    await poll(gone, timeout_s=60, interval_s=0.5)


async def test_the_multi_step_example_shares_shared_sees_its_env_and_streams_lines_in_order(
    hades: Hades, events: Events, k8s_client: Any, k8s_namespace: str
) -> None:
    client = await hades()
    job_id = await submit(
        client,
        step("echo 'Setting up environment...' > /shared/output.txt; echo \"$GLOBAL $MODE $HADES_STEP_ID $(pwd)\"", 1),
        step("cat /shared/output.txt && echo 'Processing data...' >> /shared/output.txt", 2, metadata={"MODE": "s"}),
        step("cat /shared/output.txt && echo 'Finalizing...' >> /shared/output.txt && cat /shared/output.txt", 3),
        metadata={"GLOBAL": "g", "MODE": "j"},
    )
    final = await events.terminal(job_id, timeout_s=120)
    assert final["status"] == "succeeded", final.get("reason")
    assert await events.lines(job_id) == [
        "g j 1 /shared",
        "Setting up environment...",
        "Setting up environment...",
        "Processing data...",
        "Setting up environment...",
        "Processing data...",
        "Finalizing...",
    ]
    steps = await events.steps(job_id)
    assert [(s["status"], s["exit_code"]) for s in steps.values()] == [("succeeded", 0)] * 3
    assert all(s["started_at"] <= s["finished_at"] for s in steps.values())
    assert [e["status"] for e in await events.jobs(job_id)] == ["queued", "running", "succeeded"]
    await nothing_left(k8s_client, k8s_namespace, job_id)


async def test_a_failing_step_fails_the_job_and_skips_the_rest(hades: Hades, events: Events) -> None:
    client = await hades()
    job_id = await submit(client, step("echo before; exit 3", 1), step("echo never", 2))
    final = await events.terminal(job_id, timeout_s=120)
    assert final["status"] == "failed" and "exited with code 3" in final["reason"]
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "failed" and steps[1]["exit_code"] == 3
    assert steps[2]["status"] == "skipped"
    assert await events.lines(job_id, stream="stdout") == ["before"]


async def test_continue_on_error_keeps_the_real_exit_code_of_an_init_container(hades: Hades, events: Events) -> None:
    client = await hades()
    job_id = await submit(
        client, step("echo trying; exit 2", 1, continue_on_error=True), step("echo after", 2), step("exit 0", 3)
    )
    assert (await events.terminal(job_id, timeout_s=120))["status"] == "succeeded"
    steps = await events.steps(job_id)
    assert (steps[1]["status"], steps[1]["exit_code"]) == ("failed", 2)
    assert [steps[i]["status"] for i in (2, 3)] == ["succeeded", "succeeded"]
    assert await events.lines(job_id, stream="stdout") == ["trying", "after"]


async def test_an_image_that_cannot_be_pulled_fails_the_job_with_its_name(
    hades: Hades, events: Events, k8s_client: Any, k8s_namespace: str
) -> None:
    client = await hades()
    job_id = await submit(client, step("echo first", 1), {"id": 2, "image": "local/hades-missing:1", "script": "true"})
    final = await events.terminal(job_id, timeout_s=120)
    assert final["status"] == "failed"
    assert "local/hades-missing:1" in final["reason"] and "not available" in final["reason"]
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "succeeded" and steps[2]["status"] == "skipped"
    await nothing_left(k8s_client, k8s_namespace, job_id)


async def test_a_job_over_its_timeout_is_timed_out(
    hades: Hades, events: Events, k8s_client: Any, k8s_namespace: str
) -> None:
    client = await hades()
    job_id = await submit(client, step("echo start; sleep 60", 1), step("echo never", 2), timeout_seconds=4)
    final = await events.terminal(job_id, timeout_s=90)
    assert final["status"] == "timed_out"
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "failed" and "timed out" in steps[1]["reason"]
    assert steps[2]["status"] == "skipped"
    assert await events.lines(job_id, stream="stdout") == ["start"]
    await nothing_left(k8s_client, k8s_namespace, job_id)


async def test_a_memory_hog_fails_with_an_oom_reason(hades: Hades, events: Events) -> None:
    client = await hades()
    hog = "yes | head -c 200000000 | tr -d '\\n' | sort > /dev/null"
    job_id = await submit(client, step(hog, memory_limit="32M"))
    final = await events.terminal(job_id, timeout_s=120)
    assert final["status"] == "failed"
    assert "out of memory (limit 32M)" in (await events.steps(job_id))[1]["reason"]


async def test_cancel_of_a_running_job_stops_it_and_leaves_nothing(
    hades: Hades, events: Events, k8s_client: Any, k8s_namespace: str
) -> None:
    client = await hades(HADES_CANCEL_GRACE_SECONDS="2")
    job_id = await submit(client, step("echo started; sleep 60", 1), step("echo never", 2))

    async def started() -> bool:
        return "started" in await events.lines(job_id)

    await poll(started, timeout_s=90, interval_s=0.2)
    assert (await client.delete(f"/jobs/{job_id}")).status == 202
    final = await events.terminal(job_id, timeout_s=60)
    assert final["status"] == "cancelled"
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "failed" and steps[2]["status"] == "skipped"
    await nothing_left(k8s_client, k8s_namespace, job_id)


@pytest.fixture
def dispatcher_process(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]], k8s_namespace: str
) -> Callable[..., subprocess.Popen[bytes]]:
    return lambda **env: dispatcher_processes(**k8s_env(k8s_namespace, **env))


@pytest.mark.slow
async def test_a_dispatcher_killed_mid_job_is_replaced_and_the_job_is_adopted(
    events: Events,
    dispatcher_process: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    clean_nats: str,
    k8s_client: Any,
    k8s_namespace: str,
) -> None:
    """SIGKILL the dispatcher while its pod runs: the next one adopts the same Job (same pod), the job ends once."""
    env = {"HADES_ACK_WAIT_SECONDS": "3"}
    first = dispatcher_process(**env)
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    job_id = await submit(client, step("echo working on $(hostname); sleep 15; echo done", 1))

    async def running() -> bool:
        return any(line.startswith("working on") for line in await events.lines(job_id))

    await poll(running, timeout_s=90, interval_s=0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = TestServer(create_dispatch(make_settings(clean_nats, **k8s_env(k8s_namespace, **env))))
    await second.start_server()
    try:
        final = await events.terminal(job_id, timeout_s=120)
        assert final["status"] == "succeeded" and final["attempt"] == 2
        assert len([e for e in await events.jobs(job_id) if e["status"] in TERMINAL]) == 1
        lines = await events.lines(job_id)
        workers = {line for line in lines if line.startswith("working on")}
        assert len(workers) == 1, lines  # both attempts read the one pod: the Job was adopted, not re-created
        assert "done" in lines
        await nothing_left(k8s_client, k8s_namespace, job_id)
    finally:
        await second.close()


@pytest.mark.slow
async def test_a_job_deleted_from_outside_is_infrastructure_trouble_and_runs_again(
    hades: Hades, events: Events, k8s_client: Any, k8s_namespace: str
) -> None:
    client = await hades()
    job_id = await submit(client, step("echo working; sleep 8; echo done", 1))

    async def running() -> bool:
        return "working" in await events.lines(job_id)

    await poll(running, timeout_s=90, interval_s=0.2)
    batch = kubernetes.client.BatchV1Api(k8s_client)
    [job] = (
        await asyncio.to_thread(batch.list_namespaced_job, k8s_namespace, label_selector=f"hades.io/job-id={job_id}")
    ).items
    await asyncio.to_thread(
        batch.delete_namespaced_job, job.metadata.name, k8s_namespace, propagation_policy="Background"
    )
    final = await events.terminal(job_id, timeout_s=120)
    assert final["status"] == "succeeded" and final["attempt"] == 2
    retrying = [e for e in await events.jobs(job_id) if (e.get("reason") or "").startswith("retrying")]
    assert retrying and "deleted" in retrying[0]["reason"] and "not by Hades" in retrying[0]["reason"]
    assert len([e for e in await events.jobs(job_id) if e["status"] in TERMINAL]) == 1
    await nothing_left(k8s_client, k8s_namespace, job_id)
