"""Collecting one job's results: the matched files of its /shared, read as tar streams, into the Object Store.

An executor hands over /shared as tar streams (Docker: ``get_archive`` of each prefix the globs need; Kubernetes:
the collector container's log). The stream is read on a thread, one step at a time (``_TarSteps``): the next
member's header or the next 64 KiB of a wanted member, so memory stays at one chunk whatever the job wrote. The
loop decides from each header whether a file is wanted and within the limits (``ResultsSettings``) before a byte
of it is read, streams artifacts into the bucket and parses reports (capped at ``report_max_bytes``, in memory).

It fails safe: a pattern that matched nothing is a warning, a file over a limit is skipped with the reason, a
report that does not parse is marked so, and trouble reading the volume or reaching NATS is a warning on the
record; the job's status never changes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tarfile
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import IO, Any

from functions.dispatch.results import junit, match
from functions.dispatch.results.outcome import KeptFile, Results, content_type
from runtime import subjects
from runtime.errors import HadesError
from runtime.jobs import Job
from runtime.messaging import Messaging, Objects, ObjectTooLarge, topology
from runtime.settings import Settings

log = logging.getLogger(__name__)

READ_BYTES = 128 * 1024
"""One step of reading a wanted file (one Object Store chunk: one hop to the worker thread per chunk)."""

OpenTar = Callable[[], IO[bytes] | None]
"""Opens one tar stream (blocking; runs on a worker thread); None when the path is not there."""


@dataclass(frozen=True)
class _Member:
    path: str
    size: int


class _Done:
    pass


_DONE = _Done()
_END_OF_FILE = b""


@dataclass(frozen=True)
class _Plan:
    path: str
    name: str
    kind: str  # artifact | report
    parse: bool


class Collector:
    """One job's results, filled by ``read_tar`` calls, then ``results`` (the terminal event's ``results``)."""

    def __init__(
        self,
        conn: Messaging,
        job: Job,
        settings: Settings,
        *,
        pool: Executor | None = None,
        mask: Callable[[str], str] = str,
    ) -> None:
        self.conn = conn
        self.mask = mask
        """The job's secrets masked in a failed case's text before its excerpt is cut (``junit.parse``)."""
        self.job = job
        self.limits = settings.results
        self._settings = settings
        self.pool = pool
        self.results = Results(wants_tests=bool(job.junit_reports))
        self._seen: set[str] = set()
        self._names: set[str] = set()
        self._matched: set[str] = set()
        self._bucket: Objects | None = None
        self._gave_up = False
        self.started = False
        """An executor began collecting (so the results say something, even if only warnings)."""
        self.done = False

    def globs(self) -> list[str]:
        return job_globs(self.job)

    def prefixes(self) -> list[str]:
        return self.prefixes_of(self.job)

    @staticmethod
    def prefixes_of(job: Job) -> list[str]:
        """The parts of /shared to read (relative; '' is all of it), the reports' first: when a job has more files
        than its limits allow, its test report is what matters most."""
        reports = match.covering_prefixes(list(job.junit_reports))
        artifacts = match.covering_prefixes([a.path for a in job.artifacts])
        return reports + [p for p in artifacts if p not in reports]

    def skip_oversized(self, paths: list[str]) -> None:
        """Files a collector left out of its stream for their size (Kubernetes): skipped, with the reason."""
        for path in paths:
            if path in self._seen or not any(match.matches(g, path) for g in self.globs()):
                continue
            self._seen.add(path)
            self._matched.update(g for g in self.globs() if match.matches(g, path))
            reason = (
                f"is larger than {self.limits.max_file_bytes} bytes; such files are not kept "
                "(HADES_RESULTS_MAX_FILE_BYTES)"
            )
            self.results.skip(path, reason)
            if any(match.matches(g, path) for g in self.job.junit_reports):
                self.results.reports.append({"path": path, "parsed": False, "reason": f"not kept: {reason}"})

    async def _objects(self) -> Objects:
        if self._bucket is None:
            self._bucket = await self.conn.objects(topology.results_bucket_config(self._settings))
        return self._bucket

    async def read_tar(self, open_tar: OpenTar, *, parent: str) -> None:
        """Keep what the job asked for from one tar stream whose member names are relative to ``parent`` (an
        absolute directory: ``/shared`` or one above what was archived). Never raises for the job's sake: trouble
        is a warning on the results."""
        self.started = True
        if self._gave_up:
            return
        steps = _TarSteps(open_tar, parent)
        try:
            item = await self._step(steps, None)
            while not isinstance(item, _Done):
                if not isinstance(item, _Member):
                    item = await self._step(steps, None)  # stray chunk of a file not wanted: cannot happen
                    continue
                plan = self._decide(item)
                item = await self._step(steps, plan is not None)
                if plan is not None:
                    item = await self._keep(steps, item, plan)
        except (OSError, tarfile.TarError, HadesError) as exc:
            text = exc.detail if isinstance(exc, HadesError) else str(exc)
            self.results.warn(f"results under {parent} not fully read: {text}"[:500])
            log.warning("job %s: results under %s not fully read: %s", self.job.id, parent, text)
        finally:
            await asyncio.get_running_loop().run_in_executor(self.pool, steps.close)

    async def _step(self, steps: _TarSteps, wanted: bool | None) -> _Member | bytes | _Done:
        return await asyncio.get_running_loop().run_in_executor(self.pool, steps.send, wanted)

    def _decide(self, member: _Member) -> _Plan | None:
        path = member.path
        if path in self._seen:
            return None
        report = any(match.matches(g, path) for g in self.job.junit_reports)
        artifact = next((a for a in self.job.artifacts if match.matches(a.path, path)), None)
        if not report and artifact is None:
            return None
        self._seen.add(path)
        self._matched.update(g for g in self.globs() if match.matches(g, path))
        name = path
        if artifact is not None and artifact.name:
            literal = match.static_prefix(artifact.path) == artifact.path
            name = artifact.name if literal else f"{artifact.name}/{path}"
        limits = self.limits
        reason = None
        if len(self.results.artifacts) >= limits.max_files:
            reason = f"over the limit of {limits.max_files} files per job (HADES_RESULTS_MAX_FILES)"
        elif member.size > limits.max_file_bytes:
            reason = (
                f"is {member.size} bytes; files larger than {limits.max_file_bytes} bytes are not kept "
                "(HADES_RESULTS_MAX_FILE_BYTES)"
            )
        elif self.results.kept_bytes + member.size > limits.max_bytes:
            reason = f"would pass the limit of {limits.max_bytes} bytes per job (HADES_RESULTS_MAX_BYTES)"
        elif name in self._names:
            reason = f"another file is kept as {name!r} already"
        if reason is not None:
            self.results.skip(path, reason)
            if report:
                self.results.reports.append({"path": path, "parsed": False, "reason": f"not kept: {reason}"})
            return None
        self._names.add(name)
        return _Plan(path=path, name=name, kind="report" if report else "artifact", parse=report)

    async def _keep(self, steps: _TarSteps, first: _Member | bytes | _Done, plan: _Plan) -> _Member | bytes | _Done:
        """Store (and parse) the wanted member whose first chunk is ``first``; the item after its end."""
        data = bytearray() if plan.parse else None
        parse_cap = self.limits.report_max_bytes
        item = first

        async def content() -> AsyncIterator[bytes]:
            nonlocal item
            while isinstance(item, bytes) and item != _END_OF_FILE:
                if data is not None and len(data) <= parse_cap:
                    data.extend(item[: parse_cap + 1 - len(data)])
                yield item
                item = await self._step(steps, None)

        path = plan.path
        try:
            objects = await self._objects()
            stored = await objects.put(
                subjects.result_object(self.job.id, plan.name),
                content(),
                max_bytes=self.limits.max_file_bytes,
                headers={"Content-Type": content_type(plan.name), "Hades-Path": path},
            )
        except ObjectTooLarge:
            self.results.skip(path, "grew past the per-file limit while it was read")
            while isinstance(item, bytes) and item != _END_OF_FILE:
                item = await self._step(steps, None)
            return await self._step(steps, None) if item == _END_OF_FILE else item
        except HadesError as exc:
            self._gave_up = True
            raise HadesError(f"the results store is not reachable: {exc.detail}") from exc
        self.results.artifacts.append(
            KeptFile(
                name=plan.name,
                path=path,
                size=stored.size,
                sha256=stored.sha256,
                content_type=content_type(plan.name),
                kind=plan.kind,
            )
        )
        if data is not None:
            await self._parse(path, bytes(data), stored.size)
        return await self._step(steps, None)  # past the end-of-file marker

    async def _parse(self, path: str, data: bytes, size: int) -> None:
        if size > self.limits.report_max_bytes:
            reason = (
                f"is {size} bytes; reports larger than {self.limits.report_max_bytes} bytes are not parsed "
                "(HADES_RESULTS_REPORT_MAX_BYTES)"
            )
            self.results.reports.append({"path": path, "parsed": False, "reason": reason})
            return
        try:
            summary = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: junit.parse(data, max_bytes=self.limits.report_max_bytes, mask=self.mask)
            )
        except junit.ReportRefused as exc:
            self.results.reports.append({"path": path, "parsed": False, "reason": f"not parsed: it {exc}"})
            return
        self.results.tests.add(summary)
        self.results.reports.append({"path": path, "parsed": True})

    def finish(self) -> dict[str, Any]:
        """The results for the terminal event; patterns that matched nothing become warnings."""
        if not self.done:
            self.done = True
            for index, artifact in enumerate(self.job.artifacts):
                if artifact.path not in self._matched:
                    self.results.warn(f"artifacts/{index}: /shared/{artifact.path} matched no file")
            for index, glob in enumerate(self.job.junit_reports):
                if glob not in self._matched:
                    self.results.warn(f"reports/junit/{index}: /shared/{glob} matched no file")
        return self.results.to_json()


def job_globs(job: Job) -> list[str]:
    """Every glob a job asked for, artifacts' and reports' (relative to /shared)."""
    return [a.path for a in job.artifacts] + list(job.junit_reports)


class _TarSteps:
    """A tar stream read one step per ``send`` on a worker thread: ``_Member`` (a regular file's header; answer
    with whether it is wanted), its chunks and ``_END_OF_FILE`` when wanted, ``_DONE`` at the end."""

    def __init__(self, open_tar: OpenTar, parent: str) -> None:
        self._open_tar = open_tar
        self._parent = parent
        self._fileobj: io.BufferedReader | None = None
        self._steps = self._walk()
        self._started = False

    def send(self, value: bool | None) -> _Member | bytes | _Done:
        try:
            if not self._started:
                self._started = True
                return next(self._steps)
            return self._steps.send(value)
        except StopIteration:
            return _DONE

    def _walk(self) -> Generator[_Member | bytes, bool | None, None]:
        opened = self._open_tar()
        if opened is None:
            return
        self._fileobj = io.BufferedReader(opened) if not isinstance(opened, io.BufferedReader) else opened  # type: ignore[arg-type]
        if not self._fileobj.peek(1):
            return  # an empty stream: nothing matched (a collector's tar of no files)
        # ignore_zeros: a Kubernetes collector sends one small archive per file, one after the other
        with tarfile.open(fileobj=self._fileobj, mode="r|", ignore_zeros=True) as tar:
            for member in tar:
                if not member.isfile():
                    continue  # links and devices are never followed or kept
                path = match.under_shared(self._parent, member.name)
                if path is None:
                    continue
                wanted = yield _Member(path, member.size)
                if not wanted:
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                while chunk := source.read(READ_BYTES):
                    yield chunk
                yield _END_OF_FILE

    def close(self) -> None:
        self._steps.close()
        if self._fileobj is not None:
            self._fileobj.close()


class ChunkReader(io.RawIOBase):
    """A blocking iterator of byte chunks (an HTTP response body) as a readable stream for ``tarfile``."""

    def __init__(self, chunks: Any, close: Callable[[], None] | None = None) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if self._close is not None and not self.closed:
            self._close()
        super().close()
