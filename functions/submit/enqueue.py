"""Putting a job on its lane, and asking for a job to be cancelled.

A job is stored in ``HADES_JOBS`` with its id as ``Nats-Msg-Id`` (so a retried publish within the duplicate
window stores it once); then its ``queued`` event goes to ``hades.status.<id>``. Only the job's own ack decides
the answer: a lost ``queued`` event is repaired by dispatch's ``running`` event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime import eventlog, events, subjects, tracing
from runtime.errors import Conflict, HadesError, JobNotFound
from runtime.jobs import Job, JobStatus, utc_now
from runtime.messaging import Messaging, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enqueued:
    job: Job
    duplicate: bool
    """True when this id was already stored (an idempotent retry)."""


async def enqueue(conn: Messaging, job: Job) -> Enqueued:
    """Store the job durably; raises ``Unavailable`` when JetStream did not store it."""
    ack = await conn.publish(subjects.jobs_subject(job.lane), encode(job.to_message()), msg_id=job.id)
    if ack.duplicate:
        # An idempotent retry: the job and its queued event were stored the first time. Publishing the event
        # again could make "queued" the latest status of a job that has already ended.
        return Enqueued(job=job, duplicate=True)
    # The queued event names the job's stream sequence so the log collector can tell its place in the lane.
    queued = events.job_event(job.id, attempt=0, seq=0, status=JobStatus.QUEUED, job=job.summary(), stream_seq=ack.seq)
    trace_id = tracing.trace_id()
    if trace_id:  # the record carries it, so one student's job can be found as a trace
        queued["trace_id"] = trace_id
    # Stored before the answer, so a client that cancels or looks the job up right after the POST finds it. A
    # failure does not fail the POST: the job is stored, and dispatch's running event carries the same summary.
    try:
        await eventlog.publish_status(conn, queued)
    except HadesError as exc:
        log.warning("job %s stored, but its queued event was not: %s", job.id, exc.detail)
    return Enqueued(job=job, duplicate=False)


async def request_cancel(conn: Messaging, job_id: str, *, reason: str) -> None:
    """Record a cancel request: dispatch drops the job when it dequeues it, or stops it if it runs."""
    last = await eventlog.latest_status(conn, job_id)
    if last is None:
        raise JobNotFound(job_id)
    if events.is_terminal(last):
        raise Conflict(f"job {job_id} already ended: {last['status']}")
    body = {"job_id": job_id, "at": utc_now(), "reason": reason}
    await conn.publish(subjects.cancel_subject(job_id), encode(body), msg_id=f"{job_id}.cancel")
