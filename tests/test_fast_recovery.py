"""A dispatcher restarted on the host of one that was SIGKILLed hands the dead one's delivery back at once (a nak
of the delivery its lease recorded): the job comes back well before AckWait, and its running step is followed, not
rerun. The delivery's NATS ack subject stays out of the public ``running`` event."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import docker
import pytest

from functions.dispatch.dispatcher import _dispatcher_alive
from functions.submit.handlers import create_app as create_submit
from runtime.jobs import parse_time
from tests.faults.harness import RUN_TOKEN
from tests.helpers import make_settings, poll
from tests.observe import StoredEvents

ACK_WAIT_S = 60
ENV = {"HADES_ACK_WAIT_SECONDS": str(ACK_WAIT_S)}


def test_only_a_pid_that_is_gone_or_no_dispatcher_counts_as_dead() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not _dispatcher_alive(other.pid)  # alive, but not functions.dispatch: a reused pid
    finally:
        other.kill()
        other.wait()
    assert not _dispatcher_alive(other.pid)  # gone
    assert _dispatcher_alive(os.getpid())  # this process: never handed back from under itself


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_restarted_dispatcher_recovers_a_killed_ones_job_before_ack_wait(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    clean_nats: str,
    stored: StoredEvents,
    busybox_image: str,
) -> None:
    first = dispatcher_processes(**ENV)
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    script = f"echo {RUN_TOKEN}; echo working; sleep 15; echo done"
    body = {"name": "fast recovery", "steps": [{"id": 1, "name": "step 1", "image": busybox_image, "script": script}]}
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id = str((await response.json())["id"])

    await _working(stored, job_id)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.time()  # a point on the events' clock (same host), not a measured duration
    dispatcher_processes(**ENV)

    final = await stored.terminal(job_id, timeout_s=90)
    assert final["status"] == "succeeded" and final["attempt"] == 2, final
    running = {e["attempt"]: e for e in await stored.jobs(job_id) if e["status"] == "running" and "reason" not in e}
    assert set(running) == {1, 2}, running
    assert not any("$JS." in json.dumps(event) for event in running.values())  # a NATS detail, not the public's
    assert running[1]["dispatcher_pid"] == first.pid
    recovered_s = parse_time(running[2]["at"]).timestamp() - killed_at
    print(f"[fast recovery] attempt 2 running {recovered_s:.1f} s after the kill (AckWait {ACK_WAIT_S} s)")
    assert recovered_s < ACK_WAIT_S / 2, f"redelivered {recovered_s:.1f} s after the kill (AckWait {ACK_WAIT_S} s)"
    lines = await stored.lines(job_id)
    tokens = {line for line in lines if line.startswith("run ")}  # each run of the step prints its own token
    assert len(tokens) == 1, lines  # ran once, followed by attempt 2 (which may read its output again)
    assert "done" in lines
    engine = docker.from_env()
    try:

        async def no_leftovers() -> bool:
            label = f"hades.job-id={job_id}"
            return not engine.containers.list(all=True, sparse=True, filters={"label": label}) and not (
                engine.volumes.list(filters={"label": label})
            )

        await poll(no_leftovers, timeout_s=30, interval_s=0.5)
    finally:
        engine.close()


def _containers_of(job_id: str) -> int:
    engine = docker.from_env()
    try:
        label = f"hades.job-id={job_id}"
        return len(engine.containers.list(all=True, sparse=True, filters={"label": label})) + len(
            engine.volumes.list(filters={"label": label})
        )
    finally:
        engine.close()


async def _submit(client: Any, script: str, **fields: Any) -> str:
    step = {"id": 1, "name": "step 1", "image": fields.pop("image"), "script": script}
    response = await client.post("/jobs", json={"name": "dead dispatcher", "steps": [step], **fields})
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def _working(stored: StoredEvents, job_id: str) -> None:
    """Until the job's step has printed ``working`` (it is running in its container)."""

    async def working() -> bool:
        return "working" in await stored.lines(job_id)

    await poll(working, timeout_s=60, interval_s=0.2)


async def _holder(stored: StoredEvents, job_id: str, *processes: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """The dispatcher process that runs the job now (its latest ``running`` event names the pid)."""
    running = [e for e in await stored.jobs(job_id) if e["status"] == "running"]
    return {process.pid: process for process in processes}[running[-1]["dispatcher_pid"]]


async def _removed(job_id: str, *, timeout_s: float) -> None:
    """Until no container or volume of the job is left on the engine."""

    async def removed() -> bool:
        return _containers_of(job_id) == 0

    await poll(removed, timeout_s=timeout_s, interval_s=0.2)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_cancel_reaches_the_containers_of_a_job_whose_dispatcher_is_dead(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    clean_nats: str,
    stored: StoredEvents,
    busybox_image: str,
) -> None:
    """Issue 20: cancelled while its dispatcher was dead, the step ran on to its end (Up 43 s after the cancel).
    Now the live dispatcher on the host removes its containers when the cancel comes, well before AckWait."""
    first, second = dispatcher_processes(**ENV), dispatcher_processes(**ENV)
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    job_id = await _submit(client, "echo working; sleep 60; echo done", image=busybox_image)

    await _working(stored, job_id)
    holder = await _holder(stored, job_id, first, second)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    response = await client.delete(f"/jobs/{job_id}")
    assert response.status == 202, await response.text()
    cancelled_at = time.monotonic()

    await _removed(job_id, timeout_s=ACK_WAIT_S / 2)  # not AckWait: the live dispatcher did it
    print(f"[dead dispatcher] cancel: containers gone {time.monotonic() - cancelled_at:.1f} s after it")
    final = await stored.terminal(job_id, timeout_s=60)
    assert final["status"] == "cancelled", final
    assert "done" not in await stored.lines(job_id)
    assert _containers_of(job_id) == 0


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_job_whose_dispatcher_was_dead_past_its_deadline_times_out_from_its_first_start(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    clean_nats: str,
    stored: StoredEvents,
    busybox_image: str,
) -> None:
    """Issue 20: timeout 8 s, dispatcher down 10 s: the step ran 20.6 s and ``started_at`` was reset. Now the
    restarted dispatcher ends it at once as timed out, with the first start kept and nothing left running."""
    first = dispatcher_processes(**ENV)
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    job_id = await _submit(client, "echo working; sleep 20; echo done", image=busybox_image, timeout_seconds=8)

    await _working(stored, job_id)
    first.send_signal(signal.SIGKILL)
    first.wait()
    started_at = next(e["started_at"] for e in await stored.jobs(job_id) if e["status"] == "running")

    async def past_deadline() -> bool:
        return time.time() - parse_time(started_at).timestamp() > 10

    await poll(past_deadline, timeout_s=30, interval_s=0.2)  # the dispatcher stays down past the deadline
    dispatcher_processes(**ENV)

    final = await stored.terminal(job_id, timeout_s=60)
    assert final["status"] == "timed_out", final
    assert {e["started_at"] for e in await stored.jobs(job_id) if e.get("started_at")} == {started_at}
    ran_s = parse_time(final["at"]).timestamp() - parse_time(started_at).timestamp()
    print(f"[dead dispatcher] timeout 8 s: ended {ran_s:.1f} s after its first start, containers left 0")
    assert "done" not in await stored.lines(job_id)

    await _removed(job_id, timeout_s=30)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_dispatcher_paused_past_ack_wait_stands_down_when_it_resumes(
    dispatcher_processes: Callable[..., subprocess.Popen[bytes]],
    aiohttp_client: Any,
    clean_nats: str,
    stored: StoredEvents,
    busybox_image: str,
) -> None:
    """Issue 21: a dispatcher SIGSTOPped past AckWait, its job redelivered to another, then SIGCONTed: before the
    ownership lease both followed the job (two ends, containers removed under the new owner). Now the resumed one
    finds a later attempt in the lease and touches nothing: one end, attempt 2's, and no event of attempt 1 after
    the take-over."""
    env = {"HADES_ACK_WAIT_SECONDS": "3"}
    first, second = dispatcher_processes(**env), dispatcher_processes(**env)
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    job_id = await _submit(client, f"echo {RUN_TOKEN}; echo working; sleep 12; echo done", image=busybox_image)

    await _working(stored, job_id)
    paused = await _holder(stored, job_id, first, second)
    paused.send_signal(signal.SIGSTOP)
    try:

        async def taken_over() -> bool:
            return any(e["status"] == "running" and e["attempt"] >= 2 for e in await stored.jobs(job_id))

        await poll(taken_over, timeout_s=60, interval_s=0.2)
    finally:
        paused.send_signal(signal.SIGCONT)
    final = await stored.terminal(job_id, timeout_s=90)
    await poll(lambda: _settled(stored, job_id), timeout_s=10, interval_s=0.5)  # what a resumed one might add

    events = await stored.status(job_id)
    terminals = [e for e in events if e["kind"] == "job" and e["status"] in ("succeeded", "failed", "timed_out")]
    assert [e["attempt"] for e in terminals] == [final["attempt"]] and final["attempt"] >= 2, terminals
    assert final["status"] == "succeeded", final
    takeover = next(i for i, e in enumerate(events) if e["kind"] == "job" and e["attempt"] >= 2)
    assert not [e for e in events[takeover:] if e["attempt"] == 1], events  # attempt 1 stood down
    lines = await stored.lines(job_id)
    assert len({line for line in lines if line.startswith("run ")}) == 1, lines  # the step ran once
    assert paused.poll() is None  # the paused dispatcher lives on

    await _removed(job_id, timeout_s=30)


async def _settled(stored: StoredEvents, job_id: str) -> bool:
    """True once the job's stored status events stop changing for a moment."""
    before = len(await stored.status(job_id))
    await asyncio.sleep(2)
    return len(await stored.status(job_id)) == before
