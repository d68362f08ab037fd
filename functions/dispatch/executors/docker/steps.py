"""One step container from start to end: its output to ``RunHooks.log`` as written, its exit, a stop obeyed, and
what its end means (``step_result``) — for a step this executor runs and for one it follows after a restart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from functions.dispatch.executors import output
from functions.dispatch.executors.base import Cause, RunHooks, StepResult, StopSignal, Superseded, stop_reason
from functions.dispatch.executors.docker.engine import API_TIMEOUT_S, Engine, close_quietly
from runtime import units
from runtime.errors import Unavailable
from runtime.jobs import Job, JobStatus, Step, StepStatus

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0
"""How long a step's output stream may stay open after its container exited before it is closed."""


async def unless_stopped(task: asyncio.Future[Any], stop: StopSignal) -> bool:
    """Wait for ``task`` or the stop signal, whichever comes first; True when the task is done."""
    if not task.done() and not stop.requested:
        stopper = asyncio.ensure_future(stop.event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
    return task.done()


async def await_exit(engine: Engine, job: Job, step: Step, container: Any, stop: StopSignal) -> tuple[int, bool]:
    """The step container's exit code, and whether the stop signal ended it (then it was stopped here)."""
    exit_task = asyncio.ensure_future(engine.exit_code(container))
    try:
        interrupted = not await unless_stopped(exit_task, stop)
        if not interrupted:
            return exit_task.result(), False
        if stop.superseded:  # the container is the new owner's now: leave it running
            raise Superseded
        log.info("job %s: stopping step %d (%s)", job.id, step.id, stop.reason or stop.status)
        await engine.stop_container(container, grace_s=stop.grace_s)
        try:
            return await asyncio.wait_for(exit_task, API_TIMEOUT_S), True
        except TimeoutError:
            raise Unavailable(f"docker engine: step {step.id} did not stop") from None
    finally:
        exit_task.cancel()


async def drain(engine: Engine, reader: asyncio.Future[None], stream: Any, *, job_id: str, step_id: int) -> None:
    """Wait until every line was read and handed to the hooks (the stream ends with the container)."""
    try:
        await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT_S)
    except TimeoutError:
        log.warning(
            "job %s: step %d output still open %.0f s after it ended; closing it", job_id, step_id, DRAIN_TIMEOUT_S
        )
        engine.close_stream(stream)


def read_output(engine: Engine, stream: Any, hooks: RunHooks, *, job_id: str, step_id: int) -> asyncio.Future[None]:
    """Read a demultiplexed attach stream on the engine's pool into ``hooks.log``."""
    loop = asyncio.get_running_loop()
    emit = output.emitter(loop, hooks, step_id)
    return loop.run_in_executor(engine.pool, _pump_output, stream, emit, job_id)


def _pump_output(stream: Any, emit: output.Emit, job_id: str) -> None:
    output.pump(stream, emit, job_id, release=lambda: close_quietly(stream))


def step_result(
    step: Step,
    *,
    exit_code: int,
    state: dict[str, Any],
    interrupted: bool,
    stop: StopSignal,
    started_at: str | None,
    finished_at: str,
    duration_s: float | None,
) -> StepResult:
    """A finished step container's result: stopped by dispatch, killed by its memory limit, or its exit code."""
    status, reason, cause = StepStatus.SUCCEEDED, None, None
    if interrupted:
        status, reason = StepStatus.FAILED, stop_reason(stop)
        cause = Cause.TIMED_OUT if stop.status is JobStatus.TIMED_OUT else Cause.CANCELLED
    elif exit_code != 0 and state.get("OOMKilled"):
        status, cause = StepStatus.FAILED, Cause.OUT_OF_MEMORY
        reason = f"killed: out of memory (limit {units.format_memory(step.memory_bytes)})"
    elif exit_code != 0:
        status, reason, cause = StepStatus.FAILED, f"exited with code {exit_code}", Cause.STEP_FAILED
    return StepResult(
        step_id=step.id,
        status=status,
        exit_code=exit_code,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration_s,
        reason=reason,
        cause=cause,
    )
