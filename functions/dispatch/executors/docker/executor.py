"""The Docker executor: each step of a job is a container on one engine, all sharing one named volume.

Owns: images (pulled when missing), the job's volume and containers (``spec``: labelled, limited, hardened), each
step's output streamed line by line to ``RunHooks.log`` (``steps``), stopping the running step when dispatch asks,
and removing everything once dispatch has stored the job's end (``RunResult.release``); on a redelivery, following
the steps an earlier attempt left (``adopt``: one still running, or all finished but their end never stored)
instead of running them again. Every engine call goes through the one door (``engine``). Leaves to
dispatch: the job's deadline and cancels (it sets the ``StopSignal``), events, log caps and secret masking (in the
hooks), retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from functions.dispatch.executors.base import (
    Capabilities,
    ImageUnavailable,
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
    Superseded,
    cleanup_shielded,
    run_result,
    skipped,
    stopped,
)
from functions.dispatch.executors.docker import adopt, spec, steps
from functions.dispatch.executors.docker.engine import API_TIMEOUT_S, Engine, ImageMissing, PullFailed
from functions.dispatch.results import docker_volume
from runtime import jobs
from runtime.errors import HadesError, JobError, Unavailable, truncate
from runtime.jobs import Job, Step, StepStatus, utc_now
from runtime.settings import Settings

log = logging.getLogger(__name__)

IMAGE_KNOWN_S = 60.0
"""An image seen on the engine is not inspected again for this long (a removed one is pulled on demand)."""


@dataclass
class _Created:
    """What one run made on the engine, in order, so the usual path can remove exactly that."""

    containers: list[Any] = field(default_factory=list)
    volume: str | None = None


class DockerExecutor:
    """``hooks.step_finished`` is called for every step that was tried (including one the engine could not
    start); skipped steps appear only in the ``RunResult``."""

    name = "docker"
    capabilities = Capabilities(host_local=True)
    """Dispatch's timer owns the job's deadline; the containers run on the dispatcher's host."""

    def __init__(self, engine: Engine, *, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._cleanups: set[asyncio.Task[None]] = set()  # shielded cleanups that outlive a cancelled run
        self._images_seen: dict[str, float] = {}  # image → monotonic time it was last seen on the engine
        self._scope = settings.dispatch.scope

    @classmethod
    async def create(cls, settings: Settings) -> DockerExecutor:
        # Per job: one output stream and one exit wait (both long), one short call; plus room for checks.
        threads = 3 * settings.dispatch.concurrency + 2
        return cls(await Engine.connect(settings.docker.host, threads=threads), settings=settings)

    async def close(self) -> None:
        if self._cleanups:  # removals that cancelled runs left running
            await asyncio.wait(self._cleanups, timeout=API_TIMEOUT_S)
        await self._engine.close()

    async def check(self) -> str | None:
        try:
            await self._engine.ping()
        except Unavailable as exc:
            return truncate(exc.detail, 200)
        return None

    # -- running a job ------------------------------------------------------------------------------------------

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        # A redelivery whose earlier attempt's dispatcher died follows that attempt's step containers (one may
        # still run) in its volume instead of running the job again from step 1; anything else it left goes.
        # Every action on the job's containers first asks whether this attempt still owns the job
        # (``stop.check_owned``): one that was paused past AckWait and taken over leaves them to the new owner.
        adopted = await adopt.adoptable(self._engine, job, attempt, scope=self._scope) if attempt > 1 else None
        if attempt > 1 and adopted is None:
            await stop.check_owned()
            await self.cleanup(job.id)  # what an earlier attempt of this job left behind
        created = _Created()
        try:
            result = await self._run(job, attempt=attempt, hooks=hooks, stop=stop, created=created, adopted=adopted)
            await stop.check_owned()
        except Superseded:
            raise  # touch nothing: the new owner follows (or removes) these containers
        except BaseException:
            await self._cleanup_shielded(job.id)  # by label: also finds what a cancelled create left behind
            raise
        # results: the job's artifacts and reports, read out of its volume before the volume goes
        shared = adopted.volume if adopted is not None else created.volume
        labels = {spec.LABEL_JOB_ID: job.id, spec.LABEL_SCOPE: self._scope}
        await docker_volume.collect(self._engine, hooks, job, volume=shared, labels=labels)
        # Removed only when dispatch has stored the job's end (``release``): until then a redelivery adopts these
        # exited containers and takes their exit codes instead of running the steps again.
        if adopted is not None:  # the earlier attempt's containers and volume are this run's to remove
            return replace(result, release=lambda: self._cleanup_shielded(job.id))
        return replace(result, release=lambda: self._release_created(job.id, created))

    async def _release_created(self, job_id: str, created: _Created) -> None:
        """The usual path removes exactly what it made, without listing the engine's containers by label."""

        async def remove(_: str) -> None:
            try:
                await self._remove_created(created)
            except HadesError:
                await self.cleanup(job_id)

        await cleanup_shielded(remove, job_id, self._cleanups, what="cleanup failed (the sweep retries it)")

    async def _remove_created(self, created: _Created) -> None:
        for container in created.containers:
            await self._engine.remove(container.remove, force=True, v=True)
        if created.volume:
            await self._engine.remove_volume(created.volume)

    async def _run(
        self,
        job: Job,
        *,
        attempt: int,
        hooks: RunHooks,
        stop: StopSignal,
        created: _Created,
        adopted: adopt.Adopted | None = None,
    ) -> RunResult:
        if stop.requested:
            return stopped(job.steps, [], stop)
        # Every image first: a job whose third step cannot run should fail before its first step spends time.
        pulls = asyncio.ensure_future(self._ensure_images(job))
        try:
            if not await steps.unless_stopped(pulls, stop):
                return stopped(job.steps, [], stop)
            pulls.result()
        finally:
            pulls.cancel()
        if adopted is not None:
            volume = adopted.volume
        else:
            await stop.check_owned()
            volume = created.volume = await self._create_volume(job, attempt)
            dispatch = self._settings.dispatch
            if spec.shared_volume_options(dispatch.shared_max_bytes, dispatch.step_user):
                await self._hold_shared(job, attempt=attempt, volume=volume, created=created)
        results: list[StepResult] = []
        for index, step in enumerate(job.steps):
            if stop.requested:
                return stopped(job.steps[index:], results, stop)
            earlier = adopted.steps.get(step.id) if adopted is not None else None
            if earlier is not None:
                result, interrupted = await adopt.follow_step(self._engine, job, step, earlier, hooks=hooks, stop=stop)
            else:
                result, interrupted = await self._run_step(
                    job, step, attempt=attempt, volume=volume, hooks=hooks, stop=stop, created=created
                )
            results.append(result)
            await hooks.step_finished(result)
            if interrupted:
                return stopped(job.steps[index + 1 :], results, stop)
            if result.status is StepStatus.FAILED and not step.continue_on_error:
                results += skipped(job.steps[index + 1 :], reason=f"skipped: step {step.id} ({step.name}) failed")
                break
        return run_result(results, job.steps)

    async def _run_step(
        self, job: Job, step: Step, *, attempt: int, volume: str, hooks: RunHooks, stop: StopSignal, created: _Created
    ) -> tuple[StepResult, bool]:
        """Run one step's container; the flag says whether the stop signal ended it."""
        engine = self._engine
        await stop.check_owned()
        container = await self._create_container(job, step, attempt=attempt, volume=volume)
        created.containers.append(container)
        # Attached before the start, so not a byte of output can be written before someone reads it; and so
        # ``logs=False``: with ``logs=True`` the engine may also replay what it already logged, and a short step's
        # whole output arrived twice (issue 13, finding 5).
        stream = await engine.call(container.attach, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        reader = steps.read_output(engine, stream, hooks, job_id=job.id, step_id=step.id)
        try:
            await stop.check_owned()
            refusal = await engine.start(container)
            if refusal is not None:  # the engine refused the command (e.g. no ``sh`` in the image): the step's fault
                return StepResult(step.id, StepStatus.FAILED, reason=f"could not start: {refusal}"), False
            started_at, began = utc_now(), time.monotonic()
            log.debug("job %s: step %d started in %s", job.id, step.id, container.name)
            await hooks.step_started(step, started_at=started_at)

            exit_code, interrupted = await steps.await_exit(engine, job, step, container, stop)
            finished_at, duration_s = utc_now(), round(time.monotonic() - began, 3)

            await steps.drain(engine, reader, stream, job_id=job.id, step_id=step.id)
            # Only a failure needs the state (was it the memory limit?); a success saves the engine a call.
            state = await engine.state(container) if exit_code != 0 else {}
        finally:
            if not reader.done():
                engine.close_stream(stream)

        result = steps.step_result(
            step,
            exit_code=exit_code,
            state=state,
            interrupted=interrupted,
            stop=stop,
            started_at=started_at,
            finished_at=finished_at,
            duration_s=duration_s,
        )
        return result, interrupted

    def _cpus(self, requested: float) -> float:
        # The operator's maximum may exceed this host's cores, and the engine refuses a step asking for more
        # than it has: such a step gets the whole machine instead of failing.
        host_cpus = self._engine.host_cpus
        return min(requested, host_cpus) if host_cpus else requested

    async def _create_container(self, job: Job, step: Step, *, attempt: int, volume: str) -> Any:
        container_spec = spec.step_container(
            job,
            step,
            attempt=attempt,
            volume=volume,
            scope=self._scope,
            cpus=self._cpus(step.cpu_limit),
            settings=self._settings.dispatch,
        )
        refused = f"step {step.id} ({step.name}) cannot run"
        try:
            return await self._engine.create_container(container_spec, refused=refused)
        except ImageMissing:
            # Removed since we last saw it: pull it again, then create once more.
            self._images_seen.pop(step.image, None)
            await self._ensure_image(step.image)
        try:
            return await self._engine.create_container(container_spec, refused=refused)
        except ImageMissing:
            raise ImageUnavailable(f"image {step.image!r} is not available: removed while the job ran") from None

    async def _create_volume(self, job: Job, attempt: int) -> str:
        name = spec.volume_name(job.id, attempt)
        labels = spec.labels(job.id, attempt=attempt, scope=self._scope)
        dispatch = self._settings.dispatch
        options = spec.shared_volume_options(dispatch.shared_max_bytes, dispatch.step_user)
        await self._engine.call(
            self._engine.client.volumes.create, name=name, driver="local", driver_opts=options or None, labels=labels
        )
        return name

    async def _hold_shared(self, job: Job, *, attempt: int, volume: str, created: _Created) -> None:
        """Keep a tmpfs /shared mounted between steps: the engine unmounts (and so empties) a tmpfs volume as soon
        as no running container uses it. The holder runs ``sh`` (``read`` on its
        never-written stdin) from the first of the job's images that has one: a step image without a shell (it
        runs its own command) must not fail the job. A job of one step needs none, unless its results are to be
        read out of /shared after that step."""
        if len(job.steps) < 2 and not job.wants_results:
            return
        refused = "/shared cannot be held between the steps"
        for image in dict.fromkeys(step.image for step in job.steps):
            holder_spec = spec.shared_holder(
                job,
                image=image,
                attempt=attempt,
                volume=volume,
                scope=self._scope,
                user=self._settings.dispatch.step_user,
            )
            try:
                holder = await self._engine.create_container(holder_spec, refused=refused)
            except ImageMissing:
                raise ImageUnavailable(f"image {image!r} is not available: removed while the job ran") from None
            created.containers.append(holder)
            refusal = await self._engine.start(holder)
            if refusal is None:
                return
            log.info("job %s: image %s cannot hold /shared (%s); trying the next", job.id, image, refusal)
            created.containers.remove(holder)
            await self._engine.remove(holder.remove, force=True, v=True)
        raise JobError(f"{refused}: none of the job's images has sh (needed with HADES_SHARED_MAX_BYTES)")

    # -- images ---------------------------------------------------------------------------------------------------

    async def _ensure_images(self, job: Job) -> None:
        refusal = await jobs.image_refusals(job, self._settings.limits)  # again here: the policy may have changed
        if refusal is not None:
            raise JobError(refusal)
        for image in dict.fromkeys(step.image for step in job.steps):
            await self._ensure_image(image)

    async def _ensure_image(self, image: str) -> None:
        seen = self._images_seen.get(image)
        if seen is not None and time.monotonic() - seen < IMAGE_KNOWN_S:
            return
        not_available = f"image {image!r} is not available"
        if await self._engine.has_image(image, refused=not_available):
            self._images_seen[image] = time.monotonic()
            return
        timeout_s = self._settings.dispatch.image_pull_timeout_s
        log.info("pulling image %s", image)
        try:
            await self._engine.pull(image, timeout_s=timeout_s)
        except TimeoutError:
            raise ImageUnavailable(f"{not_available}: pull did not finish within {timeout_s:g} s") from None
        except PullFailed as exc:
            # Not found, no registry reachable, access denied: infrastructure or configuration, not the user's code.
            raise ImageUnavailable(f"{not_available}: pull failed: {exc}") from exc
        self._images_seen[image] = time.monotonic()

    # -- cleanup --------------------------------------------------------------------------------------------------

    async def cleanup(self, job_id: str) -> None:
        client = self._engine.client
        selector = {"label": f"{spec.LABEL_JOB_ID}={job_id}"}
        containers = await self._engine.call(client.containers.list, all=True, sparse=True, filters=selector)
        for container in containers:
            # v=True also removes anonymous volumes an image's VOLUME lines created; the job volume is named.
            await self._engine.remove(container.remove, force=True, v=True)
        for volume in await self._engine.call(client.volumes.list, filters=selector):
            await self._engine.remove(volume.remove, force=True)

    async def leftovers(self) -> set[str]:
        # Only this deployment's: another Hades (or test session) on the same engine keeps its own.
        client = self._engine.client
        selector = {"label": [spec.LABEL_JOB_ID, f"{spec.LABEL_SCOPE}={self._scope}"]}
        containers = await self._engine.call(client.containers.list, all=True, sparse=True, filters=selector)
        volumes = await self._engine.call(client.volumes.list, filters=selector)
        found = {(c.attrs.get("Labels") or {}).get(spec.LABEL_JOB_ID) for c in containers}
        found |= {(v.attrs.get("Labels") or {}).get(spec.LABEL_JOB_ID) for v in volumes}
        return {job_id for job_id in found if job_id}

    async def _cleanup_shielded(self, job_id: str) -> None:
        await cleanup_shielded(self.cleanup, job_id, self._cleanups, what="cleanup failed (the sweep retries it)")
