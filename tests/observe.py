"""Looking behind the door: what the functions stored in HADES_EVENTS, read as the log collector would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
from nats.js import JetStreamContext

from runtime import messaging, subjects
from tests.helpers import poll

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


async def job_events(conn: messaging.Messaging) -> list[dict[str, Any]]:
    """Every job's own status events (not its steps'), in the order HADES_EVENTS stored them."""
    found = []
    async for stored in conn.read(stream=subjects.EVENTS_STREAM, subject=f"{subjects.STATUS_SUBJECT_PREFIX}.*"):
        event = json.loads(stored.data)
        if event.get("kind") == "job":
            found.append(event)
    return found


@contextlib.asynccontextmanager
async def stored_on(url: str) -> AsyncIterator[StoredEvents]:
    """``StoredEvents`` over a connection of its own, for a server a test stops and starts again."""
    nc = await nats.connect(url)
    try:
        yield StoredEvents(nc.jetstream())
    finally:
        await nc.close()


class StoredEvents:
    """A job's status events and log lines as stored in HADES_EVENTS."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def read(self, subject: str, *, stream: str = subjects.EVENTS_STREAM) -> list[dict[str, Any]]:
        """Every message on ``subject`` (counted by the stream: an ordered consumer may have pushed all already)."""
        try:
            info = await self.js.stream_info(stream, subjects_filter=subject)
        except nats.js.errors.NotFoundError:
            return []
        count = (info.state.subjects or {}).get(subject, 0)
        if not count:
            return []
        sub = await self.js.subscribe(subject, ordered_consumer=True)
        out = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(count)]
        await sub.unsubscribe()
        return out

    async def status(self, job_id: str) -> list[dict[str, Any]]:
        return await self.read(subjects.status_subject(job_id))

    async def jobs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's own status events (not its steps')."""
        return [e for e in await self.status(job_id) if e["kind"] == "job"]

    async def steps(self, job_id: str) -> dict[int, dict[str, Any]]:
        """The last event of each step."""
        return {e["step_id"]: e for e in await self.status(job_id) if e["kind"] == "step"}

    async def log_lines(self, job_id: str) -> list[dict[str, Any]]:
        batches = await self.read(subjects.logs_subject(job_id))
        return [line for batch in batches for line in batch["lines"]]

    async def lines(self, job_id: str, *, stream: str | None = None) -> list[str]:
        return [line["message"] for line in await self.log_lines(job_id) if stream is None or line["stream"] == stream]

    async def queued(self, job_id: str, timeout_s: float = 10) -> dict[str, Any]:
        """The job's ``queued`` event, once stored: submit sends it without waiting for its ack."""

        async def found() -> dict[str, Any] | None:
            return next((e for e in await self.jobs(job_id) if e["status"] == "queued"), None)

        return await poll(found, timeout_s=timeout_s, interval_s=0.05)

    async def terminals(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in await self.jobs(job_id) if e["status"] in TERMINAL]

    async def terminal(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """The job's terminal event, once it is stored."""

        async def ended() -> dict[str, Any] | None:
            done = await self.terminals(job_id)
            return done[-1] if done else None

        return await poll(ended, timeout_s=timeout_s, interval_s=0.2)
