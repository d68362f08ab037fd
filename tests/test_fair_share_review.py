"""Fair share's consumers per tenant when the server changes them under a running dispatcher: a tenant's consumer
removed (its inactivity threshold passed, or an operator removed it) is made again for the tenant's next job."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext

from functions.dispatch import settle
from functions.dispatch.dispatcher import Dispatcher
from functions.dispatch.executors.base import RunHooks, RunResult, StopSignal
from functions.submit import enqueue
from runtime import messaging, subjects
from runtime.jobs import Job, JobStatus, job_from_document, new_job_id, utc_now
from runtime.messaging import topology
from runtime.settings import LimitSettings
from tests.helpers import make_settings, poll
from tests.test_fair_share_upgrade import CountingExecutor, run_dispatcher_until_drained, stored_jobs, tenant_job

LANE = subjects.Lane.NORMAL


async def test_a_tenant_whose_consumer_went_away_gets_its_next_job_run(
    conn: messaging.Messaging, clean_nats: str, js: JetStreamContext
) -> None:
    # A long idle wait: the dispatcher reads the consumers again only when a job is published or one ends.
    settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="30")
    await conn.ensure_topology(settings)
    executor = CountingExecutor()
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        first = tenant_job("cs101")
        await enqueue.enqueue(conn, first)
        await poll(lambda: _drained(conn), timeout_s=20)
        await asyncio.sleep(1)  # the reading after the job's end, which still lists the tenant's consumer
        # The server removes the idle tenant's consumer (inactive_threshold); the tenant's next exam comes.
        await js.delete_consumer(subjects.JOBS_STREAM, subjects.dispatch_consumer(LANE, "cs101"))
        second = tenant_job("cs101")
        await enqueue.enqueue(conn, second)
        await poll(lambda: _drained(conn), timeout_s=20)
        assert executor.runs == [first.id, second.id]
    finally:
        await dispatcher.stop()


async def _drained(conn: messaging.Messaging) -> bool:
    await asyncio.sleep(0)
    return await stored_jobs(conn) == 0


class SlowCountingExecutor(CountingExecutor):
    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs.append(job.tenant)
        await asyncio.sleep(0.1)
        return RunResult(status=JobStatus.SUCCEEDED, steps=())


async def test_a_job_handed_back_does_not_wait_behind_every_other_tenants_queue(
    conn: messaging.Messaging, clean_nats: str
) -> None:
    """A job handed back (its dispatcher stopped) or whose holder died comes back as a redelivery, which its consumer
    does not count as waiting: it still starts soon while another tenant's long queue waits, as it did with one
    consumer per lane."""
    settings = make_settings(clean_nats, HADES_CONCURRENCY="1")
    await conn.ensure_topology(settings)
    other = await conn.pull_consumer(subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, LANE, "cs102"))
    await enqueue.enqueue(conn, tenant_job("cs102"))
    [delivery] = await other.fetch(1, timeout_s=5)
    await settle.hand_back(delivery)  # another dispatcher took it and stopped before running it
    await other.close()
    for _ in range(15):
        await enqueue.enqueue(conn, tenant_job("cs101"))
    executor = SlowCountingExecutor()
    await run_dispatcher_until_drained(conn, executor, settings, timeout_s=60)
    assert sorted(executor.runs) == ["cs101"] * 15 + ["cs102"]
    assert executor.runs.index("cs102") < 5, executor.runs


class HeldExecutor(CountingExecutor):
    """Runs every job until released; counts how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.now = 0
        self.most = 0

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        self.runs.append(job.id)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.release.wait()
        finally:
            self.now -= 1
        return RunResult(status=JobStatus.SUCCEEDED, steps=())


def lane_job(tenant: str, priority: int) -> Job:
    document: dict[str, Any] = {"name": "j", "priority": priority, "steps": [{"id": 1, "image": "x", "script": "true"}]}
    return job_from_document(
        document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now(), tenant=tenant
    )


async def test_a_tenant_at_its_running_cap_across_lanes_starts_nothing_more(
    conn: messaging.Messaging, clean_nats: str
) -> None:
    """The cap is the tenant's across lanes: one job running in the high lane and one in the normal lane is a cap of
    2 reached, though each lane's consumer (max_ack_pending 2) holds only one. The looks for redeliveries from
    consumers holding jobs must not take a new job past it."""
    settings = make_settings(clean_nats, HADES_TENANT_MAX_RUNNING="cs101=2", HADES_PULL_TIMEOUT_SECONDS="0.2")
    await conn.ensure_topology(settings)
    executor = HeldExecutor()
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        for priority in (3, 2):
            await enqueue.enqueue(conn, lane_job("cs101", priority))
        await poll(lambda: _running_now(executor, 2), timeout_s=20)
        third = lane_job("cs101", 2)
        await enqueue.enqueue(conn, third)
        await asyncio.sleep(3)  # many looks for work meanwhile (every 0.2 s): none may start the third job
        assert executor.most == 2 and third.id not in executor.runs, executor.runs
        executor.release.set()
        await poll(lambda: _drained(conn), timeout_s=20)
        assert third.id in executor.runs
    finally:
        executor.release.set()
        await dispatcher.stop()


async def _running_now(executor: HeldExecutor, count: int) -> bool:
    await asyncio.sleep(0)
    return executor.now == count
