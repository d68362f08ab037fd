"""Status events through a NATS outage: a step's ``running`` and final status that cannot be stored are kept and
sent again, in order and once (same ``Nats-Msg-Id``), before any later event and before the terminal one.

The unit-level tests wrap a real connection's ``publish`` to fail on cue; the outage tests give each test a
nats-server of its own (``own_nats``), stopped and started again with its store while the job runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from functions.dispatch import jobrun, statusqueue
from functions.dispatch.executors.base import Capabilities, RunHooks, RunResult, StepResult, StopSignal
from functions.dispatch.executors.docker import LABEL_JOB_ID, LABEL_STEP_ID
from functions.dispatch.handlers import create_app as create_dispatch
from functions.dispatch.logsink import LogSink
from functions.dispatch.reporter import Reporter
from functions.logs import records
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from runtime import events, messaging, subjects
from runtime.errors import Unavailable
from runtime.jobs import Job, JobStatus, StepStatus, job_from_document, new_job_id, utc_now
from runtime.settings import LimitSettings
from tests.fakes import FakeDelivery, ended_record
from tests.helpers import make_settings, poll
from tests.natsserver import NatsServer
from tests.observe import StoredEvents, stored_on

STEPS = 3
"""Events of a job of three steps: 1 job running, 2-7 each step's running and succeeded, 8 the terminal."""
ALL_SEQS = list(range(1, 2 * STEPS + 3))


class StepsExecutor:
    """Runs every step at once, successfully; ``between`` is awaited before each step's start and end."""

    name = "fake"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.calls = 0

    async def between(self) -> None:
        self.calls += 1

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        for step in job.steps:
            await self.between()
            await hooks.step_started(step, started_at=utc_now())
            await self.between()
            await hooks.step_finished(StepResult(step.id, StepStatus.SUCCEEDED, exit_code=0))
        return RunResult(status=JobStatus.SUCCEEDED, steps=())

    async def cleanup(self, job_id: str) -> None:
        pass


def a_job(steps: int = STEPS) -> Job:
    document = {"name": "j", "steps": [{"id": i, "image": "x", "script": "true"} for i in range(1, steps + 1)]}
    return job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())


def message_of(job: Job) -> FakeDelivery:
    return FakeDelivery(data=json.dumps(job.to_message()).encode())


async def handle(conn: messaging.Messaging, executor: Any, msg: FakeDelivery, nats_url: str = "nats://unused") -> None:
    settings = make_settings(nats_url)
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="test")
    await jobrun.handle(deps, msg, stop=StopSignal())  # type: ignore[arg-type]


class Broker:
    """Wraps ``conn.publish`` for one job's status subject: each try's seq is noted, and the next ``failures``
    tries fail — ``"lost"`` never stored, ``"stored"`` stored but its answer lost (a retry must not store it twice)."""

    def __init__(self, conn: messaging.Messaging, job: Job, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = conn.publish
        self.subject = subjects.status_subject(job.id)
        self.tries: list[int] = []
        self.failures: list[str] = []
        self.down = False
        monkeypatch.setattr(conn, "publish", self.publish)

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> messaging.Published:
        if subject != self.subject:
            return await self.real(subject, payload, **kwargs)
        self.tries.append(json.loads(payload)["seq"])
        if self.down:
            raise Unavailable("the message broker is not reachable")
        if self.failures:
            if self.failures.pop(0) == "stored":
                await self.real(subject, payload, **kwargs)
            raise Unavailable("the message broker is not reachable")
        return await self.real(subject, payload, **kwargs)


def reduced(stored_events: list[dict[str, Any]]) -> records.JobRecord:
    """The record the logs function folds from the stored events, in stream order."""
    record: records.JobRecord | None = None
    for event in stored_events:
        record = records.apply_status(record, event, now="t") or record  # type: ignore[arg-type]
    assert record is not None
    return record


def assert_complete(stored_events: list[dict[str, Any]]) -> None:
    """Every event of the attempt stored once, in seq order, the terminal last; the record shows every step done."""
    assert [e["seq"] for e in stored_events] == ALL_SEQS
    assert stored_events[-1]["kind"] == "job" and stored_events[-1]["status"] == "succeeded"
    record = reduced(stored_events)
    assert record["status"] == "succeeded"
    assert [(s["id"], s["status"]) for s in record["steps"]] == [(i, "succeeded") for i in range(1, STEPS + 1)]


async def test_failed_status_events_are_sent_again_in_order_and_stored_once(
    conn: messaging.Messaging, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job()
    broker = Broker(conn, job, monkeypatch)
    broker.failures = ["lost", "stored", "lost"]  # the second try is stored, but its answer is lost
    msg = message_of(job)

    await handle(conn, StepsExecutor(), msg)

    # One try per publish while the broker fails (as before: no step waits longer), then the kept ones first.
    assert broker.tries == [1, 1, 1, *ALL_SEQS]
    assert msg.done == ["ack"]
    assert_complete(await stored.status(job.id))


async def test_events_kept_until_the_end_are_stored_before_the_terminal_one(
    conn: messaging.Messaging, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job()
    broker = Broker(conn, job, monkeypatch)
    non_terminal = len(ALL_SEQS) - 1
    broker.failures = ["lost"] * (non_terminal + 1)  # every publish of the run fails, and the first retry at the end
    msg = message_of(job)

    await handle(conn, StepsExecutor(), msg)

    assert broker.tries == [1] * (non_terminal + 1) + ALL_SEQS
    assert msg.done == ["ack"]
    assert_complete(await stored.status(job.id))


async def test_events_still_unstored_when_the_job_ends_hand_it_back_and_the_terminal_is_not_published(
    conn: messaging.Messaging, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job()
    broker = Broker(conn, job, monkeypatch)
    broker.down = True
    monkeypatch.setattr(statusqueue, "TERMINAL_PUBLISH_ATTEMPTS", 2)
    msg = message_of(job)

    await handle(conn, StepsExecutor(), msg)

    assert msg.done == ["nak"]  # the existing path: never acked without a stored end
    assert set(broker.tries) == {1}  # the first kept event never went, so nothing after it was tried
    assert await stored.status(job.id) == []


async def test_kept_events_are_bounded_dropping_the_oldest_step_events(
    conn: messaging.Messaging, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statusqueue, "MAX_UNSENT_STATUS_EVENTS", 4)
    job = a_job()
    broker = Broker(conn, job, monkeypatch)
    sink = LogSink(conn, job_id=job.id, attempt=1, settings=make_settings("nats://unused").dispatch)
    run = Reporter(conn, job, 1, sink)
    broker.down = True
    await run.job_status(JobStatus.RUNNING)  # 1
    for step in job.steps[:2]:
        await run.step_status(step, StepStatus.RUNNING)  # 2, 4
        await run.step_status(step, StepStatus.SUCCEEDED)  # 3, 5
    await run.step_status(job.steps[2], StepStatus.RUNNING)  # 6

    assert [e["seq"] for e in run.statuses.unsent] == [1, 4, 5, 6]  # the job event kept, the oldest step ones dropped
    assert run.statuses.lost_status_events == 2
    broker.down = False
    await run.step_status(job.steps[2], StepStatus.SUCCEEDED)  # 7
    await sink.close()

    assert not run.statuses.unsent
    assert [e["seq"] for e in await stored.status(job.id)] == [1, 4, 5, 6, 7]


class OutageExecutor(StepsExecutor):
    """Step 1 starts with NATS up; its end, step 2 and step 3's start happen with NATS stopped; step 3 ends once
    NATS is back. ``at`` tells the test where the run is; ``go`` lets it on."""

    def __init__(self) -> None:
        super().__init__()
        self.at = asyncio.Queue[int]()
        self.go = asyncio.Queue[None]()

    async def between(self) -> None:
        self.calls += 1
        if self.calls in (2, 6):  # before step 1's end (NATS goes away), before step 3's end (NATS is back)
            await self.at.put(self.calls)
            await self.go.get()


async def stored_status(server: NatsServer, job_id: str) -> list[dict[str, Any]]:
    async with stored_on(server.url) as stored:
        return await stored.status(job_id)


async def connected_is(conn: messaging.Messaging, up: bool) -> None:
    async def reached() -> bool:
        return conn.connected is up

    await poll(reached, timeout_s=15)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_steps_that_change_status_while_nats_is_down_are_all_stored_in_order(
    own_nats: NatsServer, own_conn: messaging.Messaging
) -> None:
    job = a_job()
    executor = OutageExecutor()
    msg = message_of(job)
    task = asyncio.create_task(handle(own_conn, executor, msg, own_nats.url))

    assert await asyncio.wait_for(executor.at.get(), 30) == 2  # step 1 runs, its running event stored
    own_nats.stop()
    await connected_is(own_conn, False)
    await executor.go.put(None)
    assert await asyncio.wait_for(executor.at.get(), 30) == 6  # step 1's end to step 3's start: NATS away
    own_nats.start()
    await connected_is(own_conn, True)
    await executor.go.put(None)
    await asyncio.wait_for(task, 60)

    assert msg.done == ["ack"]
    assert_complete(await stored_status(own_nats, job.id))


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_job_whose_steps_end_while_nats_is_down_ends_with_every_step_finished(
    own_nats: NatsServer, aiohttp_client: Any, aiohttp_server: Any, busybox_image: str, docker_client: Any
) -> None:
    """NATS away from step 1 to step 3: before, the record ended ``succeeded`` with steps 1 and 2 still running."""
    settings = make_settings(own_nats.url, HADES_PULL_TIMEOUT_SECONDS="0.5", HADES_NATS_PUBLISH_TIMEOUT_SECONDS="1")
    await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit(settings))
    # No output: a step's end waits for its buffered lines (up to 10 s), which would hold step 2 until NATS is back.
    steps = [{"id": i, "image": busybox_image, "script": "sleep 2"} for i in range(1, STEPS + 1)]
    response = await submit.post("/jobs", json={"name": "status-outage", "steps": steps})
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]

    def step_started(step_id: int) -> bool:
        selector = {"label": [f"{LABEL_JOB_ID}={job_id}", f"{LABEL_STEP_ID}={step_id}"]}
        return bool(docker_client.containers.list(all=True, filters=selector))

    async def started(step_id: int) -> bool:
        return await asyncio.to_thread(step_started, step_id)

    await poll(lambda: started(1), timeout_s=60, interval_s=0.1)
    own_nats.stop()
    await poll(lambda: started(3), timeout_s=30, interval_s=0.1)  # step 1's end and all of step 2 with NATS away
    own_nats.start()

    logs = await aiohttp_client(create_logs(settings))

    record = await ended_record(logs, job_id)
    assert record is not None and record["status"] == "succeeded", record
    assert [(s["id"], s["status"]) for s in record["steps"]] == [(i, "succeeded") for i in range(1, STEPS + 1)]

    stored_events = await stored_status(own_nats, job_id)
    dispatched = [e for e in stored_events if e["attempt"] >= 1]
    assert [e["seq"] for e in dispatched] == ALL_SEQS, dispatched  # each once, in order, the terminal last
    finals = {e["step_id"]: e["status"] for e in dispatched if e["kind"] == "step"}
    assert finals == {i: "succeeded" for i in range(1, STEPS + 1)}
    assert events.is_terminal(dispatched[-1])  # type: ignore[arg-type]
