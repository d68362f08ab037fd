"""The executor interface: what dispatch asks of Docker and Kubernetes alike.

An executor runs one job's steps in order, each in its own container, with one shared ``/shared`` volume. It owns
the step sequence (a failing step stops the job unless ``continue_on_error``; the rest are ``skipped``) because on
Kubernetes the cluster, not dispatch, runs the steps. Dispatch owns everything else: the queue, timeouts, cancels,
events and retries. It tells the executor to stop through ``StopSignal``; the executor reports progress through
``RunHooks`` and returns a ``RunResult``.

Failures are typed: ``Unavailable`` (engine or API server down: dispatch retries the job later) and ``JobError``
(this job cannot run as given, e.g. its image cannot be pulled: the job fails with that reason). A step's non-zero
exit is a result, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runtime.errors import HadesError
from runtime.jobs import Job, JobStatus, Step, StepStatus

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunResult:
    status: JobStatus
    steps: tuple[StepResult, ...]
    reason: str | None = None


@dataclass
class StopSignal:
    """Set by dispatch to stop a running job: it ends with ``status`` (cancelled or timed out) for ``reason`` (text);
    ``grace_s`` is how long SIGTERM gets before SIGKILL."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    status: JobStatus = JobStatus.CANCELLED
    grace_s: float = 0.0
    reason: str = ""

    def stop(self, status: JobStatus, *, grace_s: float, reason: str) -> None:
        if self.event.is_set():
            return  # the first stop wins (a timeout during a cancel's grace stays a cancel)
        self.status, self.grace_s, self.reason = status, grace_s, reason
        self.event.set()

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

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        """Run every step; return when the job ended (also when stopped). Cleans up what the job created."""

    async def cleanup(self, job_id: str) -> None:
        """Remove everything this job created (containers, volume, Kubernetes Job); idempotent."""

    async def leftovers(self) -> set[str]:
        """Ids of jobs that still have resources (to clean up after a dispatcher crash)."""

    async def check(self) -> str | None:
        """None when the engine or API server answers, else a short reason (for /readyz)."""

    async def close(self) -> None: ...


def job_status(results: Sequence[StepResult], steps: Sequence[Step]) -> tuple[JobStatus, str | None]:
    """The job's result from its steps: failed at the first failing step that may not continue."""
    by_id = {s.id: s for s in steps}
    for result in results:
        if result.status is StepStatus.FAILED and not by_id[result.step_id].continue_on_error:
            name = by_id[result.step_id].name
            return JobStatus.FAILED, f"step {result.step_id} ({name}) {result.reason or 'failed'}"
    return JobStatus.SUCCEEDED, None


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
