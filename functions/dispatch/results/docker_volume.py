"""Docker: a job's results read out of its volume, after its last step and before the volume is removed.

A helper container mounts the volume read-only and is never started (``get_archive`` works on a created
container, so nothing of the job runs again and no image is pulled: it is made from the job's last step image,
which is on the engine already). Each prefix the globs need (``match.covering_prefixes``) is one
``get_archive`` tar stream, read as it arrives. The helper is removed at the end; it carries the job's labels,
so the leftover sweep removes it if this dispatcher dies first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import IO, Any, Protocol

from functions.dispatch.results.collector import ChunkReader, Collector
from runtime.errors import HadesError
from runtime.jobs import Job

log = logging.getLogger(__name__)

SHARED_PATH = "/shared"
ARCHIVE_CHUNK_BYTES = 64 * 1024


class Engine(Protocol):
    """What the Docker executor lends: its client, and its calls off the loop on its own pool."""

    @property
    def client(self) -> Any: ...

    @property
    def pool(self) -> Any: ...

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any: ...


def collector_of(hooks: Any) -> Collector | None:
    """The job run's collector, when the job asked for results (the hooks of a job that did not have none)."""
    collector = getattr(hooks, "results", None)
    return collector if isinstance(collector, Collector) else None


async def collect(engine: Engine, hooks: Any, job: Job, *, volume: str | None, labels: dict[str, str]) -> None:
    """Keep the job's results from ``volume``; never raises (trouble is a warning on the results)."""
    collector = collector_of(hooks)
    if collector is None or collector.done or not volume:
        return
    collector.pool = engine.pool
    collector.started = True
    helper = None
    try:
        helper = await engine.call(
            engine.client.api.create_container,
            job.steps[-1].image,
            command=["/hades-results"],  # never started
            entrypoint=[],
            labels=labels,
            network_disabled=True,
            host_config=engine.client.api.create_host_config(binds={volume: {"bind": SHARED_PATH, "mode": "ro"}}),
        )
        helper_id = helper["Id"]
        for prefix in collector.prefixes():
            path = f"{SHARED_PATH}/{prefix}" if prefix else SHARED_PATH
            parent = path.rsplit("/", 1)[0] or "/"
            opener = functools.partial(_open_archive, engine.client.api, helper_id, path)
            await collector.read_tar(opener, parent=parent)
    except HadesError as exc:
        collector.results.warn(f"results not collected: {exc.detail}"[:500])
        log.warning("job %s: results not collected: %s", job.id, exc.detail)
    finally:
        if helper is not None:
            with contextlib.suppress(HadesError):
                await engine.call(engine.client.api.remove_container, helper["Id"], force=True)


def _open_archive(api: Any, container_id: str, path: str) -> IO[bytes] | None:
    """The tar stream of ``path`` in the helper (blocking), or None when the job never made it."""
    try:
        chunks, _stat = api.get_archive(container_id, path, chunk_size=ARCHIVE_CHUNK_BYTES)
    except Exception as exc:  # the SDK's NotFound, without importing the SDK here
        if getattr(exc, "status_code", None) == 404:
            return None
        raise OSError(f"reading {path}: {exc}") from exc
    return ChunkReader(chunks, close=getattr(chunks, "close", None))  # type: ignore[return-value]
