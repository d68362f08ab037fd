"""Dead letters an operator can act on: listing ``HADES_DEAD`` and re-submitting a dead job under a new id.

Dispatch copies a job that exhausted its attempts to ``hades.dead.<id>`` with its reason in ``Hades-Reason``
(``functions/dispatch/jobrun.py``). A redrive stores the same job again under a new id, derived from the old id
and the dead letter's sequence (so a retried or concurrent redrive names one job), then links both records
through status events the log collector applies: the new job's ``queued`` event carries ``redrive_of``, and an
event on the old job repeating its terminal status carries ``redriven_as`` (a terminal status stays final, so
nothing reading the old job's latest status sees it change). The dead letter itself stays, for the record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any

from runtime import eventlog, events, subjects
from runtime.errors import Conflict, HadesError, RequestError
from runtime.jobs import Job, JobId, JobStatus, utc_now
from runtime.messaging import Messaging, StoredMessage, encode

log = logging.getLogger(__name__)

REASON_HEADER = "Hades-Reason"
"""Why dispatch gave the job up (set by ``jobrun._dead_letter``)."""
STORED_AT_HEADER = "Nats-Time-Stamp"
_REDRIVE_NAMESPACE = uuid.UUID("9d7c1f0e-5a51-4c8e-9b0a-6f2d3c4b5a69")
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000


class DeadLetterNotFound(RequestError):
    status = 404
    title = "Dead letter not found"
    kind = "dead-letter-not-found"


class BadQuery(RequestError):
    kind = "bad-query"
    title = "Bad query parameter"


def limit_of(text: str | None) -> int:
    """The ``limit`` query parameter: 1 to ``MAX_LIST_LIMIT``, ``DEFAULT_LIST_LIMIT`` when absent."""
    if text is None:
        return DEFAULT_LIST_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise BadQuery(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {text[:20]!r}")
    return int(text)


def redrive_id(job_id: str, dead_seq: int) -> JobId:
    """The new job's id: the same for every redrive of one dead letter, so a retry stores one job."""
    return JobId(str(uuid.uuid5(_REDRIVE_NAMESPACE, f"{job_id}.{dead_seq}")))


def _stored_at(stamp: str | None) -> str | None:
    """``Nats-Time-Stamp`` (RFC 3339 with nanoseconds) in the API's form, milliseconds and ``Z``."""
    if not stamp:
        return None
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{(fraction + '000')[:3]}Z"


def _describe(stored: StoredMessage) -> dict[str, Any]:
    try:
        body = json.loads(stored.data)
        name = body.get("name") if isinstance(body, dict) else None
    except ValueError:
        name = None
    return {
        "id": subjects.job_id_of(stored.subject),
        "name": name if isinstance(name, str) else None,
        "reason": stored.headers.get(REASON_HEADER),
        "dead_at": _stored_at(stored.headers.get(STORED_AT_HEADER)),
        "seq": stored.seq,
        "redriven_as": None,
    }


def after_of(text: str | None) -> int:
    """The ``after`` query parameter: the ``seq`` of the last dead letter of the previous page (0: from the start)."""
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 18:
        raise BadQuery(f"after must be the seq of a dead letter, got {text[:20]!r}")
    return int(text)


async def list_dead(conn: Messaging, *, limit: int = DEFAULT_LIST_LIMIT, after: int = 0) -> list[dict[str, Any]]:
    """The dead letters in the order they died (oldest first) after stream sequence ``after``, at most ``limit``,
    each with its redrive if any; page on with the last one's ``seq``."""
    found: list[dict[str, Any]] = []
    reader = conn.read(
        stream=subjects.DEAD_STREAM,
        subject=f"{subjects.DEAD_SUBJECT_PREFIX}.*",
        start_seq=after + 1,
        batch=min(limit, 256),
    )
    try:
        async for stored in reader:
            found.append(_describe(stored))
            if len(found) >= limit:
                break
    finally:
        await reader.aclose()
    for item in found:
        last = await eventlog.latest_status(conn, item["id"])
        item["redriven_as"] = dict(last or {}).get("redriven_as")
    return found


async def redrive(conn: Messaging, job_id: str) -> tuple[Job, bool]:
    """Store the dead job again under a new id and link both records; (the new job, True when it was a repeat)."""
    dead = await conn.last_message(subjects.DEAD_STREAM, subjects.dead_subject(job_id))
    if dead is None:
        raise DeadLetterNotFound(f"no dead letter for job {job_id!r}")
    last = await eventlog.latest_status(conn, job_id)
    if last is None or not events.is_terminal(last):
        raise Conflict(f"job {job_id} has not ended yet; redrive it once it has")
    earlier = dict(last).get("redriven_as")
    if earlier:
        raise Conflict(f"job {job_id} was already redriven as {earlier}")
    try:
        old = Job.from_message(json.loads(dead.data))
    except (ValueError, KeyError, TypeError) as exc:
        raise Conflict(f"the dead letter of job {job_id} is not a job message: {exc}") from None
    new = dataclasses.replace(old, id=redrive_id(job_id, dead.seq), submitted_at=utc_now())
    ack = await conn.publish(subjects.jobs_subject(new.lane, new.tenant), encode(new.to_message()), msg_id=new.id)
    if not ack.duplicate:
        queued = events.job_event(
            new.id, attempt=0, seq=0, status=JobStatus.QUEUED, job=new.summary(), stream_seq=ack.seq, redrive_of=job_id
        )
        try:
            await eventlog.publish_status(conn, queued)
        except HadesError as exc:  # the job is stored; dispatch's running event repairs the record, not the link
            log.warning("job %s (redrive of %s) stored, but its queued event was not: %s", new.id, job_id, exc.detail)
    # The old job's terminal status again, one seq later, with the link: idempotent (same Nats-Msg-Id on a retry).
    extra: dict[str, Any] = {k: v for k, v in last.items() if k in ("reason", "finished_at")}
    link = events.job_event(
        job_id,
        attempt=last["attempt"],
        seq=last["seq"] + 1,
        status=JobStatus(last["status"]),
        redriven_as=new.id,
        **extra,
    )
    await eventlog.publish_status(conn, link)
    log.info("job %s redriven as %s", job_id, new.id)
    return new, ack.duplicate
