"""The record's three descriptions agree: its types (``records``), what builds it, and the API document.

``JobRecord`` and friends are what mypy checks the reducer and its callers against; ``new_record``,
``new_callback`` and ``public`` build what is stored and served; ``apidoc`` tells clients. A key added to one and
not the others fails here.
"""

from __future__ import annotations

import typing
from typing import Any, NotRequired

from functions.logs import apidoc, handlers, positions, records, recordstore
from runtime import events, messaging
from runtime.jobs import JobStatus, StepStatus
from runtime.messaging import encode
from runtime.settings import Settings

JOB_ID = "8d7f3a52-5f0e-4a57-9a43-0c1d5f7e2b11"
NOW = "2025-01-01T00:00:00.000Z"
SUMMARY = {
    "name": "Build",
    "priority": 2,
    "lane": "normal",
    "submitted_at": NOW,
    "timeout_seconds": 60,
    "callback_url": "https://lms.example/results",
    "status_callback_url": None,
    "origin": "jobs",
    "steps": [{"id": 1, "name": "compile", "image": "alpine"}],
}
NOT_BUILT_BY_NEW_RECORD = {"origin"}
"""Keys ``new_record`` leaves out: ``origin`` comes with the job's summary."""


def keys(typed_dict: type) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


def optional_keys(typed_dict: type) -> set[str]:
    # ``__optional_keys__`` is wrong on 3.11 under ``from __future__ import annotations``: read the hints instead.
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    return {key for key, hint in hints.items() if typing.get_origin(hint) is NotRequired}


def documented(schema: str) -> dict[str, Any]:
    return apidoc.openapi_document()["components"]["schemas"][schema]  # type: ignore[no-any-return]


def whole_record() -> records.JobRecord:
    """A record with every key: summary, callback, trace id, redrive links, lost lines, two steps."""
    record = None
    for event in [
        events.job_event(
            JOB_ID,
            attempt=0,
            seq=0,
            status=JobStatus.QUEUED,
            job=SUMMARY,
            stream_seq=3,
            trace_id="0af7651916cd43dd8448eb211c80319c",
            redrive_of="1b2c3d4e-5f60-4a57-9a43-0c1d5f7e2b11",
        ),
        events.job_event(JOB_ID, attempt=1, seq=1, status=JobStatus.RUNNING, job=SUMMARY, queue_wait_s=0.5),
        events.step_event(JOB_ID, attempt=1, seq=2, step_id=1, step_name="compile", status=StepStatus.RUNNING),
        events.step_event(
            JOB_ID, attempt=1, seq=3, step_id=1, step_name="compile", status=StepStatus.FAILED, exit_code=2
        ),
        events.job_event(
            JOB_ID,
            attempt=1,
            seq=4,
            status=JobStatus.FAILED,
            reason="step 1 failed",
            log_lost_lines=3,
            redriven_as="2c3d4e5f-6071-4a57-9a43-0c1d5f7e2b11",
        ),
    ]:
        record = records.apply_status(record, event, now=NOW) or record
    batch: events.LogBatch = {
        "job_id": JOB_ID,
        "attempt": 1,
        "lines": [{"seq": 1, "step_id": 1, "stream": "stdout", "at": NOW, "message": "hello"}],
    }
    record = records.apply_logs(record, batch, max_bytes=1000, now=NOW) or record
    assert record is not None
    return record


def test_new_record_builds_every_key_of_the_type_but_origin() -> None:
    built = records.new_record(JOB_ID)
    assert set(built) == keys(records.JobRecord) - NOT_BUILT_BY_NEW_RECORD
    assert optional_keys(records.JobRecord) >= NOT_BUILT_BY_NEW_RECORD
    assert set(records.new_callback("https://lms.example/results")) == keys(records.CallbackRecord)


def test_the_bookkeeping_keys_are_the_private_ones() -> None:
    public, stored = keys(records.PublicRecord), keys(records.JobRecord)
    assert public < stored
    assert all(key.startswith("_") for key in stored - public)
    assert not any(key.startswith("_") for key in public)


def test_the_served_record_is_the_documented_job_record() -> None:
    assert keys(handlers.ServedRecord) == set(documented("JobRecord")["properties"])
    assert keys(handlers.ServedRecord) - keys(records.PublicRecord) == {"queue_position", "queue"}
    queue = documented("JobRecord")["properties"]["queue"]
    assert keys(positions.QueueBody) == set(queue["properties"]) == set(queue["required"])
    assert keys(records.StepRecord) == set(documented("StepRecord")["properties"])
    assert keys(records.CallbackRecord) == set(documented("Callback")["properties"])
    required = set(documented("JobRecord")["required"])
    assert required <= keys(records.PublicRecord) - optional_keys(records.PublicRecord)


def test_a_whole_record_has_every_key_and_public_drops_exactly_the_bookkeeping() -> None:
    record = whole_record()
    assert set(record) == keys(records.JobRecord)
    assert set(record["steps"][0]) == keys(records.StepRecord)
    for each in (record, records.new_record(JOB_ID)):
        # What ``public`` returned before it was typed: every key but the ``_`` ones.
        assert records.public(each) == {key: value for key, value in each.items() if not key.startswith("_")}
    assert set(records.public(record)) == keys(records.PublicRecord)


def test_a_record_stored_before_the_later_keys_existed_is_served_as_stored() -> None:
    stored: dict[str, Any] = dict(records.new_record(JOB_ID))
    for key in optional_keys(records.JobRecord):
        stored.pop(key, None)
    old: records.JobRecord = stored  # type: ignore[assignment]
    assert records.public(old) == {key: value for key, value in stored.items() if not key.startswith("_")}
    event = events.job_event(JOB_ID, attempt=1, seq=1, status=JobStatus.RUNNING, job=SUMMARY)
    running = records.apply_status(old, event, now=NOW)
    assert running is not None and running["status"] == "running" and running["origin"] == "jobs"


def test_stored_json_becomes_a_record_at_one_place() -> None:
    record = whole_record()
    assert recordstore.decode(encode(record)) == record
    for stored in [b"not json", b"[1, 2]", b'"text"', b'{"status": "queued"}']:
        assert recordstore.decode(stored) is None


async def test_an_unreadable_stored_record_is_overwritten_by_the_next_event(
    conn: messaging.Messaging, settings: Settings
) -> None:
    store = await recordstore.RecordStore.open(conn, settings)
    job_id = "b3a4f3c2-0d7e-4b8e-9c1a-2f6d5e4c3b2a"
    await store.bucket.put(job_id, b"not json", revision=0)
    event = events.job_event(job_id, attempt=1, seq=1, status=JobStatus.RUNNING)

    now = "2026-12-02T00:00:00Z"
    written = await store.update(job_id, lambda current: records.apply_status(current, event, now=now))

    assert written is not None and written["status"] == "running"
    assert (await store.get(job_id)) == written
