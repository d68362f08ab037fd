"""The Kubernetes executor: every Hades job is one ``batch/v1`` Job; the cluster runs the steps, dispatch watches.

Owns: creating the Job (or adopting the one a crashed dispatcher left: a 409 on create reads it and follows it),
following its pod through the one pod watch of this dispatcher, each step's live log, per-step results from the
container statuses, telling failures apart (the job's fault: ``JobError``; the cluster's: ``Unavailable``, which
dispatch retries), deleting the Job when the job was cancelled or timed out, or (``RunResult.release``) once
dispatch has stored the end of a job that ended. Leaves to dispatch what it
leaves to every executor: timeouts and cancels (``StopSignal``), events, retries.

A dispatcher that shuts down (its run is cancelled) leaves the Job running: the redelivered message adopts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from typing import Any

from functions.dispatch.executors.base import (
    Capabilities,
    RunHooks,
    RunResult,
    StopSignal,
    Superseded,
    cleanup_shielded,
    stopped,
)
from functions.dispatch.executors.k8s import api as k8s_api
from functions.dispatch.executors.k8s import manifest, podstate, progress
from functions.dispatch.executors.k8s.progress import Follow, Run
from functions.dispatch.executors.k8s.watch import PodWatch
from functions.dispatch.results import k8s_collect
from runtime.errors import HadesError, JobError, Unavailable, truncate
from runtime.jobs import Job, image_refusals
from runtime.settings import Settings

log = logging.getLogger(__name__)

DELETING_WAIT_S = 60.0
"""How long a create waits for an earlier Job of the same name that is still being deleted."""


class KubernetesExecutor:
    name = "kubernetes"
    capabilities = Capabilities(owns_deadline=True)
    """The pod's ``activeDeadlineSeconds`` is the job's timeout: the cluster ends it with or without a dispatcher,
    and dispatch keeps no timer of its own for it."""

    def __init__(self, api: k8s_api.Api, *, settings: Settings) -> None:
        self._api = api
        self._settings = settings
        self._scope = settings.dispatch.scope
        self._follows: dict[str, list[Follow]] = {}
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

    def _heard(self, follow: Follow, kind: str, pod: dict[str, Any]) -> None:
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
        refusal = await image_refusals(job, self._settings.limits)  # before the kubelet pulls anything
        if refusal is not None:
            raise JobError(refusal)
        follow = Follow(job.id)
        self._follows.setdefault(job.id, []).append(follow)
        run = Run(self, job, follow, api=self._api, settings=self._settings.kubernetes, hooks=hooks, stop=stop)
        try:
            adopted = await self._create_or_adopt(job, attempt, follow, deadline_at=stop.deadline_at)
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
        await stop.check_owned()  # a superseded attempt leaves the job's results to the new owner too
        await k8s_collect.collect(self._api, hooks, job, pod=follow.pod, stopped=run.deleted)
        if not run.deleted and await stop.owned():
            # Deleted only once dispatch has stored the job's end: until then a redelivery adopts the finished Job.
            return replace(result, release=lambda: self._cleanup_shielded(job.id))
        return result

    async def _create_or_adopt(self, job: Job, attempt: int, follow: Follow, *, deadline_at: float | None) -> bool:
        """Create the job's Job; True when one existed already and is followed instead (its pod keeps its own
        deadline). A Job made afresh gets what is left of the job's deadline, counted from its first start."""
        left_s = None if deadline_at is None else max(1, math.ceil(deadline_at - time.time()))
        body = manifest.build_job(job, attempt=attempt, settings=self._settings, timeout_s=left_s)
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

    def _set_uid(self, follow: Follow, job_object: dict[str, Any]) -> None:
        follow.uid = str(job_object["metadata"]["uid"])
        if follow.pod is not None and podstate.owner_uid(follow.pod) != follow.uid:
            follow.pod, follow.gone = None, None  # seen before the uid was known: an earlier Job's pod

    def _forget(self, follow: Follow) -> None:
        """Remove this run's entry only (another run of the same job may still follow)."""
        follows = self._follows.get(follow.job_id, [])
        follows[:] = [f for f in follows if f is not follow]
        if not follows:
            self._follows.pop(follow.job_id, None)

    async def try_resync(self, follow: Follow) -> None:
        """``resync``, where a failed read is only a missed observation: the next tick (or the watch) tries again.

        Only a real pod state ends a run; an API server that is down for a while (a control-plane restart) must not
        fail every running job, whose pods run on regardless."""
        try:
            await self.resync(follow)
        except Unavailable as exc:
            log.warning(
                "job %s: its pod could not be read (tried again in %.0f s): %s", follow.job_id, progress.RESYNC_S, exc
            )

    async def resync(self, follow: Follow) -> None:
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


def _refused(exc: k8s_api.ApiError, what: str) -> HadesError:
    """An answer that is not temporary: the manifest is invalid (422, 400) → the job's; else the cluster's."""
    if exc.status in (400, 422):
        return JobError(f"{what}: {exc.message or exc.reason}")
    return Unavailable(f"kubernetes: {what}: {exc}")
