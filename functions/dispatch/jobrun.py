"""One delivery of one job, start to end: decode it, decide whether it runs, run it, hand the outcome to ``settle``.

The message is acked only when the job has ended (its terminal event stored), and kept alive meanwhile with
in-progress acks, so a live dispatcher's job is never handed to another and a dead one's comes back after
``AckWait``. The executor reports through the ``Reporter``; what the attempt came to is an ``Outcome``, and
``settle`` alone answers the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from opentelemetry import trace as otel_trace

from functions.dispatch import settle
from functions.dispatch.executors.base import Cause, RunResult, StopSignal, Superseded, cause_of, timed_out_reason
from functions.dispatch.logsink import LogSink
from functions.dispatch.ownership import Holder
from functions.dispatch.reporter import Reporter, secrets_of
from functions.dispatch.results import attach
from functions.dispatch.settle import Deps, Outcome
from runtime import eventlog, events, logconfig, metrics, subjects, tracing
from runtime.errors import HadesError, JobError, Unavailable
from runtime.jobs import Job, JobStatus, parse_time, utc_now
from runtime.messaging import Delivery, consumer_of

log = logging.getLogger(__name__)
tracer = tracing.tracer(__name__)

__all__ = ["Deps", "handle"]


async def keep_alive(msg: Delivery, interval_s: float, *, run: Reporter, stop: StopSignal) -> None:
    """In-progress acks well inside AckWait while the job runs, as long as this attempt owns the job; once another
    took it over, none (they would keep the new owner's delivery alive) and the run is told to stand down."""
    while True:
        await asyncio.sleep(interval_s)
        if not await run.owned():
            stop.supersede()
            return
        with contextlib.suppress(Unavailable):
            await msg.in_progress()


async def handle(deps: Deps, msg: Delivery, *, stop: StopSignal) -> None:
    """Run one delivered job message to its end. Cancelling this task leaves the message for redelivery."""
    try:
        job = Job.from_message(json.loads(msg.data))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("dropping malformed job message on %s: %s", msg.subject, exc)
        await settle.settle(deps, msg, Outcome(settle.Kind.MALFORMED))
        return
    attempt = await _numbered(deps, msg, job)
    if attempt > 1:
        metrics.REDELIVERIES.inc()
    consumer = subjects.dispatch_consumer(job.lane, job.tenant)
    with (
        logconfig.job_scope(job.id),
        tracing.process_span(
            msg.subject, msg.headers, consumer=consumer, message_id=msg.headers.get(subjects.HEADER_MSG_ID)
        ),
        tracer.start_as_current_span(
            "run job",
            attributes={"hades.job_id": job.id, "hades.lane": str(job.lane), "hades.attempt": attempt},
        ),
    ):
        await _handle(deps, msg, job, attempt, stop)


async def _numbered(deps: Deps, msg: Delivery, job: Job) -> int:
    """Which attempt this delivery is: its delivery count, unless the job's lease names an attempt as high or higher
    delivered by another consumer. Then this one comes after it from a consumer made since (a tenant's own, taking
    over from the lane consumer an upgrade narrowed), which counts from 1: numbered on from the lease, it is a
    redelivery like any other (it adopts what the earlier attempt left, its events do not collide with that
    attempt's, and the earlier attempt stands down). A stale delivery of the same consumer keeps its count and
    finds itself superseded."""
    try:
        holder = await deps.leases.holder(job.id)
    except Unavailable:
        return msg.attempt
    if holder is None or holder.attempt < msg.attempt:
        return msg.attempt
    earlier = consumer_of(holder.delivery)
    if not earlier or earlier == msg.consumer:
        return msg.attempt
    log.info(
        "job %s: attempt %d was %s's; this delivery is attempt %d", job.id, holder.attempt, earlier, holder.attempt + 1
    )
    return holder.attempt + 1


async def _handle(deps: Deps, msg: Delivery, job: Job, attempt: int, stop: StopSignal) -> None:
    settings = deps.settings
    sink = LogSink(
        deps.conn, job_id=job.id, attempt=attempt, settings=settings.dispatch, secrets=secrets_of(job, settings)
    )
    run = Reporter(deps.conn, job, attempt, sink, job_span=otel_trace.get_current_span())
    run.results = attach.start(deps.conn, job, settings, mask=sink.mask)
    interval_s = max(settings.dispatch.ack_wait_s / 3, 0.5)
    heartbeat = asyncio.create_task(keep_alive(msg, interval_s, run=run, stop=stop))
    try:
        outcome = await _attempt(deps, msg, job, attempt, stop, run)
        await settle.settle(deps, msg, outcome, run=run)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await sink.close()
        metrics.LOG_BYTES.inc(sink.bytes_written)
        if sink.truncated:
            metrics.LOG_TRUNCATIONS.inc()


async def _attempt(deps: Deps, msg: Delivery, job: Job, attempt: int, stop: StopSignal, run: Reporter) -> Outcome:
    """What this attempt comes to; runs the job when it is to run."""
    settings = deps.settings
    # A first delivery too: a consumer made again (a tenant's, after it went idle; a lane's, narrowed by an
    # upgrade) counts deliveries from 1, so a job that ended without its ack stored is not told by its attempt.
    ended = await _already_ended(deps, job)
    if ended is not None:
        if ended.kind is settle.Kind.ALREADY_ENDED:  # its attempt may have stopped before removing what it made
            await _remove_leftovers(deps, job)
        return ended
    holder = Holder(attempt, deps.dispatcher_id, host=deps.host, pid=deps.pid, delivery=msg.reply)
    lease = await deps.leases.claim(job.id, holder=holder)
    if lease is None:  # a later attempt runs it already (this delivery waited while paused)
        return Outcome(settle.Kind.SUPERSEDED)
    run.own(lease)
    stop.guard = lease.held
    if attempt > settings.dispatch.max_deliver:
        return Outcome.gave_up(f"gave up after {settings.dispatch.max_deliver} attempts")
    # The deadline is absolute from the job's first start: a redelivery (its dispatcher died) keeps it.
    started_at = (await _first_start(deps, job) if attempt > 1 else None) or utc_now()
    stop.deadline_at = parse_time(started_at).timestamp() + job.timeout_s
    left_s = stop.deadline_at - time.time()
    owns_deadline = deps.executor.capabilities.owns_deadline
    if left_s <= 0:  # it ran out while no dispatcher held it (on any executor: a redelivery decides, no timer)
        stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason=timed_out_reason(job))
    if stop.requested:  # cancelled while queued, or (redelivered) cancelled or timed out while nobody held it
        if attempt > 1 and await run.owned():  # an earlier attempt's containers may still run: remove them now
            await _remove_leftovers(deps, job)
        return Outcome.finished(_not_run(stop))
    queue_wait = max(0.0, time.time() - parse_time(job.submitted_at).timestamp())
    metrics.JOBS_STARTED.labels(str(job.lane)).inc()
    metrics.JOB_QUEUE_WAIT.labels(str(job.lane)).observe(queue_wait)
    await run.job_status(
        JobStatus.RUNNING,
        job=job.summary(),
        queue_wait_s=round(queue_wait, 3),
        dispatcher=deps.dispatcher_id,
        dispatcher_host=deps.host,
        dispatcher_pid=deps.pid,
        started_at=started_at,
    )
    timer = None
    if not owns_deadline:  # one owner of the deadline: the engine's, else this timer
        timer = asyncio.get_running_loop().call_later(
            left_s, lambda: stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason=timed_out_reason(job))
        )
    started = time.monotonic()
    try:
        result = await deps.executor.run(job, attempt=attempt, hooks=run, stop=stop)
    except Superseded:
        return Outcome(settle.Kind.SUPERSEDED)
    except JobError as exc:
        metrics.EXECUTOR_ERRORS.labels(deps.executor.name, "job").inc()
        return Outcome.finished(_refused(exc))
    except Unavailable as exc:
        metrics.EXECUTOR_ERRORS.labels(deps.executor.name, "unavailable").inc()
        return Outcome.retry(exc.detail)
    finally:
        if timer is not None:
            timer.cancel()
    metrics.JOB_DURATION.labels(str(job.lane), str(result.status)).observe(time.monotonic() - started)
    return Outcome.finished(result)


def _not_run(stop: StopSignal) -> RunResult:
    cause = Cause.TIMED_OUT if stop.status is JobStatus.TIMED_OUT else Cause.CANCELLED
    return RunResult(status=stop.status, steps=(), reason=stop.reason or None, cause=cause)


async def _first_start(deps: Deps, job: Job) -> str | None:
    """When the job's first attempt started (its earliest ``running`` event's ``started_at``), if it did."""
    first: tuple[tuple[int, int], str] | None = None
    try:
        async for stored in deps.conn.read(stream=subjects.EVENTS_STREAM, subject=subjects.status_subject(job.id)):
            try:
                event = events.decode_status(stored.data)
            except ValueError:
                continue
            started = event.get("started_at") if event["kind"] == "job" else None
            if event["status"] == JobStatus.RUNNING and isinstance(started, str) and "reason" not in event:
                key = (event["attempt"], event["seq"])
                if first is None or key < first[0]:
                    first = (key, started)
    except Unavailable as exc:
        log.warning("job %s: its first start cannot be read (%s); its deadline counts from now", job.id, exc.detail)
        return None
    return first[1] if first is not None else None


async def _remove_leftovers(deps: Deps, job: Job) -> None:
    try:
        await deps.executor.cleanup(job.id)
    except HadesError as exc:
        log.warning("job %s: an earlier attempt's leftovers not removed: %s", job.id, exc.detail)


def _refused(exc: JobError) -> RunResult:
    cause = cause_of(exc)
    return RunResult(status=JobStatus.FAILED, steps=(), reason=exc.detail, cause=cause)


async def _already_ended(deps: Deps, job: Job) -> Outcome | None:
    """A delivery whose job has a stored end (its ack was lost): not run twice. When that cannot be told (the
    broker does not answer), hand it back for later rather than risk running it again."""
    try:
        last = await eventlog.latest_status(deps.conn, job.id)
    except HadesError as exc:
        log.warning("job %s: cannot tell whether its redelivery already ended (%s); later", job.id, exc.detail)
        return Outcome(settle.Kind.UNDECIDED)
    if last is None or not events.is_terminal(last):
        return None
    log.info("job %s already ended %s; acking its redelivery", job.id, last["status"])
    return Outcome(settle.Kind.ALREADY_ENDED)
