"""One delivery of one job: from the JetStream message to the terminal event and the ack.

The message is acked only when the job has ended (its terminal event stored), and kept alive meanwhile with
in-progress acks, so a live dispatcher's job is never handed to another and a dead one's comes back after
``AckWait``. Infrastructure trouble (``Unavailable``) naks it for a later attempt; the delivery past
``max_deliver`` fails it for good and copies it to the dead-letter subject.

A status event that cannot be stored (NATS unreachable) is kept and sent again, the same event with the same
``Nats-Msg-Id``, before any later one: each publish first retries the kept ones in order, one try while NATS is
away (a step never waits longer than one publish did), and the terminal event is published only once every
earlier one is stored, so it stays the attempt's last. At most ``MAX_UNSENT_STATUS_EVENTS`` are kept; past that
the oldest step event is dropped, counted (``JobRun.lost_status_events``) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as otel_trace

from functions.dispatch.executors.base import Executor, RunResult, StepResult, StopSignal
from functions.dispatch.logsink import LogSink
from functions.dispatch.results import attach  # results (t23)
from functions.dispatch.results.collector import Collector  # results (t23)
from runtime import eventlog, events, logconfig, messaging, metrics, subjects, tracing
from runtime.errors import HadesError, JobError, Unavailable
from runtime.jobs import Job, JobStatus, Step, StepStatus, parse_time, utc_now
from runtime.messaging import Delivery
from runtime.settings import Settings

log = logging.getLogger(__name__)
tracer = tracing.tracer(__name__)

RETRY_DELAY_S = 5.0
"""How long a job waits before its next attempt after infrastructure trouble."""
TERMINAL_PUBLISH_ATTEMPTS = 4
"""Tries (0.5, 1, 2 s apart) to store a terminal event before the job is handed back instead of acked."""
MAX_UNSENT_STATUS_EVENTS = 1000
"""Status events of one attempt kept while NATS is unreachable; past it the oldest step event is dropped."""


@dataclass
class JobRun:
    """Reports one attempt's progress as events; the executor calls it as ``RunHooks``."""

    conn: messaging.Messaging
    job: Job
    attempt: int
    sink: LogSink
    sequence: events.Sequence = field(default_factory=events.Sequence)
    reported: dict[int, StepResult] = field(default_factory=dict)
    dequeued_at: float = field(default_factory=time.monotonic)
    first_step_started: bool = False
    step_spans: dict[int, Any] = field(default_factory=dict)
    job_span: Any = None
    unsent: deque[events.StatusEvent] = field(default_factory=deque)
    """Status events not stored yet, in seq order: the first is the one being (or next to be) sent."""
    lost_status_events: int = 0
    """Status events never stored: dropped past ``MAX_UNSENT_STATUS_EVENTS``, or refused for good by the broker."""
    results: Collector | None = None  # results (t23): the job's files and reports, filled by the executor
    _sending: asyncio.Lock = field(default_factory=asyncio.Lock)  # one sender at a time: events leave in order
    _outage_since: float | None = None

    async def publish(self, event: events.StatusEvent) -> None:
        """Store a non-terminal status event after every earlier one; while NATS is away it is kept for the next
        publish (or ``flush``) to send, at the cost of one failed try, as before."""
        self.unsent.append(event)
        async with self._sending:
            await self._send_unsent(retries=False)
            self._bound()

    async def flush(self) -> None:
        """Store every kept status event, each with the terminal event's retries; ``Unavailable`` if NATS stays
        away (the events stay kept)."""
        async with self._sending:
            await self._send_unsent(retries=True)

    def _bound(self) -> None:
        """Past ``MAX_UNSENT_STATUS_EVENTS`` kept (NATS away that long), drop the oldest step event (a job event, say
        the ``running`` one with the dispatcher's identity, only if nothing else is left)."""
        while len(self.unsent) > MAX_UNSENT_STATUS_EVENTS:
            index = next((i for i, e in enumerate(self.unsent) if e["kind"] == "step"), 0)
            dropped = self.unsent[index]
            del self.unsent[index]
            self.lost_status_events += 1
            if self.lost_status_events == 1 or self.lost_status_events % 100 == 0:
                log.warning(
                    "job %s: %d status events lost so far (the latest %s of seq %d): NATS unreachable, %d kept",
                    self.job.id,
                    self.lost_status_events,
                    dropped["status"],
                    dropped["seq"],
                    len(self.unsent),
                )

    async def _send_unsent(self, *, retries: bool) -> None:
        while self.unsent:
            event = self.unsent[0]
            try:
                if retries:
                    await _publish_with_retries(self.conn, event)
                else:
                    await eventlog.publish_status(self.conn, event)
            except Unavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning(
                        "job %s: status event %s (seq %d) not stored yet, kept to send again: %s",
                        self.job.id,
                        event["status"],
                        event["seq"],
                        exc.detail,
                    )
                if retries:
                    raise
                return
            except HadesError as exc:  # permanent (too large for the broker): sending it again cannot help
                self.lost_status_events += 1
                log.warning("job %s: status event %s lost: %s", self.job.id, event["status"], exc.detail)
            else:
                if self._outage_since is not None:
                    log.info(
                        "job %s: status events stored again after %.1f s",
                        self.job.id,
                        time.monotonic() - self._outage_since,
                    )
                    self._outage_since = None
            self.unsent.popleft()

    def job_event(self, status: JobStatus, reason: str | None = None, **extra: Any) -> events.StatusEvent:
        """The attempt's next job event (its seq taken now)."""
        return events.job_event(
            self.job.id, attempt=self.attempt, seq=self.sequence.next(), status=status, reason=reason, **extra
        )

    async def job_status(self, status: JobStatus, reason: str | None = None, **extra: Any) -> None:
        await self.publish(self.job_event(status, self.sink.mask(reason) if reason else reason, **extra))

    async def step_status(self, step: Step, status: StepStatus, **extra: Any) -> None:
        event = events.step_event(
            self.job.id,
            attempt=self.attempt,
            seq=self.sequence.next(),
            step_id=step.id,
            step_name=step.name,
            status=status,
            **extra,
        )
        await self.publish(event)

    async def step_started(self, step: Step, *, started_at: str) -> None:
        if not self.first_step_started:
            self.first_step_started = True
            metrics.JOB_START_LATENCY.labels(str(self.job.lane)).observe(time.monotonic() - self.dequeued_at)
        span = tracer.start_span(
            f"step {step.id}",
            context=otel_trace.set_span_in_context(self.job_span) if self.job_span is not None else None,
            attributes={
                "hades.job_id": self.job.id,
                "hades.step.id": step.id,
                "hades.step.name": step.name,
                "container.image.name": step.image,
            },
        )
        self.step_spans[step.id] = span
        await self.step_status(step, StepStatus.RUNNING, started_at=started_at)

    async def step_finished(self, result: StepResult) -> None:
        if result.reason:  # an engine's error can quote the environment, secrets included
            result = dataclasses.replace(result, reason=self.sink.mask(result.reason))
        self.reported[result.step_id] = result
        step = next(s for s in self.job.steps if s.id == result.step_id)
        if result.duration_s is not None:
            metrics.STEP_DURATION.labels(str(result.status)).observe(result.duration_s)
        if result.reason and result.status is StepStatus.FAILED:
            self.sink.system(step.id, f"[hades] step {step.id} ({step.name}) {result.reason}")
        await self.sink.flush()  # a reader sees a step's last lines before its final status
        span = self.step_spans.pop(result.step_id, None)
        if span is not None:
            span.set_attribute("hades.step.result", str(result.status))
            if result.exit_code is not None:
                span.set_attribute("process.exit.code", result.exit_code)
            if result.reason:
                span.set_attribute("hades.step.reason", result.reason)
            if result.status is StepStatus.FAILED:
                span.set_status(otel_trace.StatusCode.ERROR, result.reason or "failed")
            span.end()
        extra = {
            k: v
            for k, v in (
                ("exit_code", result.exit_code),
                ("started_at", result.started_at),
                ("finished_at", result.finished_at),
                ("duration_s", result.duration_s),
                ("reason", result.reason),
            )
            if v is not None
        }
        await self.step_status(step, result.status, **extra)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        self.sink.add(step_id, stream, message, at=at)

    async def report_unreported(self, result: RunResult) -> None:
        """Steps the executor never reported (skipped, or lost to an error) still get their final event."""
        by_id = {r.step_id: r for r in result.steps}
        for step in self.job.steps:
            if step.id in self.reported:
                continue
            await self.step_finished(
                by_id.get(step.id)
                or StepResult(step_id=step.id, status=StepStatus.SKIPPED, reason=result.reason or "not run")
            )


def secrets_of(job: Job, settings: Settings) -> list[str]:
    values = [v for k, v in job.metadata.items() if settings.dispatch.is_secret(k)]
    for step in job.steps:
        values.extend(v for k, v in step.metadata.items() if settings.dispatch.is_secret(k))
    return values


async def keep_alive(msg: Delivery, interval_s: float) -> None:
    """In-progress acks well inside AckWait while the job runs."""
    while True:
        await asyncio.sleep(interval_s)
        with contextlib.suppress(Unavailable):
            await msg.in_progress()


@dataclass
class Deps:
    conn: messaging.Messaging
    executor: Executor
    settings: Settings
    dispatcher_id: str
    host: str = field(default_factory=socket.gethostname)  # with the pid: a restarted dispatcher on this host
    pid: int = field(default_factory=os.getpid)  # can tell the process that took a job is gone


async def handle(deps: Deps, msg: Delivery, *, stop: StopSignal) -> None:
    """Run one delivered job message to its end. Cancelling this task leaves the message for redelivery."""
    attempt = msg.attempt
    try:
        job = Job.from_message(json.loads(msg.data))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("dropping malformed job message on %s: %s", msg.subject, exc)
        with contextlib.suppress(Unavailable):
            await msg.term()
        return
    if attempt > 1:
        metrics.REDELIVERIES.inc()
    consumer = subjects.dispatch_consumer(job.lane)
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


async def _handle(deps: Deps, msg: Delivery, job: Job, attempt: int, stop: StopSignal) -> None:
    settings = deps.settings
    sink = LogSink(
        deps.conn, job_id=job.id, attempt=attempt, settings=settings.dispatch, secrets=secrets_of(job, settings)
    )
    run = JobRun(deps.conn, job, attempt, sink, job_span=otel_trace.get_current_span())
    run.results = attach.start(deps.conn, job, settings)  # results (t23)
    heartbeat = asyncio.create_task(keep_alive(msg, max(settings.dispatch.ack_wait_s / 3, 0.5)))
    try:
        if attempt > 1 and await _already_ended(deps, msg, job):
            return
        if attempt > settings.dispatch.max_deliver:
            await _dead_letter(deps, msg, run, f"gave up after {settings.dispatch.max_deliver} attempts")
            return
        if stop.requested:  # cancelled while queued
            await _finish(deps, msg, run, RunResult(status=JobStatus.CANCELLED, steps=(), reason=stop.reason))
            return
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
            **({"ack_reply": msg.reply} if msg.reply else {}),
            started_at=utc_now(),
        )
        timer = asyncio.get_running_loop().call_later(
            job.timeout_s,
            lambda: stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason=f"job timed out after {job.timeout_s} s"),
        )
        started = time.monotonic()
        try:
            result = await deps.executor.run(job, attempt=attempt, hooks=run, stop=stop)
        except JobError as exc:
            metrics.EXECUTOR_ERRORS.labels(deps.executor.name, "job").inc()
            result = RunResult(status=JobStatus.FAILED, steps=(), reason=exc.detail)
        except Unavailable as exc:
            metrics.EXECUTOR_ERRORS.labels(deps.executor.name, "unavailable").inc()
            await _retry_later(deps, msg, run, exc)
            return
        finally:
            timer.cancel()
        metrics.JOB_DURATION.labels(str(job.lane), str(result.status)).observe(time.monotonic() - started)
        await _finish(deps, msg, run, result)
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await sink.close()
        metrics.LOG_BYTES.inc(sink.bytes_written)
        if sink.truncated:
            metrics.LOG_TRUNCATIONS.inc()


def failure_reason(result: RunResult) -> metrics.Reason:
    """The bounded reason label of a finished job, from its status and the texts the executor gave."""
    if result.status is JobStatus.SUCCEEDED:
        return metrics.Reason.SUCCEEDED
    if result.status is JobStatus.TIMED_OUT:
        return metrics.Reason.TIMED_OUT
    if result.status is JobStatus.CANCELLED:
        return metrics.Reason.CANCELLED
    texts = " ".join(t.lower() for t in (result.reason, *(s.reason for s in result.steps)) if t)
    if "out of memory" in texts or "oomkilled" in texts:
        return metrics.Reason.OOM
    # The executors' own words (docker.py, k8s/executor.py): "image 'x' is not available: …", "cannot be scheduled".
    if "is not available" in texts and "image" in texts:
        return metrics.Reason.IMAGE_PULL
    if "cannot be scheduled" in texts or "unschedulable" in texts:
        return metrics.Reason.UNSCHEDULABLE
    if (result.reason or "").startswith("infrastructure"):
        return metrics.Reason.INFRASTRUCTURE
    return metrics.Reason.FAILED


async def _already_ended(deps: Deps, msg: Delivery, job: Job) -> bool:
    """A redelivery whose job has a stored end (its ack was lost): ack it, do not run the job twice. When that
    cannot be told (the broker does not answer), hand it back for later rather than risk running it again."""
    try:
        last = await eventlog.latest_status(deps.conn, job.id)
    except HadesError as exc:
        log.warning("job %s: cannot tell whether its redelivery already ended (%s); later", job.id, exc.detail)
        with contextlib.suppress(Unavailable):
            await msg.nak(delay_s=RETRY_DELAY_S)
        return True
    if last is None or not events.is_terminal(last):
        return False
    log.info("job %s already ended %s; acking its redelivery", job.id, last["status"])
    with contextlib.suppress(Unavailable):
        await msg.ack()
    return True


async def _finish(deps: Deps, msg: Delivery, run: JobRun, result: RunResult) -> None:
    """Store the terminal event, then ack; if it cannot be stored, nak: the job is never acked without an end."""
    if result.reason:
        result = dataclasses.replace(result, reason=run.sink.mask(result.reason))
    await run.report_unreported(result)
    await run.sink.close()  # every line stored before the terminal event, so readers of the end see them all
    lost = {"log_lost_lines": run.sink.lost_lines} if run.sink.lost_lines else {}  # the record says so
    kept = attach.terminal_fields(run.results)  # results (t23): the test summary and kept files, when collected
    terminal = run.job_event(result.status, result.reason, finished_at=utc_now(), **lost, **kept)
    try:
        await run.flush()  # every earlier status event first: the terminal one is the attempt's last
        await _publish_with_retries(run.conn, terminal)
    except Unavailable as exc:
        log.error(
            "job %s: its %s (or a status event before it) could not be stored (%s); handing it back",
            run.job.id,
            result.status,
            exc.detail,
        )
        with contextlib.suppress(Unavailable):
            await msg.nak(delay_s=RETRY_DELAY_S)
        return
    reason = failure_reason(result)
    metrics.JOBS_FINISHED.labels(str(result.status), reason).inc()
    if run.job_span is not None:
        run.job_span.set_attribute("hades.result", str(result.status))
        run.job_span.set_attribute("hades.failure_reason", str(reason))
    log.info(
        "job %s attempt %d: %s%s",
        run.job.id,
        run.attempt,
        result.status,
        f" ({result.reason})" if result.reason else "",
    )
    await msg.ack()


async def _publish_with_retries(conn: messaging.Messaging, event: events.StatusEvent) -> None:
    """The same ``Nats-Msg-Id`` each time, so a retry after a lost ack stores the event once."""
    delay_s = 0.5
    for attempt in range(1, TERMINAL_PUBLISH_ATTEMPTS + 1):
        try:
            await eventlog.publish_status(conn, event)
            return
        except Unavailable:
            if attempt == TERMINAL_PUBLISH_ATTEMPTS:
                raise
            await asyncio.sleep(delay_s)
            delay_s *= 2


async def _retry_later(deps: Deps, msg: Delivery, run: JobRun, exc: Unavailable) -> None:
    exc = Unavailable(run.sink.mask(exc.detail))
    if run.attempt >= deps.settings.dispatch.max_deliver:
        await _dead_letter(deps, msg, run, f"infrastructure trouble on the last attempt: {exc.detail}")
        return
    log.warning("job %s attempt %d: %s; retrying in %.0f s", run.job.id, run.attempt, exc.detail, RETRY_DELAY_S)
    run.sink.system(0, f"[hades] attempt {run.attempt} hit infrastructure trouble ({exc.detail}); retrying")
    await run.job_status(JobStatus.RUNNING, f"retrying: {exc.detail}")
    if run.unsent:  # the next attempt's events supersede them in the record
        log.warning("job %s attempt %d: %d status events never stored", run.job.id, run.attempt, len(run.unsent))
    with contextlib.suppress(Unavailable):  # if even the nak is lost, AckWait brings the job back
        await msg.nak(delay_s=RETRY_DELAY_S)


async def _dead_letter(deps: Deps, msg: Delivery, run: JobRun, reason: str) -> None:
    """Fail the job for good and keep its message where it can be listed and redriven."""
    reason = run.sink.mask(reason)
    metrics.DEAD_LETTERED.inc()
    # Best effort, both: whatever is down, the job still gets its terminal status below.
    try:  # an earlier attempt may have died with its dispatcher and left containers running; this job is over
        await deps.executor.cleanup(run.job.id)
    except HadesError as exc:
        log.warning("job %s: leftovers not removed: %s", run.job.id, exc.detail)
    try:
        await deps.conn.publish(subjects.dead_subject(run.job.id), msg.data, headers={"Hades-Reason": reason[:500]})
    except HadesError as exc:
        log.warning("job %s: not copied to the dead letters: %s", run.job.id, exc.detail)
    await _finish(deps, msg, run, RunResult(status=JobStatus.FAILED, steps=(), reason=f"infrastructure: {reason}"))
