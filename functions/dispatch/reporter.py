"""One attempt's progress as the world sees it: the executor's hooks (``RunHooks``) turned into status events,
log lines, spans and metrics.

Every status event leaves through ``Reporter.event`` and every log line through the ``LogSink``; each masks the
job's secrets there, once, so no caller has to (an engine's error or a step's name can quote the environment).
The reporter decides nothing about the delivery: that is the settle step's (``settle``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as otel_trace

from functions.dispatch.executors.base import RunResult, StepResult
from functions.dispatch.logsink import LogSink
from functions.dispatch.ownership import Lease
from functions.dispatch.results.collector import Collector
from functions.dispatch.statusqueue import StatusQueue
from runtime import events, messaging, metrics, tracing
from runtime.jobs import Job, JobStatus, Step, StepStatus
from runtime.settings import Settings

tracer = tracing.tracer(__name__)

NOT_STARTED = "skipped: the job did not start"
"""A step the executor never reached because the job failed before any step ran (the job's reason says why)."""


@dataclass
class Reporter:
    """Reports one attempt's progress as events; the executor calls it as ``RunHooks``."""

    conn: messaging.Messaging
    job: Job
    attempt: int
    sink: LogSink
    job_span: Any = None
    statuses: StatusQueue = field(init=False)
    sequence: events.Sequence = field(default_factory=events.Sequence)
    reported: dict[int, StepResult] = field(default_factory=dict)
    dequeued_at: float = field(default_factory=time.monotonic)
    first_step_started: bool = False
    step_spans: dict[int, Any] = field(default_factory=dict)
    lease: Lease | None = None
    results: Collector | None = None
    """The job's files and reports when it asked for any: the executor fills it (``results.docker_volume``,
    ``results.k8s_collect``), the terminal event carries it."""
    """This attempt's hold on the job, once claimed: every event and log batch asks it before leaving."""

    def __post_init__(self) -> None:
        self.statuses = StatusQueue(self.conn, job_id=self.job.id)

    def own(self, lease: Lease) -> None:
        self.lease = lease
        self.statuses.guard = lease.held
        self.sink.guard = lease.held

    async def owned(self) -> bool:
        return self.lease is None or await self.lease.held()

    def event(self, status: JobStatus | StepStatus, *, step: Step | None = None, **fields: Any) -> events.StatusEvent:
        """The attempt's next status event (its seq taken now), of the job or of ``step``, masked: the one place
        an event's text is made safe to leave dispatch."""
        if step is not None:
            fields["step_name"] = step.name
        texts = {
            key: self.sink.mask(value) for key in ("reason", "step_name") if isinstance(value := fields.get(key), str)
        }
        fields.update(texts)
        if isinstance(results := fields.get("results"), dict):
            fields["results"] = self._masked_results(results)
        seq = self.sequence.next()
        if step is None:
            return events.job_event(self.job.id, attempt=self.attempt, seq=seq, status=JobStatus(status), **fields)
        return events.step_event(
            self.job.id, attempt=self.attempt, seq=seq, step_id=step.id, status=StepStatus(status), **fields
        )

    def _masked_results(self, results: dict[str, Any]) -> dict[str, Any]:
        """The results' free text masked: a failed case's message and output quote whatever the test saw (its
        environment too), a warning or a reason quotes paths. Kept files keep their names (they name the objects)."""
        mask = self.sink.mask

        def texts(item: dict[str, Any]) -> dict[str, Any]:
            return {k: mask(v) if isinstance(v, str) else v for k, v in item.items()}

        masked = dict(results)
        for key in ("failed_tests", "skipped", "reports"):
            masked[key] = [texts(item) if isinstance(item, dict) else item for item in results.get(key) or ()]
        masked["warnings"] = [mask(w) if isinstance(w, str) else w for w in results.get("warnings") or ()]
        return masked

    async def job_status(self, status: JobStatus, reason: str | None = None, **extra: Any) -> None:
        await self.statuses.publish(self.event(status, reason=reason, **extra))

    async def step_status(self, step: Step, status: StepStatus, **extra: Any) -> None:
        await self.statuses.publish(self.event(status, step=step, **extra))

    def system(self, step_id: int, text: str) -> None:
        """A line from Hades itself among the job's output."""
        self.sink.system(step_id, text)

    # -- RunHooks ---------------------------------------------------------------------------------------------

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
        self.reported[result.step_id] = result
        step = next(s for s in self.job.steps if s.id == result.step_id)
        if result.duration_s is not None:
            metrics.STEP_DURATION.labels(str(result.status)).observe(result.duration_s)
        if result.reason and result.status is StepStatus.FAILED:
            self.system(step.id, f"[hades] step {step.id} ({step.name}) {result.reason}")
        await self.sink.flush()  # a reader sees a step's last lines before its final status
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
        event = self.event(result.status, step=step, **extra)
        span = self.step_spans.pop(result.step_id, None)
        if span is not None:
            reason = event.get("reason")  # masked
            span.set_attribute("hades.step.result", str(result.status))
            if result.exit_code is not None:
                span.set_attribute("process.exit.code", result.exit_code)
            if reason:
                span.set_attribute("hades.step.reason", reason)
            if result.status is StepStatus.FAILED:
                span.set_status(otel_trace.StatusCode.ERROR, reason or "failed")
            span.end()
        await self.statuses.publish(event)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        self.sink.add(step_id, stream, message, at=at)

    # -- the end ----------------------------------------------------------------------------------------------

    async def report_unreported(self, result: RunResult) -> None:
        """Steps the executor never reported (skipped, or lost to an error) still get their final event. When no
        step ran at all, each says only that the job did not start: the job's reason says why, once."""
        by_id = {r.step_id: r for r in result.steps}
        nothing_ran = not self.reported and not result.steps
        for step in self.job.steps:
            if step.id in self.reported:
                continue
            reason = NOT_STARTED if nothing_ran and result.reason else (result.reason or "not run")
            await self.step_finished(
                by_id.get(step.id) or StepResult(step_id=step.id, status=StepStatus.SKIPPED, reason=reason)
            )

    def ended(self, result: RunResult, label: metrics.Reason) -> None:
        """The job span's result and the finished-jobs counter."""
        metrics.JOBS_FINISHED.labels(str(result.status), label).inc()
        if self.job_span is not None:
            self.job_span.set_attribute("hades.result", str(result.status))
            self.job_span.set_attribute("hades.failure_reason", str(label))


def secrets_of(job: Job, settings: Settings) -> list[str]:
    values = [v for k, v in job.metadata.items() if settings.dispatch.is_secret(k)]
    for step in job.steps:
        values.extend(v for k, v in step.metadata.items() if settings.dispatch.is_secret(k))
    return values
