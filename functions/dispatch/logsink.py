"""One job attempt's log lines on their way to ``hades.logs.<job_id>``: split, masked, capped, batched.

Lines longer than ``log_line_max_bytes`` are split; values (at least ``secret_min_chars`` long) of metadata keys
that name a secret (``secret_patterns``, ``secret_keys``) are replaced by ``***``; past ``job_log_max_bytes``
one marker line says so and the rest is dropped (each later step that still writes gets one line saying its output
was dropped). Lines leave in batches, at least every ``log_flush_interval_s`` or as soon as ``log_batch_lines`` (or
256 KiB) are waiting, one publish at a time so they are stored in order.

A batch that cannot be stored (NATS unreachable) is kept and published again, with the same de-duplication id,
before anything after it: an outage delays lines, it does not reorder or lose them. Lines are really lost only when
the buffer passes ``MAX_BUFFERED_BYTES`` during an outage (the newest are dropped) or when NATS is still away
``give_up_after_s`` after the job ended; ``lost_lines`` counts them, the job's terminal event carries the count
(``log_lost_lines``), and a ``[hades]`` line in the log says where lines are missing whenever it can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import orjson

from runtime import events, messaging, metrics, subjects
from runtime.errors import HadesError, Unavailable
from runtime.jobs import utc_now
from runtime.settings import DispatchSettings

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 256 * 1024
"""Well under NATS' default 1 MiB message limit, whatever the line sizes."""
MASK = "***"
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
"""Lines (counted as their text + 64 bytes) held per job while NATS is unreachable; past it new lines are lost.
While NATS answers, only the job's log cap bounds the buffer (a burst is stored late, never dropped)."""
GIVE_UP_AFTER_S = 30.0
"""How long a finished job's last lines are retried while NATS is unreachable before they count as lost."""
FLUSH_WAIT_S = 10.0
"""How long a step's end waits for its lines to be stored; they stay buffered (and retried) after that."""
RETRY_DELAY_S = (0.2, 2.0)
"""A failed publish is retried after the first delay, doubling up to the second."""


async def _owned() -> bool:
    return True


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
        give_up_after_s: float = GIVE_UP_AFTER_S,
        flush_wait_s: float = FLUSH_WAIT_S,
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
        self.lost_lines = 0
        """Lines that were never stored: NATS unreachable too long, or the buffer full during an outage."""
        self.give_up_after_s = give_up_after_s
        self.flush_wait_s = flush_wait_s
        self._unreported_lost = 0  # lost lines no [hades] line has told about yet
        self._dropped_steps: set[int] = set()  # steps told that the log cap dropped their output
        self._pending: events.LogBatch | None = None  # the batch being stored: retried as it is, before the rest
        self._outage_since: float | None = None
        self._buffer: deque[events.LogLine] = deque()
        self._buffer_bytes = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._closing = asyncio.Event()
        self._publishing = asyncio.Lock()  # the flush loop and flush() must not interleave batches
        self.guard: Callable[[], Awaitable[bool]] = _owned
        """Asked before each batch leaves: whether this attempt still owns the job (dispatch's lease)."""
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"logs-{job_id}")

    def mask(self, text: str) -> str:
        """``text`` with every secret of the job replaced by ``***``: for any text leaving the dispatcher."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def add(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        """One line of a step's output (``stdout`` or ``stderr``): masked, split, counted against the cap."""
        self._enter(step_id, stream, message, at)

    def system(self, step_id: int, message: str) -> None:
        """A line from Hades itself (pulling an image, a step killed …), shown among the step's output; masked
        like the step's own lines (it can quote a step's name or an engine's words), not counted against the cap."""
        self._enter(step_id, "system", message, utc_now())

    def _enter(self, step_id: int, stream: str, message: str, at: str) -> None:
        message = self.mask(message)  # the one place a line's text is masked, before it is split
        if stream == "system":
            self._append(step_id, stream, message, at)
            return
        if self.truncated:
            self.dropped_lines += 1
            if step_id not in self._dropped_steps:  # a later step must not look as if it printed nothing
                self._dropped_steps.add(step_id)
                self._append(step_id, "system", f"[hades] output of step {step_id} dropped: {self._cap_text()}", at)
            return
        for piece in split_line(message, self.settings.log_line_max_bytes):
            size = len(piece.encode()) + 1
            if self.bytes_written + size > self.settings.job_log_max_bytes:
                self.truncated = True
                self.dropped_lines += 1
                self._dropped_steps.add(step_id)
                self._append(step_id, "system", f"[hades] {self._cap_text()}: further output is dropped", at)
                return
            self.bytes_written += size
            self._append(step_id, stream, piece, at)

    def _cap_text(self) -> str:
        return f"the job's log limit of {self.settings.job_log_max_bytes / 2**20:g} MiB was reached"

    def _append(self, step_id: int, stream: str, message: str, at: str) -> None:
        if self._outage_since is not None and self._buffer_bytes + line_cost(message) > MAX_BUFFERED_BYTES:
            self._lose(1)  # NATS has been away long enough to fill the buffer: the newest lines go
            return
        if self._unreported_lost:  # there is room again: say where lines are missing, before the next one
            lost, self._unreported_lost = self._unreported_lost, 0
            self._push(step_id, "system", f"[hades] {lost} log lines lost here: NATS was unreachable", utc_now())
        self._push(step_id, stream, message, at)

    def _lose(self, count: int) -> None:
        self.lost_lines += count
        self._unreported_lost += count

    def _push(self, step_id: int, stream: str, message: str, at: str) -> None:
        self.seq += 1
        self._buffer.append({"seq": self.seq, "step_id": step_id, "stream": stream, "at": at, "message": message})
        self._buffer_bytes += line_cost(message)
        if len(self._buffer) >= self.settings.log_batch_lines or self._buffer_bytes >= MAX_BATCH_BYTES:
            self._wake.set()

    async def _flush_loop(self) -> None:
        delay_s = RETRY_DELAY_S[0]
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.log_flush_interval_s)
            self._wake.clear()
            if await self._publish_buffer():
                delay_s = RETRY_DELAY_S[0]
                continue
            # NATS is away: try again later, not at every new line (close() takes over at once).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)
            delay_s = min(delay_s * 2, RETRY_DELAY_S[1])

    async def flush(self) -> None:
        """Publish what is buffered now, e.g. a step's last lines before its final status (waits out a short
        outage; what is still unstored after ``flush_wait_s`` stays buffered)."""
        await self._publish_buffer(until=time.monotonic() + self.flush_wait_s)

    async def _publish_buffer(self, *, until: float | None = None) -> bool:
        async with self._publishing:
            return await self._publish_buffered(until=until)

    def _next_batch(self) -> events.LogBatch:
        batch: list[events.LogLine] = []
        size = 0
        while self._buffer and (not batch or size + line_cost(self._buffer[0]["message"]) <= MAX_BATCH_BYTES):
            line = self._buffer.popleft()
            size += line_cost(line["message"])
            batch.append(line)
        return {"job_id": self.job_id, "attempt": self.attempt, "lines": batch}

    async def _publish_buffered(self, *, until: float | None) -> bool:
        """Store the buffered batches in order: True when all are stored, False when NATS is still unreachable
        (right away without ``until``, else once it has passed); the unstored ones stay buffered."""
        delay_s = RETRY_DELAY_S[0]
        while self._pending is not None or self._buffer:
            if not await self.guard():  # another attempt owns the job now: its lines are not ours to add to
                self._pending, self._buffer_bytes = None, 0
                self._buffer.clear()
                return True
            if self._pending is None:
                self._pending = self._next_batch()
            body = self._pending
            try:
                await self.conn.publish(
                    subjects.logs_subject(self.job_id), messaging.encode(body), msg_id=events.logs_msg_id(body)
                )
            except Unavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning("job %s: log lines not stored yet, retrying: %s", self.job_id, exc.detail)
                left_s = until - time.monotonic() if until is not None else 0.0
                if left_s <= 0:
                    return False
                await asyncio.sleep(min(delay_s, left_s))
                delay_s = min(delay_s * 2, RETRY_DELAY_S[1])
                continue
            except HadesError as exc:  # permanent (too large for the broker): halve it, or lose a single line
                if len(body["lines"]) > 1:
                    half = len(body["lines"]) // 2
                    self._pending = {**body, "lines": body["lines"][:half]}
                    self._buffer.extendleft(reversed(body["lines"][half:]))
                    continue
                log.warning("job %s: a log line lost: %s", self.job_id, exc.detail)
                self._lose(1)
            else:
                metrics.LOG_LINES.inc(len(body["lines"]))
                if self._outage_since is not None:
                    log.info(
                        "job %s: log lines stored again after %.1f s",
                        self.job_id,
                        time.monotonic() - self._outage_since,
                    )
                    self._outage_since = None
            self._buffer_bytes -= sum(line_cost(line["message"]) for line in body["lines"])
            self._pending = None
        return True

    async def close(self) -> None:
        """Publish everything still buffered; after this, every line is stored or counted in ``lost_lines``."""
        self._closed = True
        self._closing.set()
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher
        if self._unreported_lost:  # lines were dropped at the end: the last line says so
            lost, self._unreported_lost = self._unreported_lost, 0
            self._push(0, "system", f"[hades] {lost} log lines lost: NATS was unreachable", utc_now())
        if await self._publish_buffer(until=time.monotonic() + self.give_up_after_s):
            return
        unstored = len(self._buffer) + (len(self._pending["lines"]) if self._pending else 0)
        log.error("job %s: %d log lines lost: NATS unreachable for %.0f s", self.job_id, unstored, self.give_up_after_s)
        self.lost_lines += unstored
        self._buffer.clear()
        self._pending = None
        self._buffer_bytes = 0


def line_cost(message: str) -> int:
    """A line's size in its batch as stored: JSON-encoded (a control character takes 6 bytes, an emoji 4), plus
    room for its other fields, so a batch stays under the broker's message limit whatever the output."""
    return len(orjson.dumps(message)) + 96
