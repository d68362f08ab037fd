"""What a job made is removed only once its end is stored (``RunResult.release``, called by settle after the terminal
event is stored): a job whose end NATS refuses is handed back with its finished containers in place, and the
redelivery adopts them (Docker: their output and exit codes; Kubernetes: the finished Job) instead of running the
job again. A redelivery that finds the
job already ended removes what the earlier attempt left."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from functions.dispatch import jobrun, statusqueue
from functions.dispatch.executors.base import Capabilities, RunHooks, RunResult, StepResult, StopSignal
from functions.dispatch.executors.docker import LABEL_JOB_ID, DockerExecutor
from functions.dispatch.executors.k8s.executor import KubernetesExecutor
from runtime import eventlog, messaging, subjects
from runtime.errors import Unavailable
from runtime.jobs import Job, JobStatus, StepStatus, job_from_document, new_job_id, utc_now
from runtime.settings import LimitSettings
from tests.fakes import FakeDelivery
from tests.faults.harness import RUN_TOKEN
from tests.helpers import make_settings, poll
from tests.k8sfixtures import K8S_IMAGE, k8s_leftovers
from tests.observe import StoredEvents


def message_of(job: Job, attempt: int) -> FakeDelivery:
    return FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=attempt)


async def handle(conn: messaging.Messaging, executor: Any, msg: FakeDelivery, **env: str) -> None:
    settings = make_settings("nats://unused", **env)
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="test")
    await jobrun.handle(deps, msg, stop=StopSignal())  # type: ignore[arg-type]


def refuse_the_end_once(conn: messaging.Messaging, job: Job, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """NATS refuses the job's terminal event until the first attempt has given up on it; returns the refused
    statuses."""
    real_publish = conn.publish
    refused: list[str] = []

    async def publish(subject: str, payload: bytes, **kwargs: Any) -> Any:
        event = json.loads(payload) if subject == subjects.status_subject(job.id) else {}
        if event.get("kind") == "job" and event.get("status") == "succeeded" and event.get("attempt") == 1:
            refused.append(event["status"])
            raise Unavailable("the message broker is not reachable")
        return await real_publish(subject, payload, **kwargs)

    monkeypatch.setattr(conn, "publish", publish)
    monkeypatch.setattr(statusqueue, "TERMINAL_PUBLISH_ATTEMPTS", 2)
    return refused


@pytest.fixture
async def docker_executor(docker_client: Any) -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.create(make_settings("nats://unused"))
    yield executor
    await executor.close()


def made_by(client: Any, job_id: str) -> list[str]:
    selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
    found = [c.name for c in client.containers.list(all=True, sparse=True, filters=selector)]
    return found + [v.name for v in client.volumes.list(filters=selector)]


@pytest.mark.docker
@pytest.mark.timeout(120)
async def test_a_job_whose_end_was_refused_is_adopted_by_its_redelivery_not_run_again(
    conn: messaging.Messaging,
    stored: StoredEvents,
    monkeypatch: pytest.MonkeyPatch,
    docker_executor: DockerExecutor,
    docker_client: Any,
    busybox_image: str,
) -> None:
    steps = [
        {"id": 1, "image": busybox_image, "script": f"echo {RUN_TOKEN}; echo one > /shared/f"},
        {"id": 2, "image": busybox_image, "script": f"echo {RUN_TOKEN}; cat /shared/f"},
    ]
    document = {"name": "end refused", "steps": steps}
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
    refused = refuse_the_end_once(conn, job, monkeypatch)

    first = message_of(job, attempt=1)
    await handle(conn, docker_executor, first)

    assert first.done == ["nak"] and refused  # never acked without a stored end
    assert await asyncio.to_thread(made_by, docker_client, job.id)  # and what it made is kept for the redelivery

    second = message_of(job, attempt=2)
    await handle(conn, docker_executor, second)

    assert second.done == ["ack"]
    last = await eventlog.latest_status(conn, job.id)
    assert last is not None and last["status"] == "succeeded" and last["attempt"] == 2, last
    lines = await stored.lines(job.id)
    tokens = {line for line in lines if line.startswith("run ")}  # each run of a step prints a token of its own
    assert len(tokens) == 2, lines  # step 1 and step 2 each ran once; attempt 2 read their output again
    assert "one" in lines
    assert await asyncio.to_thread(made_by, docker_client, job.id) == []  # removed once the end was stored


K8S_ENV = {"HADES_EXECUTOR": "kubernetes", "HADES_K8S_REQUEST_FRACTION": "0.01"}  # a 2-core test node


@pytest.mark.k8s
@pytest.mark.timeout(240)
async def test_a_kubernetes_job_whose_end_was_refused_is_adopted_by_its_redelivery_not_run_again(
    conn: messaging.Messaging,
    stored: StoredEvents,
    monkeypatch: pytest.MonkeyPatch,
    k8s_client: Any,
    k8s_namespace: str,
) -> None:
    env = {**K8S_ENV, "HADES_K8S_NAMESPACE": k8s_namespace}
    executor = await KubernetesExecutor.create(make_settings("nats://unused", **env))
    try:
        document = {"name": "end refused", "steps": [{"id": 1, "image": K8S_IMAGE, "script": f"echo {RUN_TOKEN}"}]}
        job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
        refuse_the_end_once(conn, job, monkeypatch)

        first = message_of(job, attempt=1)
        await handle(conn, executor, first, **env)
        assert first.done == ["nak"]
        assert await asyncio.to_thread(k8s_leftovers, k8s_client, k8s_namespace, job.id)  # the Job is kept

        second = message_of(job, attempt=2)
        await handle(conn, executor, second, **env)
        assert second.done == ["ack"]
        last = await eventlog.latest_status(conn, job.id)
        assert last is not None and last["status"] == "succeeded" and last["attempt"] == 2, last
        lines = await stored.lines(job.id)
        assert len({line for line in lines if line.startswith("run ")}) == 1, lines  # the Job adopted, not rerun

        async def gone() -> bool:
            return not await asyncio.to_thread(k8s_leftovers, k8s_client, k8s_namespace, job.id)

        await poll(gone, timeout_s=60, interval_s=0.5)
    finally:
        await executor.close()


class LeftoversExecutor:
    """Runs nothing; records which jobs' leftovers it was asked to remove."""

    name = "fake"
    capabilities = Capabilities()

    def __init__(self, *, releases: bool = True) -> None:
        self.releases = releases
        self.runs = 0
        self.released: list[str] = []
        self.cleaned: list[str] = []

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs += 1
        step = job.steps[0]
        await hooks.step_started(step, started_at=utc_now())
        await hooks.step_finished(StepResult(step.id, StepStatus.SUCCEEDED, exit_code=0))

        async def release() -> None:
            self.released.append(job.id)
            raise Unavailable("docker engine: connection refused")  # never fails the settle

        if not self.releases:
            return RunResult(status=JobStatus.SUCCEEDED, steps=())
        return RunResult(status=JobStatus.SUCCEEDED, steps=(), release=release)

    async def cleanup(self, job_id: str) -> None:
        self.cleaned.append(job_id)


def a_job() -> Job:
    document = {"name": "j", "steps": [{"id": 1, "image": "x", "script": "true"}]}
    return job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())


async def test_a_run_is_released_only_after_its_end_is_stored_and_a_failed_release_still_acks(
    conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job()
    executor = LeftoversExecutor()
    refuse_the_end_once(conn, job, monkeypatch)

    first = message_of(job, attempt=1)
    await handle(conn, executor, first)
    assert first.done == ["nak"] and executor.released == []  # end not stored: nothing removed

    second = message_of(job, attempt=2)
    await handle(conn, executor, second)
    assert second.done == ["ack"] and executor.released == [job.id]


async def test_a_redelivery_of_an_ended_job_removes_what_the_earlier_attempt_left(
    conn: messaging.Messaging,
) -> None:
    job = a_job()
    executor = LeftoversExecutor(releases=False)  # as if its dispatcher died after storing the end
    await handle(conn, executor, message_of(job, attempt=1))
    assert executor.cleaned == []  # the usual path releases; it does not sweep by label

    redelivered = message_of(job, attempt=2)  # and before the ack
    await handle(conn, executor, redelivered)

    assert redelivered.done == ["ack"] and executor.runs == 1
    assert executor.cleaned == [job.id]
