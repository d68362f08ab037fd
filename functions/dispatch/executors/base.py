"""The executor interface: what dispatch asks of Docker and Kubernetes alike.

An executor runs one job's steps in order, each in its own container, with one shared ``/shared`` volume. It owns
the step sequence (a failing step stops the job unless ``continue_on_error``; the rest are ``skipped``) because on
Kubernetes the cluster, not dispatch, runs the steps. Dispatch owns everything else: the queue, timeouts, cancels,
events and retries. It tells the executor to stop through ``StopSignal``; the executor reports progress through
``RunHooks`` and returns a ``RunResult``.

Failures are typed: ``Unavailable`` (engine or API server down: dispatch retries the job later) and ``JobError``
(this job cannot run as given, e.g. its image cannot be pulled: the job fails with that reason; ``ImageUnavailable``
and ``Unschedulable`` say which kind). A step's non-zero exit is a result, never an exception. Results carry a
typed ``Cause`` beside their words, so dispatch never reads an executor's wording to tell what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from runtime.errors import HadesError, JobError
from runtime.jobs import Job, JobStatus, Step, StepStatus

log = logging.getLogger(__name__)


class Cause(StrEnum):
    """Why a run (or a step) ended the way it did, as a type: what the settle step and the metrics read."""

    STEP_FAILED = "step_failed"  # a step exited non-zero (the job's own code)
    OUT_OF_MEMORY = "out_of_memory"  # a step was killed at its memory limit
    IMAGE_UNAVAILABLE = "image_unavailable"  # an image could not be found or pulled
    UNSCHEDULABLE = "unschedulable"  # the cluster found no node for the job
    REFUSED = "refused"  # the engine or cluster refused to run the job as given
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"  # Hades gave up on the engine, cluster or broker


class ImageUnavailable(JobError):
    """A step's image cannot be found or pulled: the job fails (``Cause.IMAGE_UNAVAILABLE``)."""


class Unschedulable(JobError):
    """The cluster found no node for the job in time: the job fails (``Cause.UNSCHEDULABLE``)."""


def cause_of(error: JobError) -> Cause:
    if isinstance(error, ImageUnavailable):
        return Cause.IMAGE_UNAVAILABLE
    if isinstance(error, Unschedulable):
        return Cause.UNSCHEDULABLE
    return Cause.REFUSED


@dataclass(frozen=True)
class Capabilities:
    """What an executor does beyond the interface, asked by dispatch instead of the executor's name."""

    owns_deadline: bool = False
    """The engine itself ends a job at its timeout (Kubernetes: the pod's ``activeDeadlineSeconds``), with or
    without a dispatcher; otherwise dispatch's timer does (Docker)."""
    host_local: bool = False
    """The job's containers run on the dispatcher's own host, so a dead dispatcher of this host can be told from
    a live one (its pid) and its deliveries handed back at once (Docker)."""


@dataclass(frozen=True)
class StepResult:
    step_id: int
    status: StepStatus
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    reason: str | None = None
    """Why it failed or was skipped, in words a user understands (e.g. 'killed: out of memory (limit 32M)')."""
    cause: Cause | None = None
    """The same as a type, for a failed step (``STEP_FAILED``, ``OUT_OF_MEMORY`` …)."""


@dataclass(frozen=True)
class RunResult:
    status: JobStatus
    steps: tuple[StepResult, ...]
    reason: str | None = None
    cause: Cause | None = None
    """Why the job ended so, as a type; None for a success (or when the failing step's cause says it)."""
    results: dict[str, Any] = field(default_factory=dict)
    """What the run produced beyond statuses (test reports, artifacts: later features attach theirs here)."""
    release: Callable[[], Awaitable[None]] | None = field(default=None, compare=False, repr=False)
    """Removes what the run made (containers and volume, the Kubernetes Job). Dispatch calls it only once the job's
    terminal event is stored: until then a redelivery (this dispatcher killed, the end refused by NATS) adopts the
    finished run instead of running it again. Never raises (a failure is logged; the leftover sweep retries it)."""


class Superseded(Exception):
    """Another attempt took this job over (this dispatcher was paused past AckWait): touch nothing of it."""


async def _always_owned() -> bool:
    return True


@dataclass
class StopSignal:
    """Set by dispatch to stop a running job: it ends with ``status`` (cancelled or timed out) for ``reason`` (text);
    ``grace_s`` is how long SIGTERM gets before SIGKILL.

    ``superseded`` is the other way a run ends: another attempt owns the job now, and the executor must leave its
    containers as they are (the new owner follows or removes them) and raise ``Superseded``. Before acting on a
    container the executor asks ``owned()``."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    status: JobStatus = JobStatus.CANCELLED
    grace_s: float = 0.0
    reason: str = ""
    superseded: bool = False
    deadline_at: float | None = None
    """The job's deadline on the wall clock (epoch seconds), from its first start: an executor that owns the
    deadline and starts the job afresh on a redelivery gives it only what is left."""
    guard: Callable[[], Awaitable[bool]] = _always_owned
    """Whether this attempt still owns the job (dispatch's lease); set by dispatch."""

    def stop(self, status: JobStatus, *, grace_s: float, reason: str) -> None:
        if self.event.is_set():
            return  # the first stop wins (a timeout during a cancel's grace stays a cancel)
        self.status, self.grace_s, self.reason = status, grace_s, reason
        self.event.set()

    def supersede(self) -> None:
        self.superseded = True
        self.event.set()

    async def owned(self) -> bool:
        """Whether this attempt may still act on the job's containers (False once superseded)."""
        if not self.superseded and not await self.guard():
            self.supersede()
        return not self.superseded

    async def check_owned(self) -> None:
        """``Superseded`` unless this attempt still owns the job."""
        if not await self.owned():
            raise Superseded

    @property
    def requested(self) -> bool:
        return self.event.is_set()


class RunHooks(Protocol):
    """Progress reports; all are called on the event loop (executors marshal from their threads)."""

    async def step_started(self, step: Step, *, started_at: str) -> None: ...

    async def step_finished(self, result: StepResult) -> None: ...

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        """One line of output (without its newline); ``stream`` is stdout or stderr."""


class Executor(Protocol):
    name: str
    capabilities: Capabilities

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        """Run every step; return when the job ended (also when stopped). What the job created stays until dispatch
        calls the result's ``release`` (after the job's end is stored); a run that raises cleans up itself (except
        ``Superseded`` and a cancelled Kubernetes run, which leave the job to its next owner)."""

    async def cleanup(self, job_id: str) -> None:
        """Remove everything this job created (containers, volume, Kubernetes Job); idempotent."""

    async def leftovers(self) -> set[str]:
        """Ids of jobs that still have resources (to clean up after a dispatcher crash)."""

    async def check(self) -> str | None:
        """None when the engine or API server answers, else a short reason (for /readyz)."""

    async def close(self) -> None: ...


def run_result(results: Sequence[StepResult], steps: Sequence[Step]) -> RunResult:
    """The job's result from its steps: failed at the first failing step that may not continue."""
    by_id = {s.id: s for s in steps}
    for result in results:
        if result.status is StepStatus.FAILED and not by_id[result.step_id].continue_on_error:
            name = by_id[result.step_id].name
            reason = f"step {result.step_id} ({name}) {result.reason or 'failed'}"
            cause = result.cause or Cause.STEP_FAILED
            return RunResult(JobStatus.FAILED, tuple(results), reason=reason, cause=cause)
    return RunResult(JobStatus.SUCCEEDED, tuple(results))


def stopped(rest: Sequence[Step], results: Sequence[StepResult], stop: StopSignal) -> RunResult:
    """A job the stop signal ended: what ran, then the rest skipped (``Superseded`` when another attempt owns it)."""
    if stop.superseded:
        raise Superseded
    reason = f"skipped: {stop.reason}" if stop.reason else f"skipped: job {stop.status}"
    cause = Cause.TIMED_OUT if stop.status is JobStatus.TIMED_OUT else Cause.CANCELLED
    steps = (*results, *skipped(rest, reason=reason))
    return RunResult(status=stop.status, steps=steps, reason=stop.reason or None, cause=cause)


def stop_reason(stop: StopSignal) -> str:
    """A step the stop signal ended: 'killed: …' (no grace) or 'stopped: …'."""
    verb = "killed" if stop.grace_s <= 0 else "stopped"
    detail = stop.reason or ("job timed out" if stop.status is JobStatus.TIMED_OUT else str(stop.status))
    return f"{verb}: {detail}"


def timed_out_reason(job: Job) -> str:
    """The one wording of a job past its timeout, whichever owner (dispatch's timer, the pod) noticed."""
    return f"job timed out after {job.timeout_s} s"


def skipped(steps: Sequence[Step], *, reason: str) -> list[StepResult]:
    return [StepResult(step_id=s.id, status=StepStatus.SKIPPED, reason=reason) for s in steps]


async def cleanup_shielded(
    cleanup: Callable[[str], Awaitable[None]], job_id: str, running: set[asyncio.Task[None]], *, what: str
) -> None:
    """Remove a job's resources even when the run awaiting this is cancelled: the removal goes on as its own task
    (kept in ``running`` so the executor's close can wait for it); a failure is logged, the leftover sweep retries."""
    task = asyncio.ensure_future(cleanup(job_id))
    running.add(task)
    task.add_done_callback(running.discard)
    try:
        await asyncio.shield(task)
    except HadesError as exc:
        log.warning("job %s: %s: %s", job_id, what, exc.detail)
