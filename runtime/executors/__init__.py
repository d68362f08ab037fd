"""Executors: run a job's steps as containers. ``create_executor`` imports only the one configured, so the Docker
path never imports ``kubernetes`` and the Kubernetes path never imports ``docker``."""

from __future__ import annotations

from runtime.executors.base import Executor, RunHooks, RunResult, StepResult, StopSignal
from runtime.settings import Settings

__all__ = ["Executor", "RunHooks", "RunResult", "StepResult", "StopSignal", "create_executor"]


async def create_executor(settings: Settings) -> Executor:
    if settings.dispatch.executor == "kubernetes":
        from runtime.executors import kubernetes

        return await kubernetes.KubernetesExecutor.create(settings)
    from runtime.executors import docker

    return await docker.DockerExecutor.create(settings)
