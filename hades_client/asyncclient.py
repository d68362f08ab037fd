"""The asynchronous client: the same API as ``HadesClient``, with ``async``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import httpx

from hades_client import errors, protocol, sse
from hades_client.models import Cancelling, EndEvent, Job, JobPage, StepLogs, StreamEvent, Submitted
from hades_client.protocol import Endpoints, ReconnectPolicy, RetryPolicy

T = TypeVar("T")


class AsyncHadesClient:
    """A client of one Hades deployment; use it as an async context manager (or await ``aclose``)."""

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoints = Endpoints(url, logs_url, api_key, logs_api_key)
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or ReconnectPolicy()
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport, follow_redirects=False)

    async def __aenter__(self) -> AsyncHadesClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # The routes.

    async def submit(self, job: Mapping[str, Any], *, idempotency_key: str | None = None) -> Submitted:
        return await self._call(protocol.submit(job, idempotency_key=idempotency_key))

    async def get(self, job_id: str) -> Job:
        return await self._call(protocol.get(job_id))

    async def queue_position(self, job_id: str) -> int | None:
        """The job's place in its lane (1: next) while it is queued and the server can tell; else None."""
        return (await self.get(job_id)).queue_position

    async def list_jobs(
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
        return await self._call(protocol.list_jobs(status=status, name=name, limit=limit, cursor=cursor, tenant=tenant))

    async def iter_jobs(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Job]:
        """Every (matching) job, newest first, following the pages' cursors to the last page."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(status=status, name=name, limit=page_size, cursor=cursor, tenant=tenant)
            for job in page.jobs:
                yield job
            if not page.next or page.next == cursor:  # an empty page with a next is not the end
                return
            cursor = page.next

    async def logs(self, job_id: str, *, step: int | None = None) -> list[StepLogs]:
        return await self._call(protocol.logs(job_id, step=step))

    async def logs_text(self, job_id: str, *, step: int | None = None) -> str:
        return await self._call(protocol.logs_text(job_id, step=step))

    async def cancel(self, job_id: str) -> Cancelling:
        return await self._call(protocol.cancel(job_id))

    async def stream(self, job_id: str, *, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
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
                response = await self._send(protocol.stream(job_id, headers=resume.headers()), stream=True)
                try:
                    async for line in response.aiter_lines():
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
                    await response.aclose()
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
            await asyncio.sleep(self.reconnect.delay_s(failures, server_retry_ms=retry_ms))

    # Sending.

    async def _call(self, call: protocol.Call[T]) -> T:
        response = await self._send(call)
        return protocol.parse(call, response)

    async def _send(self, call: protocol.Call[Any], *, stream: bool = False) -> httpx.Response:
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.reconnect.read_timeout_s) if stream else None
        attempt = 0
        while True:
            attempt += 1
            request = call.request(self._http, self.endpoints, timeout=timeout)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise errors.ConnectionFailed(str(request.url), protocol.transport_reason(exc)) from exc
            if response.is_success:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            delay = self.retry.delay_s(response, attempt)
            if delay is None:
                raise protocol.error_from(response)
            await asyncio.sleep(delay)
