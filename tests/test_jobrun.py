"""One delivered job's failure paths, against a real nats-server: a job is never acked without a stored end."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import sys
from typing import Any

import pytest

from functions.dispatch import jobrun, ownership, statusqueue
from functions.dispatch.dispatcher import Dispatcher
from functions.dispatch.executors.base import (
    Capabilities,
    ImageUnavailable,
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
)
from functions.logs import records
from runtime import eventlog, events, messaging, subjects
from runtime.errors import Unavailable
from runtime.jobs import Job, JobStatus, StepStatus, job_from_document, new_job_id, utc_now
from runtime.messaging import topology
from runtime.settings import LimitSettings, Settings
from tests.fakes import FakeDelivery
from tests.helpers import make_settings, poll
from tests.observe import StoredEvents


class FakeExecutor:
    name = "fake"
    capabilities = Capabilities()

    def __init__(self, *, run_error: Exception | None = None, cleanup_error: Exception | None = None) -> None:
        self.run_error, self.cleanup_error = run_error, cleanup_error
        self.runs = 0

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs += 1
        if self.run_error:
            raise self.run_error
        step = job.steps[0]
        await hooks.step_started(step, started_at=utc_now())
        await hooks.step_finished(StepResult(step.id, StepStatus.SUCCEEDED, exit_code=0))
        return RunResult(status=JobStatus.SUCCEEDED, steps=())

    async def cleanup(self, job_id: str) -> None:
        if self.cleanup_error:
            raise self.cleanup_error


def a_job() -> Job:
    document = {"name": "j", "steps": [{"id": 1, "image": "x", "script": "true"}]}
    return job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())


async def handle(conn: messaging.Messaging, executor: FakeExecutor, msg: FakeDelivery, **env: str) -> None:
    settings = make_settings("nats://unused", **env)
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="test")  # type: ignore[arg-type]
    await jobrun.handle(deps, msg, stop=StopSignal())  # type: ignore[arg-type]


async def statuses(stored: StoredEvents, job_id: str) -> list[str]:
    return [e["status"] for e in await stored.jobs(job_id)]


async def test_a_terminal_event_that_cannot_be_stored_hands_the_job_back(
    conn: messaging.Messaging, stored: StoredEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job()
    real_publish = conn.publish

    async def publish(subject: str, payload: bytes, **kwargs: Any) -> Any:
        if subject == subjects.status_subject(job.id) and json.loads(payload).get("status") == "succeeded":
            raise Unavailable("broker refused")
        return await real_publish(subject, payload, **kwargs)

    monkeypatch.setattr(conn, "publish", publish)
    monkeypatch.setattr(statusqueue, "TERMINAL_PUBLISH_ATTEMPTS", 2)
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1)

    await handle(conn, FakeExecutor(), msg)

    assert msg.done == ["nak"]  # never acked: the job comes back and can still end properly
    assert "succeeded" not in await statuses(stored, job.id)


async def test_engine_down_on_the_last_attempt_still_ends_the_job_and_dead_letters_it(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    job = a_job()
    down = Unavailable("docker engine: connection refused")
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)

    await handle(conn, FakeExecutor(run_error=down, cleanup_error=down), msg, HADES_MAX_DELIVER="2")

    assert msg.done == ["ack"]
    last = await eventlog.latest_status(conn, job.id)
    assert last is not None and last["status"] == "failed"
    assert "infrastructure" in last.get("reason", "") and "connection refused" in last.get("reason", "")
    dead = await stored.read(subjects.dead_subject(job.id), stream=subjects.DEAD_STREAM)
    assert [letter["id"] for letter in dead] == [job.id]


async def test_a_redelivered_job_that_already_ended_is_acked_without_running_again(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    job = a_job()
    executor = FakeExecutor()
    await handle(conn, executor, FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1))
    assert executor.runs == 1

    redelivered = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)  # its ack was lost
    await handle(conn, executor, redelivered)

    assert redelivered.done == ["ack"] and executor.runs == 1
    assert (await statuses(stored, job.id)).count("succeeded") == 1


async def test_a_job_redelivered_while_it_still_runs_here_is_not_run_twice(
    conn: messaging.Messaging, settings: Settings
) -> None:
    gate = asyncio.Event()

    class Held(FakeExecutor):
        async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
            self.runs += 1
            await gate.wait()
            return RunResult(status=JobStatus.SUCCEEDED, steps=())

    executor = Held()
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    job = a_job()
    first = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1, headers={"Nats-Msg-Id": job.id})
    again = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2, headers={"Nats-Msg-Id": job.id})
    for msg in (first, again):
        await dispatcher.slots.acquire()
        await dispatcher._start(msg)  # type: ignore[arg-type]
    await poll(lambda: asyncio.sleep(0, executor.runs == 1))
    task = dispatcher.running[job.id][0]
    gate.set()
    await task
    assert executor.runs == 1 and first.done == ["ack"] and again.done == []
    assert dispatcher.slots._value == settings.dispatch.concurrency  # both slots given back


async def test_a_redelivery_is_handed_back_when_its_end_cannot_be_read(
    conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broker_down(*args: Any, **kwargs: Any) -> None:
        raise Unavailable("the message broker is not reachable")

    monkeypatch.setattr(eventlog, "latest_status", broker_down)
    executor, job = FakeExecutor(), a_job()
    redelivered = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)
    await handle(conn, executor, redelivered)
    assert executor.runs == 0 and redelivered.done == ["nak"]


async def test_an_attempt_taken_over_while_paused_stands_down_without_touching_the_job(
    conn: messaging.Messaging, stored: StoredEvents, settings: Settings
) -> None:
    """Attempt 1's dispatcher is paused (SIGSTOP) past AckWait; the job is redelivered and attempt 2 runs it to
    its end. When attempt 1 resumes, it must not publish events or lines, act on the job's containers, or answer
    its message: the lease says attempt 2 owns the job."""
    paused, resumed = asyncio.Event(), asyncio.Event()
    touched: list[str] = []

    class Pausing(FakeExecutor):
        async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
            self.runs += 1
            step = job.steps[0]
            await hooks.step_started(step, started_at=utc_now())
            if attempt == 1:
                paused.set()
                await resumed.wait()  # the pause: attempt 2 takes the job over meanwhile
                hooks.log(step.id, "stdout", "attempt 1 after the pause", at=utc_now())
                if await stop.owned():  # as the Docker executor asks before removing its containers
                    touched.append("containers removed by attempt 1")
            await hooks.step_finished(StepResult(step.id, StepStatus.SUCCEEDED, exit_code=0))
            return RunResult(status=JobStatus.SUCCEEDED, steps=())

    executor, job = Pausing(), a_job()
    leases = ownership.Leases(await conn.bucket(topology.leases_bucket_config(settings)))
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="a", leases=leases)  # type: ignore[arg-type]
    first = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1)
    task = asyncio.create_task(jobrun.handle(deps, first, stop=StopSignal()))  # type: ignore[arg-type]
    await asyncio.wait_for(paused.wait(), 30)

    other = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="b", leases=leases)  # type: ignore[arg-type]
    second = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)
    await jobrun.handle(other, second, stop=StopSignal())  # type: ignore[arg-type]
    assert second.done == ["ack"]
    before = await stored.status(job.id)

    await asyncio.sleep(ownership.FRESH_S)  # past the last check attempt 1 made before its pause
    resumed.set()
    await asyncio.wait_for(task, 30)

    assert first.done == []  # neither acked nor naked: the message was attempt 2's to answer
    assert touched == []
    assert await stored.status(job.id) == before  # no event of attempt 1 after the take-over
    assert "attempt 1 after the pause" not in await stored.lines(job.id)
    holder = await leases.holder(job.id)
    assert holder is not None and (holder.attempt, holder.dispatcher) == (2, "b")


async def test_a_delivery_older_than_the_jobs_owner_does_not_run(conn: messaging.Messaging, settings: Settings) -> None:
    executor, job = FakeExecutor(), a_job()
    leases = ownership.Leases(await conn.bucket(topology.leases_bucket_config(settings)))
    await leases.claim(job.id, holder=ownership.Holder(3, "c"))
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="a", leases=leases)  # type: ignore[arg-type]
    late = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)
    await jobrun.handle(deps, late, stop=StopSignal())  # type: ignore[arg-type]
    assert executor.runs == 0 and late.done == []


class Recording(FakeExecutor):
    """Records whether it ran, whether it was already told to stop, and what it removed."""

    def __init__(self) -> None:
        super().__init__()
        self.cleanups: list[str] = []
        self.stopped_at_start: list[bool] = []

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.stopped_at_start.append(stop.requested)
        return await super().run(job, attempt=attempt, hooks=hooks, stop=stop)

    async def cleanup(self, job_id: str) -> None:
        self.cleanups.append(job_id)


async def a_first_attempt_started(conn: messaging.Messaging, job: Job, *, seconds_ago: float) -> str:
    """Attempt 1's running event, as a dispatcher that then died left it."""
    started_at = utc_now_minus(seconds_ago)
    event = events.job_event(job.id, attempt=1, seq=1, status=JobStatus.RUNNING, started_at=started_at)
    await eventlog.publish_status(conn, event)
    return started_at


def utc_now_minus(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def a_job_with_timeout(timeout_s: int) -> Job:
    document = {"name": "j", "timeout_seconds": timeout_s, "steps": [{"id": 1, "image": "x", "script": "true"}]}
    return job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())


async def test_a_redelivered_job_keeps_the_deadline_of_its_first_start(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    """Issue 20: timeout 8 s, its dispatcher dead 10 s: the adopting attempt must not start the clock again."""
    job = a_job_with_timeout(8)
    first = await a_first_attempt_started(conn, job, seconds_ago=10)
    executor = Recording()
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)

    await handle(conn, executor, msg)

    assert executor.runs == 0  # past its deadline: not run again
    assert executor.cleanups == [job.id]  # what attempt 1 left is stopped and removed now
    assert msg.done == ["ack"]
    last = await eventlog.latest_status(conn, job.id)
    assert last is not None and last["status"] == "timed_out", last
    assert [e["started_at"] for e in await stored.jobs(job.id) if e.get("started_at")] == [first]


async def test_a_redelivered_job_within_its_deadline_runs_with_the_first_start(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    job = a_job_with_timeout(3600)
    first = await a_first_attempt_started(conn, job, seconds_ago=5)
    executor = Recording()
    await handle(conn, executor, FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2))

    assert executor.runs == 1 and executor.stopped_at_start == [False]
    running = [e for e in await stored.jobs(job.id) if e["status"] == "running" and e["attempt"] == 2]
    assert [e["started_at"] for e in running] == [first]  # the record's started_at is not reset


async def test_a_job_cancelled_while_its_dispatcher_was_dead_has_its_containers_removed_at_once(
    conn: messaging.Messaging,
) -> None:
    job = a_job()
    await a_first_attempt_started(conn, job, seconds_ago=3)
    executor = Recording()
    stop = StopSignal()
    stop.stop(JobStatus.CANCELLED, grace_s=0, reason="cancelled before it started")  # as the dispatcher finds it
    settings = make_settings("nats://unused")
    deps = jobrun.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id="t")  # type: ignore[arg-type]
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=2)

    await jobrun.handle(deps, msg, stop=stop)  # type: ignore[arg-type]

    assert executor.runs == 0 and executor.cleanups == [job.id]
    last = await eventlog.latest_status(conn, job.id)
    assert last is not None and last["status"] == "cancelled"


async def test_a_cancel_reaches_the_containers_of_a_job_whose_dispatcher_died_on_this_host(
    conn: messaging.Messaging, settings: Settings
) -> None:
    """No dispatcher holds the job: a live one on the same host removes its containers when the cancel comes."""

    class Local(Recording):
        capabilities = Capabilities(host_local=True)

    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    job, executor = a_job(), Local()
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    dispatcher.deps.leases = ownership.Leases(await conn.bucket(topology.leases_bucket_config(settings)))
    holder = ownership.Holder(1, "dead", host=socket.gethostname(), pid=gone.pid)
    await dispatcher.deps.leases.claim(job.id, holder=holder)

    await dispatcher._on_cancel(subjects.cancel_subject(job.id), b"{}")

    assert executor.cleanups == [job.id]


class FailsStep(FakeExecutor):
    """Step 1 exits with 3 after printing ``lines`` lines of 100 bytes."""

    def __init__(self, lines: int = 0) -> None:
        super().__init__()
        self.lines = lines

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        step = job.steps[0]
        await hooks.step_started(step, started_at=utc_now())
        for n in range(self.lines):
            hooks.log(step.id, "stdout", f"{n:04d}" + "x" * 95, at=utc_now())
        failed = StepResult(step.id, StepStatus.FAILED, exit_code=3, reason="exited with code 3")
        await hooks.step_finished(failed)
        return RunResult(JobStatus.FAILED, (failed,), reason=f"step 1 ({step.name}) exited with code 3")


async def test_the_dispatchers_own_line_about_a_failed_step_is_masked(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    """Issue 20: ``step 1 (<step name>) exited with code 3`` showed a secret in the step's name; the reason did not."""
    document = {
        "name": "j",
        "metadata": {"API_TOKEN": "s3cr3t-value"},
        "steps": [{"id": 1, "name": "deploy with s3cr3t-value", "image": "x", "script": "false"}],
    }
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
    await handle(conn, FailsStep(), FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1))

    lines = await stored.lines(job.id)
    assert "[hades] step 1 (deploy with ***) exited with code 3" in lines, lines
    texts = [str(e.get(key, "")) for e in await stored.status(job.id) for key in ("reason", "step_name")]
    assert not any("s3cr3t-value" in text for text in texts), texts


async def test_a_job_that_did_not_start_says_why_once(conn: messaging.Messaging, stored: StoredEvents) -> None:
    """Issue 20: a later step's image missing showed "skipped (image … is not available)" under every step."""
    document = {"name": "j", "steps": [{"id": i, "image": f"img{i}", "script": "true"} for i in (1, 2, 3)]}
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
    refused = ImageUnavailable("image 'img3' is not available: not found in the registry")
    await handle(conn, FakeExecutor(run_error=refused), FakeDelivery(data=json.dumps(job.to_message()).encode()))

    last = await eventlog.latest_status(conn, job.id)
    assert last is not None and last["status"] == "failed" and "img3" in last.get("reason", "")
    steps = await stored.steps(job.id)
    assert [steps[i]["status"] for i in (1, 2, 3)] == ["skipped"] * 3
    assert not any("img3" in steps[i].get("reason", "") for i in (1, 2, 3)), steps  # said once, by the job


async def test_output_cut_by_dispatchs_cap_marks_the_record_truncated(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    """Issue 20: with HADES_JOB_LOG_MAX_BYTES below the logs function's cap, output was cut but the record said
    ``log_truncated: false``: the terminal event says so, and the record follows it."""
    job = a_job()
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode())
    await handle(conn, FailsStep(lines=50), msg, HADES_JOB_LOG_MAX_BYTES="1024")

    terminal = (await stored.terminals(job.id))[-1]
    assert terminal.get("log_truncated") is True, terminal
    record = None
    for event in await stored.status(job.id):
        record = records.apply_status(record, event, now=utc_now()) or record  # type: ignore[arg-type]
    assert record is not None and record["log_truncated"] is True


class ReportsAFailedTest(FakeExecutor):
    """The job's JUnit report has one failed case whose message and output quote the job's secret."""

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        from functions.dispatch.results import junit

        step = job.steps[0]
        await hooks.step_started(step, started_at=utc_now())
        collector = hooks.results  # type: ignore[attr-defined]
        collector.started = True
        cut = "x" * (junit.MAX_OUTPUT_CHARS - 5)  # the excerpt's end falls inside the secret
        report = (
            b'<testsuite name="s" tests="2" failures="2"><testcase classname="c" name="login">'
            b'<failure message="expected token s3cr3t-value">got s3cr3t-value back</failure>'
            b"<system-out>TOKEN=s3cr3t-value</system-out></testcase>"
            b'<testcase classname="c" name="long"><failure>' + cut.encode() + b"s3cr3t-value</failure></testcase>"
            b"</testsuite>"
        )
        await collector._parse("reports/r.xml", report, len(report))
        collector.results.warn("/shared/s3cr3t-value/report.xml matched no file")
        failed = StepResult(step.id, StepStatus.FAILED, exit_code=1, reason="exited with code 1")
        await hooks.step_finished(failed)
        return RunResult(JobStatus.FAILED, (failed,), reason="step 1 failed")


async def test_a_secret_in_a_failed_tests_message_never_reaches_the_results(
    conn: messaging.Messaging, stored: StoredEvents
) -> None:
    """Review: the failed cases' messages and output travel in the terminal event and land on the
    record (``GET /jobs/{id}/tests``, callbacks, the CLI); the logs and reasons were masked, they were not."""
    document = {
        "name": "j",
        "metadata": {"API_TOKEN": "s3cr3t-value"},
        "reports": {"junit": ["reports/*.xml"]},
        "steps": [{"id": 1, "image": "x", "script": "false"}],
    }
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
    await handle(conn, ReportsAFailedTest(), FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1))

    terminal = (await stored.terminals(job.id))[-1]
    results = terminal["results"]
    assert results["failed_tests"] and results["failed_tests"][0]["name"] == "login", results
    assert "s3cr3t-value" not in json.dumps(results), results
    assert "***" in results["failed_tests"][0]["message"], results
    assert "s3cr" not in results["failed_tests"][1]["output"], results  # masked before the excerpt was cut


async def test_a_job_whose_cancel_cannot_be_read_at_dequeue_is_handed_back_not_run(
    conn: messaging.Messaging, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a job cancelled while queued already reads ``cancelled`` (its attempt-0 end);
    a first delivery that could not read the cancel request took "no request" for an answer and ran the job, the
    record saying ``cancelled`` all along. Whether it was cancelled is undecided: the message comes back later."""

    async def broker_down(*args: Any, **kwargs: Any) -> bool:
        raise Unavailable("the message broker is not reachable")

    monkeypatch.setattr(eventlog, "cancel_requested", broker_down)
    executor = FakeExecutor()
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    job = a_job()
    msg = FakeDelivery(data=json.dumps(job.to_message()).encode(), attempt=1, headers={"Nats-Msg-Id": job.id})
    await dispatcher.slots.acquire()
    await dispatcher._start(msg)  # type: ignore[arg-type]
    for task, _, _ in list(dispatcher.running.values()):
        await task
    assert executor.runs == 0 and msg.done == ["nak"], msg.done
    assert dispatcher.slots._value == settings.dispatch.concurrency  # its slot given back
