"""Job records: the latest state of one job, folded from its status and log events. Pure: no I/O.

A record (``JobRecord``) is a JSON object kept per job by the log collector (``recordstore`` stores it,
``collector`` feeds it). Events may arrive twice, late or out of order, and several collectors may apply them, so
every change is idempotent and monotonic:

- an event is ordered by ``(attempt, seq)``; the job status only moves to a newer key, and a terminal status is
  final (nothing after it changes the job status);
- a later attempt supersedes an earlier, non-terminal one: its steps start again from ``pending``;
- a step's status never goes backwards (``pending`` < ``running`` < a result; a result is final for its attempt);
- log batches only bump counters (lines, bytes, last seq) of the record's attempt; the lines themselves stay in
  ``HADES_EVENTS``. Line seqs already counted are remembered as a few ``[first, last]`` ranges, so a repeated
  batch counts once.

Keys starting with ``_`` are this bookkeeping; ``public`` drops them. Every ``apply_*`` returns a new record, or
None when the event changed nothing (a duplicate, or older than what the record shows).
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args

import orjson

from functions.logs import recordshape
from runtime.events import JobEvent, LogBatch, StatusEvent, StepEvent
from runtime.jobs import JobStatus, StepStatus

CallbackState = Literal["pending", "sending", "done"]
"""pending → sending (claimed by one collector) → done."""
CallbackOutcome = Literal["delivered", "failed", "refused"]


class CallbackRecord(TypedDict):
    """The result callback to the job's callback URL: its state and the last attempt's outcome."""

    url: str
    state: CallbackState
    outcome: CallbackOutcome | None  # once done
    attempts: int
    last_status: int | None
    last_error: str | None
    claimed_by: str | None  # the collector replica sending it
    claimed_at: str | None


class StepRecord(TypedDict):
    id: int
    name: str | None
    image: str | None
    status: str  # a StepStatus value
    exit_code: int | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    reason: str | None


class PublicRecord(TypedDict):
    """A job record as clients see it (``public``), declared for mypy: its shape is ``schemas/record.schema.json``
    (``recordshape``), and tests/test_records_shape.py holds these TypedDicts to it.

    ``NotRequired``: ``origin`` comes with the job's summary (on its queued and running events), so a record first
    folded from a step event or a log batch lacks it until then; the others are missing from records stored
    before they existed (read them with ``get``).
    """

    id: str
    name: str | None
    status: str  # a JobStatus value
    reason: str | None
    priority: int | None
    lane: str | None
    submitted_at: str | None
    started_at: str | None
    finished_at: str | None
    queue_wait_s: float | None
    timeout_seconds: int | None
    origin: NotRequired[str | None]  # the route that took the job: jobs | build
    tenant: NotRequired[str | None]  # who the job is charged to (runtime.tenants)
    attempt: int
    steps: list[StepRecord]
    log_lines: int
    log_bytes: int
    log_truncated: bool
    log_lost_lines: NotRequired[int]  # lines of the current attempt dispatch could not store (NATS away too long)
    log_incomplete: NotRequired[bool]  # some of the current attempt's lines are missing: log_lost_lines > 0
    last_log_seq: int
    callback: CallbackRecord | None
    trace_id: NotRequired[str | None]
    redrive_of: NotRequired[str | None]  # the dead job this one re-submits (POST /dead-letters/{id}/redrive)
    redriven_as: NotRequired[str | None]  # the job that re-submits this dead one
    results: NotRequired[dict[str, Any] | None]  # results: test summary, failed cases, kept files (terminal)
    updated_at: str | None


class JobRecord(PublicRecord):
    """A job record as stored: the public fields and the ordering bookkeeping (``_`` keys)."""

    _job_key: list[int] | None  # [attempt, seq] of the job event the status came from
    _step_keys: dict[str, list[int]]  # step id -> [attempt, seq] of its last applied event
    _log_attempt: int  # the attempt the log counters count
    _log_ranges: list[list[int]]  # [[first, last], ...] line seqs already counted, sorted
    _stream_seq: int | None  # the job message's sequence in HADES_JOBS (for its place in the lane)


MAX_SEQ_RANGES = 64
"""Seen log-line ranges kept per record; past it the closest ranges merge (a repeat may then be missed)."""

_StepField = Literal["exit_code", "started_at", "finished_at", "duration_s", "reason"]
_STEP_FIELDS: tuple[_StepField, ...] = get_args(_StepField)
_StepTime = Literal["started_at", "finished_at"]
_STEP_TIMES: tuple[_StepTime, ...] = get_args(_StepTime)
_StepLabel = Literal["name", "image"]
_STEP_LABELS: tuple[_StepLabel, ...] = get_args(_StepLabel)
_LinkField = Literal["redrive_of", "redriven_as"]
_LINK_FIELDS: tuple[_LinkField, ...] = get_args(_LinkField)
_SummaryField = Literal["name", "priority", "lane", "submitted_at", "timeout_seconds", "origin", "tenant"]
_SUMMARY_FIELDS: tuple[_SummaryField, ...] = get_args(_SummaryField)


def new_record(job_id: str) -> JobRecord:
    """A record before any event: queued, every other public field at its zero (``recordshape.zeros``)."""
    record = recordshape.zeros()
    record.update(id=job_id, status=str(JobStatus.QUEUED))
    bookkeeping: dict[str, Any] = {
        "_job_key": None,
        "_step_keys": {},
        "_log_attempt": 0,
        "_log_ranges": [],
        "_stream_seq": None,
    }
    return cast(JobRecord, record | bookkeeping)


def public(record: JobRecord) -> PublicRecord:
    """The record as clients see it, without the ordering bookkeeping: the fields every record has, then those it
    has when known, each in the schema's order (``recordshape``)."""
    stored = cast(Mapping[str, Any], record)
    served = {name: stored[name] for name in recordshape.IN_EVERY_RECORD}
    served.update((name, stored[name]) for name in recordshape.WHEN_KNOWN if name in stored)
    return cast(PublicRecord, served)


def is_terminal(record: JobRecord) -> bool:
    return JobStatus(record["status"]).terminal


def legacy_status(record: JobRecord) -> str:
    return JobStatus(record["status"]).legacy


def callback_url(record: JobRecord) -> str | None:
    callback = record.get("callback")
    return callback.get("url") if callback else None


def statuses_named(name: str) -> set[JobStatus]:
    """Our status names, or the original Hades' (``Failed`` is failed or timed_out, ``Stopped`` cancelled)."""
    if name in {status.value for status in JobStatus}:
        return {JobStatus(name)}
    return {status for status in JobStatus if status.legacy.lower() == name.lower()}


def _copied(record: JobRecord) -> JobRecord:
    """A deep copy: through orjson (a tenth of ``copy.deepcopy``'s time for a record, the collector's hot spot)."""
    try:
        return cast(JobRecord, orjson.loads(orjson.dumps(record)))
    except TypeError:  # not plain JSON after all (an integer beyond 64 bits)
        return copy.deepcopy(record)


def _newer(key: list[int], than: list[int] | None) -> bool:
    return than is None or tuple(key) > tuple(than)


def _step_rank(status: str) -> int:
    step_status = StepStatus(status)
    if step_status.terminal:
        return 2
    return 1 if step_status is StepStatus.RUNNING else 0


def _blank_step(step_id: int, name: str | None = None, image: str | None = None) -> StepRecord:
    step = recordshape.zeros("StepRecord")
    step.update(id=step_id, name=name, image=image, status=str(StepStatus.PENDING))
    return cast(StepRecord, step)


def _step(record: JobRecord, step_id: int) -> StepRecord:
    for step in record["steps"]:
        if step["id"] == step_id:
            return step
    step = _blank_step(step_id)
    record["steps"].append(step)
    record["steps"].sort(key=lambda s: s["id"])
    return step


def _merge_summary(record: JobRecord, event: JobEvent) -> bool:
    """Fill in what the job event tells about the job itself; never overwrites what is known."""
    changed = False
    summary = event.get("job")
    if isinstance(summary, dict):
        for name in _SUMMARY_FIELDS:
            if record.get(name) is None and summary.get(name) is not None:
                record[name] = summary[name]
                changed = True
        for item in summary.get("steps") or []:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                continue
            step = _step(record, item["id"])
            for label in _STEP_LABELS:
                if step[label] is None and item.get(label) is not None:
                    step[label] = item[label]
                    changed = True
        url = summary.get("callback_url") or summary.get("status_callback_url")
        if url and record.get("callback") is None:
            record["callback"] = new_callback(str(url))
            changed = True
    trace_id = event.get("trace_id")
    if record.get("trace_id") is None and isinstance(trace_id, str):
        record["trace_id"] = trace_id
        changed = True
    for link_field in _LINK_FIELDS:  # a redrive's links, on the new job's queued event and the old job's last event
        link = dict(event).get(link_field)
        if record.get(link_field) is None and isinstance(link, str):
            record[link_field] = link
            changed = True
    stream_seq = event.get("stream_seq")
    if record.get("_stream_seq") is None and isinstance(stream_seq, int):
        record["_stream_seq"] = stream_seq
        changed = True
    return changed


def new_callback(url: str) -> CallbackRecord:
    callback = recordshape.zeros("Callback")
    callback.update(url=url, state="pending")
    return cast(CallbackRecord, callback)


def _start_attempt(record: JobRecord, attempt: int) -> None:
    """A newer attempt runs the job again: its steps start from scratch and its log counters from zero."""
    record["attempt"] = attempt
    record["steps"] = [_blank_step(s["id"], s["name"], s["image"]) for s in record["steps"]]
    record["_step_keys"] = {}
    record["started_at"] = record["finished_at"] = None
    if record["_log_attempt"] < attempt:
        _reset_log_counters(record, attempt)


def _reset_log_counters(record: JobRecord, attempt: int) -> None:
    record["log_lines"] = record["log_bytes"] = record["last_log_seq"] = 0
    record["log_truncated"] = False
    record["_log_attempt"], record["_log_ranges"] = attempt, []
    record["log_lost_lines"], record["log_incomplete"] = 0, False


def apply_status(record: JobRecord | None, event: StatusEvent, *, now: str) -> JobRecord | None:
    """Apply one status event; None when it changes nothing."""
    result = _copied(record) if record is not None else new_record(event["job_id"])
    changed = record is None
    if event["kind"] == "job":
        changed = _merge_summary(result, event) or changed
        changed = _apply_job(result, event) or changed
    else:
        changed = _apply_step(result, event) or changed
    if not changed:
        return None
    result["updated_at"] = now
    return result


def _fill_times(step: StepRecord, event: StepEvent) -> bool:
    """Fill in the step times still unknown from a late event; never overwrites."""
    changed = False
    for name in _STEP_TIMES:
        value = event.get(name)
        if value is not None and step[name] is None:
            step[name] = value
            changed = True
    return changed


def _apply_job(record: JobRecord, event: JobEvent) -> bool:
    key = [event["attempt"], event["seq"]]
    if event["attempt"] < record["attempt"]:
        return False  # an older attempt's late event; the newer attempt already showed through a step
    if not _newer(key, record["_job_key"]) or (record["_job_key"] is not None and is_terminal(record)):
        if event["attempt"] != record["attempt"] or event["status"] != JobStatus.RUNNING:
            return False
        # A late running event still tells when the job started (fills in, never overwrites).
        changed = False
        if record["started_at"] is None:
            record["started_at"] = _text(event, "started_at") or event["at"]
            changed = True
        queue_wait_s = event.get("queue_wait_s")
        if queue_wait_s is not None and record["queue_wait_s"] is None:
            record["queue_wait_s"] = queue_wait_s
            changed = True
        return changed
    if event["attempt"] > record["attempt"]:
        _start_attempt(record, event["attempt"])
    status = JobStatus(event["status"])
    record["_job_key"] = key
    record["status"] = str(status)
    record["reason"] = event.get("reason")
    if status is JobStatus.RUNNING:
        record["started_at"] = record["started_at"] or _text(event, "started_at") or event["at"]
        if event.get("queue_wait_s") is not None:
            record["queue_wait_s"] = event.get("queue_wait_s")
    elif status.terminal:
        record["finished_at"] = _text(event, "finished_at") or event["at"]
        kept = dict(event).get("results")  # results: what the job kept, collected after its last step
        if isinstance(kept, dict):
            record["results"] = kept
    lost = event.get("log_lost_lines")
    if isinstance(lost, int) and lost > 0:
        record["log_lost_lines"], record["log_incomplete"] = lost, True
    if event.get("log_truncated") is True:  # dispatch's own cap cut the output (it may be below this function's)
        record["log_truncated"] = True
    return True


def _text(event: JobEvent, name: str) -> str | None:
    """A time a job event may carry beyond ``JobEvent`` (``started_at``, ``finished_at``), or None."""
    value = dict(event).get(name)
    return value if isinstance(value, str) else None


def _apply_step(record: JobRecord, event: StepEvent) -> bool:
    attempt = event["attempt"]
    if attempt < record["attempt"]:
        return False
    if attempt > record["attempt"]:
        if record["_job_key"] is not None and is_terminal(record):
            return False
        _start_attempt(record, attempt)  # its running event is late or lost: the step shows the job runs
        record["status"] = str(JobStatus.RUNNING)
    key = [attempt, event["seq"]]
    step = _step(record, event["step_id"])
    step_key = record["_step_keys"].get(str(step["id"]))
    if not _newer(key, step_key):
        return _fill_times(step, event)
    old_rank, new_rank = _step_rank(step["status"]), _step_rank(event["status"])
    if new_rank < old_rank or (old_rank == 2 and step_key is not None):
        # Never backwards, and a step's result is final for its attempt; a late event still fills in its times.
        return _fill_times(step, event)
    record["_step_keys"][str(step["id"])] = key
    step["status"] = event["status"]
    step["name"] = event.get("step_name") or step["name"]
    for name in _STEP_FIELDS:
        if name in event:
            step[name] = event[name]
    return True


def apply_logs(record: JobRecord | None, batch: LogBatch, *, max_bytes: int, now: str) -> JobRecord | None:
    """Count a batch's new lines against the record's attempt; None when it changes nothing."""
    result = _copied(record) if record is not None else new_record(batch["job_id"])
    attempt = batch["attempt"]
    if record is not None and attempt < max(record["attempt"], record["_log_attempt"]):
        return None  # an older attempt's lines: kept in the stream, not counted
    changed = record is None
    if attempt > result["_log_attempt"]:
        _reset_log_counters(result, attempt)
        changed = True
    ranges: list[list[int]] = result["_log_ranges"]
    for line in batch["lines"]:
        seq = line["seq"]
        if _seen(ranges, seq):
            continue
        _add(ranges, seq)
        changed = True
        result["last_log_seq"] = max(result["last_log_seq"], seq)
        if result["log_truncated"]:
            continue
        size = len(str(line.get("message", "")).encode()) + 1
        if result["log_bytes"] + size > max_bytes:
            result["log_truncated"] = True
            continue
        result["log_lines"] += 1
        result["log_bytes"] += size
    if not changed:
        return None
    result["updated_at"] = now
    return result


def _seen(ranges: list[list[int]], seq: int) -> bool:
    index = bisect.bisect_right(ranges, seq, key=lambda r: r[0]) - 1
    return index >= 0 and ranges[index][0] <= seq <= ranges[index][1]


def _add(ranges: list[list[int]], seq: int) -> None:
    index = bisect.bisect_right(ranges, seq, key=lambda r: r[0])
    joins_left = index > 0 and ranges[index - 1][1] == seq - 1
    joins_right = index < len(ranges) and ranges[index][0] == seq + 1
    if joins_left and joins_right:
        ranges[index - 1][1] = ranges[index][1]
        del ranges[index]
    elif joins_left:
        ranges[index - 1][1] = seq
    elif joins_right:
        ranges[index][0] = seq
    else:
        ranges.insert(index, [seq, seq])
    if len(ranges) > MAX_SEQ_RANGES:
        gaps = [ranges[i + 1][0] - ranges[i][1] for i in range(len(ranges) - 1)]
        closest = gaps.index(min(gaps))
        ranges[closest][1] = ranges[closest + 1][1]
        del ranges[closest + 1]
