"""Fakes shared by tests: a dispatch that publishes one job's events exactly as the real one does, and a way to
wait for the logs function's record of a job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from functions.logs import recordstore
from functions.submit import enqueue
from runtime import events, jobs, messaging
from runtime.jobs import JobStatus, StepStatus
from runtime.settings import LimitSettings
from tests.helpers import poll


async def publish_json(conn: messaging.Messaging, subject: str, body: Any, *, msg_id: str) -> None:
    await conn.publish(subject, messaging.encode(body), msg_id=msg_id)


def new_job(*, steps: int = 2, priority: int = 3, **document: Any) -> jobs.Job:
    doc = {
        "name": "Example Job",
        "priority": priority,
        "steps": [{"id": i, "name": f"step {i}", "image": "alpine", "script": "true"} for i in range(1, steps + 1)],
        **document,
    }
    return jobs.job_from_document(doc, job_id=jobs.new_job_id(), limits=LimitSettings(), submitted_at=jobs.utc_now())


@dataclass
class FakeDelivery:
    """A ``Delivery`` as dispatch uses it, recording what was done with it."""

    data: bytes
    attempt: int = 1
    done: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    subject: str = "hades.jobs.high"
    reply: str = ""  # the ack subject (a real one starts with $JS.ACK.)

    @property
    def consumer(self) -> str:
        return messaging.consumer_of(self.reply)

    async def ack(self) -> None:
        self.done.append("ack")

    async def nak(self, *, delay_s: float | None = None) -> None:
        self.done.append("nak")

    async def in_progress(self) -> None:
        pass

    async def term(self) -> None:
        self.done.append("term")


@dataclass
class FakeDispatch:
    """Publishes one job's events exactly as submit and dispatch do (same subjects, ids and shapes)."""

    conn: messaging.Messaging
    job: jobs.Job
    seq: dict[int, int] = field(default_factory=dict)
    line_seq: dict[int, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.job.id

    async def submit(self) -> None:
        await enqueue.enqueue(self.conn, self.job)

    def next_seq(self, attempt: int) -> int:
        self.seq[attempt] = self.seq.get(attempt, 0) + 1
        return self.seq[attempt]

    async def publish(self, event: events.StatusEvent) -> None:
        await publish_json(self.conn, f"hades.status.{self.id}", event, msg_id=events.status_msg_id(event))

    async def job_status(self, status: JobStatus, *, attempt: int = 1, **extra: Any) -> events.JobEvent:
        event = events.job_event(self.id, attempt=attempt, seq=self.next_seq(attempt), status=status, **extra)
        await self.publish(event)
        return event

    async def running(self, *, attempt: int = 1) -> events.JobEvent:
        return await self.job_status(
            JobStatus.RUNNING, attempt=attempt, job=self.job.summary(), queue_wait_s=0.1, started_at=jobs.utc_now()
        )

    async def step(self, step_id: int, status: StepStatus, *, attempt: int = 1, **extra: Any) -> events.StepEvent:
        event = events.step_event(
            self.id,
            attempt=attempt,
            seq=self.next_seq(attempt),
            step_id=step_id,
            step_name=f"step {step_id}",
            status=status,
            **extra,
        )
        await self.publish(event)
        return event

    def batch(self, step_id: int, messages: list[str], *, attempt: int = 1) -> events.LogBatch:
        first = self.line_seq.get(attempt, 0) + 1
        self.line_seq[attempt] = first + len(messages) - 1
        lines: list[events.LogLine] = [
            {"seq": first + i, "step_id": step_id, "stream": "stdout", "at": jobs.utc_now(), "message": m}
            for i, m in enumerate(messages)
        ]
        return {"job_id": self.id, "attempt": attempt, "lines": lines}

    async def publish_batch(self, batch: events.LogBatch, *, msg_id: str | None = None) -> None:
        await publish_json(self.conn, f"hades.logs.{self.id}", batch, msg_id=msg_id or events.logs_msg_id(batch))

    async def lines(self, step_id: int, messages: list[str], *, attempt: int = 1) -> events.LogBatch:
        batch = self.batch(step_id, messages, attempt=attempt)
        await self.publish_batch(batch)
        return batch

    async def finish(self, status: JobStatus = JobStatus.SUCCEEDED, *, attempt: int = 1, **extra: Any) -> None:
        await self.job_status(status, attempt=attempt, finished_at=jobs.utc_now(), **extra)

    async def run(self, outputs: dict[int, list[str]], status: JobStatus = JobStatus.SUCCEEDED) -> None:
        """A whole run: running, each step with its lines, the end."""
        await self.running()
        for step_id, messages in outputs.items():
            await self.step(step_id, StepStatus.RUNNING, started_at=jobs.utc_now())
            if messages:
                await self.lines(step_id, messages)
            await self.step(step_id, StepStatus.SUCCEEDED, exit_code=0, finished_at=jobs.utc_now())
        await self.finish(status)


async def submitted(conn: messaging.Messaging, **kwargs: Any) -> FakeDispatch:
    dispatch = FakeDispatch(conn, new_job(**kwargs))
    await dispatch.submit()
    return dispatch


async def record_when(client: TestClient, job_id: str, **expected: Any) -> dict[str, Any]:
    """The job's record, once the collector has brought it to ``expected``: as served, and as stored.

    Until the collector has written a record, the logs function serves one folded from the job's status events,
    which can be ahead of the record the collector then writes from its first event: a test that reads another
    route next must find the stored record there, not an older one.
    """
    return await _record_where(client, job_id, lambda r: all(r.get(k) == v for k, v in expected.items()), 10)


async def ended_record(client: TestClient, job_id: str, *, timeout_s: float = 90) -> dict[str, Any]:
    """The job's record once it shows an end (neither queued nor running), as served and as stored."""
    return await _record_where(client, job_id, lambda r: r["status"] not in ("queued", "running"), timeout_s)


async def _record_where(
    client: TestClient, job_id: str, holds: Callable[[Any], bool], timeout_s: float
) -> dict[str, Any]:
    store = client.app[recordstore.RECORDS]

    async def check() -> dict[str, Any] | None:
        response = await client.get(f"/jobs/{job_id}")
        if response.status != 200:
            return None
        body: dict[str, Any] = await response.json()
        stored = await store.get(job_id)
        return body if holds(body) and stored is not None and holds(stored) else None

    return await poll(check, timeout_s=timeout_s, interval_s=0.1)
