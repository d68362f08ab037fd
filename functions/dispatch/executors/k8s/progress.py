"""Following one Kubernetes Job's pod from its first status to the job's end, step by step, on the loop.

``Run.follow`` reads the pod as the watch hands it over (``Follow``) and turns each container status into the
executor's hooks: a step started (its log followed), a step finished (its result), a failure told apart (the
job's fault: ``JobError``; the cluster's: ``Unavailable``), a stop obeyed (the Job deleted, the running step's end
awaited). The executor (``executor.py``) creates or adopts the Job and routes the watch; this module decides what
the pod's states mean for the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from functions.dispatch.executors import output
from functions.dispatch.executors.base import (
    Cause,
    ImageUnavailable,
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
    Unschedulable,
    run_result,
    skipped,
    stop_reason,
    stopped,
    timed_out_reason,
)
from functions.dispatch.executors.k8s import api as k8s_api
from functions.dispatch.executors.k8s import manifest, podlogs, podstate
from runtime.errors import JobError, Unavailable, truncate
from runtime.jobs import Job, JobStatus, Step, StepStatus
from runtime.settings import KubernetesSettings

log = logging.getLogger(__name__)

RESYNC_S = 60.0
"""A job that heard nothing from the watch this long reads its pods (and Job) once: a safety net, not a poll."""
DRAIN_TIMEOUT_S = 10.0
"""How long a step's log may stay open after its container ended."""
STOP_WAIT_S = 15.0
"""After deleting a stopped job's pod (past its grace): how long to wait for its last status and lines."""
CREATE_ERROR_WAIT_S = 120.0
"""How long a step's container may stay in ``CreateContainerError`` before the job fails with the kubelet's
message: the kubelet retries it with backoff, and the usual causes (a name still held by a container of a
restarted kubelet, a runtime hiccup) pass; a lasting one (bad working dir, a mount that fails) does not."""


@dataclass
class Follow:
    """One running job as the watch sees it."""

    job_id: str
    uid: str | None = None
    pod: dict[str, Any] | None = None
    gone: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    heard_at: float = field(default_factory=time.monotonic)


class JobDoor(Protocol):
    """What a run asks of its executor: read the pod again, delete the Job."""

    async def try_resync(self, follow: Follow) -> None: ...

    async def delete(self, job_id: str, *, pod: str | None = None, grace_s: float | None = None) -> None: ...


class Run:
    """One job's way through its pod's states, step by step, on the loop."""

    def __init__(
        self,
        door: JobDoor,
        job: Job,
        follow: Follow,
        *,
        api: k8s_api.Api,
        settings: KubernetesSettings,
        hooks: RunHooks,
        stop: StopSignal,
    ):
        self.door = door
        self.api = api
        self.k8s = settings
        self.job = job
        self.follow_state = follow
        self.hooks = hooks
        self.stop = stop
        self.results: list[StepResult] = []
        self.logs: dict[int, podlogs.StepLog] = {}
        self.pull_since: dict[int, float] = {}
        self.create_since: dict[int, float] = {}
        self.unschedulable_since: float | None = None
        self.deleted = False

    def close_logs(self) -> None:
        for reader in self.logs.values():
            reader.close()

    async def follow(self) -> RunResult:
        follow = self.follow_state
        while True:
            follow.changed.clear()
            if self.stop.requested:
                return await self._stopped()
            result = await self._advance()
            if result is not None:
                return result
            wake_s = self._next_wake_s()
            stopper = asyncio.ensure_future(self.stop.event.wait())
            changed = asyncio.ensure_future(follow.changed.wait())
            try:
                await asyncio.wait({stopper, changed}, timeout=wake_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                changed.cancel()
            if time.monotonic() - follow.heard_at >= RESYNC_S:
                await self.door.try_resync(follow)

    def _next_wake_s(self) -> float:
        now = time.monotonic()
        wakes = [self.follow_state.heard_at + RESYNC_S - now]
        wakes += [since + self.k8s.image_pull_timeout_s - now for since in self.pull_since.values()]
        wakes += [since + CREATE_ERROR_WAIT_S - now for since in self.create_since.values()]
        if self.unschedulable_since is not None:
            wakes.append(self.unschedulable_since + self.k8s.unschedulable_timeout_s - now)
        return max(0.05, min(wakes) + 0.05)

    async def _advance(self) -> RunResult | None:
        follow, job = self.follow_state, self.job
        if follow.gone:
            raise Unavailable(f"kubernetes: {follow.gone} (not by Hades); the job is tried again")
        pod = follow.pod
        if pod is None:
            return None
        if pod["metadata"].get("deletionTimestamp"):
            raise Unavailable(f"kubernetes: pod {pod['metadata']['name']} is being deleted (not by Hades)")
        failure = podstate.pod_failure(pod)
        if failure is not None and failure.startswith(podstate.DEADLINE):
            return await self._timed_out()
        if failure is not None:  # evicted, node lost, node shutdown …: the cluster's trouble, not the job's
            raise Unavailable(f"kubernetes: pod {pod['metadata']['name']} failed: {failure}")
        self._check_schedule(pod)
        statuses = podstate.container_statuses(pod)
        for index in range(len(self.results), len(job.steps)):
            step = job.steps[index]
            status = statuses.get(manifest.container_name(step))
            state = (status or {}).get("state") or {}
            if "waiting" in state or not state:
                self._check_waiting(step, state.get("waiting") or {})
                break
            self.pull_since.pop(step.id, None)
            self.create_since.pop(step.id, None)
            if step.id not in self.logs:
                await self._start_step(step, pod, state)
            terminated = state.get("terminated")
            if terminated is None:
                break
            result = await self._finish_step(step, terminated)
            if result.status is StepStatus.FAILED and not step.continue_on_error:
                rest = skipped(job.steps[index + 1 :], reason=f"skipped: step {step.id} ({step.name}) failed")
                return self._result([*self.results, *rest])
        if len(self.results) == len(job.steps):
            return self._result(self.results)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            # The pod ended before every step ran (a continue_on_error step without a script failed as an init
            # container): what did not run is skipped, and the job failed.
            last = self.results[-1] if self.results else None
            why = f"step {last.step_id} ended the pod" if last else "the pod ended before its first step"
            rest = skipped(job.steps[len(self.results) :], reason=f"skipped: {why}")
            return RunResult(JobStatus.FAILED, (*self.results, *rest), reason=why, cause=Cause.STEP_FAILED)
        return None

    def _result(self, results: Sequence[StepResult]) -> RunResult:
        return run_result(results, self.job.steps)

    def _check_schedule(self, pod: dict[str, Any]) -> None:
        message = podstate.unschedulable(pod)
        if message is None:
            self.unschedulable_since = None
            return
        now = time.monotonic()
        self.unschedulable_since = self.unschedulable_since or now
        if now - self.unschedulable_since >= self.k8s.unschedulable_timeout_s:
            within = f"{self.k8s.unschedulable_timeout_s:g} s"
            raise Unschedulable(f"cannot be scheduled within {within}: {truncate(message)}")

    def _check_waiting(self, step: Step, waiting: dict[str, Any]) -> None:
        reason = str(waiting.get("reason") or "")
        message = truncate(str(waiting.get("message") or reason))
        if reason in podstate.IMAGE_BAD:
            raise ImageUnavailable(f"image {step.image!r} is not available: {reason}: {message}")
        if reason in podstate.CONFIG_BAD:
            raise JobError(f"step {step.id} ({step.name}) cannot run: {reason}: {message}")
        if reason in podstate.IMAGE_PULL_WAITS:
            since = self.pull_since.setdefault(step.id, time.monotonic())
            if time.monotonic() - since >= self.k8s.image_pull_timeout_s:
                timeout = f"{self.k8s.image_pull_timeout_s:g} s"
                raise ImageUnavailable(f"image {step.image!r} is not available: not pulled within {timeout}: {message}")
        if reason in podstate.CREATE_WAITS:
            since = self.create_since.setdefault(step.id, time.monotonic())
            if time.monotonic() - since >= CREATE_ERROR_WAIT_S:
                within = f"not resolved within {CREATE_ERROR_WAIT_S:g} s"
                raise JobError(f"step {step.id} ({step.name}) cannot run: {reason}: {message} ({within})")

    async def _start_step(self, step: Step, pod: dict[str, Any], state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        reader = podlogs.StepLog(
            self.api,
            pod=pod["metadata"]["name"],
            container=manifest.container_name(step),
            emit=output.emitter(loop, self.hooks, step.id),
            job_id=self.job.id,
        )
        self.logs[step.id] = reader
        reader.start(loop)
        began = (state.get("running") or state.get("terminated") or {}).get("startedAt")
        started_at = podstate.hades_time(began) or podstate.hades_time(_now_k8s())
        log.debug("job %s: step %d started in pod %s", self.job.id, step.id, pod["metadata"]["name"])
        await self.hooks.step_started(step, started_at=started_at or "")

    async def _finish_step(self, step: Step, terminated: dict[str, Any]) -> StepResult:
        reader = self.logs.get(step.id)
        if reader is not None:
            await reader.drain(DRAIN_TIMEOUT_S)
        result = podstate.step_result(step, terminated)
        self.results.append(result)
        await self.hooks.step_finished(result)
        return result

    async def _interrupt(self, reason: str) -> RunResult:
        """The running step failed for ``reason`` (the stop or the deadline), the rest skipped."""
        pod = self.follow_state.pod
        statuses = podstate.container_statuses(pod) if pod else {}
        rest_from = len(self.results)
        if rest_from < len(self.job.steps) and self.job.steps[rest_from].id in self.logs:
            step = self.job.steps[rest_from]
            state = (statuses.get(manifest.container_name(step)) or {}).get("state") or {}
            terminated = state.get("terminated") or {}
            await self.logs[step.id].drain(2.0)
            code = manifest.exit_code(terminated) if terminated else None
            result = StepResult(
                step_id=step.id,
                status=StepStatus.FAILED,
                exit_code=code,
                started_at=podstate.hades_time((state.get("running") or terminated).get("startedAt")),
                finished_at=podstate.hades_time(terminated.get("finishedAt")) or podstate.hades_time(_now_k8s()),
                reason=reason,
            )
            self.results.append(result)
            await self.hooks.step_finished(result)
            rest_from += 1
        return stopped(self.job.steps[rest_from:], self.results, self.stop)

    async def _timed_out(self) -> RunResult:
        self.stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason=timed_out_reason(self.job))
        return await self._stopped()

    async def _stopped(self) -> RunResult:
        await self.stop.check_owned()  # superseded: the Job is the new owner's, not to be deleted from here
        follow = self.follow_state
        pod = follow.pod["metadata"]["name"] if follow.pod else None
        log.info("job %s: stopping its Kubernetes Job (%s)", self.job.id, self.stop.reason or self.stop.status)
        await self.door.delete(self.job.id, pod=pod, grace_s=self.stop.grace_s)
        self.deleted = True
        if pod is not None and self._running_step() is not None:
            # Wait for the container's end: its exit code, and its last lines.
            deadline = time.monotonic() + self.stop.grace_s + STOP_WAIT_S
            while not follow.gone and self._running_step() is not None and time.monotonic() < deadline:
                follow.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(follow.changed.wait(), max(0.05, deadline - time.monotonic()))
        return await self._interrupt(stop_reason(self.stop))

    def _running_step(self) -> Step | None:
        """The started step whose container has not ended yet, if any."""
        index = len(self.results)
        if index >= len(self.job.steps) or self.job.steps[index].id not in self.logs:
            return None
        step = self.job.steps[index]
        pod = self.follow_state.pod or {}
        state = (podstate.container_statuses(pod).get(manifest.container_name(step)) or {}).get("state") or {}
        return None if "terminated" in state else step


def _now_k8s() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
