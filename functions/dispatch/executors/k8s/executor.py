"""The Kubernetes executor: every Hades job is one ``batch/v1`` Job; the cluster runs the steps, dispatch watches.

Owns: creating the Job (or adopting the one a crashed dispatcher left: a 409 on create reads it and follows it),
following its pod through the one pod watch of this dispatcher, each step's live log, per-step results from the
container statuses, telling failures apart (the job's fault: ``JobError``; the cluster's: ``Unavailable``, which
dispatch retries), deleting the Job when the job ended, was cancelled or timed out. Leaves to dispatch what it
leaves to every executor: timeouts and cancels (``StopSignal``), events, retries.

A dispatcher that shuts down (its run is cancelled) leaves the Job running: the redelivered message adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from functions.dispatch.executors import output
from functions.dispatch.executors.base import (
    Capabilities,
    Cause,
    ImageUnavailable,
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
    Superseded,
    Unschedulable,
    cleanup_shielded,
    run_result,
    skipped,
    stop_reason,
    stopped,
    timed_out_reason,
)
from functions.dispatch.executors.k8s import api as k8s_api
from functions.dispatch.executors.k8s import manifest, podlogs, podstate
from functions.dispatch.executors.k8s.watch import PodWatch
from runtime.errors import HadesError, JobError, Unavailable, truncate
from runtime.jobs import Job, JobStatus, Step, StepStatus, image_refusals
from runtime.settings import Settings

log = logging.getLogger(__name__)

RESYNC_S = 60.0
"""A job that heard nothing from the watch this long reads its pods (and Job) once: a safety net, not a poll."""
DRAIN_TIMEOUT_S = 10.0
"""How long a step's log may stay open after its container ended."""
STOP_WAIT_S = 15.0
"""After deleting a stopped job's pod (past its grace): how long to wait for its last status and lines."""
DELETING_WAIT_S = 60.0
"""How long a create waits for an earlier Job of the same name that is still being deleted."""
CREATE_ERROR_WAIT_S = 120.0
"""How long a step's container may stay in ``CreateContainerError`` before the job fails with the kubelet's
message: the kubelet retries it with backoff, and the usual causes (a name still held by a container of a
restarted kubelet, a runtime hiccup) pass; a lasting one (bad working dir, a mount that fails) does not."""


@dataclass
class _Follow:
    """One running job as the watch sees it."""

    job_id: str
    uid: str | None = None
    pod: dict[str, Any] | None = None
    gone: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    heard_at: float = field(default_factory=time.monotonic)


class KubernetesExecutor:
    name = "kubernetes"
    capabilities = Capabilities(owns_deadline=True)
    """The pod's ``activeDeadlineSeconds`` is the job's timeout: the cluster ends it with or without a dispatcher,
    and dispatch keeps no timer of its own for it."""

    def __init__(self, api: k8s_api.Api, *, settings: Settings) -> None:
        self._api = api
        self._settings = settings
        self._scope = settings.dispatch.scope
        self._follows: dict[str, list[_Follow]] = {}
        """Per job id every run following it: normally one; two while a redelivery overlaps a live run."""
        self._cleanups: set[asyncio.Task[None]] = set()
        self._watch = PodWatch(
            api,
            selector=manifest.selector(self._scope),
            loop=asyncio.get_running_loop(),
            on_pod=self._on_pod,
            on_relist=self._on_relist,
        )

    @classmethod
    async def create(cls, settings: Settings) -> KubernetesExecutor:
        k8s = settings.kubernetes
        # Per job at most one log stream at a time (steps run in order) and one short call; the watch; checks.
        threads = 2 * settings.dispatch.concurrency + 4
        api = await k8s_api.Api.connect(namespace=k8s.namespace, qps=k8s.qps, burst=k8s.burst, threads=threads)
        executor = cls(api, settings=settings)
        executor._watch.start()
        return executor

    @property
    def api_requests(self) -> int:
        return self._api.requests

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=k8s_api.REQUEST_TIMEOUT_S)
        await self._watch.stop()
        await self._api.close()

    async def check(self) -> str | None:
        try:
            await self._api.request("GET", k8s_api.JOBS, query=[("limit", 1)])
        except Unavailable as exc:
            return truncate(exc.detail, 200)
        except k8s_api.ApiError as exc:
            return truncate(f"kubernetes API: {exc}", 200)
        failing = self._watch.failing_since
        if failing is not None and time.monotonic() - failing > 30:
            return truncate(f"pod watch failing: {self._watch.last_error}", 200)
        return None

    # -- the watch's view, on the loop ----------------------------------------------------------------------------

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        job_id = (pod.get("metadata", {}).get("labels") or {}).get(manifest.LABEL_JOB_ID)
        for follow in self._follows.get(job_id or "", ()):
            self._heard(follow, kind, pod)

    def _heard(self, follow: _Follow, kind: str, pod: dict[str, Any]) -> None:
        uid = podstate.owner_uid(pod)
        if follow.uid is not None and uid != follow.uid:
            return  # a pod of an earlier Job of this job (still being removed)
        name = pod["metadata"]["name"]
        if follow.pod is not None and follow.pod["metadata"]["name"] != name and follow.uid is not None:
            follow.gone = follow.gone or f"pod {follow.pod['metadata']['name']} was replaced by {name}"
        elif kind == "DELETED":
            follow.gone = follow.gone or f"pod {name} was deleted"
        follow.pod = pod
        follow.heard_at = time.monotonic()
        follow.changed.set()

    def _on_relist(self, names: set[str]) -> None:
        for follow in (f for follows in self._follows.values() for f in follows):
            if follow.pod is not None and follow.pod["metadata"]["name"] not in names:
                follow.gone = follow.gone or f"pod {follow.pod['metadata']['name']} was deleted"
                follow.changed.set()

    # -- running a job --------------------------------------------------------------------------------------------

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        if stop.requested:
            return stopped(job.steps, [], stop)
        refusal = image_refusals(job, self._settings.limits)  # before the kubelet pulls anything
        if refusal is not None:
            raise JobError(refusal)
        follow = _Follow(job.id)
        self._follows.setdefault(job.id, []).append(follow)
        run = _Run(self, job, follow, hooks, stop)
        try:
            adopted = await self._create_or_adopt(job, attempt, follow)
            if adopted:
                await self.try_resync(follow)
            result = await run.follow()
        except (asyncio.CancelledError, Superseded):
            # Dispatch is shutting down, or another attempt owns the job now: the Job runs on, and the redelivered
            # message (or the new owner) follows it.
            raise
        except BaseException:
            await self._cleanup_shielded(job.id)
            raise
        finally:
            run.close_logs()
            self._forget(follow)
        if not run.deleted and await stop.owned():
            await self._cleanup_shielded(job.id)
        return result

    async def _create_or_adopt(self, job: Job, attempt: int, follow: _Follow) -> bool:
        """Create the job's Job; True when one existed already and is followed instead."""
        body = manifest.build_job(job, attempt=attempt, settings=self._settings)
        name = body["metadata"]["name"]
        deadline = time.monotonic() + DELETING_WAIT_S
        while True:
            try:
                created = await self._api.request("POST", k8s_api.JOBS, body=body)
            except k8s_api.ApiError as exc:
                if exc.status != 409:
                    raise _refused(exc, f"job {name} cannot be created") from exc
            else:
                self._set_uid(follow, created)
                return False
            try:
                existing = await self._api.request("GET", k8s_api.JOB, name=name)
            except k8s_api.ApiError as exc:
                if exc.status == 404:
                    continue  # deleted in between: create it again
                raise _refused(exc, f"job {name} cannot be read") from exc
            if not existing["metadata"].get("deletionTimestamp"):
                log.info("job %s: adopting its existing Kubernetes Job %s", job.id, name)
                self._set_uid(follow, existing)
                return True
            if time.monotonic() > deadline:
                raise Unavailable(f"kubernetes: an earlier Job {name} is still being deleted")
            await asyncio.sleep(1.0)

    def _set_uid(self, follow: _Follow, job_object: dict[str, Any]) -> None:
        follow.uid = str(job_object["metadata"]["uid"])
        if follow.pod is not None and podstate.owner_uid(follow.pod) != follow.uid:
            follow.pod, follow.gone = None, None  # seen before the uid was known: an earlier Job's pod

    def _forget(self, follow: _Follow) -> None:
        """Remove this run's entry only (another run of the same job may still follow)."""
        follows = self._follows.get(follow.job_id, [])
        follows[:] = [f for f in follows if f is not follow]
        if not follows:
            self._follows.pop(follow.job_id, None)

    async def try_resync(self, follow: _Follow) -> None:
        """``resync``, where a failed read is only a missed observation: the next tick (or the watch) tries again.

        Only a real pod state ends a run; an API server that is down for a while (a control-plane restart) must not
        fail every running job, whose pods run on regardless."""
        try:
            await self.resync(follow)
        except Unavailable as exc:
            log.warning("job %s: its pod could not be read (tried again in %.0f s): %s", follow.job_id, RESYNC_S, exc)

    async def resync(self, follow: _Follow) -> None:
        """Read the job's pod (and if it has none, its Job) directly."""
        follow.heard_at = time.monotonic()
        selector = manifest.selector(self._scope, follow.job_id)
        pods = await self._api.request("GET", k8s_api.PODS, query=[("labelSelector", selector)])
        mine = [p for p in pods.get("items") or [] if podstate.owner_uid(p) == follow.uid]
        if mine:
            if follow.pod is None or follow.pod["metadata"]["name"] == mine[0]["metadata"]["name"]:
                follow.pod = mine[0]
        elif follow.pod is not None:
            follow.gone = follow.gone or f"pod {follow.pod['metadata']['name']} was deleted"
        else:
            try:
                await self._api.request("GET", k8s_api.JOB, name=manifest.job_name(follow.job_id))
            except k8s_api.ApiError as exc:
                if exc.status != 404:
                    raise _refused(exc, "job cannot be read") from exc
                follow.gone = "Job was deleted"
        follow.changed.set()

    async def delete(self, job_id: str, *, pod: str | None = None, grace_s: float | None = None) -> None:
        """Delete the job's Job (its pods go with it); with ``grace_s`` also its pod with that grace."""
        try:
            query: list[tuple[str, Any]] = [("propagationPolicy", "Background")]
            await self._api.request("DELETE", k8s_api.JOB, query=query, name=manifest.job_name(job_id))
        except k8s_api.ApiError as exc:
            if exc.status != 404:
                raise _refused(exc, "job cannot be deleted") from exc
        if pod is not None and grace_s is not None:
            try:
                query = [("gracePeriodSeconds", math.ceil(grace_s))]
                await self._api.request("DELETE", k8s_api.POD, query=query, name=pod)
            except k8s_api.ApiError as exc:
                # 403: no ``delete`` on pods; the garbage collector removes it with the pod's own grace.
                log.debug("job %s: pod %s not deleted directly: %s", job_id, pod, exc)

    # -- cleanup --------------------------------------------------------------------------------------------------

    async def cleanup(self, job_id: str) -> None:
        await self.delete(job_id)

    async def leftovers(self) -> set[str]:
        query = [("labelSelector", manifest.selector(self._scope))]
        try:
            jobs = await self._api.request("GET", k8s_api.JOBS, query=query)
        except k8s_api.ApiError as exc:
            raise _refused(exc, "jobs cannot be listed") from exc
        found = {(j["metadata"].get("labels") or {}).get(manifest.LABEL_JOB_ID) for j in jobs.get("items") or []}
        return {job_id for job_id in found if job_id}

    async def _cleanup_shielded(self, job_id: str) -> None:
        what = "Job not deleted (the leftover sweep or its TTL removes it)"
        await cleanup_shielded(self.cleanup, job_id, self._cleanups, what=what)


class _Run:
    """One job's way through its pod's states, step by step, on the loop."""

    def __init__(self, executor: KubernetesExecutor, job: Job, follow: _Follow, hooks: RunHooks, stop: StopSignal):
        self.executor = executor
        self.k8s = executor._settings.kubernetes
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
                await self.executor.try_resync(follow)

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
            self.executor._api,
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
        await self.executor.delete(self.job.id, pod=pod, grace_s=self.stop.grace_s)
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


def _refused(exc: k8s_api.ApiError, what: str) -> HadesError:
    """An answer that is not temporary: the manifest is invalid (422, 400) → the job's; else the cluster's."""
    if exc.status in (400, 422):
        return JobError(f"{what}: {exc.message or exc.reason}")
    return Unavailable(f"kubernetes: {what}: {exc}")
