"""One job attempt's log lines on their way to ``hades.logs.<job_id>``: split, masked, capped, batched.

Lines longer than ``log_line_max_bytes`` are split; values (at least ``secret_min_chars`` long) of metadata keys
that name a secret (``secret_patterns``, ``secret_keys``) are replaced by ``***``; past ``job_log_max_bytes``
one marker line says so and the rest is dropped. Lines leave in batches, at least every ``log_flush_interval_s``
or as soon as ``log_batch_lines`` (or 256 KiB) are waiting, one publish at a time so they are stored in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable

from runtime import events, messaging, metrics, subjects
from runtime.errors import HadesError
from runtime.jobs import utc_now
from runtime.settings import DispatchSettings

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 256 * 1024
"""Well under NATS' default 1 MiB message limit, whatever the line sizes."""
MASK = "***"


def split_line(line: str, max_bytes: int) -> list[str]:
    """Cut a line into pieces of at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    data = line.encode()
    if len(data) <= max_bytes:
        return [line]
    pieces = []
    while data:
        cut = min(max_bytes, len(data))
        while cut < len(data) and (data[cut] & 0xC0) == 0x80:  # continuation byte: back up
            cut -= 1
        pieces.append(data[:cut].decode())
        data = data[cut:]
    return pieces


class LogSink:
    def __init__(
        self,
        conn: messaging.Messaging,
        *,
        job_id: str,
        attempt: int,
        settings: DispatchSettings,
        secrets: Iterable[str] = (),
    ) -> None:
        self.conn = conn
        self.job_id = job_id
        self.attempt = attempt
        self.settings = settings
        # A multi-line secret (a PEM key) is printed line by line, so each of its lines is masked on its own too.
        pieces = {piece.strip() for secret in secrets for piece in [secret, *secret.splitlines()]}
        shortest = settings.secret_min_chars  # shorter values (``1``, ``yes``) would garble the output
        self.secrets = sorted({p for p in pieces if len(p) >= shortest}, key=len, reverse=True)
        self.seq = 0
        self.bytes_written = 0
        self.truncated = False
        self.dropped_lines = 0
        self._buffer: deque[events.LogLine] = deque()
        self._buffer_bytes = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._publishing = asyncio.Lock()  # the flush loop and flush() must not interleave batches
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"logs-{job_id}")

    def mask(self, text: str) -> str:
        """``text`` with every secret of the job replaced by ``***``: for any text leaving the dispatcher."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def add(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        if self.truncated:
            self.dropped_lines += 1
            return
        message = self.mask(message)
        for piece in split_line(message, self.settings.log_line_max_bytes):
            size = len(piece.encode()) + 1
            if self.bytes_written + size > self.settings.job_log_max_bytes:
                self.truncated = True
                limit_mib = self.settings.job_log_max_bytes / 2**20
                self._append(
                    step_id,
                    "system",
                    f"[hades] log limit of {limit_mib:g} MiB reached: further output of this job is dropped",
                    at,
                )
                return
            self.bytes_written += size
            self._append(step_id, stream, piece, at)

    def system(self, step_id: int, message: str) -> None:
        """A line from Hades itself (pulling an image, a step killed …), shown among the step's output."""
        self._append(step_id, "system", message, utc_now())

    def _append(self, step_id: int, stream: str, message: str, at: str) -> None:
        self.seq += 1
        self._buffer.append({"seq": self.seq, "step_id": step_id, "stream": stream, "at": at, "message": message})
        self._buffer_bytes += len(message) + 64
        if len(self._buffer) >= self.settings.log_batch_lines or self._buffer_bytes >= MAX_BATCH_BYTES:
            self._wake.set()

    async def _flush_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.log_flush_interval_s)
            self._wake.clear()
            await self._publish_buffer()

    async def flush(self) -> None:
        """Publish what is buffered now, e.g. a step's last lines before its final status."""
        await self._publish_buffer()

    async def _publish_buffer(self) -> None:
        async with self._publishing:
            await self._publish_buffered()

    async def _publish_buffered(self) -> None:
        while self._buffer:
            batch: list[events.LogLine] = []
            size = 0
            while self._buffer and (not batch or size + len(self._buffer[0]["message"]) + 64 <= MAX_BATCH_BYTES):
                line = self._buffer.popleft()
                size += len(line["message"]) + 64
                batch.append(line)
            self._buffer_bytes -= size
            body: events.LogBatch = {"job_id": self.job_id, "attempt": self.attempt, "lines": batch}
            try:
                await self.conn.publish(
                    subjects.logs_subject(self.job_id), messaging.encode(body), msg_id=events.logs_msg_id(body)
                )
                metrics.LOG_LINES.inc(len(batch))
            except HadesError as exc:
                # Lines are worth less than the job: note the loss and keep running.
                log.warning("job %s: %d log lines lost: %s", self.job_id, len(batch), exc.detail)

    async def close(self) -> None:
        """Publish everything still buffered; after this, every line is stored (or reported lost)."""
        self._closed = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher
        await self._publish_buffer()
