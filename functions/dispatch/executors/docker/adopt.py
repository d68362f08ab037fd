"""Following an earlier attempt's step containers instead of running them again (adoption).

A dispatcher that died mid-job (SIGKILL, a lost node, an engine that went away) leaves its attempt's step
containers and volume on the engine, labelled with the job, attempt and step. The redelivery's executor asks
``adoptable`` for them: when they are the job's first steps, each one started, and the volume is there, it
``follow_step``s each of them — the engine's copy of its output, its start and end, a cancel or timeout obeyed
as on any step — and runs the remaining steps in the same volume. Anything else is removed and the job runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from functions.dispatch.executors import output
from functions.dispatch.executors.base import RunHooks, StepResult, StopSignal
from functions.dispatch.executors.docker import spec, steps
from functions.dispatch.executors.docker.engine import Engine, close_quietly
from runtime import jobs
from runtime.jobs import Job, Step, utc_now

log = logging.getLogger(__name__)


@dataclass
class Adopted:
    """An earlier attempt's volume and the step containers it started (by step id), to be followed, not rerun."""

    attempt: int
    volume: str
    steps: dict[int, Any]


async def adoptable(engine: Engine, job: Job, attempt: int, *, scope: str) -> Adopted | None:
    """The earlier attempts' started step containers (the latest of each step) and volume, when they can be followed.

    Only a prefix of the job's steps (step 1, 2 … k, each with its container) is adopted: anything else (a
    step container that never started, a missing volume or step) means the job runs again from scratch.
    """
    selector = {"label": [f"{spec.LABEL_JOB_ID}={job.id}", f"{spec.LABEL_SCOPE}={scope}"]}
    client = engine.client
    # sparse: no inspect per container (one removed meanwhile would 404); its labels and state are in the list
    containers = await engine.call(client.containers.list, all=True, sparse=True, filters=selector)
    by_attempt: dict[int, dict[int, Any]] = {}
    for container in containers:
        labels = container.attrs.get("Labels") or {}
        with contextlib.suppress(KeyError, ValueError):
            by_attempt.setdefault(int(labels[spec.LABEL_ATTEMPT]), {})[int(labels[spec.LABEL_STEP_ID])] = container
    chain = sorted(a for a in by_attempt if a < attempt)
    if not chain:
        return None
    # An attempt that adopted an earlier one ran its remaining steps under its own attempt label, in that earlier
    # attempt's volume (one that did not adopt removed everything first): together, the latest container of each
    # step, in the first attempt's volume, are what there is to follow. The latest attempt alone is no prefix.
    earlier = chain[-1]
    started_steps: dict[int, Any] = {}
    for each in chain:
        started_steps.update(by_attempt[each])
    volume = spec.volume_name(job.id, chain[0])
    volumes = await engine.call(client.volumes.list, filters={"label": f"{spec.LABEL_JOB_ID}={job.id}"})
    prefix = [step.id for step in job.steps[: len(started_steps)]]
    started = all(started_steps[i].status in ("running", "exited") for i in started_steps if i in prefix)
    if volume not in {v.name for v in volumes} or sorted(started_steps) != prefix or not started:
        log.info("job %s: attempt %d left nothing to follow; running it again", job.id, earlier)
        return None
    log.info("job %s: attempt %d follows attempt %d's steps %s", job.id, attempt, earlier, prefix)
    return Adopted(attempt=earlier, volume=volume, steps=started_steps)


async def follow_step(
    engine: Engine, job: Job, step: Step, container: Any, *, hooks: RunHooks, stop: StopSignal
) -> tuple[StepResult, bool]:
    """Follow a step container an earlier attempt started: its whole output (read again from the engine's log,
    stdout and stderr each in order), its end, and the stop signal as a step the executor runs itself; the flag
    says whether the stop signal ended it."""
    loop = asyncio.get_running_loop()
    state = await engine.state(container)
    await hooks.step_started(step, started_at=_engine_time(state.get("StartedAt")) or utc_now())
    streams: dict[str, Any] = {}
    try:
        for name in ("stdout", "stderr"):
            streams[name] = await engine.call(
                container.logs, stdout=name == "stdout", stderr=name == "stderr", stream=True, follow=True
            )
    except BaseException:  # the engine failed between the two: close what was opened
        for stream in streams.values():
            engine.close_stream(stream)
        raise
    readers = {
        name: loop.run_in_executor(engine.pool, _pump_one, stream, name, output.emitter(loop, hooks, step.id), job.id)
        for name, stream in streams.items()
    }
    try:
        exit_code, interrupted = await steps.await_exit(engine, job, step, container, stop)
        for name, reader in readers.items():
            await steps.drain(engine, reader, streams[name], job_id=job.id, step_id=step.id)
        state = await engine.state(container)
    finally:
        for name, reader in readers.items():
            if not reader.done():
                engine.close_stream(streams[name])
    started_at = _engine_time(state.get("StartedAt"))
    finished_at = _engine_time(state.get("FinishedAt")) or utc_now()
    duration_s = None
    if started_at:
        duration_s = round((jobs.parse_time(finished_at) - jobs.parse_time(started_at)).total_seconds(), 3)
    result = steps.step_result(
        step,
        exit_code=exit_code,
        state=state,
        interrupted=interrupted,
        stop=stop,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration_s,
    )
    return result, interrupted


def _pump_one(stream: Any, name: str, emit: output.Emit, job_id: str) -> None:
    """One of a container's output streams (a followed log carries one only) as ``output.pump`` reads them."""
    pairs = ((chunk, None) if name == "stdout" else (None, chunk) for chunk in stream)
    output.pump(pairs, emit, job_id, release=lambda: close_quietly(stream))


def _engine_time(text: str | None) -> str | None:
    """An engine time (RFC 3339, nanoseconds) as the API writes times; None for the engine's zero time."""
    if not text or text.startswith("0001-"):
        return None
    whole, _, fraction = text.rstrip("Z").partition(".")
    return f"{whole}.{(fraction.split('+')[0] + '000')[:3]}Z"
