"""The Docker executor against the real engine: steps, shared volume, environment, live logs, limits, stops and
cleanup. Every job gets a fresh id, so tests never see each other's containers."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.dispatch.executors.base import RunResult, StepResult, StopSignal
from functions.dispatch.executors.docker import LABEL_JOB_ID, LABEL_SCOPE, DockerExecutor
from functions.dispatch.executors.docker import engine as docker_engine
from runtime.errors import JobError, Unavailable
from runtime.jobs import Job, JobId, JobStatus, Step, StepStatus, job_from_document, utc_now
from runtime.settings import LimitSettings, Settings
from tests.dockerfixtures import remove_jobs
from tests.helpers import EXAMPLES, SCOPE, poll

pytestmark = pytest.mark.docker


@dataclass
class Recorder:
    """RunHooks that remember every call, in order."""

    started: list[int] = field(default_factory=list)
    finished: list[StepResult] = field(default_factory=list)
    lines: list[tuple[int, str, str, str]] = field(default_factory=list)
    lines_when_finished: dict[int, int] = field(default_factory=dict)

    async def step_started(self, step: Step, *, started_at: str) -> None:
        assert started_at.endswith("Z")
        self.started.append(step.id)

    async def step_finished(self, result: StepResult) -> None:
        self.finished.append(result)
        self.lines_when_finished[result.step_id] = sum(1 for line in self.lines if line[0] == result.step_id)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        asyncio.get_running_loop()  # raises unless called on the event loop
        self.lines.append((step_id, stream, message, at))

    def output(self, step_id: int, stream: str = "stdout") -> list[str]:
        return [m for s, st, m, _ in self.lines if s == step_id and st == stream]


@pytest.fixture
async def executor() -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.create(Settings.from_env({"HADES_SCOPE": SCOPE}))
    yield executor
    await executor.close()


def _remaining(client: Any, job_id: str) -> list[str]:
    selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
    # sparse: no per-container inspect, which could 404 on one removed between the list and the inspect
    containers = client.containers.list(all=True, sparse=True, filters=selector)
    volumes = client.volumes.list(filters=selector)
    return [f"container {c.id[:12]}" for c in containers] + [f"volume {v.name}" for v in volumes]


_created: list[str] = []
"""Ids of the jobs the current test made; whatever of them is left on the engine is removed after it."""


@pytest.fixture(autouse=True)
def _remove_what_the_test_left(docker_client: Any) -> Iterator[None]:
    yield
    remove_jobs(docker_client, _created)


@pytest.fixture
def remaining(docker_client: Any) -> Callable[[str], Any]:
    """``await remaining(job_id)``: what of that job is still on the engine."""

    async def check(job_id: str) -> list[str]:
        return await asyncio.to_thread(_remaining, docker_client, job_id)

    return check


def new_job_id() -> JobId:
    job_id = JobId(str(uuid.uuid4()))
    _created.append(job_id)
    return job_id


def make_job(busybox: str, steps: list[dict[str, Any]], **document: Any) -> Job:
    document = {"name": "Docker executor test", **document, "steps": [{"image": busybox, **s} for s in steps]}
    return job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())


async def run_job(
    executor: DockerExecutor, remaining: Callable[[str], Any], job: Job, stop: StopSignal | None = None
) -> tuple[RunResult, Recorder]:
    """Run a job to its end and check that nothing of it is left on the engine once dispatch releases it."""
    hooks = Recorder()
    result = await executor.run(job, attempt=1, hooks=hooks, stop=stop or StopSignal())
    await release(result)
    assert await remaining(job.id) == []
    return result, hooks


async def release(result: RunResult) -> None:
    """What dispatch does once the job's end is stored: remove what the run made."""
    assert result.release is not None
    await result.release()


def statuses(result: RunResult) -> list[tuple[int, StepStatus]]:
    return [(s.step_id, s.status) for s in result.steps]


async def test_multi_step_example_shares_the_volume(executor, remaining, busybox_image):
    document = json.loads((EXAMPLES / "valid" / "multi-step.json").read_text())
    for step in document["steps"]:
        step["image"] = busybox_image
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert result.reason is None
    assert statuses(result) == [(1, StepStatus.SUCCEEDED), (2, StepStatus.SUCCEEDED), (3, StepStatus.SUCCEEDED)]
    assert [s.exit_code for s in result.steps] == [0, 0, 0]
    assert hooks.started == [1, 2, 3]
    assert [r.step_id for r in hooks.finished] == [1, 2, 3]
    assert all(r.started_at and r.finished_at and r.duration_s is not None for r in result.steps)
    assert hooks.output(2) == ["Setting up environment..."]
    # Step 3 prints the file, appends its own line, and prints the whole file: three lines, in step order.
    assert hooks.output(3)[-3:] == ["Setting up environment...", "Processing data...", "Finalizing..."]
    assert hooks.output(3) == ["Setting up environment...", "Processing data...", *hooks.output(3)[-3:]]


async def test_metadata_and_hades_variables_reach_the_environment(executor, remaining, busybox_image):
    names = "GLOBAL SHARED LOCAL HADES_JOB_ID HADES_JOB_NAME HADES_STEP_ID UUID JOB_NAME"
    script = f'for v in {names}; do eval "echo $v=\\$$v"; done; pwd'
    job = make_job(
        busybox_image,
        [{"id": 7, "name": "Env", "script": script, "metadata": {"SHARED": "step", "LOCAL": "only here"}}],
        name="Env job",
        metadata={"GLOBAL": "job", "SHARED": "job"},
    )

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert hooks.output(7) == [
        "GLOBAL=job",
        "SHARED=step",
        "LOCAL=only here",
        f"HADES_JOB_ID={job.id}",
        "HADES_JOB_NAME=Env job",
        "HADES_STEP_ID=7",
        f"UUID={job.id}",
        "JOB_NAME=Env job",
        "/shared",
    ]


async def test_failing_step_skips_the_rest(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [
            {"id": 1, "script": "echo one"},
            {"id": 2, "name": "Build", "script": "echo failing >&2; exit 3"},
            {"id": 3, "script": "echo three"},
        ],
    )

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.FAILED
    assert statuses(result) == [(1, StepStatus.SUCCEEDED), (2, StepStatus.FAILED), (3, StepStatus.SKIPPED)]
    failed, skipped = result.steps[1], result.steps[2]
    assert (failed.exit_code, failed.reason) == (3, "exited with code 3")
    assert skipped.reason == "skipped: step 2 (Build) failed"
    assert hooks.started == [1, 2]
    assert hooks.output(2, "stderr") == ["failing"]
    assert hooks.output(3) == []


async def test_continue_on_error_runs_the_next_step(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [{"id": 1, "script": "exit 3", "continue_on_error": True}, {"id": 2, "script": "echo still here"}],
    )

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert statuses(result) == [(1, StepStatus.FAILED), (2, StepStatus.SUCCEEDED)]
    assert result.steps[0].exit_code == 3
    assert hooks.output(2) == ["still here"]


async def test_output_streams_live_and_keeps_stdout_and_stderr_apart(executor, remaining, busybox_image):
    script = (
        "echo out1; echo err1 >&2; sleep 2; "
        "printf 'par'; sleep 0.3; printf 'tial\\n'; printf 'bad \\377 byte\\n'; echo err2 >&2; printf 'no newline'"
    )
    job = make_job(busybox_image, [{"id": 1, "script": script}])
    hooks = Recorder()
    run = asyncio.create_task(executor.run(job, attempt=1, hooks=hooks, stop=StopSignal()))

    async def first_line_seen() -> bool:
        return "out1" in hooks.output(1)

    await poll(first_line_seen, timeout_s=10)
    assert not run.done()
    assert hooks.finished == []  # the line arrived while the step was still running

    result = await asyncio.wait_for(run, 20)

    assert result.status is JobStatus.SUCCEEDED
    assert hooks.output(1) == ["out1", "partial", "bad \ufffd byte", "no newline"]
    assert hooks.output(1, "stderr") == ["err1", "err2"]
    assert hooks.lines_when_finished[1] == 6  # every line was delivered before the step was reported finished
    assert all(at.endswith("Z") for *_, at in hooks.lines)
    await release(result)
    assert await remaining(job.id) == []


async def test_a_final_burst_of_output_arrives_before_the_step_is_finished(executor, remaining, busybox_image):
    job = make_job(busybox_image, [{"id": 1, "script": "seq 1 20000"}])

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert hooks.output(1) == [str(n) for n in range(1, 20001)]
    assert hooks.lines_when_finished[1] == 20000


async def test_a_step_outlasting_one_wait_request_is_still_waited_for(executor, remaining, busybox_image, monkeypatch):
    monkeypatch.setattr(docker_engine, "WAIT_SLICE_S", 0.3)  # each wait request times out; the executor asks again
    job = make_job(busybox_image, [{"id": 1, "script": "sleep 1.2; echo done"}])

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert result.steps[0].duration_s is not None and result.steps[0].duration_s >= 1.2
    assert hooks.output(1) == ["done"]


async def _run_until_output(
    executor: DockerExecutor, job: Job, stop: StopSignal, line: str
) -> tuple[asyncio.Task[RunResult], Recorder]:
    hooks = Recorder()
    run = asyncio.create_task(executor.run(job, attempt=1, hooks=hooks, stop=stop))

    async def seen() -> bool:
        if run.done():
            run.result()  # surface an early failure instead of waiting for the deadline
        return line in hooks.output(job.steps[0].id)

    await poll(seen, timeout_s=15)
    return run, hooks


async def test_timeout_kills_the_running_step_and_skips_the_rest(executor, remaining, busybox_image):
    job = make_job(busybox_image, [{"id": 1, "script": "echo started; sleep 30"}, {"id": 2, "script": "echo two"}])
    stop = StopSignal()
    run, hooks = await _run_until_output(executor, job, stop, "started")

    stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason="job timed out after 1 s")
    result = await asyncio.wait_for(run, 15)

    assert result.status is JobStatus.TIMED_OUT
    assert result.reason == "job timed out after 1 s"
    assert statuses(result) == [(1, StepStatus.FAILED), (2, StepStatus.SKIPPED)]
    assert result.steps[0].reason == "killed: job timed out after 1 s"
    assert result.steps[0].exit_code == 137  # SIGKILL
    assert result.steps[1].reason == "skipped: job timed out after 1 s"
    assert hooks.started == [1]
    await release(result)
    assert await remaining(job.id) == []


async def test_cancel_sends_sigterm_first_and_the_step_may_exit_gracefully(executor, remaining, busybox_image):
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    job = make_job(busybox_image, [{"id": 1, "script": script}, {"id": 2, "script": "echo two"}])
    stop = StopSignal()
    run, hooks = await _run_until_output(executor, job, stop, "ready")

    stop.stop(JobStatus.CANCELLED, grace_s=20, reason="cancelled")
    result = await asyncio.wait_for(run, 30)

    assert result.status is JobStatus.CANCELLED
    assert statuses(result) == [(1, StepStatus.FAILED), (2, StepStatus.SKIPPED)]
    assert result.steps[0].reason == "stopped: cancelled"
    assert result.steps[0].exit_code == 0
    assert hooks.output(1) == ["ready", "got TERM"]  # ended by its own trap (exit 0), not by SIGKILL
    await release(result)
    assert await remaining(job.id) == []


async def test_cancel_stops_a_script_that_does_not_trap_sigterm(executor, remaining, busybox_image):
    # As PID 1 a shell ignores SIGTERM and would wait out the whole grace; under docker-init it gets it.
    job = make_job(busybox_image, [{"id": 1, "script": "echo ready; sleep 60"}])
    stop = StopSignal()
    run, _ = await _run_until_output(executor, job, stop, "ready")

    stop.stop(JobStatus.CANCELLED, grace_s=60, reason="cancelled")
    result = await asyncio.wait_for(run, 90)

    assert result.status is JobStatus.CANCELLED
    assert result.steps[0].exit_code == 143  # SIGTERM, not SIGKILL (137) after the grace
    await release(result)
    assert await remaining(job.id) == []


async def test_stop_before_start_runs_nothing(executor, remaining, busybox_image):
    job = make_job(busybox_image, [{"id": 1, "script": "echo one"}])
    stop = StopSignal()
    stop.stop(JobStatus.CANCELLED, grace_s=0, reason="cancelled before it started")

    result, hooks = await run_job(executor, remaining, job, stop)

    assert result.status is JobStatus.CANCELLED
    assert statuses(result) == [(1, StepStatus.SKIPPED)]
    assert hooks.started == [] and hooks.lines == []


async def test_cancelling_the_run_still_removes_its_containers(executor, remaining, busybox_image):
    job = make_job(busybox_image, [{"id": 1, "script": "echo started; sleep 30"}])
    run, _ = await _run_until_output(executor, job, StopSignal(), "started")

    run.cancel()
    await asyncio.sleep(0)  # the run is now removing its containers ...
    run.cancel()  # ... and a second cancel (a hurried shutdown) must not stop that
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 15)

    async def all_removed() -> bool:
        return await remaining(job.id) == []

    await poll(all_removed, timeout_s=15)


async def test_memory_hog_fails_as_out_of_memory(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [{"id": 1, "script": "head -c 200m /dev/zero | tail > /dev/null", "memory_limit": "32M", "memory_swap": "32M"}],
    )

    result, _ = await run_job(executor, remaining, job)

    assert result.status is JobStatus.FAILED
    assert result.steps[0].status is StepStatus.FAILED
    assert result.steps[0].reason == "killed: out of memory (limit 32M)"
    assert result.steps[0].exit_code == 137


async def test_no_network_no_new_privileges_and_few_capabilities(executor, remaining, busybox_image):
    script = "ip -o link; grep -E '^(NoNewPrivs|CapEff):' /proc/self/status"
    job = make_job(busybox_image, [{"id": 1, "script": script}])

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    links, status = hooks.output(1)[:-2], dict(line.split(":\t") for line in hooks.output(1)[-2:])
    assert len(links) == 1 and links[0].startswith("1: lo:")  # network "none": loopback only
    assert status["NoNewPrivs"] == "1"
    # CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7: nothing else (no NET_RAW, MKNOD …).
    assert status["CapEff"] == "00000000000000fb"


# cgroup v2 files first, then v1: "<quota> <period>", memory bytes, pids.
LIMITS_SCRIPT = """
if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max
else
  echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
  cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max
fi
"""


async def test_limits_are_applied(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [
            {"id": 1, "script": LIMITS_SCRIPT, "cpu_limit": 0.5, "memory_limit": "48M", "pids_limit": 32},
            # The operator's maximum may be more cores than this host has: the step still runs.
            {"id": 2, "script": "true", "cpu_limit": LimitSettings().max_cpu},
        ],
    )

    result, hooks = await run_job(executor, remaining, job)

    assert result.status is JobStatus.SUCCEEDED
    assert hooks.output(1) == ["50000 100000", str(48 * 1024**2), "32"]


async def test_pids_limit_stops_a_fork_loop(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [{"id": 1, "script": "for i in $(seq 64); do sleep 2 & done; wait; echo all started", "pids_limit": 32}],
    )

    result, hooks = await asyncio.wait_for(run_job(executor, remaining, job), 30)

    assert result.status is JobStatus.FAILED
    assert result.steps[0].exit_code not in (None, 0)
    assert "all started" not in hooks.output(1)
    assert any("can't fork" in line for line in hooks.output(1, "stderr"))


async def test_a_step_that_cannot_start_fails_with_the_engine_reason(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [
            {"id": 1, "script": "echo one", "network": "hades-test-no-such-network", "continue_on_error": True},
            {"id": 2, "script": "echo two"},
        ],
    )

    result, hooks = await asyncio.wait_for(run_job(executor, remaining, job), 30)

    assert statuses(result) == [(1, StepStatus.FAILED), (2, StepStatus.SUCCEEDED)]
    assert result.steps[0].reason is not None
    assert result.steps[0].reason.startswith("could not start: ")
    assert "hades-test-no-such-network" in result.steps[0].reason
    assert hooks.started == [2]


async def test_missing_image_is_a_job_error_and_runs_nothing(executor, remaining, busybox_image):
    job = make_job(
        busybox_image,
        [{"id": 1, "script": "echo one"}, {"id": 2, "image": "hades-test-does-not-exist:1", "script": "echo two"}],
    )
    hooks = Recorder()

    with pytest.raises(JobError, match="image 'hades-test-does-not-exist:1' is not available: pull failed"):
        await executor.run(job, attempt=1, hooks=hooks, stop=StopSignal())

    assert hooks.started == []  # images are checked before the first step runs
    assert await remaining(job.id) == []


async def test_leftovers_are_found_and_cleaned_up(executor, remaining, busybox_image, docker_client):
    job_id, neighbours_job = new_job_id(), new_job_id()
    labels = {LABEL_JOB_ID: job_id, "hades.attempt": "1", LABEL_SCOPE: SCOPE}

    def leave_behind() -> None:
        docker_client.volumes.create(name=f"hades-{job_id}-a1", labels=labels)
        docker_client.containers.create(busybox_image, ["true"], name=f"hades-{job_id}-a1-s1", labels=labels)
        # Another deployment on the same engine: not ours to sweep.
        docker_client.volumes.create(
            name=f"hades-{neighbours_job}-a1", labels={LABEL_JOB_ID: neighbours_job, LABEL_SCOPE: "other"}
        )

    await asyncio.to_thread(leave_behind)
    assert len(await remaining(job_id)) == 2

    found = await executor.leftovers()
    assert job_id in found and neighbours_job not in found
    await executor.cleanup(neighbours_job)
    await executor.cleanup(job_id)
    assert await remaining(job_id) == []
    assert job_id not in await executor.leftovers()
    await executor.cleanup(job_id)  # idempotent


async def test_a_new_attempt_removes_what_an_earlier_one_left(executor, remaining, busybox_image, docker_client):
    job = make_job(busybox_image, [{"id": 1, "script": "echo hi"}])
    labels = {LABEL_JOB_ID: job.id, "hades.attempt": "1"}
    await asyncio.to_thread(docker_client.volumes.create, name=f"hades-{job.id}-a1", labels=labels)

    result = await executor.run(job, attempt=2, hooks=Recorder(), stop=StopSignal())

    assert result.status is JobStatus.SUCCEEDED
    await release(result)
    assert await remaining(job.id) == []


async def test_unreachable_engine_is_unavailable():
    # TCP, not a missing unix socket: docker-py leaks the socket of a failed unix connect (a ResourceWarning).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, and nothing listens there after the close
    settings = Settings.from_env({"HADES_DOCKER_HOST": f"tcp://127.0.0.1:{port}"})

    with pytest.raises(Unavailable, match="docker engine not reachable"):
        await DockerExecutor.create(settings)


async def test_check_reports_a_working_engine(executor):
    assert await executor.check() is None


async def test_the_engine_keeps_a_capped_copy_of_the_output_and_an_init_process(
    executor, remaining, busybox_image, docker_client
):
    job = make_job(busybox_image, [{"id": 1, "script": "echo ready; sleep 30"}])
    stop = StopSignal()
    run, _ = await _run_until_output(executor, job, stop, "ready")

    def host_config() -> dict[str, Any]:
        [container] = docker_client.containers.list(filters={"label": f"{LABEL_JOB_ID}={job.id}"})
        return dict(container.attrs["HostConfig"])

    config = await asyncio.to_thread(host_config)
    stop.stop(JobStatus.CANCELLED, grace_s=0, reason="cancelled")
    result = await asyncio.wait_for(run, 30)

    assert config["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "1", "max-size": "10m"}}
    assert config["Init"] is True
    await release(result)
    assert await remaining(job.id) == []
