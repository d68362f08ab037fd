"""Reading a job's pod: what each step's container status and the pod's own status mean for Hades (pure functions).

Kubernetes words in, Hades words out: a terminated container becomes a ``StepResult`` (the wrapper's exit code,
``OOMKilled`` as the memory reason); a waiting reason says whether the job cannot run as given (bad image, bad
config: ``JobError`` territory) or only has to wait; a failed pod with a reason (evicted, node lost) is trouble
of the cluster, never the user's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from functions.dispatch.executors.base import Cause, StepResult
from functions.dispatch.executors.k8s import manifest
from runtime import units
from runtime.jobs import Step, StepStatus

IMAGE_PULL_WAITS = frozenset({"ErrImagePull", "ImagePullBackOff"})
"""Waiting reasons the kubelet retries by itself: a bounded wait, then the job fails."""
IMAGE_BAD = frozenset({"InvalidImageName", "ErrImageNeverPull"})
"""The image can never be had as named (or may not be pulled): the job fails at once."""
CONFIG_BAD = frozenset({"CreateContainerConfigError"})
"""The container cannot be created as specified (missing Secret, bad env): the job fails at once."""
CREATE_WAITS = frozenset({"CreateContainerError"})
"""The runtime could not create the container: often transient (the kubelet retries it with backoff), so a
bounded wait (``executor.CREATE_ERROR_WAIT_S``), then the job fails with the kubelet's message."""
START_FAILED = frozenset({"StartError", "ContainerCannotRun"})
"""The runtime could not start the command (no ``sh`` in the image): the step failed, as on Docker."""
DEADLINE = "DeadlineExceeded"


def container_statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = pod.get("status") or {}
    found = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return {s["name"]: s for s in found}


def owner_uid(pod: dict[str, Any]) -> str | None:
    for owner in pod.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "Job":
            return str(owner.get("uid"))
    return None


def unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message while the pod cannot be placed, else None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return str(condition.get("message") or "no node fits")
    return None


def pod_failure(pod: dict[str, Any]) -> str | None:
    """Why the cluster ended the pod (evicted, node lost, deadline), or None: only a failed pod with a reason."""
    status = pod.get("status") or {}
    reason = status.get("reason")
    if status.get("phase") != "Failed" or not reason:
        return None
    message = status.get("message") or ""
    return f"{reason}: {message}" if message else str(reason)


def hades_time(k8s_time: str | None) -> str | None:
    """``2026-12-01T10:00:00Z`` (or with fractions) → ``2026-12-01T10:00:00.000Z``."""
    if not k8s_time:
        return None
    head, _, rest = k8s_time.rstrip("Z").partition(".")
    return f"{head}.{(rest + '000')[:3]}Z"


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(
            start.replace("Z", "+00:00")
        )
    except ValueError:
        return None
    return round(max(delta.total_seconds(), 0.0), 3)


def step_result(step: Step, terminated: dict[str, Any]) -> StepResult:
    code = manifest.exit_code(terminated)
    reason = terminated.get("reason")
    started, finished = terminated.get("startedAt"), terminated.get("finishedAt")
    status, why, cause = StepStatus.SUCCEEDED, None, None
    if reason == "OOMKilled" and code != 0:
        status, why = StepStatus.FAILED, f"killed: out of memory (limit {units.format_memory(step.memory_bytes)})"
        cause = Cause.OUT_OF_MEMORY
    elif reason in START_FAILED:
        message = (terminated.get("message") or reason).strip()
        status, why, cause = StepStatus.FAILED, f"could not start: {message}", Cause.REFUSED
    elif code != 0:
        status, why, cause = StepStatus.FAILED, f"exited with code {code}", Cause.STEP_FAILED
    return StepResult(
        step_id=step.id,
        status=status,
        exit_code=code,
        started_at=hades_time(started),
        finished_at=hades_time(finished),
        duration_s=_seconds(started, finished),
        reason=why,
        cause=cause,
    )
