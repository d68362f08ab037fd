"""Job records: the latest state of one job, folded from its status and log events. Pure: no I/O.

A record is a JSON object kept per job by the log collector (``recordstore`` stores it, ``collector``
feeds it). Events may arrive twice, late or out of order, and several collectors may apply them, so every change
is idempotent and monotonic:

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
from typing import Any

from runtime.events import LogBatch, StatusEvent
from runtime.jobs import JobStatus, StepStatus

Record = dict[str, Any]
"""A job record as stored (JSON-ready)."""

MAX_SEQ_RANGES = 64
"""Seen log-line ranges kept per record; past it the closest ranges merge (a repeat may then be missed)."""

_STEP_FIELDS = ("exit_code", "started_at", "finished_at", "duration_s", "reason")
_LINK_FIELDS = ("redrive_of", "redriven_as")
_SUMMARY_FIELDS = ("name", "priority", "lane", "submitted_at", "timeout_seconds", "origin")


def new_record(job_id: str) -> Record:
    return {
        "id": job_id,
        "name": None,
        "status": str(JobStatus.QUEUED),
        "reason": None,
        "priority": None,
        "lane": None,
        "submitted_at": None,
        "started_at": None,
        "finished_at": None,
        "queue_wait_s": None,
        "timeout_seconds": None,
        "attempt": 0,
        "steps": [],
        "log_lines": 0,
        "log_bytes": 0,
        "log_truncated": False,
        "log_lost_lines": 0,  # lines of the current attempt dispatch could not store (NATS away too long)
        "log_incomplete": False,  # some of the current attempt's lines are missing: log_lost_lines > 0
        "last_log_seq": 0,
        "callback": None,
        "trace_id": None,
        "redrive_of": None,  # the dead job this one re-submits (POST /dead-letters/{id}/redrive)
        "redriven_as": None,  # the job that re-submits this dead one
        "updated_at": None,
        "_job_key": None,  # [attempt, seq] of the job event the status came from
        "_step_keys": {},  # step id -> [attempt, seq] of its last applied event
        "_log_attempt": 0,  # the attempt the log counters count
        "_log_ranges": [],  # [[first, last], ...] line seqs already counted, sorted
        "_stream_seq": None,  # the job message's sequence in HADES_JOBS (for its place in the lane)
    }


def public(record: Record) -> dict[str, Any]:
    """The record as clients see it: without the ordering bookkeeping."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


def is_terminal(record: Record) -> bool:
    return JobStatus(record["status"]).terminal


def legacy_status(record: Record) -> str:
    return JobStatus(record["status"]).legacy


def callback_url(record: Record) -> str | None:
    callback = record.get("callback")
    return callback.get("url") if callback else None


def statuses_named(name: str) -> set[JobStatus]:
    """Our status names, or the original Hades' (``Failed`` is failed or timed_out, ``Stopped`` cancelled)."""
    if name in {status.value for status in JobStatus}:
        return {JobStatus(name)}
    return {status for status in JobStatus if status.legacy.lower() == name.lower()}


def _newer(key: list[int], than: list[int] | None) -> bool:
    return than is None or tuple(key) > tuple(than)


def _step_rank(status: str) -> int:
    step_status = StepStatus(status)
    if step_status.terminal:
        return 2
    return 1 if step_status is StepStatus.RUNNING else 0


def _blank_step(step_id: int, name: str | None = None, image: str | None = None) -> dict[str, Any]:
    return {
        "id": step_id,
        "name": name,
        "image": image,
        "status": str(StepStatus.PENDING),
        "exit_code": None,
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "reason": None,
    }


def _step(record: Record, step_id: int) -> dict[str, Any]:
    for step in record["steps"]:
        if step["id"] == step_id:
            return step  # type: ignore[no-any-return]
    step = _blank_step(step_id)
    record["steps"].append(step)
    record["steps"].sort(key=lambda s: s["id"])
    return step


def _merge_summary(record: Record, event: StatusEvent) -> bool:
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
            for name in ("name", "image"):
                if step[name] is None and item.get(name) is not None:
                    step[name] = item[name]
                    changed = True
        url = summary.get("callback_url") or summary.get("status_callback_url")
        if url and record.get("callback") is None:
            record["callback"] = new_callback(str(url))
            changed = True
    trace_id = event.get("trace_id")
    if record.get("trace_id") is None and isinstance(trace_id, str):
        record["trace_id"] = trace_id
        changed = True
    for name in _LINK_FIELDS:  # a redrive's links, on the new job's queued event and the old job's last event
        link = dict(event).get(name)
        if record.get(name) is None and isinstance(link, str):
            record[name] = link
            changed = True
    stream_seq = event.get("stream_seq")
    if record.get("_stream_seq") is None and isinstance(stream_seq, int):
        record["_stream_seq"] = stream_seq
        changed = True
    return changed


def new_callback(url: str) -> dict[str, Any]:
    return {
        "url": url,
        "state": "pending",  # pending → sending (claimed by one collector) → done
        "outcome": None,  # delivered | failed | refused, once done
        "attempts": 0,
        "last_status": None,
        "last_error": None,
        "claimed_by": None,
        "claimed_at": None,
    }


def _start_attempt(record: Record, attempt: int) -> None:
    """A newer attempt runs the job again: its steps start from scratch and its log counters from zero."""
    record["attempt"] = attempt
    record["steps"] = [_blank_step(s["id"], s["name"], s["image"]) for s in record["steps"]]
    record["_step_keys"] = {}
    record["started_at"] = record["finished_at"] = None
    if record["_log_attempt"] < attempt:
        _reset_log_counters(record, attempt)


def _reset_log_counters(record: Record, attempt: int) -> None:
    record.update(log_lines=0, log_bytes=0, log_truncated=False, last_log_seq=0, _log_attempt=attempt, _log_ranges=[])
    record.update(log_lost_lines=0, log_incomplete=False)


def apply_status(record: Record | None, event: StatusEvent, *, now: str) -> Record | None:
    """Apply one status event; None when it changes nothing."""
    result = copy.deepcopy(record) if record is not None else new_record(event["job_id"])
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


def _fill(target: dict[str, Any], values: dict[str, Any]) -> bool:
    """Fill in what is still unknown (a late event's times); never overwrites."""
    changed = False
    for name, value in values.items():
        if value is not None and target.get(name) is None:
            target[name] = value
            changed = True
    return changed


def _apply_job(record: Record, event: StatusEvent) -> bool:
    key = [event["attempt"], event["seq"]]
    if event["attempt"] < record["attempt"]:
        return False  # an older attempt's late event; the newer attempt already showed through a step
    if not _newer(key, record["_job_key"]) or (record["_job_key"] is not None and is_terminal(record)):
        if event["attempt"] != record["attempt"] or event["status"] != JobStatus.RUNNING:
            return False
        # A late running event still tells when the job started.
        started = event.get("started_at") or event["at"]
        return _fill(record, {"started_at": started, "queue_wait_s": event.get("queue_wait_s")})
    if event["attempt"] > record["attempt"]:
        _start_attempt(record, event["attempt"])
    status = JobStatus(event["status"])
    record["_job_key"] = key
    record["status"] = str(status)
    record["reason"] = event.get("reason")
    if status is JobStatus.RUNNING:
        record["started_at"] = record["started_at"] or event.get("started_at") or event["at"]
        if event.get("queue_wait_s") is not None:
            record["queue_wait_s"] = event.get("queue_wait_s")
    elif status.terminal:
        record["finished_at"] = event.get("finished_at") or event["at"]
    lost = event.get("log_lost_lines")
    if isinstance(lost, int) and lost > 0:
        record.update(log_lost_lines=lost, log_incomplete=True)
    return True


def _apply_step(record: Record, event: StatusEvent) -> bool:
    if event["kind"] != "step":
        return False
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
        return _fill(step, {name: event.get(name) for name in ("started_at", "finished_at")})
    old_rank, new_rank = _step_rank(step["status"]), _step_rank(event["status"])
    if new_rank < old_rank or (old_rank == 2 and step_key is not None):
        # Never backwards, and a step's result is final for its attempt; a late event still fills in its times.
        return _fill(step, {name: event.get(name) for name in ("started_at", "finished_at")})
    record["_step_keys"][str(step["id"])] = key
    step["status"] = event["status"]
    step["name"] = event.get("step_name") or step["name"]
    for name in _STEP_FIELDS:
        if name in event:
            step[name] = event[name]  # type: ignore[literal-required]
    return True


def apply_logs(record: Record | None, batch: LogBatch, *, max_bytes: int, now: str) -> Record | None:
    """Count a batch's new lines against the record's attempt; None when it changes nothing."""
    result = copy.deepcopy(record) if record is not None else new_record(batch["job_id"])
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
