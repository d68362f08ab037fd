"""Upgrading to a consumer per tenant: the lane consumer an older Hades made (it took every tenant's jobs) is
narrowed in place, and a named tenant's job it delivered is not run again by the tenant's new consumer."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from functions.dispatch import jobrun, ownership
from functions.dispatch.dispatcher import Dispatcher
from functions.dispatch.executors.base import Capabilities, RunHooks, RunResult, StopSignal
from functions.submit import enqueue
from runtime import messaging, subjects
from runtime.jobs import Job, JobStatus, job_from_document, new_job_id, utc_now
from runtime.messaging import topology
from runtime.settings import LimitSettings, Settings
from tests.helpers import make_settings, poll
from tests.observe import StoredEvents

LANE = subjects.Lane.NORMAL


class CountingExecutor:
    name = "fake"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.runs: list[str] = []

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs.append(job.id)
        return RunResult(status=JobStatus.SUCCEEDED, steps=())

    async def cleanup(self, job_id: str) -> None:
        pass

    async def leftovers(self) -> set[str]:
        return set()


class RunsUntilSuperseded(CountingExecutor):
    """An older dispatcher's run that is still going at the upgrade: it ends only when it loses the job."""

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs.append(job.id)
        await stop.event.wait()
        await stop.check_owned()
        return RunResult(status=JobStatus.FAILED, steps=())


def tenant_job(tenant: str) -> Job:
    document: dict[str, Any] = {"name": "j", "priority": 2, "steps": [{"id": 1, "image": "x", "script": "true"}]}
    return job_from_document(
        document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now(), tenant=tenant
    )


async def stored_jobs(conn: messaging.Messaging) -> int:
    return sum((await conn.subject_counts(subjects.JOBS_STREAM, f"{subjects.JOBS_SUBJECT_PREFIX}.>")).values())


async def test_a_job_the_old_lane_consumer_delivered_ends_once_after_the_narrowing(
    conn: messaging.Messaging, clean_nats: str, stored: StoredEvents
) -> None:
    settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="0.2")
    await conn.ensure_topology(settings)
    narrowed = topology.dispatch_consumer_config(settings, LANE)
    older = dataclasses.replace(narrowed, filter_subjects=list(subjects.lane_subjects(LANE)))  # as 2026-12-06 made it
    old_consumer = await conn.pull_consumer(subjects.JOBS_STREAM, older)
    job = tenant_job("cs101")
    await enqueue.enqueue(conn, job)
    [delivery] = await old_consumer.fetch(1, timeout_s=5)  # an older dispatcher took it and runs it
    assert delivery.subject == "hades.jobs.normal.cs101"

    # The upgraded dispatch's start-up: the lane consumer narrowed, the tenant's own made (before it fetches).
    for config in (narrowed, topology.dispatch_consumer_config(settings, LANE, "cs101")):
        await (await conn.pull_consumer(subjects.JOBS_STREAM, config)).close()
    old_executor = CountingExecutor()
    deps = jobrun.Deps(conn=conn, executor=old_executor, settings=settings, dispatcher_id="older")  # type: ignore[arg-type]
    await jobrun.handle(deps, delivery, stop=StopSignal())
    assert old_executor.runs == [job.id]
    # Acked through a consumer whose filter no longer holds it, the message stays for the tenant's consumer ...
    assert await stored_jobs(conn) == 1

    new_executor = CountingExecutor()
    # ... so the tenant's new consumer delivers it again: acked as already ended, not run a second time.
    await run_dispatcher_until_drained(conn, new_executor, settings)
    assert new_executor.runs == []
    statuses = [event["status"] for event in await stored.jobs(job.id)]
    assert statuses.count("succeeded") == 1, statuses
    consumers = {load.name for load in await conn.consumer_loads(subjects.JOBS_STREAM)}
    assert {"dispatch-normal", "dispatch-normal--cs101"} <= consumers


async def run_dispatcher_until_drained(
    conn: messaging.Messaging, executor: CountingExecutor, settings: Settings, *, timeout_s: float = 30
) -> None:
    """One upgraded dispatcher, until every job has left the work queue."""
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        await poll(lambda: _gone(conn), timeout_s=timeout_s)
    finally:
        await dispatcher.stop()


async def _gone(conn: messaging.Messaging) -> bool:
    await asyncio.sleep(0)
    return await stored_jobs(conn) == 0


async def test_each_tenant_gets_its_own_consumer_and_the_lane_consumer_keeps_the_default_tenant(
    conn: messaging.Messaging, clean_nats: str
) -> None:
    settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="0.2", HADES_TENANT_MAX_RUNNING="cs102=3")
    await conn.ensure_topology(settings)
    for tenant in ("default", "cs101", "cs102"):
        await enqueue.enqueue(conn, tenant_job(tenant))
    executor = CountingExecutor()
    await run_dispatcher_until_drained(conn, executor, settings)
    assert len(executor.runs) == 3
    loads = {load.name: load for load in await conn.consumer_loads(subjects.JOBS_STREAM)}
    assert {"dispatch-high", "dispatch-normal", "dispatch-low"} <= set(loads)
    assert {"dispatch-normal--cs101", "dispatch-normal--cs102"} <= set(loads)
    assert not any(name.startswith("dispatch-high--") for name in loads)  # made only where the tenant has jobs


async def test_a_job_an_older_dispatcher_still_runs_is_taken_over_as_its_next_attempt(
    conn: messaging.Messaging, clean_nats: str, stored: StoredEvents
) -> None:
    """The tenant's new consumer delivers it again, counting from 1; numbered on from the lease it is attempt 2: the
    older attempt stands down touching nothing, and the job ends once, its events not colliding with attempt 1's."""
    settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="0.2", HADES_ACK_WAIT_SECONDS="3")
    await conn.ensure_topology(settings)
    narrowed = topology.dispatch_consumer_config(settings, LANE)
    older = dataclasses.replace(narrowed, filter_subjects=list(subjects.lane_subjects(LANE)))
    old_consumer = await conn.pull_consumer(subjects.JOBS_STREAM, older)
    job = tenant_job("cs101")
    await enqueue.enqueue(conn, job)
    [delivery] = await old_consumer.fetch(1, timeout_s=5)
    leases = ownership.Leases(await conn.bucket(topology.leases_bucket_config(settings)))
    old_executor = RunsUntilSuperseded()
    deps = jobrun.Deps(conn=conn, executor=old_executor, settings=settings, dispatcher_id="older", leases=leases)  # type: ignore[arg-type]
    old_run = asyncio.create_task(jobrun.handle(deps, delivery, stop=StopSignal()))
    await poll(lambda: _running(stored, job.id), timeout_s=10)

    new_executor = CountingExecutor()
    await run_dispatcher_until_drained(conn, new_executor, settings)
    await asyncio.wait_for(old_run, timeout=30)  # stood down
    assert new_executor.runs == [job.id]
    events = await stored.jobs(job.id)
    assert [(event["status"], event["attempt"]) for event in events if event["status"] != "queued"] == [
        ("running", 1),
        ("running", 2),
        ("succeeded", 2),
    ]


async def _running(stored: StoredEvents, job_id: str) -> bool:
    return any(event["status"] == "running" for event in await stored.jobs(job_id))
