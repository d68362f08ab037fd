"""Status and log events: their wire shapes, encoding and ordering.

Every event carries the job id, the attempt (the JetStream delivery count of the job message; 0 for what submit
publishes) and a per-attempt sequence number, so a consumer can drop duplicates and put events back in order:
``(attempt, seq)`` only grows. Status events go to ``hades.status.<job_id>``; log lines travel in small batches
on ``hades.logs.<job_id>``, each line numbered by its own per-attempt ``seq``.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import orjson

from runtime.jobs import JobStatus, StepStatus, utc_now

LogStream = Literal["stdout", "stderr", "system"]


class JobEvent(TypedDict):
    kind: Literal["job"]
    job_id: str
    attempt: int
    seq: int
    at: str
    status: str  # a JobStatus value
    reason: NotRequired[str]
    job: NotRequired[dict[str, Any]]  # Job.summary(), on queued and running
    trace_id: NotRequired[str]  # on queued: the job's OpenTelemetry trace id, when tracing is on
    stream_seq: NotRequired[int]  # on queued: the job message's sequence in HADES_JOBS (for its lane position)
    queue_wait_s: NotRequired[float]  # on running: submitted → dequeued
    dispatcher: NotRequired[str]  # on running: which process took it
    dispatcher_host: NotRequired[str]  # on running: that process's host name and pid, so that a dispatcher
    dispatcher_pid: NotRequired[int]  # restarted on the same host can tell it is gone
    log_lost_lines: NotRequired[int]  # on the terminal one, when > 0: log lines of this attempt never stored
    results: NotRequired[dict[str, Any]]  # on the terminal one of a job that asked for artifacts or reports
    log_truncated: NotRequired[bool]  # on the terminal one, when true: dispatch's log cap cut this attempt's output


class StepEvent(TypedDict):
    kind: Literal["step"]
    job_id: str
    attempt: int
    seq: int
    at: str
    step_id: int
    step_name: str
    status: str  # a StepStatus value
    exit_code: NotRequired[int | None]
    started_at: NotRequired[str]
    finished_at: NotRequired[str]
    duration_s: NotRequired[float]
    reason: NotRequired[str]


StatusEvent = JobEvent | StepEvent


class LogLine(TypedDict):
    seq: int  # 1, 2, 3 … per attempt, one per line across all steps: readers rely on there being no gaps
    step_id: int
    stream: str  # a LogStream value
    at: str
    message: str


class LogBatch(TypedDict):
    job_id: str
    attempt: int
    lines: list[LogLine]


class EventError(ValueError):
    """A message on an event subject is not an event (malformed or foreign); it is dropped with a warning."""


class Sequence:
    """The per-attempt counter one dispatcher keeps for one job's status events."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


def job_event(
    job_id: str, *, attempt: int, seq: int, status: JobStatus, reason: str | None = None, **extra: Any
) -> JobEvent:
    event: JobEvent = {
        "kind": "job",
        "job_id": job_id,
        "attempt": attempt,
        "seq": seq,
        "at": utc_now(),
        "status": str(status),
    }
    if reason:
        event["reason"] = reason
    event.update(extra)  # type: ignore[typeddict-item]
    return event


def step_event(
    job_id: str, *, attempt: int, seq: int, step_id: int, step_name: str, status: StepStatus, **extra: Any
) -> StepEvent:
    event: StepEvent = {
        "kind": "step",
        "job_id": job_id,
        "attempt": attempt,
        "seq": seq,
        "at": utc_now(),
        "step_id": step_id,
        "step_name": step_name,
        "status": str(status),
    }
    event.update(extra)  # type: ignore[typeddict-item]
    return event


def is_terminal(event: StatusEvent) -> bool:
    """True for a job event whose status ends the job (a step event never does)."""
    return event["kind"] == "job" and JobStatus(event["status"]).terminal


def status_msg_id(event: StatusEvent) -> str:
    """The de-duplication id: re-publishing the same event (a retry) stores it once."""
    return f"{event['job_id']}.{event['attempt']}.{event['seq']}"


def logs_msg_id(batch: LogBatch) -> str:
    return f"{batch['job_id']}.{batch['attempt']}.L{batch['lines'][0]['seq']}"


def decode_status(data: bytes) -> StatusEvent:
    event = _decode(data)
    kind = event.get("kind")
    required = ("job_id", "attempt", "seq", "status", "at")
    if kind not in ("job", "step") or any(key not in event for key in required):
        raise EventError(f"not a status event: {data[:200]!r}")
    if kind == "job":
        JobStatus(event["status"])
    else:
        StepStatus(event["status"])
        if "step_id" not in event:
            raise EventError("step event without step_id")
    return event  # type: ignore[return-value]


def decode_logs(data: bytes) -> LogBatch:
    batch = _decode(data)
    if not isinstance(batch.get("lines"), list) or "job_id" not in batch or "attempt" not in batch:
        raise EventError(f"not a log batch: {data[:200]!r}")
    return batch  # type: ignore[return-value]


def _decode(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        raise EventError(f"not JSON: {data[:200]!r}") from exc
    if not isinstance(value, dict):
        raise EventError(f"not a JSON object: {data[:200]!r}")
    return value
