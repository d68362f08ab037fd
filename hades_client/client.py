"""The synchronous client: every route of submit and logs, retries of 503/429, live logs that resume.

``AsyncHadesClient`` (``hades_client.asyncclient``) is the same API with ``async``; both send the ``Call``\\ s of
``hades_client.protocol``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, TypeVar

import httpx

from hades_client import errors, protocol, sse
from hades_client.models import Cancelling, EndEvent, Job, JobPage, StepLogs, StreamEvent, Submitted
from hades_client.protocol import Endpoints, ReconnectPolicy, RetryPolicy

T = TypeVar("T")


class HadesClient:
    """A client of one Hades deployment; use it as a context manager (or call ``close``)."""

    def __init__(
        self,
        url: str = protocol.DEFAULT_URL,
        logs_url: str = protocol.DEFAULT_LOGS_URL,
        *,
        api_key: str | None = None,
        logs_api_key: str | None = None,
        timeout_s: float = protocol.DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        reconnect: ReconnectPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoints = Endpoints(url, logs_url, api_key, logs_api_key)
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or ReconnectPolicy()
        self._http = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=False)

    def __enter__(self) -> HadesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # The routes.

    def submit(self, job: Mapping[str, Any], *, idempotency_key: str | None = None) -> Submitted:
        return self._call(protocol.submit(job, idempotency_key=idempotency_key))

    def get(self, job_id: str) -> Job:
        return self._call(protocol.get(job_id))

    def queue_position(self, job_id: str) -> int | None:
        """The job's place in its lane (1: next) while it is queued and the server can tell; else None."""
        return self.get(job_id).queue_position

    def list_jobs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> JobPage:
        """One page; ``name``: the job's name contains it (case-insensitive); ``tenant``: only that tenant's jobs.
        A filtered page may be short, even empty, and still have a ``next``: the server reads a bounded number of
        records per page."""
        return self._call(protocol.list_jobs(status=status, name=name, limit=limit, cursor=cursor, tenant=tenant))

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
        tenant: str | None = None,
    ) -> Iterator[Job]:
        """Every (matching) job, newest first, following the pages' cursors to the last page."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status=status, name=name, limit=page_size, cursor=cursor, tenant=tenant)
            yield from page.jobs
            if not page.next or page.next == cursor:  # an empty page with a next is not the end
                return
            cursor = page.next

    def logs(self, job_id: str, *, step: int | None = None) -> list[StepLogs]:
        return self._call(protocol.logs(job_id, step=step))

    def logs_text(self, job_id: str, *, step: int | None = None) -> str:
        return self._call(protocol.logs_text(job_id, step=step))

    def artifacts(self, job_id: str) -> dict[str, Any]:
        return self._call(protocol.artifacts(job_id))

    def download_artifact(self, job_id: str, name: str, sink: BinaryIO) -> int:
        """Stream one kept file into ``sink``; the bytes written."""
        response = self._send(protocol.artifact(job_id, name), stream=True)
        written = 0
        try:
            for chunk in response.iter_bytes():
                sink.write(chunk)
                written += len(chunk)
        finally:
            response.close()
        return written

    def cancel(self, job_id: str) -> Cancelling:
        return self._call(protocol.cancel(job_id))

    def stream(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[StreamEvent]:
        """Lines and status changes as they happen, then the ``EndEvent``; a dropped connection is resumed.

        Each event is delivered once, also across reconnects. ``StreamBroken`` after ``reconnect.attempts``
        failures in a row; an error answer (404, 401) is raised at once.
        """
        resume = sse.Resume(last_event_id)
        failures = 0
        retry_ms: int | None = None
        while True:
            decoder = sse.Decoder()
            progressed = False
            try:
                response = self._open_stream(job_id, resume)
                try:
                    for line in response.iter_lines():
                        raw = decoder.feed(line)
                        if raw is None:
                            continue
                        event = sse.parse_event(raw)
                        if event is None or not resume.admit(event):
                            continue
                        progressed = True
                        yield event
                        if isinstance(event, EndEvent):
                            return
                finally:
                    response.close()
            except (errors.ConnectionFailed, errors.Unavailable, httpx.TransportError) as exc:
                last_error: Exception | None = exc
            else:
                last_error = None  # the server closed the stream before the end (it restarts)
            retry_ms = decoder.retry_ms if decoder.retry_ms is not None else retry_ms
            failures = 0 if progressed else failures + 1
            if failures >= self.reconnect.attempts:
                raise errors.StreamBroken(
                    f"job {job_id}: the live stream broke off {failures} times in a row ({last_error or 'closed'})"
                ) from last_error
            time.sleep(self.reconnect.delay_s(failures, server_retry_ms=retry_ms))

    # Sending.

    def _call(self, call: protocol.Call[T]) -> T:
        response = self._send(call)
        return protocol.parse(call, response)

    def _send(self, call: protocol.Call[Any], *, stream: bool = False) -> httpx.Response:
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.reconnect.read_timeout_s) if stream else None
        attempt = 0
        while True:
            attempt += 1
            request = call.request(self._http, self.endpoints, timeout=timeout)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise errors.ConnectionFailed(str(request.url), protocol.transport_reason(exc)) from exc
            if response.is_success:
                return response
            if stream:
                response.read()
                response.close()
            delay = self.retry.delay_s(response, attempt)
            if delay is None:
                raise protocol.error_from(response)
            time.sleep(delay)

    def _open_stream(self, job_id: str, resume: sse.Resume) -> httpx.Response:
        return self._send(protocol.stream(job_id, headers=resume.headers()), stream=True)
