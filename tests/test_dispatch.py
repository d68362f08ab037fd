"""Dispatch end to end: real submit, real dispatch, real nats-server, real Docker; what a user sees in the events."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient, TestServer

from functions.dispatch.handlers import create_app as create_dispatch
from functions.submit.handlers import create_app as create_submit
from runtime import subjects
from tests.helpers import make_settings, poll
from tests.observe import TERMINAL, StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def events(stored: StoredEvents, clean_nats: str) -> StoredEvents:
    return stored


Hades = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def hades(aiohttp_client: Any, aiohttp_server: Any, clean_nats: str, busybox_image: str) -> Hades:
    """Start submit and one dispatcher with the given settings; returns the submit client."""

    async def start(**env: str) -> TestClient:
        settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="0.5", **env)
        await aiohttp_server(create_dispatch(settings))
        return await aiohttp_client(create_submit(settings))

    return start


def step(script: str, step_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "name": f"step {step_id}", "image": "hades-test-busybox:1", "script": script, **extra}


async def submit(client: TestClient, *steps: dict[str, Any], **job: Any) -> str:
    response = await client.post("/jobs", json={"name": "test job", "steps": list(steps), **job})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


def leftovers(job_id: str) -> list[str]:
    client = docker.from_env()
    try:
        label = f"hades.job-id={job_id}"
        found = [c.id[:12] for c in client.containers.list(all=True, sparse=True, filters={"label": label})]
        found += [v.name for v in client.volumes.list(filters={"label": label})]
        return found
    finally:
        client.close()


async def test_the_multi_step_example_shares_shared_and_streams_every_line(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    job_id = await submit(
        client,
        step("echo 'Setting up environment...' > /shared/output.txt", 1),
        step("cat /shared/output.txt && echo 'Processing data...' >> /shared/output.txt", 2),
        step("cat /shared/output.txt && echo 'Finalizing...' >> /shared/output.txt && cat /shared/output.txt", 3),
    )
    final = await events.terminal(job_id)
    assert final["status"] == "succeeded"
    assert await events.lines(job_id, stream="stdout") == [
        "Setting up environment...",
        "Setting up environment...",
        "Processing data...",
        "Setting up environment...",
        "Processing data...",
        "Finalizing...",
    ]
    steps = await events.steps(job_id)
    assert [(s["status"], s["exit_code"]) for s in steps.values()] == [("succeeded", 0)] * 3
    statuses = [e["status"] for e in await events.jobs(job_id)]
    assert statuses == ["queued", "running", "succeeded"]
    await poll(lambda: _no_leftovers(job_id), timeout_s=20)  # removed once the end is stored


async def test_metadata_reaches_the_environment_and_secrets_are_masked_in_logs(
    hades: Hades, events: StoredEvents
) -> None:
    client = await hades()
    job_id = await submit(
        client,
        step('echo "$GLOBAL $MODE $HADES_STEP_ID $JOB_NAME $(pwd) $API_TOKEN"', metadata={"MODE": "from-step"}),
        metadata={"GLOBAL": "from-job", "MODE": "from-job", "API_TOKEN": "tok-123456"},
    )
    assert (await events.terminal(job_id))["status"] == "succeeded"
    # The step sees the secret; the log shows it masked.
    assert await events.lines(job_id, stream="stdout") == ["from-job from-step 1 test job /shared ***"]


async def test_a_failing_step_fails_the_job_and_skips_the_rest(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    job_id = await submit(client, step("echo before; exit 3", 1), step("echo never", 2))
    final = await events.terminal(job_id)
    assert final["status"] == "failed" and "exited with code 3" in final["reason"]
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "failed" and steps[1]["exit_code"] == 3
    assert steps[2]["status"] == "skipped"
    assert "never" not in await events.lines(job_id)


async def test_continue_on_error_goes_on(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    job_id = await submit(client, step("exit 2", 1, continue_on_error=True), step("echo after", 2))
    assert (await events.terminal(job_id))["status"] == "succeeded"
    steps = await events.steps(job_id)
    assert steps[1]["exit_code"] == 2 and steps[2]["status"] == "succeeded"
    assert await events.lines(job_id, stream="stdout") == ["after"]


async def test_a_job_over_its_timeout_is_timed_out(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    job_id = await submit(client, step("echo start; sleep 60", 1), step("echo never", 2), timeout_seconds=2)
    final = await events.terminal(job_id, timeout_s=30)
    assert final["status"] == "timed_out"
    steps = await events.steps(job_id)
    assert steps[1]["status"] == "failed" and steps[2]["status"] == "skipped"
    await poll(lambda: _no_leftovers(job_id), timeout_s=20)  # removed once the end is stored


async def test_a_memory_hog_fails_with_an_oom_reason(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    hog = "yes | head -c 200000000 | tr -d '\\n' | sort > /dev/null"
    job_id = await submit(client, step(hog, memory_limit="32M", memory_swap="32M"))
    final = await events.terminal(job_id)
    assert final["status"] == "failed"
    assert "out of memory" in (await events.steps(job_id))[1]["reason"]


async def test_a_missing_image_fails_as_infrastructure(hades: Hades, events: StoredEvents) -> None:
    client = await hades()
    job_id = await submit(client, {"id": 1, "image": "hades-test-does-not-exist:1", "script": "true"})
    final = await events.terminal(job_id)
    assert final["status"] == "failed"
    assert "hades-test-does-not-exist:1" in final["reason"] and "not available" in final["reason"]
    assert (await events.steps(job_id))[1]["status"] == "skipped"
    await poll(lambda: _no_leftovers(job_id), timeout_s=20)  # removed once the end is stored


async def test_high_lane_jobs_start_before_low_ones_and_low_ones_still_run(hades: Hades, events: StoredEvents) -> None:
    client = await hades(HADES_CONCURRENCY="1")
    blocker = await submit(client, step("sleep 2"), priority=5)
    await poll(lambda: _status_is(events, blocker, "running"), timeout_s=30)
    low = [await submit(client, step("true"), priority=1) for _ in range(2)]
    high = [await submit(client, step("true"), priority=3) for _ in range(2)]
    for job_id in [*low, *high]:
        assert (await events.terminal(job_id))["status"] == "succeeded"
    started = {job_id: (await events.jobs(job_id))[1]["at"] for job_id in [*low, *high]}
    assert max(started[j] for j in high) < min(started[j] for j in low)


async def _status_is(events: StoredEvents, job_id: str, status: str) -> bool:
    return any(e["status"] == status for e in await events.jobs(job_id))


async def test_cancel_of_a_queued_job_ends_it_without_running(hades: Hades, events: StoredEvents) -> None:
    client = await hades(HADES_CONCURRENCY="1")
    blocker = await submit(client, step("sleep 2"))
    await poll(lambda: _status_is(events, blocker, "running"), timeout_s=30)
    job_id = await submit(client, step("echo should-not-run"))
    assert (await client.delete(f"/jobs/{job_id}")).status == 202
    final = await events.terminal(job_id)
    assert final["status"] == "cancelled"
    assert "running" not in [e["status"] for e in await events.jobs(job_id)]
    assert await events.lines(job_id) == []
    assert (await client.delete(f"/jobs/{job_id}")).status == 409


async def test_cancel_of_a_running_job_stops_it_and_leaves_nothing(hades: Hades, events: StoredEvents) -> None:
    client = await hades(HADES_CANCEL_GRACE_SECONDS="2")
    job_id = await submit(client, step("echo started; sleep 60", 1), step("echo never", 2))

    async def started() -> bool:
        return "started" in await events.lines(job_id)

    await poll(started, timeout_s=30)
    assert (await client.delete(f"/jobs/{job_id}")).status == 202
    final = await events.terminal(job_id, timeout_s=30)
    assert final["status"] == "cancelled"
    assert (await events.steps(job_id))[2]["status"] == "skipped"
    await poll(lambda: _no_leftovers(job_id), timeout_s=20)  # removed once the end is stored


@pytest.fixture
def dispatcher_process(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]], busybox_image: str
) -> Callable[..., subprocess.Popen[bytes]]:
    return dispatcher_processes


@pytest.mark.slow
async def test_a_killed_dispatcher_loses_no_job(
    hades: Hades, events: StoredEvents, dispatcher_process: Callable[..., subprocess.Popen[bytes]], aiohttp_client: Any
) -> None:
    """SIGKILL a dispatcher during a 20 s step: another finishes the job, with one terminal status and no leftovers."""
    env = {"HADES_ACK_WAIT_SECONDS": "3"}
    job_id, second = await kill_dispatcher_mid_job(
        events, dispatcher_process, aiohttp_client, "echo working; sleep 20; echo done", **env
    )
    try:
        final = await events.terminal(job_id, timeout_s=90)
        assert final["status"] == "succeeded" and final["attempt"] == 2
        terminal = [e for e in await events.jobs(job_id) if e["status"] in TERMINAL]
        assert len(terminal) == 1
        assert "done" in await events.lines(job_id)
        await poll(lambda: _no_leftovers(job_id), timeout_s=20)  # removed once the end is stored
    finally:
        await second.close()


async def kill_dispatcher_mid_job(
    events: StoredEvents,
    dispatcher_process: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    script: str,
    **env: str,
) -> tuple[str, TestServer]:
    """Submit a job that prints "working" first, SIGKILL the dispatcher running it, start a replacement."""
    url = events_url(events)
    first = dispatcher_process(**env)
    client = await aiohttp_client(create_submit(make_settings(url)))
    job_id = await submit(client, step(script))

    async def running() -> bool:
        return "working" in await events.lines(job_id)

    await poll(running, timeout_s=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = TestServer(create_dispatch(make_settings(url, **env)))
    await second.start_server()
    return job_id, second


def events_url(events: StoredEvents) -> str:
    return str(events.js._nc.connected_url.geturl())  # the test server's URL, as the observer reached it


async def test_the_delivery_past_max_deliver_fails_and_dead_letters_the_job(
    events: StoredEvents,
    dispatcher_process: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    busybox_image: str,
) -> None:
    env = {"HADES_ACK_WAIT_SECONDS": "2", "HADES_MAX_DELIVER": "1"}
    job_id, second = await kill_dispatcher_mid_job(
        events, dispatcher_process, aiohttp_client, "echo working; sleep 30", **env
    )
    try:
        final = await events.terminal(job_id, timeout_s=60)
        assert final["status"] == "failed" and "gave up after 1 attempts" in final["reason"]
        dead = await events.js.get_last_msg(subjects.DEAD_STREAM, subjects.dead_subject(job_id))
        assert json.loads(dead.data)["id"] == job_id
        await poll(lambda: _no_leftovers(job_id), timeout_s=20)
    finally:
        await second.close()


async def _no_leftovers(job_id: str) -> bool:
    return leftovers(job_id) == []
