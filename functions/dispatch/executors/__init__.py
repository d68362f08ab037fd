"""Executors: run a job's steps as containers. ``create_executor`` imports only the one configured (lazily), so
another executor's SDK is never imported on a path that does not use it."""

from __future__ import annotations

from runtime.executors.base import Executor, RunHooks, RunResult, StepResult, StopSignal
from runtime.settings import Settings

__all__ = ["Executor", "RunHooks", "RunResult", "StepResult", "StopSignal", "create_executor"]


async def create_executor(settings: Settings) -> Executor:
    from runtime.executors import docker

    return await docker.DockerExecutor.create(settings)
