"""The Kubernetes executor's own logic against a fake API server (no cluster): what an API outage, a quiet log,
a transient kubelet error and a duplicate run of one job do to a run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import urllib3.exceptions

from functions.dispatch.executors.base import RunResult, StepResult, StopSignal
from functions.dispatch.executors.k8s import api as k8s_api
from functions.dispatch.executors.k8s import executor as k8s_executor
from functions.dispatch.executors.k8s import manifest, podlogs, podstate
from functions.dispatch.executors.k8s import progress as k8s_progress
from runtime import jobs
from runtime.errors import JobError, Unavailable
from runtime.jobs import Job, JobStatus, Step
from runtime.settings import Settings
from tests.helpers import poll

UID = "uid-1"


class FakeApi:
    """Answers the executor's requests: creates succeed (or conflict), reads fail while ``outage`` is set."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(4)
        self.requests = 0
        self.outage = False
        self.exists = False  # a Job of this name exists: a create conflicts and adopts it
        self.failed_reads = 0
        self.calls: list[tuple[str, str]] = []
        self.pods: list[dict[str, Any]] = []

    async def request(
        self, method: str, path: str, *, query: Any = (), body: Any = None, name: str | None = None
    ) -> dict[str, Any]:
        self.requests += 1
        self.calls.append((method, path))
        if method == "POST":
            if self.exists:
                raise k8s_api.ApiError(409, "AlreadyExists", "exists")
            self.exists = True
            return {"metadata": {"uid": UID, "name": body["metadata"]["name"]}}
        if method == "DELETE":
            return {}
        if self.outage:
            self.failed_reads += 1
            raise Unavailable("kubernetes API: 503 ServiceUnavailable: apiserver restarting")
        if path == k8s_api.JOB:
            return {"metadata": {"uid": UID, "name": name}}
        return {"items": list(self.pods)}

    def wait_token(self) -> None:
        pass

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise k8s_api.ApiError(404, "NotFound", "no log in this test")

    def send(self, *args: Any, **kwargs: Any) -> Any:
        raise k8s_api.Retry("no watch in this test")

    async def close(self) -> None:
        self.pool.shutdown(wait=False)


class Hooks:
    def __init__(self) -> None:
        self.finished: list[StepResult] = []

    async def step_started(self, step: Step, *, started_at: str) -> None:
        pass

    async def step_finished(self, result: StepResult) -> None:
        self.finished.append(result)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        pass


@pytest.fixture
def k8s_settings() -> Settings:
    return Settings.from_env({"HADES_EXECUTOR": "kubernetes"})


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.pool.shutdown(wait=False)


def make_job(settings: Settings, steps: int = 1) -> Job:
    document = {
        "name": "unit",
        "steps": [{"id": i, "image": "local/busybox:test", "script": "sleep 3600"} for i in range(1, steps + 1)],
    }
    return jobs.job_from_document(
        document, job_id=jobs.new_job_id(), limits=settings.limits, submitted_at=jobs.utc_now()
    )


def pod(job: Job, *, states: dict[int, dict[str, Any]] | None = None, phase: str = "Running") -> dict[str, Any]:
    statuses = [{"name": f"step-{step_id}", "state": state} for step_id, state in (states or {}).items()]
    return {
        "metadata": {
            "name": "pod-1",
            "labels": {manifest.LABEL_JOB_ID: job.id},
            "ownerReferences": [{"kind": "Job", "uid": UID}],
        },
        "status": {"phase": phase, "containerStatuses": statuses},
    }


TERMINATED_OK = {
    "terminated": {"exitCode": 0, "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:01Z"}
}


# -- 1: a failed safety-net re-read is only an observation --------------------------------------------------------


async def test_an_api_outage_during_the_resync_does_not_end_the_run(
    k8s_settings: Settings, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_progress, "RESYNC_S", 0.1)
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    run = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(executor._follows.get(job.id)))
    show(executor, api, pod(job))
    api.outage = True
    await poll(lambda: _true(api.failed_reads >= 3))  # several re-reads failed: the run goes on
    assert not run.done(), run.exception() if run.done() else None
    api.outage = False
    show(executor, api, pod(job, states={1: TERMINATED_OK}, phase="Succeeded"))
    result: RunResult = await asyncio.wait_for(run, 10)
    assert result.status is JobStatus.SUCCEEDED
    assert ("DELETE", k8s_api.JOB) not in api.calls  # kept until dispatch has stored the job's end
    assert result.release is not None
    await result.release()
    assert ("DELETE", k8s_api.JOB) in api.calls  # then the ended job's Job is removed, as usual
    await executor.close()


async def test_an_adopted_job_survives_an_outage_on_its_first_read(
    k8s_settings: Settings, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_progress, "RESYNC_S", 0.1)
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    api.exists, api.outage = True, True  # the Job is there (a crashed dispatcher's); reading its pod fails
    original = api.request

    async def conflict_then_outage(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET" and path == k8s_api.JOB and not api.failed_reads:
            return {"metadata": {"uid": UID, "name": kwargs.get("name")}}  # the adopting read itself works
        return await original(method, path, **kwargs)

    api.request = conflict_then_outage  # type: ignore[method-assign]
    run = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(api.failed_reads >= 2))
    assert not run.done(), run.exception() if run.done() else None
    api.outage = False
    show(executor, api, pod(job, states={1: TERMINATED_OK}, phase="Succeeded"))
    result: RunResult = await asyncio.wait_for(run, 10)
    assert result.status is JobStatus.SUCCEEDED
    await executor.close()


# -- 2: quiet logs are followed for as long as the step runs ------------------------------------------------------


class QuietStream:
    """One open of a followed log: its lines, then (``fail_after``) a read timeout or (``broken``) a broken stream."""

    def __init__(self, lines: list[bytes], *, fail_after: bool = False, broken: bool = False) -> None:
        self.lines, self.fail_after, self.broken = lines, fail_after, broken

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        yield from self.lines
        if self.fail_after:
            raise urllib3.exceptions.ReadTimeoutError(None, "/log", "Read timed out.")  # type: ignore[arg-type]
        if self.broken:
            raise urllib3.exceptions.ProtocolError("Connection broken: connection reset")

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class LogApi:
    def __init__(self, streams: list[QuietStream]) -> None:
        self.pool = ThreadPoolExecutor(1)
        self.streams = streams
        self.queries: list[Any] = []

    def wait_token(self) -> None:
        pass

    def open(self, *args: Any, query: Any = (), **kwargs: Any) -> Any:
        self.queries.append(query)
        if not self.streams:
            raise k8s_api.ApiError(404, "NotFound", "pod gone")
        return self.streams.pop(0)


async def _read_log(api: LogApi) -> list[str]:
    got: list[str] = []
    door: Any = api
    reader = podlogs.StepLog(door, pod="p", container="c", emit=lambda b, at: got.extend(m for _, m in b), job_id="j")
    reader.start(asyncio.get_running_loop())
    assert reader.future is not None
    await asyncio.wait_for(reader.future, 10)
    api.pool.shutdown(wait=False)
    return got


async def test_a_log_quiet_for_many_read_timeouts_is_still_followed() -> None:
    quiet = [QuietStream([], fail_after=True) for _ in range(podlogs.MAX_FAILURES + 5)]
    api = LogApi([*quiet, QuietStream([b"2026-12-01T10:00:00.000000001Z result: ok\n"])])
    assert await _read_log(api) == ["result: ok"]


async def test_a_log_that_keeps_breaking_without_lines_is_given_up() -> None:
    broken = [QuietStream([], broken=True) for _ in range(podlogs.MAX_FAILURES)]
    api = LogApi([*broken, QuietStream([b"2026-12-01T10:00:00.000000001Z never read\n"])])
    assert await _read_log(api) == []
    assert len(api.queries) == podlogs.MAX_FAILURES


async def test_a_line_between_breaks_resets_the_count() -> None:
    line = b"2026-12-01T10:00:00.000000001Z alive\n"
    broken = [QuietStream([], broken=True) for _ in range(podlogs.MAX_FAILURES - 1)]
    end = QuietStream([b"2026-12-01T10:00:09Z end\n"])
    api = LogApi([*broken, QuietStream([line], broken=True), *broken, end])
    assert await _read_log(api) == ["alive", "end"]


async def test_a_reopened_log_neither_loses_nor_repeats_lines() -> None:
    first = b"2026-12-01T10:00:00.000000001Z one\n"
    second = b"2026-12-01T10:00:05.000000001Z two\n"
    api = LogApi([QuietStream([first], fail_after=True), QuietStream([first, second])])
    assert await _read_log(api) == ["one", "two"]
    assert ("sinceTime", "2026-12-01T10:00:00Z") in api.queries[1]  # reopened from the last line's time


# -- 3: CreateContainerError is waited out, within bounds ---------------------------------------------------------


def _waiting(reason: str, message: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


async def _seen(executor: k8s_executor.KubernetesExecutor, job_id: str) -> bool:
    """Every run of the job took in the last pod change (and is waiting again)."""
    follows = _follows_of(executor, job_id)
    return bool(follows) and not any(f.changed.is_set() for f in follows)


async def test_a_transient_create_container_error_is_waited_out(
    k8s_settings: Settings, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_progress, "CREATE_ERROR_WAIT_S", 30.0)
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    run = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(executor._follows.get(job.id)))
    show(executor, api, pod(job, states={1: _waiting("CreateContainerError", "name already in use")}))
    await poll(lambda: _seen(executor, job.id))
    assert not run.done(), run.exception() if run.done() else None
    show(executor, api, pod(job, states={1: TERMINATED_OK}, phase="Succeeded"))
    result: RunResult = await asyncio.wait_for(run, 10)
    assert result.status is JobStatus.SUCCEEDED
    await executor.close()


async def test_a_lasting_create_container_error_fails_the_job_with_the_kubelets_message(
    k8s_settings: Settings, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_progress, "CREATE_ERROR_WAIT_S", 0.2)
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    run = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(executor._follows.get(job.id)))
    show(executor, api, pod(job, states={1: _waiting("CreateContainerError", "no such workdir /x")}))
    with pytest.raises(JobError, match=r"CreateContainerError: no such workdir /x \(not resolved within 0.2 s\)"):
        await asyncio.wait_for(run, 10)
    await executor.close()


def test_a_config_error_still_fails_at_once() -> None:
    assert "CreateContainerConfigError" in podstate.CONFIG_BAD
    assert "CreateContainerError" not in podstate.CONFIG_BAD


# -- 4: two runs of one job in one dispatcher ---------------------------------------------------------------------


async def test_two_runs_of_one_job_both_hear_the_watch(k8s_settings: Settings, api: FakeApi) -> None:
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings, steps=2)
    first = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(api.exists))
    second = asyncio.ensure_future(executor.run(job, attempt=2, hooks=Hooks(), stop=StopSignal()))  # adopts it
    await poll(lambda: _true(len(_follows_of(executor, job.id)) == 2))
    show(executor, api, pod(job, states={1: TERMINATED_OK}))
    await poll(lambda: _seen(executor, job.id))
    show(executor, api, pod(job, states={1: TERMINATED_OK, 2: TERMINATED_OK}, phase="Succeeded"))
    results = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert [r.status for r in results] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert job.id not in executor._follows
    await executor.close()


async def test_the_first_run_ending_leaves_the_second_runs_entry(k8s_settings: Settings, api: FakeApi) -> None:
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    first_stop = StopSignal()
    first = asyncio.ensure_future(executor.run(job, attempt=1, hooks=Hooks(), stop=first_stop))
    await poll(lambda: _true(api.exists))
    second = asyncio.ensure_future(executor.run(job, attempt=2, hooks=Hooks(), stop=StopSignal()))
    await poll(lambda: _true(len(_follows_of(executor, job.id)) == 2))
    first_stop.stop(JobStatus.CANCELLED, grace_s=0, reason="stopped in the test")
    assert (await asyncio.wait_for(first, 10)).status is JobStatus.CANCELLED
    assert len(_follows_of(executor, job.id)) == 1  # the second run still follows its pod
    show(executor, api, pod(job, states={1: TERMINATED_OK}, phase="Succeeded"))
    assert (await asyncio.wait_for(second, 10)).status is JobStatus.SUCCEEDED
    assert job.id not in executor._follows
    await executor.close()


def show(executor: k8s_executor.KubernetesExecutor, api: FakeApi, pod: dict[str, Any]) -> None:
    """The pod changed: the API server lists it so, and the watch reports it."""
    api.pods = [pod]
    executor._on_pod("MODIFIED", pod)


def _follows_of(executor: k8s_executor.KubernetesExecutor, job_id: str) -> list[Any]:
    entry: Any = executor._follows.get(job_id)
    if entry is None:
        return []
    return list(entry) if isinstance(entry, (list, set, tuple)) else [entry]


async def _true(value: Any) -> bool:
    return bool(value)


# -- issue 20: a Job made afresh on a redelivery gets what is left of the job's deadline ----------------------------


async def test_a_job_made_afresh_for_a_redelivery_keeps_the_deadline_of_its_first_start(
    k8s_settings: Settings, api: FakeApi
) -> None:
    bodies: list[dict[str, Any]] = []
    real_request = api.request

    async def request(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "POST":
            bodies.append(kwargs["body"])
        return await real_request(method, path, **kwargs)

    api.request = request  # type: ignore[method-assign]
    executor = k8s_executor.KubernetesExecutor(api, settings=k8s_settings)  # type: ignore[arg-type]
    job = make_job(k8s_settings)
    stop = StopSignal()
    stop.deadline_at = time.time() + 5  # the first attempt started timeout_s - 5 s ago
    run = asyncio.ensure_future(executor.run(job, attempt=2, hooks=Hooks(), stop=stop))
    await poll(lambda: _true(bodies))
    show(executor, api, pod(job, states={1: TERMINATED_OK}, phase="Succeeded"))
    await asyncio.wait_for(run, 10)
    await executor.close()

    spec = bodies[0]["spec"]
    assert job.timeout_s > 5 and 1 <= spec["template"]["spec"]["activeDeadlineSeconds"] <= 5
    assert spec["activeDeadlineSeconds"] == spec["template"]["spec"]["activeDeadlineSeconds"] + 30
