"""The Docker executor: each step of a job is a container on one engine, all sharing one named volume.

Owns: images (pulled when missing), the job's volume and containers (labelled ``hades.job-id`` and
``hades.scope``, so a restarted dispatcher finds and removes its own deployment's leftovers), each step's output
streamed line by line to ``RunHooks.log``, the step limits and hardening, stopping the running step when dispatch
asks, and removing everything afterwards; on a redelivery, following the steps a dead dispatcher's attempt left
running (``docker_adopt``) instead of running them again. Leaves to dispatch: timeouts and cancels (it sets the
``StopSignal``), events, log caps and secret masking (in the hooks), retries.

Every SDK call blocks, so every one runs on this executor's own thread pool, never on the event loop; the
default pool also serves DNS lookups and must not queue behind a job's log stream. Each request is bounded by
the client's timeout (waits are re-issued in slices) because cancelling an ``await`` does not stop its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from functions.dispatch.executors import docker_adopt, output
from functions.dispatch.executors.base import (
    RunHooks,
    RunResult,
    StepResult,
    StopSignal,
    cleanup_shielded,
    job_status,
    skipped,
)
from functions.dispatch.results import docker_volume  # results (t23)
from runtime import jobs, units
from runtime.errors import HadesError, JobError, Unavailable, truncate
from runtime.jobs import Job, JobStatus, Step, StepStatus, utc_now
from runtime.settings import Settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

LABEL_JOB_ID = "hades.job-id"
LABEL_ATTEMPT = "hades.attempt"
LABEL_STEP_ID = "hades.step-id"
LABEL_SCOPE = "hades.scope"
IMAGE_KNOWN_S = 60.0
"""An image seen on the engine is not inspected again for this long (a removed one is pulled on demand)."""
SHARED_PATH = "/shared"

API_TIMEOUT_S = 30.0
"""One engine request (create, start, inspect, remove …); past it the engine counts as unavailable."""
WAIT_SLICE_S = 30.0
"""A wait for a container's exit is re-issued this often, so no thread blocks on a hung engine for good."""
DRAIN_TIMEOUT_S = 10.0
"""How long a step's output stream may stay open after its container exited before it is closed."""
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
"""All capabilities are dropped, then these few added back. Build scripts run as root inside their image and
still need to own, chmod and write files they did not create (CHOWN, DAC_OVERRIDE, FOWNER, FSETID: package
managers, ``cp -p``, fixing permissions on ``/shared``), to drop to another user (SETUID, SETGID: ``su``,
``gosu``, test runners) and to stop their own processes (KILL). Docker's other defaults are left out: NET_RAW
(raw sockets, spoofing), MKNOD (device nodes), AUDIT_WRITE, SETPCAP, SETFCAP, SYS_CHROOT and NET_BIND_SERVICE
serve no build and widen what a hostile script can try."""

TMP_TMPFS_BYTES = 64 * 1024**2
"""With a read-only root (``HADES_STEP_READ_ONLY_ROOT``), a step's /tmp is a tmpfs of this size (its memory)."""

MIN_NANO_CPUS = 10_000_000
"""0.01 cores, the schema's minimum: a smaller (or rounded-down) limit would become 0, which means unlimited."""
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class DockerExecutor:
    """``hooks.step_finished`` is called for every step that was tried (including one the engine could not
    start); skipped steps appear only in the ``RunResult``."""

    name = "docker"

    def __init__(self, client: Any, *, settings: Settings, pool: ThreadPoolExecutor, host_cpus: float | None) -> None:
        self._client = client
        self._settings = settings
        self._pool = pool
        self._host_cpus = host_cpus
        self._cleanups: set[asyncio.Task[None]] = set()  # shielded cleanups that outlive a cancelled run
        self._images_seen: dict[str, float] = {}  # image → monotonic time it was last seen on the engine
        self._scope = settings.dispatch.scope
        self._engine_log_size = f"{max(1, -(-settings.dispatch.job_log_max_bytes // 2**20))}m"

    @classmethod
    async def create(cls, settings: Settings) -> DockerExecutor:
        # Per job: one output stream and one exit wait (both long), one short call; plus room for checks.
        pool = ThreadPoolExecutor(max_workers=3 * settings.dispatch.concurrency + 2, thread_name_prefix="hades-docker")
        try:
            # Even from_env talks to the engine (it asks for the API version), so it runs off the loop too.
            client, host_cpus = await asyncio.get_running_loop().run_in_executor(
                pool, _connect, settings.docker.host, API_TIMEOUT_S
            )
        except _ENGINE_ERRORS as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            raise Unavailable(f"docker engine not reachable: {_explain(exc)}") from exc
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(client, settings=settings, pool=pool, host_cpus=host_cpus)

    async def close(self) -> None:
        if self._cleanups:  # removals that cancelled runs left running
            await asyncio.wait(self._cleanups, timeout=API_TIMEOUT_S)
        try:
            await self._call(self._client.close)
        except Unavailable as exc:
            log.debug("closing the docker client: %s", exc.detail)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self) -> str | None:
        try:
            await self._call(self._client.ping)
        except Unavailable as exc:
            return truncate(exc.detail, 200)
        return None

    # -- running a job ------------------------------------------------------------------------------------------

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        # A redelivery whose earlier attempt's dispatcher died follows that attempt's step containers (one may
        # still run) in its volume instead of running the job again from step 1; anything else it left goes.
        adopted = await docker_adopt.adoptable(self, job, attempt) if attempt > 1 else None
        if attempt > 1 and adopted is None:
            await self.cleanup(job.id)  # what an earlier attempt of this job left behind
        created = _Created()
        try:
            result = await self._run(job, attempt=attempt, hooks=hooks, stop=stop, created=created, adopted=adopted)
        except BaseException:
            await self._cleanup_shielded(job.id)  # by label: also finds what a cancelled create left behind
            raise
        # results (t23): the job's artifacts and reports, read out of its volume before the volume goes
        shared = adopted.volume if adopted is not None else created.volume
        await docker_volume.collect(
            self, hooks, job, volume=shared, labels={LABEL_JOB_ID: job.id, LABEL_SCOPE: self._scope}
        )
        if adopted is not None:  # the earlier attempt's containers and volume are this run's to remove
            await self._cleanup_shielded(job.id)
            return result
        # The usual path removes exactly what it made, without listing the engine's containers by label.
        try:
            await self._remove_created(created)
        except HadesError:
            await self._cleanup_shielded(job.id)
        return result

    async def _remove_created(self, created: _Created) -> None:
        for container in created.containers:
            await self._remove(container.remove, force=True, v=True)
        if created.volume:
            await self._remove(self._client.api.remove_volume, name=created.volume, force=True)

    async def _run(
        self,
        job: Job,
        *,
        attempt: int,
        hooks: RunHooks,
        stop: StopSignal,
        created: _Created,
        adopted: docker_adopt.Adopted | None = None,
    ) -> RunResult:
        if stop.requested:
            return _stopped(job.steps, [], stop)
        # Every image first: a job whose third step cannot run should fail before its first step spends time.
        pulls = asyncio.ensure_future(self._ensure_images(job))
        try:
            if not await _unless_stopped(pulls, stop):
                return _stopped(job.steps, [], stop)
            pulls.result()
        finally:
            pulls.cancel()
        if adopted is not None:
            volume = adopted.volume
        else:
            volume = created.volume = await self._create_volume(job, attempt)
            if shared_volume_options(self._settings.dispatch.shared_max_bytes, self._settings.dispatch.step_user):
                await self._hold_shared(job, attempt=attempt, volume=volume, created=created)
        results: list[StepResult] = []
        for index, step in enumerate(job.steps):
            if stop.requested:
                return _stopped(job.steps[index:], results, stop)
            earlier = adopted.steps.get(step.id) if adopted is not None else None
            if earlier is not None:
                result, interrupted = await docker_adopt.follow_step(self, job, step, earlier, hooks=hooks, stop=stop)
            else:
                result, interrupted = await self._run_step(
                    job, step, attempt=attempt, volume=volume, hooks=hooks, stop=stop, created=created
                )
            results.append(result)
            await hooks.step_finished(result)
            if interrupted:
                return _stopped(job.steps[index + 1 :], results, stop)
            if result.status is StepStatus.FAILED and not step.continue_on_error:
                results += skipped(job.steps[index + 1 :], reason=f"skipped: step {step.id} ({step.name}) failed")
                break
        status, reason = job_status(results, job.steps)
        return RunResult(status=status, steps=tuple(results), reason=reason)

    async def _run_step(
        self, job: Job, step: Step, *, attempt: int, volume: str, hooks: RunHooks, stop: StopSignal, created: _Created
    ) -> tuple[StepResult, bool]:
        """Run one step's container; the flag says whether the stop signal ended it."""
        container = await self._create_container(job, step, attempt=attempt, volume=volume)
        created.containers.append(container)
        loop = asyncio.get_running_loop()
        # Attached before the start, so not a byte of output can be written before someone reads it; and so
        # ``logs=False``: with ``logs=True`` the engine may also replay what it already logged, and a short step's
        # whole output arrived twice (issue 13, finding 5).
        stream = await self._call(container.attach, stdout=True, stderr=True, stream=True, logs=False, demux=True)
        reader = loop.run_in_executor(self._pool, _pump_output, stream, output.emitter(loop, hooks, step.id), job.id)
        try:
            try:
                await self._blocking(container.start)
            except docker.errors.APIError as exc:
                if exc.is_server_error():
                    raise _unavailable(exc) from exc
                # The engine refused the command (e.g. no ``sh`` in the image): the step's fault, not ours.
                return StepResult(step.id, StepStatus.FAILED, reason=f"could not start: {_explain(exc)}"), False
            except _ENGINE_ERRORS as exc:
                raise _unavailable(exc) from exc
            started_at, began = utc_now(), time.monotonic()
            log.debug("job %s: step %d started in %s", job.id, step.id, container.name)
            await hooks.step_started(step, started_at=started_at)

            exit_code, interrupted = await self.await_exit(job, step, container, stop)
            finished_at, duration_s = utc_now(), round(time.monotonic() - began, 3)

            await self._drain(reader, stream, job_id=job.id, step_id=step.id)
            # Only a failure needs the state (was it the memory limit?); a success saves the engine a call.
            state = await self._call(_state, container) if exit_code != 0 else {}
        finally:
            if not reader.done():
                self._close_stream(stream)

        result = step_result(
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

    async def await_exit(self, job: Job, step: Step, container: Any, stop: StopSignal) -> tuple[int, bool]:
        """The step container's exit code, and whether the stop signal ended it (then it was stopped here)."""
        exit_task = asyncio.ensure_future(self._exit_code(container))
        try:
            interrupted = not await _unless_stopped(exit_task, stop)
            if not interrupted:
                return exit_task.result(), False
            log.info("job %s: stopping step %d (%s)", job.id, step.id, stop.reason or stop.status)
            await self._stop_container(container, grace_s=stop.grace_s)
            try:
                return await asyncio.wait_for(exit_task, API_TIMEOUT_S), True
            except TimeoutError:
                raise Unavailable(f"docker engine: step {step.id} did not stop") from None
        finally:
            exit_task.cancel()

    def _container_spec(self, job: Job, step: Step, *, attempt: int, volume: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "image": step.image,
            "name": f"hades-{_safe(job.id)}-a{attempt}-s{step.id}",
            "labels": {
                LABEL_JOB_ID: job.id,
                LABEL_ATTEMPT: str(attempt),
                LABEL_STEP_ID: str(step.id),
                LABEL_SCOPE: self._scope,
            },
            "environment": job.environment(step),
            "working_dir": SHARED_PATH,
            "volumes": {volume: {"bind": SHARED_PATH, "mode": "rw"}},
            "network_mode": step.network,
            "nano_cpus": nano_cpus(self._cpus(step.cpu_limit)),
            "mem_limit": step.memory_bytes,
            "memswap_limit": step.memory_swap_bytes,
            "pids_limit": step.pids_limit,
            "privileged": False,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "cap_add": list(CAPABILITIES),
            # docker-init (tini) as PID 1: a script that never traps SIGTERM still stops on a cancel (as PID 1 it
            # would ignore it for the whole grace), and zombies of fork-happy job code are reaped.
            "init": True,
            # The engine's own copy of the output (we read it live from the attach stream) is capped too, so a
            # step printing without end cannot fill the host's disk.
            "log_config": {"type": "json-file", "config": {"max-size": self._engine_log_size, "max-file": "1"}},
            "stdin_open": False,
            "tty": False,  # keeps stdout and stderr apart
        }
        dispatch = self._settings.dispatch
        if shared_volume_options(dispatch.shared_max_bytes, dispatch.step_user):
            # No copy-up: the engine would give the tmpfs root the owner of the image's (or the working dir's)
            # /shared, i.e. root, and undo its ``uid=``.
            spec["volumes"] = {volume: {"bind": SHARED_PATH, "mode": "rw,nocopy"}}
        if dispatch.step_user:  # not root: /shared is a tmpfs owned by this user (shared_volume_options)
            spec["user"] = dispatch.step_user
        if dispatch.step_read_only_root:
            spec["read_only"] = True
            spec["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={TMP_TMPFS_BYTES}"}
        if step.script.strip():
            # The entrypoint, not just the command: an image's own ENTRYPOINT would otherwise get ``sh -c …`` as
            # its arguments, and Kubernetes' ``command`` (the other executor) replaces the entrypoint too.
            spec["entrypoint"] = ["sh", "-c"]
            spec["command"] = [step.script]
        return spec

    def _cpus(self, requested: float) -> float:
        # The operator's maximum may exceed this host's cores, and the engine refuses a step asking for more
        # than it has: such a step gets the whole machine instead of failing.
        return min(requested, self._host_cpus) if self._host_cpus else requested

    async def _create_container(self, job: Job, step: Step, *, attempt: int, volume: str) -> Any:
        spec = self._container_spec(job, step, attempt=attempt, volume=volume)
        with _engine_errors(refused=f"step {step.id} ({step.name}) cannot run"):
            try:
                return await self._blocking(self._client.containers.create, **spec)
            except docker.errors.ImageNotFound:
                # Removed since we last saw it: pull it again, then create once more.
                self._images_seen.pop(step.image, None)
                await self._ensure_image(step.image)
                return await self._blocking(self._client.containers.create, **spec)

    async def _create_volume(self, job: Job, attempt: int) -> str:
        name = volume_name(job.id, attempt)
        labels = {LABEL_JOB_ID: job.id, LABEL_ATTEMPT: str(attempt), LABEL_SCOPE: self._scope}
        options = shared_volume_options(self._settings.dispatch.shared_max_bytes, self._settings.dispatch.step_user)
        await self._call(
            self._client.volumes.create, name=name, driver="local", driver_opts=options or None, labels=labels
        )
        return name

    async def _hold_shared(self, job: Job, *, attempt: int, volume: str, created: _Created) -> None:
        """Keep a tmpfs /shared mounted between steps: the engine unmounts (and so empties) a tmpfs volume as soon
        as no running container uses it. The holder waits on its never-written stdin (``read`` is built into
        ``sh``, which every scripted step needs anyway) with no network, capability or writable root."""
        step = job.steps[0]
        spec: dict[str, Any] = {
            "image": step.image,
            "name": f"hades-{_safe(job.id)}-a{attempt}-shared",
            "labels": {LABEL_JOB_ID: job.id, LABEL_ATTEMPT: str(attempt), LABEL_SCOPE: self._scope},
            "entrypoint": ["sh", "-c", "read _"],
            "stdin_open": True,
            "volumes": {volume: {"bind": SHARED_PATH, "mode": "ro,nocopy"}},
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": 16 * 1024**2,
            "pids_limit": 4,
            "nano_cpus": MIN_NANO_CPUS,
            "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
        }
        if self._settings.dispatch.step_user:
            spec["user"] = self._settings.dispatch.step_user
        with _engine_errors(refused=f"/shared of step {step.id} ({step.name}) cannot be held"):
            holder = await self._blocking(self._client.containers.create, **spec)
            created.containers.append(holder)
            await self._blocking(holder.start)

    async def _exit_code(self, container: Any) -> int:
        while True:
            try:
                status = await self._blocking(container.wait, timeout=WAIT_SLICE_S)
            except _ENGINE_ERRORS as exc:
                if _timed_out(exc):
                    continue  # still running; ask again
                raise _unavailable(exc) from exc
            return int(status.get("StatusCode", -1))

    async def _stop_container(self, container: Any, *, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace (the engine does both); no grace: SIGKILL at once."""
        try:
            if grace_s > 0:
                await self._blocking(container.stop, timeout=math.ceil(grace_s))
            else:
                await self._blocking(container.kill)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone already, or exited on its own meanwhile
                raise _unavailable(exc) from exc
        except _ENGINE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _drain(self, reader: asyncio.Future[None], stream: Any, *, job_id: str, step_id: int) -> None:
        """Wait until every line was read and handed to the hooks (the stream ends with the container)."""
        try:
            await asyncio.wait_for(asyncio.shield(reader), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "job %s: step %d output still open %.0f s after it ended; closing it", job_id, step_id, DRAIN_TIMEOUT_S
            )
            self._close_stream(stream)

    def _close_stream(self, stream: Any) -> None:
        # Shuts the socket down so the reader thread sees the end; never awaited, so it also works mid-cancel. On
        # the loop's default executor, not this one's pool: there the close could wait behind the very readers it
        # is to end (a full pool), or be cancelled unrun by ``close`` (the pool's shutdown cancels what is queued),
        # and a reader left blocked holds the process at exit, which joins the pool's threads.
        asyncio.get_running_loop().run_in_executor(None, close_quietly, stream)

    # -- what docker_adopt uses to follow an earlier attempt's steps ------------------------------------------

    @property
    def client(self) -> Any:
        return self._client

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def pool(self) -> ThreadPoolExecutor:
        return self._pool

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(fn, *args, **kwargs)

    async def drain(self, reader: asyncio.Future[None], stream: Any, *, job_id: str, step_id: int) -> None:
        await self._drain(reader, stream, job_id=job_id, step_id=step_id)

    def close_stream(self, stream: Any) -> None:
        self._close_stream(stream)

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
        with (
            contextlib.suppress(docker.errors.ImageNotFound),
            _engine_errors(refused=f"image {image!r} is not available", passthrough=(docker.errors.ImageNotFound,)),
        ):
            await self._blocking(self._client.images.get, image)
            self._images_seen[image] = time.monotonic()
            return
        timeout_s = self._settings.dispatch.image_pull_timeout_s
        log.info("pulling image %s", image)
        try:
            await asyncio.wait_for(self._blocking(_pull, self._client.api, image, timeout_s), timeout_s)
        except TimeoutError:
            raise JobError(f"image {image!r} is not available: pull did not finish within {timeout_s:g} s") from None
        except (docker.errors.APIError, _PullFailed) as exc:
            # Not found, no registry reachable, access denied: infrastructure or configuration, not the user's code.
            raise JobError(f"image {image!r} is not available: pull failed: {_explain(exc)}") from exc
        except _ENGINE_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._images_seen[image] = time.monotonic()

    # -- cleanup --------------------------------------------------------------------------------------------------

    async def cleanup(self, job_id: str) -> None:
        selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
        containers = await self._call(self._client.containers.list, all=True, sparse=True, filters=selector)
        for container in containers:
            # v=True also removes anonymous volumes an image's VOLUME lines created; the job volume is named.
            await self._remove(container.remove, force=True, v=True)
        for volume in await self._call(self._client.volumes.list, filters=selector):
            await self._remove(volume.remove, force=True)

    async def leftovers(self) -> set[str]:
        # Only this deployment's: another Hades (or test session) on the same engine keeps its own.
        selector = {"label": [LABEL_JOB_ID, f"{LABEL_SCOPE}={self._scope}"]}
        containers = await self._call(self._client.containers.list, all=True, sparse=True, filters=selector)
        volumes = await self._call(self._client.volumes.list, filters=selector)
        found = {(c.attrs.get("Labels") or {}).get(LABEL_JOB_ID) for c in containers}
        found |= {(v.attrs.get("Labels") or {}).get(LABEL_JOB_ID) for v in volumes}
        return {job_id for job_id in found if job_id}

    async def _remove(self, remove: Callable[..., Any], **kwargs: Any) -> None:
        try:
            await self._blocking(remove, **kwargs)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in _explain(exc):
                return
            raise _unavailable(exc) from exc
        except _ENGINE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _cleanup_shielded(self, job_id: str) -> None:
        await cleanup_shielded(self.cleanup, job_id, self._cleanups, what="cleanup failed (the sweep retries it)")

    # -- calling the SDK off the loop -----------------------------------------------------------------------------

    async def _blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """A call whose every failure means the engine is in trouble."""
        try:
            return await self._blocking(fn, *args, **kwargs)
        except _ENGINE_ERRORS as exc:
            raise _unavailable(exc) from exc


# -- helpers that run on the pool's threads ---------------------------------------------------------------------


class _PullFailed(Exception):
    pass


@dataclass
class _Created:
    """What one run made on the engine, in order, so the usual path can remove exactly that."""

    containers: list[Any] = field(default_factory=list)
    volume: str | None = None


def _connect(base_url: str, timeout_s: float) -> tuple[Any, float | None]:
    """The client, and how many CPUs the engine's host has (None if it does not say)."""
    client = (
        docker.DockerClient(base_url=base_url, timeout=timeout_s) if base_url else docker.from_env(timeout=timeout_s)
    )
    try:
        info = client.info()
    except BaseException:
        client.close()
        raise
    try:
        return client, float(info["NCPU"])
    except (KeyError, TypeError, ValueError):
        return client, None


def _pull(api: Any, image: str, timeout_s: float) -> None:
    # The SDK's pull request has no read timeout; the deadline check between progress messages bounds it as
    # long as the engine talks (it reports progress continuously), the caller's wait_for bounds the job anyway.
    deadline = time.monotonic() + timeout_s
    for event in api.pull(image, stream=True, decode=True):
        if isinstance(event, dict) and event.get("error"):
            raise _PullFailed(str(event["error"]))
        if time.monotonic() > deadline:
            raise _PullFailed(f"did not finish within {timeout_s:g} s")


def _state(container: Any) -> dict[str, Any]:
    container.reload()
    return dict(container.attrs.get("State") or {})


container_state = _state


# -- small pure helpers -----------------------------------------------------------------------------------------


async def _unless_stopped(task: asyncio.Future[Any], stop: StopSignal) -> bool:
    """Wait for ``task`` or the stop signal, whichever comes first; True when the task is done."""
    if not task.done() and not stop.requested:
        stopper = asyncio.ensure_future(stop.event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
    return task.done()


def step_result(
    step: Step,
    *,
    exit_code: int,
    state: dict[str, Any],
    interrupted: bool,
    stop: StopSignal,
    started_at: str | None,
    finished_at: str,
    duration_s: float | None,
) -> StepResult:
    """A finished step container's result, whether this executor ran it or followed it after a restart."""
    status, reason = step_outcome(step, exit_code=exit_code, state=state, interrupted=interrupted, stop=stop)
    return StepResult(
        step_id=step.id,
        status=status,
        exit_code=exit_code,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration_s,
        reason=reason,
    )


def step_outcome(
    step: Step, *, exit_code: int, state: dict[str, Any], interrupted: bool, stop: StopSignal
) -> tuple[StepStatus, str | None]:
    """A finished step's status and reason: stopped by dispatch, killed by its memory limit, or its exit code."""
    if interrupted:
        return StepStatus.FAILED, _stop_reason(stop)
    if exit_code != 0 and state.get("OOMKilled"):
        return StepStatus.FAILED, f"killed: out of memory (limit {units.format_memory(step.memory_bytes)})"
    if exit_code != 0:
        return StepStatus.FAILED, f"exited with code {exit_code}"
    return StepStatus.SUCCEEDED, None


def shared_volume_options(max_bytes: int, user: str) -> dict[str, str]:
    """The local driver's options for a job's /shared: none (a disk volume) unless it has a size limit or the
    steps run as a non-root user; then a tmpfs, of ``max_bytes`` if set, owned by that user if set.

    Docker's local volumes on overlay2/ext4 have no quota of their own, and an empty named volume's root belongs
    to root (no ``chown`` option): a tmpfs is the mechanism that has both. Its pages count against the memory
    limit of the step that writes them (an over-full /shared fails with ENOSPC, or the step is OOM-killed first
    when its memory limit is smaller) and stay in the host's memory until the job's volume is removed."""
    if not max_bytes and not user:
        return {}
    mount = ["nosuid", "nodev"]
    if max_bytes:
        mount.append(f"size={max_bytes}")
    if user:
        uid, _, gid = user.partition(":")
        mount += [f"uid={uid}", f"gid={gid or uid}", "mode=0755"]
    return {"type": "tmpfs", "device": "tmpfs", "o": ",".join(mount)}


def volume_name(job_id: str, attempt: int) -> str:
    """The job volume of one attempt (an adopting attempt finds its predecessor's by this name)."""
    return f"hades-{_safe(job_id)}-a{attempt}"


def _stopped(rest: Iterable[Step], results: list[StepResult], stop: StopSignal) -> RunResult:
    reason = f"skipped: {stop.reason}" if stop.reason else f"skipped: job {stop.status}"
    steps = (*results, *skipped(tuple(rest), reason=reason))
    return RunResult(status=stop.status, steps=steps, reason=stop.reason or None)


def _stop_reason(stop: StopSignal) -> str:
    verb = "killed" if stop.grace_s <= 0 else "stopped"
    detail = stop.reason or ("job timed out" if stop.status is JobStatus.TIMED_OUT else str(stop.status))
    return f"{verb}: {detail}"


def _timed_out(exc: BaseException) -> bool:
    """A read timeout (on a unix socket the SDK reports it as a ConnectionError wrapping urllib3's)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
    )


@contextlib.contextmanager
def _engine_errors(*, refused: str, passthrough: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """The engine's errors in our terms: its own trouble is temporary (``Unavailable``: retry the job later); a
    request it refuses is this job's (``JobError``, with ``refused`` saying what could not be done). Errors in
    ``passthrough`` reach the caller untranslated (an image lookup's ImageNotFound means: pull it)."""
    try:
        yield
    except passthrough:
        raise
    except docker.errors.APIError as exc:
        if exc.is_server_error():
            raise _unavailable(exc) from exc
        raise JobError(f"{refused}: {_explain(exc)}") from exc
    except _ENGINE_ERRORS as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"docker engine: {_explain(exc)}")


def _explain(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or exc.__class__.__name__
    return truncate(str(text))


def nano_cpus(cores: float) -> int:
    """The engine's ``NanoCpus`` for a number of cores: never 0, which the engine reads as "no limit at all"."""
    return max(round(cores * 1e9), MIN_NANO_CPUS)


def _safe(text: str) -> str:
    return _NAME_UNSAFE.sub("-", text)


def _pump_output(stream: Any, emit: output.Emit, job_id: str) -> None:
    output.pump(stream, emit, job_id, release=lambda: close_quietly(stream))


def close_quietly(stream: Any) -> None:
    try:
        stream.close()  # shuts the socket down: a reader blocked on it wakes up and sees the end
        # CancellableStream.close leaves the HTTP response (and with it the socket's file descriptor) open.
        response = getattr(stream, "_response", None)
        if response is not None:
            response.close()
    except Exception as exc:  # already closed, or the engine is gone: either way the reader ends
        log.debug("closing an output stream: %s", exc)
