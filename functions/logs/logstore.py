"""Reading a job's log lines and status events back from ``HADES_EVENTS``, in bounded memory.

The lines are never copied elsewhere: the events stream is durable and has the retention. ``Messaging.read`` walks
one subject in stream order with batched direct gets, one batch in memory at a time. ``LineOrder`` puts one
attempt's lines back in ``seq`` order and drops repeats; ``iter_lines`` feeds ``GET /logs``, its plain-text form and
callbacks; ``follow`` feeds the live stream: it reads to the end, then takes the job's new messages from its
feed (``livefeed``: one subscription and one reader per job and process, shared by every follower of the job).

Contract with the writer (dispatch's ``logsink``): one attempt's lines are numbered 1, 2, 3 … and published in order.
A gap (a lost batch) costs a finished read a little buffering, never a repeat, and a live reader ``GAP_WAIT_S``:
the lines held behind it go out once the gap has stood that long, whether or not more lines keep arriving.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any

from functions.logs import livefeed
from functions.logs.records import JobRecord
from functions.logs.replays import Replays
from runtime import events, subjects
from runtime.events import LogLine
from runtime.jobs import JobStatus
from runtime.messaging import Messaging, StoredMessage

log = logging.getLogger(__name__)

REORDER_WINDOW_LINES = 10_000
"""Lines held back waiting for an earlier one; past it the gap is given up (the earliest held line goes out)."""
GAP_WAIT_S = 0.3
"""How long a live reader waits for a missing line before it moves on (counted from when the gap was seen)."""
POLL_S = 0.5
"""A live reader re-reads this often even without a wake-up, so a lost one delays it by at most this."""


@dataclass(order=True)
class _Held:
    seq: int
    line: LogLine = field(compare=False)


@dataclass
class LineOrder:
    """One job's lines in ``(attempt, seq)`` order, each once, whatever order and how often they arrive."""

    attempt: int = -1
    next_seq: int = 1
    window: int = REORDER_WINDOW_LINES
    _held: list[_Held] = field(default_factory=list)
    _held_seqs: set[int] = field(default_factory=set)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def push(self, attempt: int, line: LogLine) -> list[tuple[int, LogLine]]:
        """The lines that can go out now that ``line`` arrived."""
        if attempt < self.attempt:
            return []
        out: list[tuple[int, LogLine]] = []
        if attempt > self.attempt:
            out = self.flush()
            self.attempt, self.next_seq = attempt, 1
        seq = line["seq"]
        if seq < self.next_seq or seq in self._held_seqs:
            return out
        if seq == self.next_seq:
            out.append((attempt, line))
            self.next_seq += 1
        else:
            heapq.heappush(self._held, _Held(seq, line))
            self._held_seqs.add(seq)
            if len(self._held) > self.window:
                self._release_first(out)
        self._release_ready(out)
        return out

    def flush(self) -> list[tuple[int, LogLine]]:
        """Give up waiting for missing lines: everything held goes out, in order."""
        out: list[tuple[int, LogLine]] = []
        while self._held:
            self._release_first(out)
            self._release_ready(out)
        return out

    def _release_first(self, out: list[tuple[int, LogLine]]) -> None:
        held = heapq.heappop(self._held)
        self._held_seqs.discard(held.seq)
        out.append((self.attempt, held.line))
        self.next_seq = held.seq + 1

    def _release_ready(self, out: list[tuple[int, LogLine]]) -> None:
        while self._held and self._held[0].seq <= self.next_seq:
            held = heapq.heappop(self._held)
            self._held_seqs.discard(held.seq)
            if held.seq == self.next_seq:
                out.append((self.attempt, held.line))
                self.next_seq += 1


def valid_line(line: Any) -> bool:
    """A line readers can show: an integer ``seq`` and a text ``message`` (the rest is optional)."""
    return isinstance(line, dict) and isinstance(line.get("seq"), int) and isinstance(line.get("message"), str)


def _decode_batch(message: StoredMessage) -> events.LogBatch | None:
    try:
        batch = events.decode_logs(message.data)
    except events.EventError as exc:
        log.warning("skipping a malformed log batch (stream seq %d): %s", message.seq, exc)
        return None
    if not isinstance(batch["attempt"], int):
        return None
    batch["lines"] = [line for line in batch["lines"] if valid_line(line)]
    return batch


def line_bytes(line: LogLine) -> int:
    """What one line counts against the per-job cap (as the writer counts it: its UTF-8 bytes and a newline)."""
    return len(line["message"].encode()) + 1


async def iter_lines(
    conn: Messaging, job_id: str, *, attempt: int, max_bytes: int, step: int | None = None
) -> AsyncGenerator[LogLine, None]:
    """One attempt's lines, in order, each once, up to ``max_bytes``; holds at most one batch and the window.

    Hades' own lines (``system``: the writer's cap notice, a step's end) do not count against ``max_bytes``, as the
    writer does not count them, so its cap notice always reaches the reader; past the reader's own limit a
    ``system`` line says that the rest is not shown."""
    order = LineOrder(attempt=attempt)
    budget = max_bytes

    def emit(lines: Iterable[tuple[int, LogLine]]) -> Iterable[LogLine]:
        nonlocal budget
        for _, line in lines:
            if line.get("stream") != "system":
                budget -= line_bytes(line)
            if budget < 0:
                limit_mib = max_bytes / 2**20
                message = f"[hades] the log limit of {limit_mib:g} MiB was reached: the rest is not shown"
                yield {**line, "stream": "system", "message": message}
                return
            if step is None or line.get("step_id") == step:
                yield line

    messages = conn.read(stream=subjects.EVENTS_STREAM, subject=subjects.logs_subject(job_id))
    async with contextlib.aclosing(messages):
        async for message in messages:
            batch = _decode_batch(message)
            if batch is None or batch["attempt"] != attempt:
                continue
            for line in batch["lines"]:
                for out in emit(order.push(attempt, line)):
                    yield out
                if budget < 0:
                    return
    for out in emit(order.flush()):
        yield out


def log_entry(job_id: str, step_id: int, step_name: str | None) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "container_id": f"{job_id}-{step_id}",
        "step": step_id,
        "step_name": step_name or "",
        "logs": [],
    }


def wire_line(line: LogLine) -> dict[str, Any]:
    return {
        "timestamp": line.get("at"),
        "message": line["message"],
        "output_stream": line.get("stream", "stdout"),
        "seq": line["seq"],
    }


async def job_logs(
    conn: Messaging, record: JobRecord, *, max_bytes: int, step: int | None = None
) -> list[dict[str, Any]]:
    """``GET /jobs/{id}/logs``: one entry per step in step order with the lines of the record's attempt."""
    job_id = record["id"]
    entries = {s["id"]: log_entry(job_id, s["id"], s.get("name")) for s in record["steps"] if step in (None, s["id"])}
    lines = iter_lines(conn, job_id, attempt=record["attempt"], max_bytes=max_bytes, step=step)
    async with contextlib.aclosing(lines):
        async for line in lines:
            step_id = line.get("step_id")
            if not isinstance(step_id, int):
                continue
            if step_id not in entries:
                entries[step_id] = log_entry(job_id, step_id, "hades" if step_id == 0 else None)
            entries[step_id]["logs"].append(wire_line(line))
    return [entries[key] for key in sorted(entries)]


@dataclass(frozen=True)
class LiveLine:
    attempt: int
    line: LogLine
    notice: bool = False
    """Hades' word on the stream itself (``replays``): sent without an event id, so it never stands for a line
    a reader resumes after; its ``seq`` is that of the line before it, for clients that derive an id from it."""

    @property
    def event_id(self) -> str | None:
        return None if self.notice else f"{self.attempt}.{self.line['seq']}"


@dataclass(frozen=True)
class LiveStatus:
    event: events.StatusEvent


@dataclass(frozen=True)
class LiveEnd:
    status: str
    reason: str | None


LiveItem = LiveLine | LiveStatus | LiveEnd


@dataclass
class _StatusFilter:
    """Status events newer than the last one shown (per job and per step); nothing after a terminal one."""

    job_key: tuple[int, int] | None = None
    step_keys: dict[int, tuple[int, int]] = field(default_factory=dict)
    terminal: events.JobEvent | None = None

    def admit(self, event: events.StatusEvent) -> bool:
        key = (event["attempt"], event["seq"])
        if event["kind"] == "job":
            if self.terminal is not None or (self.job_key is not None and key <= self.job_key):
                return False
            self.job_key = key
            if JobStatus(event["status"]).terminal:
                self.terminal = event
            return True
        last = self.step_keys.get(event["step_id"])
        if last is not None and key <= last:
            return False
        self.step_keys[event["step_id"]] = key
        return True


async def follow(
    conn: Messaging,
    job_id: str,
    *,
    after: tuple[int, int] | None = None,
    known_end: LiveEnd | None = None,
    feeds: livefeed.LiveFeeds | None = None,
) -> AsyncGenerator[LiveItem, None]:
    """Every line and status change from the start (or after line ``after``), then live ones, then the end.

    ``known_end`` is the job's end when its record already shows it, for a job whose terminal event has left the
    stream. With ``after``, status events before that line are not repeated. A later attempt's repeat of lines
    already shown is left out (``replays``), so the stream shows what the stored log shows; lines before
    ``after`` are read (not sent) to know what the reader was shown. New events come through the job's feed in
    ``feeds`` (one per job and process, ``livefeed``), or through a feed of this follower's own.
    """
    replays = Replays()

    def live(attempt: int, line: LogLine) -> list[LiveLine]:
        sent = replays.admit(attempt, line)
        if after is not None and (attempt, line["seq"]) <= after:
            return []  # the reader had it before it reconnected
        return [LiveLine(attempt, out, notice=out is not line) for out in sent]

    async with contextlib.AsyncExitStack() as stack:
        if feeds is None:
            feeds = livefeed.LiveFeeds(conn)
            stack.push_async_callback(feeds.close)
        source = await stack.enter_async_context(feeds.join(job_id))
        order = LineOrder()  # from the first line, not ``after``: the replays must see what the reader was shown
        passed_resume_point = after is None
        statuses = _StatusFilter()
        cursor = 1
        gap: tuple[tuple[int, int], float] | None = None  # (attempt, first missing seq), when it was first seen
        while True:
            messages = source.messages(cursor)
            async with contextlib.aclosing(messages):
                async for message in messages:
                    cursor = message.seq + 1
                    if message.subject.startswith(subjects.LOGS_SUBJECT_PREFIX + "."):
                        batch = _decode_batch(message)
                        if batch is None:
                            continue
                        for line in batch["lines"]:
                            if after is not None and (batch["attempt"], line["seq"]) >= after:
                                passed_resume_point = True
                            for attempt, ready in order.push(batch["attempt"], line):
                                for item in live(attempt, ready):
                                    yield item
                    elif message.subject.startswith(subjects.STATUS_SUBJECT_PREFIX + "."):
                        event = _decode_status(message)
                        if event is not None and statuses.admit(event) and passed_resume_point:
                            yield LiveStatus(event)
            if statuses.terminal is not None or known_end is not None:
                for attempt, ready in order.flush():
                    for item in live(attempt, ready):
                        yield item
                if statuses.terminal is not None:
                    yield LiveEnd(statuses.terminal["status"], statuses.terminal.get("reason"))
                else:
                    assert known_end is not None
                    yield known_end
                return
            if not order.holding:
                gap = None
                await source.wait(None)  # the feed polls for lost wake-ups: no timer per follower
                continue
            # Held lines go out once the gap has stood GAP_WAIT_S, however often wake-ups come meanwhile (a job
            # printing every 0.2 s would otherwise reset the wait forever). A gap is known by where it starts.
            if gap is None or gap[0] != (order.attempt, order.next_seq):
                gap = ((order.attempt, order.next_seq), time.monotonic())
            left = gap[1] + GAP_WAIT_S - time.monotonic()
            if left <= 0 or not await source.wait(left):
                gap = None
                for attempt, ready in order.flush():
                    for item in live(attempt, ready):
                        yield item


def _decode_status(message: StoredMessage) -> events.StatusEvent | None:
    try:
        return events.decode_status(message.data)
    except (events.EventError, ValueError) as exc:
        log.warning("skipping a malformed status event (stream seq %d): %s", message.seq, exc)
        return None
