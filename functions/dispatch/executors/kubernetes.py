"""The ``kubernetes`` executor as ``EXECUTORS`` names it; the code lives in ``executors/k8s/`` (manifest builder,
API door, pod watch, pod states, step logs, the executor itself)."""

from __future__ import annotations

from functions.dispatch.executors.k8s.executor import KubernetesExecutor

__all__ = ["KubernetesExecutor"]
