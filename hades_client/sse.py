"""Live logs over Server-Sent Events: decoding the stream, and resuming it without a lost or repeated event.

``Decoder`` turns text lines into raw events (the WHATWG rules that matter here: ``event``, ``data`` over several
lines, ``id``, ``retry``, comments). ``Resume`` remembers what was already delivered, so a reconnect with
``Last-Event-ID`` shows neither a line nor a status twice, whatever the server replays. The connection loops live
in the clients (sync and async); this module does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hades_client.errors import UnexpectedAnswer, truncate
from hades_client.models import EndEvent, JobStatus, LineEvent, StatusEvent, StreamEvent

LAST_EVENT_ID = "Last-Event-ID"


@dataclass(frozen=True)
class RawEvent:
    event: str
    data: str
    id: str | None


class Decoder:
    """Feed it lines (without their line ending); it hands back an event at each blank line.

    ``retry_ms`` is the reconnection delay the server asked for, if it did (it holds from when it is sent).
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> RawEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive ping
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> RawEvent | None:
        event = RawEvent(self._event or "message", "\n".join(self._data), self._id)
        had_data = bool(self._data)
        self._event, self._data, self._id = "", [], None
        return event if had_data else None


def parse_event(raw: RawEvent) -> StreamEvent | None:
    """The typed event, or None for a kind this client does not know (a newer server's)."""
    try:
        return _parse(raw)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"a {raw.event!r} event this client cannot read ({exc}): {truncate(raw.data, 200)!r}"
        raise UnexpectedAnswer(detail) from exc


def _parse(raw: RawEvent) -> StreamEvent | None:
    data: dict[str, Any] = json.loads(raw.data)
    if raw.event == "message":
        attempt, seq = _event_id(raw.id) if raw.id else (int(data.get("attempt", 0)), int(data.get("seq", 0)))
        step = data.get("step")
        return LineEvent(
            id=raw.id or f"{attempt}.{seq}",
            attempt=attempt,
            seq=seq,
            step=step if isinstance(step, int) else None,
            message=str(data.get("message", "")),
            output_stream=str(data.get("output_stream", "stdout")),
            timestamp=data.get("timestamp"),
            notice=raw.id is None and data.get("output_stream") == "system",
        )
    if raw.event == "status":
        step_id = data.get("step_id")
        exit_code = data.get("exit_code")
        return StatusEvent(
            kind=str(data.get("kind", "job")),
            status=str(data["status"]),
            attempt=int(data.get("attempt", 0)),
            seq=int(data.get("seq", 0)),
            step_id=step_id if isinstance(step_id, int) else None,
            step_name=data.get("step_name"),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            reason=data.get("reason"),
            raw=data,
        )
    if raw.event == "end":
        return EndEvent(status=JobStatus(data["status"]), reason=data.get("reason"))
    return None


def _event_id(text: str) -> tuple[int, int]:
    attempt, _, seq = text.partition(".")
    return int(attempt), int(seq)


@dataclass
class Resume:
    """What one follow has delivered so far, across reconnects."""

    last_event_id: str | None = None
    ended: EndEvent | None = None
    _last_line: tuple[int, int] | None = None
    _statuses: set[tuple[str, int | None, int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.last_event_id:
            self._last_line = _event_id(self.last_event_id)

    def headers(self) -> dict[str, str]:
        return {LAST_EVENT_ID: self.last_event_id} if self.last_event_id else {}

    def admit(self, event: StreamEvent) -> bool:
        """True when ``event`` is new; remembers it."""
        if isinstance(event, LineEvent):
            if event.notice:
                return True  # no id: not a place to resume after
            key = (event.attempt, event.seq)
            if self._last_line is not None and key <= self._last_line:
                return False
            self._last_line = key
            self.last_event_id = event.id
            return True
        if isinstance(event, StatusEvent):
            if event.key in self._statuses:
                return False
            self._statuses.add(event.key)
            return True
        self.ended = event
        return True
