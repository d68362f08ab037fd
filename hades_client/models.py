"""Typed results: the JSON answers of submit and logs as frozen dataclasses (``raw`` keeps the whole answer).

Parsing is lenient about fields it does not know (a newer server may add some) and strict about the few it
needs (``id``, ``status``), so a changed answer fails loudly instead of turning into ``None`` later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"  # stored, waiting for a dispatcher
    RUNNING = "running"  # its steps are running
    SUCCEEDED = "succeeded"  # every step exited 0 (or failed with continue_on_error)
    FAILED = "failed"  # a step failed, or infrastructure trouble (see reason)
    TIMED_OUT = "timed_out"  # timeout_seconds ran out
    CANCELLED = "cancelled"  # someone cancelled it

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class StepStatus(StrEnum):
    PENDING = "pending"  # not started yet
    RUNNING = "running"  # its container runs
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero, was killed, or could not start
    SKIPPED = "skipped"  # never ran

    @property
    def terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _required(data: dict[str, Any], name: str) -> Any:
    if not isinstance(data, dict) or name not in data:
        raise ValueError(f"the answer has no {name!r}: {str(data)[:200]}")
    return data[name]


@dataclass(frozen=True)
class Submitted:
    """``POST /jobs``'s answer: the job is stored."""

    id: str
    status: JobStatus
    lane: str | None
    priority: int | None
    submitted_at: str | None
    links: dict[str, str]
    replayed: bool
    """True when this was a retry of an earlier submit with the same Idempotency-Key."""
    raw: dict[str, Any] = field(repr=False, compare=False)
    tenant: str | None = None
    """Who the job is charged to (None from a server without tenants)."""

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool = False) -> Submitted:
        return cls(
            id=str(_required(data, "id")),
            status=JobStatus(data.get("status", "queued")),
            lane=_optional_str(data.get("lane")),
            priority=_optional_int(data.get("priority")),
            submitted_at=_optional_str(data.get("submitted_at")),
            links={str(k): str(v) for k, v in (data.get("links") or {}).items()},
            replayed=replayed,
            raw=data,
            tenant=_optional_str(data.get("tenant")),
        )


@dataclass(frozen=True)
class Step:
    id: int
    name: str | None
    image: str | None
    status: StepStatus
    exit_code: int | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    reason: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(
            id=int(_required(data, "id")),
            name=_optional_str(data.get("name")),
            image=_optional_str(data.get("image")),
            status=StepStatus(data.get("status", "pending")),
            exit_code=_optional_int(data.get("exit_code")),
            started_at=_optional_str(data.get("started_at")),
            finished_at=_optional_str(data.get("finished_at")),
            duration_s=_optional_float(data.get("duration_s")),
            reason=_optional_str(data.get("reason")),
        )


@dataclass(frozen=True)
class Job:
    """A job record (``GET /jobs/{id}``); ``queue_position`` only while it is queued and the server knows it.

    The log counters are of the current attempt: ``log_truncated`` when the job wrote past the server's cap,
    ``log_lost_lines`` lines dispatch could not store (NATS unreachable too long) and then ``log_incomplete``.
    A server that does not report them gives 0 and False.
    """

    id: str
    name: str | None
    status: JobStatus
    reason: str | None
    priority: int | None
    lane: str | None
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    queue_wait_s: float | None
    timeout_seconds: int | None
    attempt: int
    steps: tuple[Step, ...]
    log_lines: int
    queue_position: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    log_truncated: bool = False
    log_lost_lines: int = 0
    log_incomplete: bool = False
    results: dict[str, Any] | None = None
    """What the job kept (``artifacts`` and ``reports``): ``tests``, ``failed_tests``, ``artifacts`` … as served."""
    tenant: str | None = None
    """Who the job is charged to; None from a server without tenants (or before the job's summary is known)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        lost = max(_optional_int(data.get("log_lost_lines")) or 0, 0)
        return cls(
            id=str(_required(data, "id")),
            name=_optional_str(data.get("name")),
            status=JobStatus(_required(data, "status")),
            reason=_optional_str(data.get("reason")),
            priority=_optional_int(data.get("priority")),
            lane=_optional_str(data.get("lane")),
            submitted_at=_optional_str(data.get("submitted_at")),
            started_at=_optional_str(data.get("started_at")),
            finished_at=_optional_str(data.get("finished_at")),
            queue_wait_s=_optional_float(data.get("queue_wait_s")),
            timeout_seconds=_optional_int(data.get("timeout_seconds")),
            attempt=_optional_int(data.get("attempt")) or 0,
            steps=tuple(Step.from_json(s) for s in data.get("steps") or [] if isinstance(s, dict)),
            log_lines=_optional_int(data.get("log_lines")) or 0,
            queue_position=_optional_int(data.get("queue_position")),
            raw=data,
            log_truncated=data.get("log_truncated") is True,
            log_lost_lines=lost,
            log_incomplete=data.get("log_incomplete") is True or lost > 0,
            results=data["results"] if isinstance(data.get("results"), dict) else None,
            tenant=_optional_str(data.get("tenant")),
        )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /jobs``, newest first; ``next`` is the cursor of the following page (None: the last)."""

    jobs: tuple[Job, ...]
    next: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPage:
        jobs = _required(data, "jobs")
        return cls(jobs=tuple(Job.from_json(j) for j in jobs), next=_optional_str(data.get("next")))


@dataclass(frozen=True)
class LogLine:
    seq: int
    message: str
    output_stream: str
    timestamp: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogLine:
        return cls(
            seq=int(data.get("seq", 0)),
            message=str(_required(data, "message")),
            output_stream=str(data.get("output_stream", "stdout")),
            timestamp=_optional_str(data.get("timestamp")),
        )


@dataclass(frozen=True)
class StepLogs:
    """The lines of one step (``GET /jobs/{id}/logs``); step 0 holds Hades' own lines."""

    step: int
    container_id: str | None
    lines: tuple[LogLine, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepLogs:
        return cls(
            step=int(_required(data, "step")),
            container_id=_optional_str(data.get("container_id")),
            lines=tuple(LogLine.from_json(line) for line in data.get("logs") or []),
        )


@dataclass(frozen=True)
class Cancelling:
    """``DELETE /jobs/{id}``'s answer: the cancel is stored; the job ends ``cancelled`` unless it ended first."""

    id: str
    status: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cancelling:
        return cls(id=str(_required(data, "id")), status=str(data.get("status", "cancelling")))


# Live log stream events (GET /jobs/{id}/logs/stream).


@dataclass(frozen=True)
class LineEvent:
    """One log line; ``id`` is ``<attempt>.<seq>``, what ``Last-Event-ID`` resumes after."""

    id: str
    attempt: int
    seq: int
    step: int | None
    message: str
    output_stream: str
    timestamp: str | None
    notice: bool = False
    """Hades' word on the stream itself, sent without an event id (a later attempt replacing lines shown): it
    does not move the point a reconnect resumes after."""


@dataclass(frozen=True)
class StatusEvent:
    """A status change of the job (``step_id`` None) or of one step."""

    kind: str
    status: str
    attempt: int
    seq: int
    step_id: int | None
    step_name: str | None
    exit_code: int | None
    reason: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int | None, int, int]:
        """What makes a status event unique: a repeat after a reconnect has the same key."""
        return (self.kind, self.step_id, self.attempt, self.seq)


@dataclass(frozen=True)
class EndEvent:
    """The job's final status; the stream closes after it."""

    status: JobStatus
    reason: str | None


StreamEvent = LineEvent | StatusEvent | EndEvent
