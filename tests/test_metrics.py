"""Metrics, spans and log lines in one process: the failure-reason label, span names after the messaging
conventions, JSON log lines with job and trace ids, the lanes' backlog read from JetStream."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry import trace

from functions.dispatch.executors.base import Cause, RunResult, StepResult
from functions.dispatch.settle import failure_reason
from runtime import logconfig, metrics, subjects, tracing
from runtime.jobs import JobStatus, StepStatus
from runtime.messaging import Messaging, topology
from runtime.messaging import connect as messaging_connect
from runtime.settings import Settings

JOB_ID = "6c0c2b1e-8f5a-4c4e-9d59-2a8f0a3b7c11"


def failed_step(reason: str, cause: Cause) -> RunResult:
    return RunResult(JobStatus.FAILED, (StepResult(1, StepStatus.FAILED, exit_code=137, reason=reason, cause=cause),))


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (RunResult(JobStatus.SUCCEEDED, ()), "succeeded"),
        (failed_step("exited with code 3", Cause.STEP_FAILED), "failed"),
        (RunResult(JobStatus.TIMED_OUT, (), reason="job timed out after 2 s"), "timed_out"),
        (RunResult(JobStatus.CANCELLED, (), reason="cancelled"), "cancelled"),
        (failed_step("killed: out of memory (limit 32 MiB)", Cause.OUT_OF_MEMORY), "oom"),
        (RunResult(JobStatus.FAILED, (), reason="image 'x:1' is missing", cause=Cause.IMAGE_UNAVAILABLE), "image_pull"),
        (RunResult(JobStatus.FAILED, (), reason="no node", cause=Cause.UNSCHEDULABLE), "unschedulable"),
        (RunResult(JobStatus.FAILED, (), reason="gave up", cause=Cause.INFRASTRUCTURE), "infrastructure"),
        # the label follows the type, not the words: an exit whose text mentions an image stays a plain failure
        (failed_step("exited with code 1: image 'x' is not available", Cause.STEP_FAILED), "failed"),
    ],
)
def test_a_finished_job_gets_one_of_the_bounded_reasons(result: RunResult, reason: str) -> None:
    assert failure_reason(result) == reason
    assert metrics.RESULT_OF_REASON[failure_reason(result)] == str(result.status)


def test_span_names_keep_job_ids_out_and_attributes_keep_them() -> None:
    assert tracing.destination_template(subjects.status_subject(JOB_ID)) == "hades.status.{job_id}"
    assert tracing.destination_template(subjects.jobs_subject(subjects.Lane.HIGH)) == "hades.jobs.high"


def test_json_log_lines_carry_the_job_and_trace_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logconfig.JsonFormatter("dispatch"))
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.propagate = False
    context = trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(1))
    try:
        with trace.use_span(trace.NonRecordingSpan(context)), logconfig.job_scope(JOB_ID):
            logger.warning("step %d started", 1)
        logger.warning("job %s: cancel requested", JOB_ID)
        logger.warning("dispatcher started")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "step 1 started" and first["service"] == "dispatch" and first["level"] == "warning"
    assert first["job_id"] == JOB_ID and first["trace_id"] == f"{0x1234:032x}"
    assert second["job_id"] == JOB_ID  # named in the message, outside a job scope
    assert "job_id" not in third and "trace_id" not in third


async def test_the_backlog_of_a_lane_is_read_from_its_consumer(settings: Settings) -> None:
    conn: Messaging = await messaging_connect(settings, name="test-backlog")
    try:
        lane = subjects.Lane.LOW
        await conn.pull_consumer(subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, lane))
        empty = await conn.backlog(subjects.JOBS_STREAM, subjects.dispatch_consumer(lane))
        assert (empty.pending, empty.oldest_age_s) == (0, 0.0)
        for n in range(3):
            await conn.publish(subjects.jobs_subject(lane), b"{}", msg_id=f"backlog-{n}")
        backlog = await conn.backlog(subjects.JOBS_STREAM, subjects.dispatch_consumer(lane))
        assert backlog.pending == 3 and 0.0 <= backlog.oldest_age_s < 60
    finally:
        await conn.close()
