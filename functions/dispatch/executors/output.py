"""A container's output on its way to ``RunHooks.log``: bytes from a blocking stream, split into lines.

Runs on an executor's own threads (the streams block) and hands complete lines to the event loop. UTF-8 with bad
bytes replaced; a line split across reads is joined; an endless line without a newline is passed on in pieces.
Shared by executors: Docker's demultiplexed attach stream feeds it, as a Kubernetes log stream can.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import Callable, Iterable

from functions.dispatch.executors.base import RunHooks
from runtime.jobs import utc_now

log = logging.getLogger(__name__)

MAX_PARTIAL_LINE_CHARS = 1024 * 1024
"""Output without a newline is passed on in pieces of this size, so one endless line cannot eat memory."""


Emit = Callable[[list[tuple[str, str]], str], None]


def emitter(loop: asyncio.AbstractEventLoop, hooks: RunHooks, step_id: int) -> Emit:
    """Hands a batch of (stream, line) read at one moment to ``hooks.log`` on the event loop."""

    def deliver(batch: list[tuple[str, str]], at: str) -> None:
        for stream, line in batch:
            hooks.log(step_id, stream, line, at=at)

    def emit(batch: list[tuple[str, str]], at: str) -> None:
        loop.call_soon_threadsafe(deliver, batch, at)

    return emit


def pump(
    stream: Iterable[tuple[bytes | None, bytes | None]], emit: Emit, job_id: str, *, release: Callable[[], None]
) -> None:
    """Read a step's demultiplexed output until it ends, passing on each complete line as soon as it arrives.

    ``release`` frees the executor's end of the stream once it has ended (e.g. closes the socket)."""
    lines = {"stdout": Lines(), "stderr": Lines()}
    try:
        for out, err in stream:
            batch = [("stdout", line) for line in lines["stdout"].feed(out)] if out else []
            if err:
                batch += [("stderr", line) for line in lines["stderr"].feed(err)]
            if batch:
                emit(batch, utc_now())
    except Exception as exc:  # the stream was closed under us (hung engine) or the loop is gone
        log.debug("job %s: output stream ended: %s", job_id, exc)
    finally:
        release()  # the engine ended it; this releases our end
    tail = [(name, rest) for name, split in lines.items() if (rest := split.flush()) is not None]
    if tail:
        with contextlib.suppress(RuntimeError):  # the event loop is closed
            emit(tail, utc_now())


class Lines:
    """Bytes in, complete lines out: UTF-8 (bad bytes replaced) split on newlines, partial lines kept for later."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        if "\n" not in text:
            self._parts.append(text)
            self._size += len(text)
            return [self._take()] if self._size >= MAX_PARTIAL_LINE_CHARS else []
        first, *rest = text.split("\n")
        tail = rest.pop()
        found = ["".join(self._parts) + first, *rest]
        self._parts, self._size = ([tail], len(tail)) if tail else ([], 0)
        return [line.removesuffix("\r") for line in found]

    def flush(self) -> str | None:
        self._parts.append(self._decoder.decode(b"", final=True))
        rest = self._take()
        return rest.removesuffix("\r") if rest else None

    def _take(self) -> str:
        text = "".join(self._parts)
        self._parts, self._size = [], 0
        return text
