"""The one door to the Docker engine: the SDK's client on its own thread pool, and its errors in our terms.

Every SDK call blocks, so every one runs on this door's own pool, never on the event loop; the default pool also
serves DNS lookups and must not queue behind a job's log stream. Each request is bounded by the client's timeout
(waits are re-issued in slices) because cancelling an ``await`` does not stop its thread.

Errors: the engine's own trouble is temporary (``Unavailable``: dispatch retries the job later); a request it
refuses is the job's (``JobError``). This is the only module of the executor that imports the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from runtime.errors import JobError, Unavailable, truncate

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

API_TIMEOUT_S = 30.0
"""One engine request (create, start, inspect, remove …); past it the engine counts as unavailable."""
WAIT_SLICE_S = 30.0
"""A wait for a container's exit is re-issued this often, so no thread blocks on a hung engine for good."""

_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class ImageMissing(Exception):
    """The engine has no such image (a look-up, or a create whose image was removed meanwhile)."""


class PullFailed(Exception):
    """A pull the engine (or the registry behind it) refused or broke off; the text is safe to show."""


class Engine:
    """The client, its thread pool and the calls the executor makes, each translated."""

    def __init__(self, client: Any, *, pool: ThreadPoolExecutor, host_cpus: float | None) -> None:
        self.client = client
        self.pool = pool
        self.host_cpus = host_cpus
        """How many CPUs the engine's host has (None if it does not say)."""

    @classmethod
    async def connect(cls, base_url: str, *, threads: int) -> Engine:
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hades-docker")
        try:
            # Even from_env talks to the engine (it asks for the API version), so it runs off the loop too.
            client, host_cpus = await asyncio.get_running_loop().run_in_executor(
                pool, _connect, base_url, API_TIMEOUT_S
            )
        except _ENGINE_ERRORS as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            raise Unavailable(f"docker engine not reachable: {explain(exc)}") from exc
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(client, pool=pool, host_cpus=host_cpus)

    async def close(self) -> None:
        try:
            await self.call(self.client.close)
        except Unavailable as exc:
            log.debug("closing the docker client: %s", exc.detail)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` on the pool, its exceptions untranslated."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """A call whose every failure means the engine is in trouble."""
        try:
            return await self.blocking(fn, *args, **kwargs)
        except _ENGINE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def ping(self) -> None:
        await self.call(self.client.ping)

    async def has_image(self, image: str, *, refused: str) -> bool:
        try:
            with engine_errors(refused=refused, passthrough=(docker.errors.ImageNotFound,)):
                await self.blocking(self.client.images.get, image)
        except docker.errors.ImageNotFound:
            return False
        return True

    async def pull(self, image: str, *, timeout_s: float) -> None:
        """Pull ``image``; ``PullFailed`` (a safe text) when the engine or registry refuses, ``TimeoutError``."""
        try:
            await asyncio.wait_for(self.blocking(_pull, self.client.api, image, timeout_s), timeout_s)
        except docker.errors.APIError as exc:
            raise PullFailed(f"HTTP {exc.status_code or 'error'}: {pull_error(explain(exc))}") from exc
        except _ENGINE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def create_container(self, spec: dict[str, Any], *, refused: str) -> Any:
        """A created container; ``ImageMissing`` when its image is not (or no longer) on the engine."""
        try:
            with engine_errors(refused=refused, passthrough=(docker.errors.ImageNotFound,)):
                return await self.blocking(self.client.containers.create, **spec)
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(spec.get("image")) from exc

    async def start(self, container: Any) -> str | None:
        """Start ``container``; the engine's refusal (e.g. no ``sh`` in the image) as text, else None."""
        try:
            await self.blocking(container.start)
        except docker.errors.APIError as exc:
            if exc.is_server_error():
                raise unavailable(exc) from exc
            return explain(exc)
        except _ENGINE_ERRORS as exc:
            raise unavailable(exc) from exc
        return None

    async def exit_code(self, container: Any) -> int:
        while True:
            try:
                status = await self.blocking(container.wait, timeout=WAIT_SLICE_S)
            except _ENGINE_ERRORS as exc:
                if _timed_out(exc):
                    continue  # still running; ask again
                raise unavailable(exc) from exc
            return int(status.get("StatusCode", -1))

    async def stop_container(self, container: Any, *, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after the grace (the engine does both); no grace: SIGKILL at once."""
        try:
            if grace_s > 0:
                await self.blocking(container.stop, timeout=math.ceil(grace_s))
            else:
                await self.blocking(container.kill)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone already, or exited on its own meanwhile
                raise unavailable(exc) from exc
        except _ENGINE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def state(self, container: Any) -> dict[str, Any]:
        return await self.call(_state, container)

    async def remove(self, remove: Callable[..., Any], **kwargs: Any) -> None:
        """Remove a container or volume; one that is gone (or being removed) already is fine."""
        try:
            await self.blocking(remove, **kwargs)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in explain(exc):
                return
            raise unavailable(exc) from exc
        except _ENGINE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def remove_volume(self, name: str) -> None:
        await self.remove(self.client.api.remove_volume, name=name, force=True)

    def close_stream(self, stream: Any) -> None:
        # Shuts the socket down so the reader thread sees the end; never awaited, so it also works mid-cancel. On
        # the loop's default executor, not this door's pool: there the close could wait behind the very readers it
        # is to end (a full pool), or be cancelled unrun by ``close`` (the pool's shutdown cancels what is queued),
        # and a reader left blocked holds the process at exit, which joins the pool's threads.
        asyncio.get_running_loop().run_in_executor(None, close_quietly, stream)


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
    # The engine's or registry's own words are not passed on: they can quote an internal service's answer.
    deadline = time.monotonic() + timeout_s
    for event in api.pull(image, stream=True, decode=True):
        if isinstance(event, dict) and event.get("error"):
            raise PullFailed(pull_error(str(event["error"])))
        if time.monotonic() > deadline:
            raise PullFailed(f"did not finish within {timeout_s:g} s")


_PULL_ERRORS = (
    (("manifest unknown", "not found", "does not exist"), "not found in the registry"),
    (("unauthorized", "denied", "authentication required"), "access denied by the registry"),
    (("timeout", "timed out"), "the registry did not answer in time"),
)


def pull_error(text: str) -> str:
    """A pull's failure as one of a few fixed texts: the engine's own words can quote what an internal service
    answered (issue 20), so none of them is passed on."""
    lowered = text.lower()
    for keys, fixed in _PULL_ERRORS:
        if any(key in lowered for key in keys):
            return fixed
    return "the registry refused it or could not be reached"


def _state(container: Any) -> dict[str, Any]:
    container.reload()
    return dict(container.attrs.get("State") or {})


def _timed_out(exc: BaseException) -> bool:
    """A read timeout (on a unix socket the SDK reports it as a ConnectionError wrapping urllib3's)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
    )


@contextlib.contextmanager
def engine_errors(*, refused: str, passthrough: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """The engine's errors in our terms: its own trouble is temporary (``Unavailable``: retry the job later); a
    request it refuses is this job's (``JobError``, with ``refused`` saying what could not be done). Errors in
    ``passthrough`` reach the caller untranslated (an image lookup's ImageNotFound means: pull it)."""
    try:
        yield
    except passthrough:
        raise
    except docker.errors.APIError as exc:
        if exc.is_server_error():
            raise unavailable(exc) from exc
        raise JobError(f"{refused}: {explain(exc)}") from exc
    except _ENGINE_ERRORS as exc:
        raise unavailable(exc) from exc


def unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"docker engine: {explain(exc)}")


def explain(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or exc.__class__.__name__
    return truncate(str(text))


def close_quietly(stream: Any) -> None:
    try:
        stream.close()  # shuts the socket down: a reader blocked on it wakes up and sees the end
        # CancellableStream.close leaves the HTTP response (and with it the socket's file descriptor) open.
        response = getattr(stream, "_response", None)
        if response is not None:
            response.close()
    except Exception as exc:  # already closed, or the engine is gone: either way the reader ends
        log.debug("closing an output stream: %s", exc)
