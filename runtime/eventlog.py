"""A job's status events in ``HADES_EVENTS``: storing one, reading the latest, and whether a cancel was asked.

Submit (queued, cancel) and dispatch (every status, redeliveries, leftovers, cancel before start) share these.
"""

from __future__ import annotations

import logging

from runtime import events, subjects
from runtime.messaging import Messaging, Published, encode

log = logging.getLogger(__name__)


async def publish_status(conn: Messaging, event: events.StatusEvent) -> Published:
    """Store a status event; its ``Nats-Msg-Id`` makes a re-publish (a retry after a lost ack) store it once."""
    return await conn.publish(
        subjects.status_subject(event["job_id"]), encode(event), msg_id=events.status_msg_id(event)
    )


async def latest_status(conn: Messaging, job_id: str, *, settle_s: float = 0) -> events.StatusEvent | None:
    """The last status event stored for a job, or None when the job is unknown; ``Unavailable`` in an outage.

    ``settle_s``: how long to keep asking while there is none (a ``queued`` event sent unacknowledged just before
    may still be on its way)."""
    msg = await conn.settled_last_message(subjects.EVENTS_STREAM, subjects.status_subject(job_id), within_s=settle_s)
    if msg is None:
        return None
    try:
        return events.decode_status(msg.data)
    except ValueError:
        log.warning("job %s: its last status event is malformed", job_id)
        return None


async def cancel_requested(conn: Messaging, job_id: str) -> bool:
    """True when a cancel request is stored for the job; ``Unavailable`` in an outage."""
    return await conn.last_message(subjects.EVENTS_STREAM, subjects.cancel_subject(job_id)) is not None
