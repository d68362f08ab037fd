"""One step's output: its container's log followed live, on a pool thread, into ``RunHooks.log``.

The kubelet ends a followed log when the container exits. If the stream breaks earlier (read timeout on a quiet
step, API server restart), it is opened again from the last line's timestamp and lines already passed on are
skipped, so a line is neither lost nor repeated. A quiet step is followed for as long as it runs (its read
timeouts are no failures); only failures in a row, with no line between them, make the reader give up.
Kubernetes merges stdout and stderr: every line is ``stdout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from typing import Any

from functions.dispatch.executors import output
from functions.dispatch.executors.k8s import api as k8s_api
from runtime.jobs import utc_now

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 120.0
"""A followed log silent this long is re-opened (from its last timestamp): no thread waits on a dead stream."""
MAX_FAILURES = 20
"""Failed opens or broken streams in a row (no line in between) after which the log is given up."""
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z $")


class StepLog:
    def __init__(self, api: k8s_api.Api, *, pod: str, container: str, emit: output.Emit, job_id: str) -> None:
        self._api = api
        self._pod = pod
        self._container = container
        self._emit = emit
        self._job_id = job_id
        self._closed = threading.Event()
        self._response: Any = None
        self._last: tuple[str, str] | None = None
        """(seconds, nanoseconds) of the last line passed on: where a re-opened stream starts."""
        self.future: asyncio.Future[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future = loop.run_in_executor(self._api.pool, self._run)

    def close(self) -> None:
        """Ends the stream (also from the loop while the thread reads); never waits."""
        self._closed.set()
        if self._response is not None:
            k8s_api.close_quietly(self._response)

    async def drain(self, timeout_s: float) -> None:
        """Wait until the container's last line was passed on; close the stream if it stays open."""
        if self.future is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout_s)
        except TimeoutError:
            log.warning("job %s: log of %s still open %.0f s after it ended", self._job_id, self._container, timeout_s)
            self.close()
        except Exception as exc:
            log.debug("job %s: log of %s: %s", self._job_id, self._container, exc)

    # -- on the pool thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0  # in a row: a line, or a stream that was only quiet, resets it
        while failures < MAX_FAILURES:
            if self._closed.is_set():
                return
            query: list[tuple[str, Any]] = [("container", self._container), ("follow", "true"), ("timestamps", "true")]
            if self._last is not None:
                query.append(("sinceTime", f"{self._last[0]}Z"))
            try:
                self._api.wait_token()
                self._response = self._api.open(
                    "GET", k8s_api.POD_LOG, query=query, timeout_s=READ_TIMEOUT_S, name=self._pod
                )
            except k8s_api.ApiError as exc:
                failures += 1
                if exc.status == 404 or failures > 3:  # the pod is gone, or the container never ran
                    log.debug("job %s: no log for %s: %s", self._job_id, self._container, exc)
                    return
                self._closed.wait(0.5)  # "waiting to start": the status ran ahead of the kubelet
                continue
            except k8s_api.Retry as exc:
                failures += 1
                log.debug("job %s: log of %s: %s", self._job_id, self._container, exc)
                self._closed.wait(1.0)
                continue
            before = self._last
            try:
                self._read(self._response)
                return  # the kubelet ended it: the container exited
            except k8s_api.NETWORK_ERRORS as exc:
                quiet = isinstance(exc, k8s_api.READ_TIMEOUTS)
                failures = 0 if quiet or self._last != before else failures + 1
                log.debug("job %s: log of %s broke (%s); re-opening", self._job_id, self._container, exc)
            finally:
                k8s_api.close_quietly(self._response)
                self._response = None
        log.warning("job %s: log of %s given up after %d failures in a row", self._job_id, self._container, failures)

    def _read(self, response: Any) -> None:
        """Pass on the stream's lines; ``_last`` follows each one, also when the stream breaks."""
        lines = output.Lines()
        try:
            for chunk in response.stream(None, decode_content=False):
                batch: list[tuple[str, str]] = []
                at = None
                for line in lines.feed(chunk):
                    stamp, message = _split(line)
                    if stamp is not None:
                        if self._last is not None and stamp <= self._last:
                            continue  # passed on before the stream was re-opened
                        self._last, at = stamp, stamp
                    batch.append(("stdout", message))
                if batch:
                    self._emit(batch, _hades_time(at))
        finally:
            rest = lines.flush()
            if rest is not None:
                stamp, message = _split(rest)
                if self._last is None or stamp is None or stamp > self._last:
                    if stamp is not None:
                        self._last = stamp
                    with contextlib.suppress(RuntimeError):
                        self._emit([("stdout", message)], _hades_time(stamp))


def _split(line: str) -> tuple[tuple[str, str] | None, str]:
    """``2026-12-01T10:00:00.123456789Z text`` → ((seconds, nanoseconds padded), text)."""
    head, sep, rest = line.partition(" ")
    match = _STAMP.match(head + sep)
    if not match:
        return None, line
    return (match.group(1), (match.group(2) or "").ljust(9, "0")), rest


def _hades_time(stamp: tuple[str, str] | None) -> str:
    if stamp is None:
        return utc_now()
    return f"{stamp[0]}.{stamp[1][:3]}Z"
