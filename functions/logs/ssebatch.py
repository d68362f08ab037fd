"""Server-Sent Events written in batches: every event ready at once leaves in one write.

``EventSourceResponse.send`` writes each event on its own, under a timer of its own: a thousand followers of jobs
printing 20 lines a second are 20,000 writes and timers a second. ``BatchedEvents.send`` renders the event the
same way and queues it; one write task per stream takes everything queued since it last ran (a log batch's lines
arrive together, so they leave together), under the response's send timeout, so a stalled client is still cut.
A stream that holds ``MAX_BUFFERED_BYTES`` waits for its write before it takes more.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from runtime import tasks

MAX_BUFFERED_BYTES = 256 * 1024
"""Rendered events one stream holds before ``send`` waits for the write (a slow client slows its reader)."""
SEND_TIMEOUT_S = EventSourceResponse.DEFAULT_SEND_TIMEOUT
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def _data_lines(data: str, sep: str) -> str:
    return "".join(f"data: {chunk}{sep}" for chunk in _LINE_BREAKS.split(data))


class BatchedEvents:
    def __init__(self, sse: EventSourceResponse, request: web.BaseRequest, *, separator: str = "\r\n") -> None:
        self._sse = sse
        self._request = request
        self._sep = separator
        self._parts: list[str] = []
        self._size = 0
        self._writing: asyncio.Task[None] | None = None

    async def send(self, data: str, *, id: str | None = None, event: str | None = None) -> None:
        """Queue one event (as ``EventSourceResponse.send`` renders it); raises what an earlier write raised."""
        sep = self._sep
        lines = f"data: {data}{sep}" if "\n" not in data and "\r" not in data else _data_lines(data, sep)
        text = "".join(
            [
                f"id: {id}{sep}" if id is not None else "",
                f"event: {event}{sep}" if event is not None else "",
                lines,
                sep,
            ]
        )
        self._parts.append(text)
        self._size += len(text)
        if self._writing is not None and self._writing.done():
            self._writing.result()  # a failed write: the stream is over
            self._writing = None
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        if self._size >= MAX_BUFFERED_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Until everything queued has been written; raises what the write raised."""
        while self._writing is not None:
            writing = self._writing
            await writing
            if self._writing is writing:
                self._writing = None

    async def close(self) -> None:
        """Stop writing (what is still queued is dropped)."""
        if self._writing is not None:
            await tasks.cancel_and_wait(self._writing)
            if not self._writing.cancelled():
                self._writing.exception()  # retrieved: the stream is over either way
            self._writing = None

    async def _write(self) -> None:
        while self._parts:
            chunk = "".join(self._parts).encode()
            self._parts, self._size = [], 0
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self._sse.write(chunk)
            except ConnectionResetError:
                self._sse.stop_streaming()
                raise
            except TimeoutError:
                self._sse.stop_streaming()
                if self._request.transport is not None:
                    self._request.transport.abort()
                raise
