"""The record reducer: repeats, late and out-of-order events and retried attempts never move a record backwards."""

from __future__ import annotations

import random
from typing import Any

from functions.logs import records
from functions.logs.records import JobRecord
from runtime import events
from runtime.events import LogBatch
from runtime.jobs import JobStatus, StepStatus

JOB_ID = "8d7f3a52-5f0e-4a57-9a43-0c1d5f7e2b11"
NOW = "2025-01-01T00:00:00.000Z"
SUMMARY = {
    "name": "Build",
    "priority": 2,
    "lane": "normal",
    "submitted_at": "2025-01-01T00:00:00.000Z",
    "timeout_seconds": 60,
    "callback_url": "https://lms.example/results",
    "steps": [{"id": 1, "name": "compile", "image": "alpine"}, {"id": 2, "name": "test", "image": "alpine"}],
}


def job(attempt: int, seq: int, status: JobStatus, **extra: Any) -> events.JobEvent:
    return events.job_event(JOB_ID, attempt=attempt, seq=seq, status=status, **extra)


def step(attempt: int, seq: int, step_id: int, status: StepStatus, **extra: Any) -> events.StepEvent:
    return events.step_event(
        JOB_ID, attempt=attempt, seq=seq, step_id=step_id, step_name=f"step-{step_id}", status=status, **extra
    )


def batch(attempt: int, first: int, count: int, *, step_id: int = 1, size: int = 5) -> LogBatch:
    lines: list[events.LogLine] = [
        {"seq": seq, "step_id": step_id, "stream": "stdout", "at": NOW, "message": "x" * (size - 1)}
        for seq in range(first, first + count)
    ]
    return {"job_id": JOB_ID, "attempt": attempt, "lines": lines}


def fold(items: list[Any], *, max_bytes: int = 10_000) -> JobRecord:
    record: JobRecord | None = None
    for item in items:
        if "lines" in item:
            record = records.apply_logs(record, item, max_bytes=max_bytes, now=NOW) or record
        else:
            record = records.apply_status(record, item, now=NOW) or record
    assert record is not None
    return record


def successful_run() -> list[Any]:
    return [
        job(0, 0, JobStatus.QUEUED, job=SUMMARY, stream_seq=7),
        job(1, 1, JobStatus.RUNNING, job=SUMMARY, queue_wait_s=1.5, started_at="2025-01-01T00:00:01.000Z"),
        step(1, 2, 1, StepStatus.RUNNING, started_at="2025-01-01T00:00:01.100Z"),
        batch(1, 1, 3),
        step(1, 3, 1, StepStatus.SUCCEEDED, exit_code=0, duration_s=0.5),
        step(1, 4, 2, StepStatus.RUNNING),
        batch(1, 4, 2, step_id=2),
        step(1, 5, 2, StepStatus.SUCCEEDED, exit_code=0),
        job(1, 6, JobStatus.SUCCEEDED, finished_at="2025-01-01T00:00:03.000Z"),
    ]


def test_a_run_in_order_builds_the_whole_record() -> None:
    record = fold(successful_run())
    public = records.public(record)
    assert public["status"] == "succeeded" and public["attempt"] == 1
    assert public["name"] == "Build" and public["lane"] == "normal" and public["priority"] == 2
    assert public["queue_wait_s"] == 1.5 and public["started_at"] == "2025-01-01T00:00:01.000Z"
    assert public["finished_at"] == "2025-01-01T00:00:03.000Z"
    assert [(s["id"], s["name"], s["status"], s["exit_code"]) for s in public["steps"]] == [
        (1, "step-1", "succeeded", 0),
        (2, "step-2", "succeeded", 0),
    ]
    assert public["steps"][0]["image"] == "alpine" and public["steps"][0]["duration_s"] == 0.5
    assert (public["log_lines"], public["log_bytes"], public["last_log_seq"]) == (5, 25, 5)
    assert public["callback"]["url"] == "https://lms.example/results" and public["callback"]["state"] == "pending"
    assert not any(key.startswith("_") for key in public)
    assert record["_stream_seq"] == 7
    assert records.legacy_status(record) == "Succeeded"


def test_every_event_applied_twice_changes_nothing_the_second_time() -> None:
    record: JobRecord | None = None
    for item in successful_run():
        if "lines" in item:
            record = records.apply_logs(record, item, max_bytes=10_000, now=NOW)
            assert record is not None
            assert records.apply_logs(record, item, max_bytes=10_000, now=NOW) is None
        else:
            record = records.apply_status(record, item, now=NOW)
            assert record is not None
            assert records.apply_status(record, item, now=NOW) is None
    assert record is not None and record["log_lines"] == 5


def test_any_order_of_the_same_events_gives_the_same_record() -> None:
    expected = fold(successful_run())
    rng = random.Random(7)
    for _ in range(50):
        shuffled = successful_run()
        rng.shuffle(shuffled)
        assert records.public(fold(shuffled)) == records.public(expected)


def test_a_terminal_status_is_final() -> None:
    record = fold([job(1, 1, JobStatus.RUNNING), job(1, 5, JobStatus.FAILED, reason="step 1 failed")])
    assert records.apply_status(record, job(1, 9, JobStatus.RUNNING), now=NOW) is None
    assert records.apply_status(record, job(1, 10, JobStatus.SUCCEEDED), now=NOW) is None
    assert records.apply_status(record, job(2, 1, JobStatus.RUNNING), now=NOW) is None
    assert records.apply_status(record, step(2, 2, 1, StepStatus.RUNNING), now=NOW) is None
    assert record["status"] == "failed" and record["reason"] == "step 1 failed"


def test_an_older_event_never_overwrites_a_newer_one() -> None:
    record = fold([job(1, 3, JobStatus.RUNNING, reason="retrying: engine down")])
    assert records.apply_status(record, job(1, 2, JobStatus.RUNNING), now=NOW) is None
    late_queued = records.apply_status(record, job(0, 0, JobStatus.QUEUED, job=SUMMARY, stream_seq=3), now=NOW)
    assert late_queued is not None  # it still tells what the job is ...
    assert late_queued["status"] == "running" and late_queued["name"] == "Build"  # ... but not its status
    assert late_queued["reason"] == "retrying: engine down"


def test_a_step_never_goes_backwards() -> None:
    record = fold([job(1, 1, JobStatus.RUNNING), step(1, 3, 1, StepStatus.FAILED, exit_code=2)])
    assert records.apply_status(record, step(1, 2, 1, StepStatus.RUNNING), now=NOW) is None
    assert records.apply_status(record, step(1, 4, 1, StepStatus.RUNNING), now=NOW) is None
    assert records.apply_status(record, step(1, 5, 1, StepStatus.SUCCEEDED, exit_code=0), now=NOW) is None
    assert record["steps"][0]["status"] == "failed" and record["steps"][0]["exit_code"] == 2


def test_a_later_attempt_supersedes_an_earlier_unfinished_one() -> None:
    first = [
        job(0, 0, JobStatus.QUEUED, job=SUMMARY),
        job(1, 1, JobStatus.RUNNING),
        step(1, 2, 1, StepStatus.RUNNING),
        batch(1, 1, 10),
        job(1, 3, JobStatus.RUNNING, reason="retrying: engine down"),
    ]
    record = fold(first)
    assert record["attempt"] == 1 and record["log_lines"] == 10
    record = fold([*first, job(2, 1, JobStatus.RUNNING), batch(2, 1, 2)])
    assert record["attempt"] == 2 and record["status"] == "running" and record["reason"] is None
    assert [s["status"] for s in record["steps"]] == ["pending", "pending"]  # the new attempt starts over
    assert record["log_lines"] == 2  # counters count the attempt that runs
    # the old attempt's late events change nothing
    assert records.apply_status(record, step(1, 4, 1, StepStatus.FAILED), now=NOW) is None
    assert records.apply_logs(record, batch(1, 11, 5), max_bytes=10_000, now=NOW) is None
    assert records.apply_status(record, job(1, 5, JobStatus.FAILED), now=NOW) is None


def test_a_step_of_a_new_attempt_shows_the_attempt_even_when_its_running_event_is_late() -> None:
    record = fold([job(0, 0, JobStatus.QUEUED, job=SUMMARY), step(1, 2, 1, StepStatus.RUNNING)])
    assert record["status"] == "running" and record["attempt"] == 1
    record = fold(
        [job(0, 0, JobStatus.QUEUED, job=SUMMARY), step(1, 2, 1, StepStatus.RUNNING), job(1, 1, JobStatus.RUNNING)]
    )
    assert record["status"] == "running" and record["steps"][0]["status"] == "running"


def test_log_counters_count_each_line_once_whatever_the_order() -> None:
    record = fold([batch(1, 4, 3), batch(1, 1, 3), batch(1, 2, 4), batch(1, 10, 1), batch(1, 1, 3)])
    assert record["log_lines"] == 7 and record["last_log_seq"] == 10
    assert record["_log_ranges"] == [[1, 6], [10, 10]]


def test_the_log_cap_is_a_counter_and_a_flag() -> None:
    record = fold([batch(1, 1, 10, size=10), batch(1, 11, 10, size=10)], max_bytes=150)
    assert record["log_truncated"] is True
    assert record["log_lines"] == 15 and record["log_bytes"] == 150
    assert record["last_log_seq"] == 20


def test_seen_ranges_stay_few() -> None:
    items = [batch(1, seq, 1) for seq in range(1, 400, 3)]
    record = fold(items)
    assert len(record["_log_ranges"]) <= records.MAX_SEQ_RANGES
    assert record["log_lines"] == len(items)


def test_status_filters_accept_both_names() -> None:
    assert records.statuses_named("failed") == {JobStatus.FAILED}
    assert records.statuses_named("Failed") == {JobStatus.FAILED, JobStatus.TIMED_OUT}
    assert records.statuses_named("Stopped") == {JobStatus.CANCELLED}
    assert records.statuses_named("timed_out") == {JobStatus.TIMED_OUT}
    assert records.statuses_named("nope") == set()


def test_the_record_keeps_the_trace_id_submit_gave_its_queued_event() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    record = fold([job(0, 0, JobStatus.QUEUED, job=SUMMARY, trace_id=trace_id), *successful_run()[1:]])
    assert record["trace_id"] == trace_id and record["status"] == "succeeded"
    assert fold(successful_run())["trace_id"] is None  # not traced: nothing made up
