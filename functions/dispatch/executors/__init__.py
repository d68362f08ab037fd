"""Executors: run a job's steps as containers. ``create_executor`` imports only the one configured (lazily), so
another executor's SDK is never imported on a path that does not use it. Adding one: a module here with a class
that has an async ``create(settings)``, its settings group in ``runtime.settings``, and a line in ``EXECUTORS``."""

from __future__ import annotations

import importlib

from functions.dispatch.executors.base import Executor, RunHooks, RunResult, StepResult, StopSignal
from runtime.settings import Settings

__all__ = ["EXECUTORS", "Executor", "RunHooks", "RunResult", "StepResult", "StopSignal", "create_executor"]

EXECUTORS: dict[str, str] = {
    "docker": "functions.dispatch.executors.docker:DockerExecutor",
    "kubernetes": "functions.dispatch.executors.k8s.executor:KubernetesExecutor",
}
"""``HADES_EXECUTOR`` value → ``module:class``."""


async def create_executor(settings: Settings) -> Executor:
    module_name, _, class_name = EXECUTORS[settings.dispatch.executor].partition(":")
    executor_class = getattr(importlib.import_module(module_name), class_name)
    executor: Executor = await executor_class.create(settings)
    return executor
