"""A test executor whose steps only sleep: dispatch's whole path (leases, events, acks) without containers.

A step's script is ``sleep <seconds>`` (anything else fails the step with exit code 127, as a shell would). The
executor reports each step like a real one (started, a log line, finished with exit code 0), so the job's record
ends ``succeeded``. Fair-share tests and the ``fair`` benchmark use it: a container per job would measure the
engine, not the order in which dispatch starts jobs.

``use(monkeypatch, settings)`` registers it for a test's in-process dispatchers; ``python -m tests.sleepexecutor``
serves a dispatcher process with it (settings from the environment, as ``python -m functions.dispatch``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from typing import TYPE_CHECKING

from functions.dispatch import executors
from functions.dispatch.executors.base import (
    Capabilities,
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
    run_result,
    skipped,
    stop_reason,
    stopped,
)
from runtime.jobs import Job, StepStatus, utc_now
from runtime.settings import Settings

if TYPE_CHECKING:
    import pytest

NAME = "sleep"
_SLEEP = re.compile(r"^\s*sleep\s+(\d+(?:\.\d+)?)\s*$")


class SleepExecutor:
    name = NAME
    capabilities = Capabilities()

    @classmethod
    async def create(cls, settings: Settings) -> SleepExecutor:
        return cls()

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        results: list[StepResult] = []
        for index, step in enumerate(job.steps):
            if stop.requested:
                return stopped(job.steps[index:], results, stop)
            started_at, began = utc_now(), time.monotonic()
            await hooks.step_started(step, started_at=started_at)
            match = _SLEEP.match(step.script)
            if match is None:
                hooks.log(step.id, "stderr", f"sh: {step.script!r}: not found", at=utc_now())
                result = _result(step.id, StepStatus.FAILED, 127, started_at, began, reason="exited with code 127")
            else:
                try:
                    await asyncio.wait_for(stop.event.wait(), float(match.group(1)))
                except TimeoutError:
                    hooks.log(step.id, "stdout", f"slept {match.group(1)} s", at=utc_now())
                    result = _result(step.id, StepStatus.SUCCEEDED, 0, started_at, began)
                else:  # stopped mid-sleep
                    killed = _result(step.id, StepStatus.FAILED, 137, started_at, began, reason=stop_reason(stop))
                    await hooks.step_finished(killed)
                    return stopped(job.steps[index + 1 :], [*results, killed], stop)
            await hooks.step_finished(result)
            results.append(result)
            if result.status is StepStatus.FAILED and not step.continue_on_error:
                rest = skipped(job.steps[index + 1 :], reason=f"skipped: step {step.id} failed")
                return run_result([*results, *rest], job.steps)
        return run_result(results, job.steps)

    async def cleanup(self, job_id: str) -> None:
        """Nothing to remove: a sleep leaves nothing behind."""

    async def leftovers(self) -> set[str]:
        return set()

    async def check(self) -> str | None:
        return None

    async def close(self) -> None:
        pass


def _result(
    step_id: int, status: StepStatus, exit_code: int, started_at: str, began: float, *, reason: str | None = None
) -> StepResult:
    return StepResult(
        step_id=step_id,
        status=status,
        exit_code=exit_code,
        started_at=started_at,
        finished_at=utc_now(),
        duration_s=round(time.monotonic() - began, 3),
        reason=reason,
    )


def sleeping(settings: Settings) -> Settings:
    """``settings`` with the sleep executor chosen (``HADES_EXECUTOR`` accepts only the real ones)."""
    return dataclasses.replace(settings, dispatch=dataclasses.replace(settings.dispatch, executor=NAME))


def register() -> None:
    executors.EXECUTORS[NAME] = f"{__name__}:SleepExecutor"


def use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """Register the executor for this test only; ``settings`` with it chosen."""
    monkeypatch.setitem(executors.EXECUTORS, NAME, f"{__name__}:SleepExecutor")
    return sleeping(settings)


def main() -> None:
    from functions.dispatch.handlers import create_app
    from runtime import app as hades_app
    from runtime import logconfig

    register()
    settings = sleeping(Settings.from_env(os.environ))
    logconfig.configure_logging("dispatch", settings.log_level, log_format=settings.log_format)
    hades_app.run(create_app(settings), port=settings.http.dispatch_port)


if __name__ == "__main__":
    main()
