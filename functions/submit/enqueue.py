"""Putting a job on its lane, and asking for a job to be cancelled.

One acknowledged publish per submission: the job goes to ``HADES_JOBS`` with its id as ``Nats-Msg-Id`` (a retried
publish within the duplicate window stores it once) and only its ack decides the answer, so a 2xx means stored.
Its ``queued`` event then goes to ``hades.status.<id>`` without waiting for an ack (``publish_nowait``): it was
the second round trip of every POST. It is sent before the answer, so it is normally stored before the client can
ask; readers that find no status yet ask again for ``QUEUED_EVENT_SETTLE_S`` (a cancel here, ``GET /jobs/{id}``
in the logs function). A lost ``queued`` event (the broker failed between the two) is repaired by dispatch's
``running`` event, which carries the same summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime import eventlog, events, subjects, tracing
from runtime.errors import Conflict, HadesError, JobNotFound
from runtime.jobs import Job, JobStatus, utc_now
from runtime.messaging import Messaging, encode

log = logging.getLogger(__name__)

QUEUED_EVENT_SETTLE_S = 0.5
"""How long a reader that finds no status event keeps asking before it calls a job unknown: the ``queued`` event
is sent unacknowledged right after the job's ack, so a request sent right after the 202 may overtake it."""


@dataclass(frozen=True)
class Enqueued:
    job: Job
    duplicate: bool
    """True when this id was already stored (an idempotent retry)."""


async def enqueue(conn: Messaging, job: Job) -> Enqueued:
    """Store the job durably; raises ``Unavailable`` when JetStream did not store it."""
    ack = await conn.publish(subjects.jobs_subject(job.lane, job.tenant), encode(job.to_message()), msg_id=job.id)
    if ack.duplicate:
        # An idempotent retry: the job and its queued event were stored the first time. Publishing the event
        # again could make "queued" the latest status of a job that has already ended.
        return Enqueued(job=job, duplicate=True)
    # The queued event names the job's stream sequence so the log collector can tell its place in the lane.
    queued = events.job_event(job.id, attempt=0, seq=0, status=JobStatus.QUEUED, job=job.summary(), stream_seq=ack.seq)
    trace_id = tracing.trace_id()
    if trace_id:  # the record carries it, so one student's job can be found as a trace
        queued["trace_id"] = trace_id
    try:
        await conn.publish_nowait(subjects.status_subject(job.id), encode(queued), msg_id=events.status_msg_id(queued))
    except HadesError as exc:  # the job is stored: dispatch's running event carries the same summary
        log.warning("job %s stored, but its queued event was not sent: %s", job.id, exc.detail)
    return Enqueued(job=job, duplicate=False)


async def request_cancel(conn: Messaging, job_id: str, *, reason: str) -> None:
    """Record a cancel request: dispatch drops the job when it dequeues it, or stops it if it runs.

    A job still queued (its last event is ``queued``) ends here and now: its terminal ``cancelled`` event follows
    the request, as attempt 0 (the queued event's), so the record reads ``cancelled`` at once instead of when a
    dispatcher next takes the job (issue 20, finding 7). Dispatch still drops the job when it takes it (it finds
    the request), and its own ``cancelled`` event then changes nothing: a terminal status is final. Should a
    dispatcher take the job between the two, its attempt 1 outranks this event and it stops the job, having found
    the request.
    """
    last = await _latest_status(conn, job_id)
    if last is None:
        raise JobNotFound(job_id)
    if events.is_terminal(last):
        raise Conflict(f"job {job_id} already ended: {last['status']}")
    body = {"job_id": job_id, "at": utc_now(), "reason": reason}
    await conn.publish(subjects.cancel_subject(job_id), encode(body), msg_id=f"{job_id}.cancel")
    if last["kind"] == "job" and last["status"] == JobStatus.QUEUED:
        ended = events.job_event(
            job_id, attempt=last["attempt"], seq=last["seq"] + 1, status=JobStatus.CANCELLED, reason=reason
        )
        await conn.publish(subjects.status_subject(job_id), encode(ended), msg_id=events.status_msg_id(ended))


async def _latest_status(conn: Messaging, job_id: str) -> events.StatusEvent | None:
    """The job's last status event, waiting briefly for a ``queued`` event that may still be on its way."""
    return await eventlog.latest_status(conn, job_id, settle_s=QUEUED_EVENT_SETTLE_S)
