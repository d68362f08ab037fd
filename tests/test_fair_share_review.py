"""Fair share's consumers per tenant when the server changes them under a running dispatcher: a tenant's consumer
removed (its inactivity threshold passed, or an operator removed it) is made again for the tenant's next job."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from functions.dispatch import settle
from functions.dispatch.dispatcher import Dispatcher
from functions.dispatch.executors.base import RunHooks, RunResult, StopSignal
from functions.submit import enqueue
from runtime import messaging, subjects
from runtime.jobs import Job, JobStatus
from runtime.messaging import topology
from tests.helpers import make_settings, poll
from tests.test_fair_share_upgrade import CountingExecutor, stored_jobs, tenant_job

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
    dispatcher = Dispatcher(conn, executor, settings)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        await poll(lambda: _drained(conn), timeout_s=60)
    finally:
        await dispatcher.stop()
    assert sorted(executor.runs) == ["cs101"] * 15 + ["cs102"]
    assert executor.runs.index("cs102") < 5, executor.runs
