"""A redelivered job follows what its dead dispatcher's attempt left running (issue 13: a dispatcher restart does
not rerun a step that is still running): the step container is found by label and followed to its end, and the
next steps run in that attempt's volume. Anything less than a clean prefix of started steps runs again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.dispatch.executors.base import StepResult, StopSignal
from functions.dispatch.executors.docker import LABEL_ATTEMPT, LABEL_JOB_ID, LABEL_SCOPE, LABEL_STEP_ID, DockerExecutor
from runtime.jobs import Job, JobId, JobStatus, Step, StepStatus, job_from_document, utc_now
from runtime.settings import LimitSettings, Settings
from tests.helpers import SCOPE, poll

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]


@dataclass
class Hooks:
    started: list[int] = field(default_factory=list)
    finished: list[StepResult] = field(default_factory=list)
    lines: list[tuple[int, str, str]] = field(default_factory=list)

    async def step_started(self, step: Step, *, started_at: str) -> None:
        self.started.append(step.id)

    async def step_finished(self, result: StepResult) -> None:
        self.finished.append(result)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        self.lines.append((step_id, stream, message))


@pytest.fixture
async def executor(docker_client: Any) -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.create(Settings.from_env({"HADES_SCOPE": SCOPE}))
    yield executor
    await executor.close()


def two_step_job(busybox: str, first: str) -> Job:
    steps = [{"id": 1, "image": busybox, "script": first}, {"id": 2, "image": busybox, "script": "cat /shared/f"}]
    document = {"name": "adoption", "steps": steps}
    return job_from_document(document, job_id=JobId(str(uuid.uuid4())), limits=LimitSettings(), submitted_at=utc_now())


def leave_attempt_one(client: Any, job: Job, *, start: bool) -> Any:
    """What a dispatcher SIGKILLed during step 1 of attempt 1 leaves: the volume and the step's container."""
    labels = {LABEL_JOB_ID: job.id, LABEL_ATTEMPT: "1", LABEL_SCOPE: SCOPE}
    volume = f"hades-{job.id}-a1"
    client.volumes.create(name=volume, labels=labels)
    container = client.containers.create(
        job.steps[0].image,
        entrypoint=["sh", "-c"],
        command=[job.steps[0].script],
        name=f"hades-{job.id}-a1-s1",
        labels={**labels, LABEL_STEP_ID: "1"},
        volumes={volume: {"bind": "/shared", "mode": "rw"}},
        working_dir="/shared",
    )
    if start:
        container.start()
    return container


def remaining(client: Any, job_id: str) -> list[str]:
    selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
    found = [c.name for c in client.containers.list(all=True, sparse=True, filters=selector)]
    return found + [v.name for v in client.volumes.list(filters=selector)]


async def test_a_running_step_is_followed_and_the_next_runs_in_its_volume(
    executor: DockerExecutor, docker_client: Any, busybox_image: str
) -> None:
    script = "echo run $(cat /proc/sys/kernel/random/uuid); echo kept > /shared/f; echo err >&2; sleep 2; echo end"
    job = two_step_job(busybox_image, script)
    container = await asyncio.to_thread(leave_attempt_one, docker_client, job, start=True)

    async def running() -> bool:
        await asyncio.to_thread(container.reload)
        return bool(container.status == "running")

    await poll(running, timeout_s=10)
    hooks = Hooks()
    result = await executor.run(job, attempt=2, hooks=hooks, stop=StopSignal())

    assert result.status is JobStatus.SUCCEEDED
    assert hooks.started == [1, 2]
    assert [(r.step_id, r.status, r.exit_code) for r in hooks.finished] == [
        (1, StepStatus.SUCCEEDED, 0),
        (2, StepStatus.SUCCEEDED, 0),
    ]
    assert hooks.finished[0].started_at and hooks.finished[0].duration_s is not None
    step1 = [(stream, message) for step_id, stream, message in hooks.lines if step_id == 1]
    assert [m for s, m in step1 if s == "stdout"][1:] == ["end"] and ("stderr", "err") in step1
    assert len([m for _, m in step1 if m.startswith("run ")]) == 1  # its whole output once, not a second run
    assert (2, "stdout", "kept") in hooks.lines  # step 2 read what step 1 wrote: the same volume
    assert result.release is not None
    await result.release()  # what dispatch does once the job's end is stored
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []


async def test_a_step_container_that_never_started_is_run_again(
    executor: DockerExecutor, docker_client: Any, busybox_image: str
) -> None:
    job = two_step_job(busybox_image, "echo fresh > /shared/f; echo fresh")
    await asyncio.to_thread(leave_attempt_one, docker_client, job, start=False)
    hooks = Hooks()
    result = await executor.run(job, attempt=2, hooks=hooks, stop=StopSignal())
    assert result.status is JobStatus.SUCCEEDED
    assert [m for _, _, m in hooks.lines] == ["fresh", "fresh"]
    assert result.release is not None
    await result.release()  # what dispatch does once the job's end is stored
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []


async def test_a_followed_step_still_obeys_a_cancel(
    executor: DockerExecutor, docker_client: Any, busybox_image: str
) -> None:
    job = two_step_job(busybox_image, "echo started; sleep 60")
    await asyncio.to_thread(leave_attempt_one, docker_client, job, start=True)
    hooks, stop = Hooks(), StopSignal()
    run = asyncio.create_task(executor.run(job, attempt=2, hooks=hooks, stop=stop))

    async def following() -> bool:
        return (1, "stdout", "started") in hooks.lines

    await poll(following, timeout_s=20)
    stop.stop(JobStatus.CANCELLED, grace_s=0, reason="cancelled by request")
    result = await asyncio.wait_for(run, 30)
    assert result.status is JobStatus.CANCELLED
    assert [(r.step_id, r.status) for r in result.steps] == [(1, StepStatus.FAILED), (2, StepStatus.SKIPPED)]
    assert result.release is not None
    await result.release()  # what dispatch does once the job's end is stored
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []


async def test_a_third_attempt_follows_what_an_adopting_second_one_ran(
    executor: DockerExecutor, docker_client: Any, busybox_image: str
) -> None:
    """Review: attempt 2 followed attempt 1's step 1 and ran step 2 itself (labelled attempt 2, in
    attempt 1's volume), then its end could not be stored (NATS refused it: nothing released). Attempt 3 found
    attempt 2's step 2 alone, no prefix, and ran the whole job again: a finished job ran twice."""
    script = "echo run $(cat /proc/sys/kernel/random/uuid); echo kept > /shared/f; sleep 1"
    job = two_step_job(busybox_image, script)
    await asyncio.to_thread(leave_attempt_one, docker_client, job, start=True)
    second = Hooks()
    result = await executor.run(job, attempt=2, hooks=second, stop=StopSignal())
    assert result.status is JobStatus.SUCCEEDED and second.started == [1, 2]
    # its terminal event was refused: dispatch hands the message back and releases nothing

    third = Hooks()
    result = await executor.run(job, attempt=3, hooks=third, stop=StopSignal())
    assert result.status is JobStatus.SUCCEEDED
    runs = [m for step_id, _, m in [*second.lines, *third.lines] if step_id == 1 and m.startswith("run ")]
    assert len(set(runs)) == 1, runs  # step 1's output read again from the engine, not a second run of it
    assert (2, "stdout", "kept") in third.lines
    assert result.release is not None
    await result.release()
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []
