"""The Docker executor's parts: ``engine`` (the one door to the engine, with its error translation), ``spec`` (what
a job's containers and volume are made of), ``steps`` (one step container from start to end), ``adopt`` (following
an earlier attempt's steps) and ``executor`` (running one job)."""

from __future__ import annotations

from functions.dispatch.executors.docker.executor import DockerExecutor
from functions.dispatch.executors.docker.spec import (
    LABEL_ATTEMPT,
    LABEL_JOB_ID,
    LABEL_SCOPE,
    LABEL_STEP_ID,
    nano_cpus,
    shared_volume_options,
)

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB_ID",
    "LABEL_SCOPE",
    "LABEL_STEP_ID",
    "DockerExecutor",
    "nano_cpus",
    "shared_volume_options",
]
