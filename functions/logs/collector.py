"""The log collector's loop: pull status and log events, fold them into job records, ack, start callbacks.

All replicas share the durable pull consumer ``collect-logs``; a fetched batch is grouped by job, each job's
events are applied in arrival order to its record with one compare-and-set write, and the messages are acked
only after that write succeeded (a failed write naks them for redelivery). The reducer (``records``) makes
repeats, late and out-of-order events harmless, so redelivery and several replicas never corrupt a record.
Malformed events are logged and terminated; nothing in an event can stop the loop. Log lines are not copied: the
record only counts them (``logstore`` reads them back from the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from functions.logs import logstore, records, tenantstats
from functions.logs.callbacks import CALLBACKS, CallbackSender
from functions.logs.records import JobRecord
from functions.logs.recordstore import RECORDS, RecordStore
from runtime import events, logconfig, metrics, subjects, tasks, tenantqueues, tracing
from runtime.app import READINESS_CHECKS, SETTINGS
from runtime.errors import HadesError, Unavailable
from runtime.jobs import is_job_id, utc_now
from runtime.messaging import MESSAGING, Delivery, Messaging, PullConsumer, topology

log = logging.getLogger(__name__)

FETCH_BATCH = 128
"""Messages per fetch: log batches are up to 256 KiB each, so one fetch holds at most ~8 MiB (256 held ~64 MiB
and grew a catching-up collector by ~45 MiB)."""
FETCH_TIMEOUT_S = 5.0
"""Idle wait of one pull request."""
RETRY_DELAY_S = 1.0
"""Pause after NATS trouble, and the redelivery delay of events whose record could not be written."""


@dataclass(frozen=True)
class Event:
    msg: Delivery
    kind: str  # job | step | logs
    body: Any  # a StatusEvent or a LogBatch


def decode(msg: Delivery) -> tuple[str, Event]:
    """The job id and event of a message; ``EventError`` for anything that is not a valid event of that job."""
    prefix, _, job_id = msg.subject.rpartition(".")
    if prefix == subjects.STATUS_SUBJECT_PREFIX:
        try:
            status = events.decode_status(msg.data)
        except ValueError as exc:  # EventError, or a status name we do not know
            raise events.EventError(str(exc)) from exc
        numbers = [status["attempt"], status["seq"]] + ([status["step_id"]] if status["kind"] == "step" else [])
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise events.EventError("attempt, seq and step_id must be integers")
        event = Event(msg, status["kind"], status)
    elif prefix == subjects.LOGS_SUBJECT_PREFIX:
        batch = events.decode_logs(msg.data)
        if not isinstance(batch["attempt"], int) or not all(logstore.valid_line(line) for line in batch["lines"]):
            raise events.EventError("a log batch needs an integer attempt and lines with integer seq and a message")
        if not batch["lines"]:
            raise events.EventError("an empty log batch")
        event = Event(msg, "logs", batch)
    else:
        raise events.EventError(f"not an event subject: {msg.subject}")
    if event.body["job_id"] != job_id or not is_job_id(job_id):
        raise events.EventError(f"job id {event.body['job_id']!r} does not match subject {msg.subject}")
    return job_id, event


class Collector:
    def __init__(
        self,
        conn: Messaging,
        store: RecordStore,
        callbacks: CallbackSender,
        *,
        max_log_bytes: int,
        known_tenants: frozenset[str] = frozenset(),
    ):
        self.conn = conn
        self.store = store
        self.callbacks = callbacks
        self.max_log_bytes = max_log_bytes
        self.known_tenants = known_tenants

    def fold(self, record: JobRecord | None, batch: list[Event], outcomes: list[str]) -> JobRecord | None:
        """Apply one job's events in order; None when none of them changed the record."""
        now, changed = utc_now(), False
        for event in batch:
            if event.kind == "logs":
                new = records.apply_logs(record, event.body, max_bytes=self.max_log_bytes, now=now)
            else:
                new = records.apply_status(record, event.body, now=now)
            outcomes.append("applied" if new is not None else "duplicate")
            if new is not None:
                record, changed = new, True
        return record if changed else None

    async def apply(self, job_id: str, batch: list[Event]) -> None:
        outcomes: list[str] = []
        ended: list[JobRecord] = []  # the record, when this write ends the job (counted once it is written)

        def change(record: JobRecord | None) -> JobRecord | None:
            outcomes.clear()  # a compare-and-set retry folds again
            ended.clear()
            new = self.fold(record, batch, outcomes)
            if new is not None and records.is_terminal(new) and (record is None or not records.is_terminal(record)):
                ended.append(new)
            return new

        try:
            # One consumer span per job and batch, child of the first event's producer (the job's trace).
            first = batch[0].msg
            with (
                logconfig.job_scope(job_id),
                tracing.process_span(
                    first.subject,
                    first.headers,
                    consumer=subjects.LOGS_CONSUMER,
                    message_id=first.headers.get(subjects.HEADER_MSG_ID),
                ) as span,
            ):
                span.set_attribute("hades.job_id", job_id)
                span.set_attribute("messaging.batch.message_count", len(batch))
                record = await self.store.update(job_id, change)
        except HadesError as exc:
            log.warning("job %s: record not written (%s); events come again", job_id, exc.detail)
            for event in batch:
                with contextlib.suppress(Unavailable):
                    await event.msg.nak(delay_s=RETRY_DELAY_S)
            return
        except Exception:  # an event the reducer cannot take: drop it rather than see it forever
            log.exception("job %s: dropping %d events that could not be applied", job_id, len(batch))
            for event in batch:
                metrics.EVENTS_APPLIED.labels(event.kind, "malformed").inc()
                with contextlib.suppress(Unavailable):
                    await event.msg.term()
            return
        for job in ended:  # counted once its record is written: a later read of the record sees it counted
            tenantstats.finished(job.get("tenant"), job["status"], self.known_tenants)
        for event, outcome in zip(batch, outcomes, strict=False):
            metrics.EVENTS_APPLIED.labels(event.kind, outcome).inc()
            with contextlib.suppress(Unavailable):
                await event.msg.ack_nowait()  # the fold is idempotent: a lost ack is a harmless redelivery
        if record is not None:
            self.callbacks.trigger(record)

    async def handle(self, msgs: list[Delivery]) -> None:
        by_job: dict[str, list[Event]] = {}
        for msg in msgs:
            try:
                job_id, event = decode(msg)
            except events.EventError as exc:
                log.warning("dropping a malformed event on %s: %s", msg.subject, exc)
                metrics.EVENTS_APPLIED.labels("unknown", "malformed").inc()
                with contextlib.suppress(Unavailable):
                    await msg.term()
                continue
            by_job.setdefault(job_id, []).append(event)
        await asyncio.gather(*(self.apply(job_id, batch) for job_id, batch in by_job.items()))

    async def run(self) -> None:
        """Pull and apply until cancelled; NATS trouble pauses it, nothing ends it."""
        consumer: PullConsumer | None = None
        try:
            while True:
                try:
                    if consumer is None:
                        consumer = await self.conn.pull_consumer(
                            subjects.EVENTS_STREAM, topology.logs_consumer_config()
                        )
                    msgs = await consumer.fetch(FETCH_BATCH, timeout_s=FETCH_TIMEOUT_S)
                except Unavailable as exc:
                    log.warning("collector: %s; retrying", exc.detail)
                    if consumer is not None:  # e.g. the consumer or its stream is gone: bind (and create) it again
                        await consumer.close()
                        consumer = None
                    await asyncio.sleep(RETRY_DELAY_S)
                    continue
                if msgs:
                    await self.handle(msgs)
        finally:
            if consumer is not None:
                await consumer.close()


BACKLOG_INTERVAL_S = 5.0
"""How often the queue depth, oldest-waiting age and collector lag are read from the JetStream consumers."""


async def sample_backlogs(conn: Messaging, known_tenants: frozenset[str] = frozenset()) -> None:
    """Export the lanes' queues and the collector's lag, read from JetStream so every replica agrees."""
    tenantstats.prime(known_tenants)
    while True:
        try:
            await sample_lanes(conn, known_tenants)
            backlog = await conn.backlog(subjects.EVENTS_STREAM, subjects.LOGS_CONSUMER)
            metrics.LOGS_LAG_MESSAGES.set(backlog.pending)
            metrics.LOGS_LAG_SECONDS.set(backlog.oldest_age_s)
        except Unavailable as exc:  # e.g. no dispatcher has created its lane consumers yet
            log.debug("backlog not read: %s", exc.detail)
        await asyncio.sleep(BACKLOG_INTERVAL_S)


async def sample_lanes(conn: Messaging, known_tenants: frozenset[str] = frozenset()) -> None:
    """The lanes' and tenants' queued and running jobs, and each lane's oldest waiting job, over every tenant's
    dispatch consumer of the lane (``runtime.tenantqueues``); ``Unavailable`` in an outage."""
    queues = await tenantqueues.snapshot(conn)
    tenantstats.record(queues.by_key, known_tenants)
    for lane in subjects.LANES:
        metrics.JOBS_QUEUED.labels(lane).set(queues.waiting_in(lane))
        metrics.QUEUE_OLDEST_AGE.labels(lane).set(await tenantqueues.oldest_waiting_age_s(conn, queues, lane))


COLLECTOR = web.AppKey("collector", asyncio.Task[None])
BACKLOG_SAMPLER = web.AppKey("backlog_sampler", asyncio.Task[None])


async def collector_ready(app: web.Application) -> str | None:
    return "the log collector stopped" if app[COLLECTOR].done() else None


async def collector_context(app: web.Application) -> AsyncIterator[None]:
    """The last ``cleanup_ctx`` entry: the loop starts after its clients and stops before they close."""
    collector = Collector(
        app[MESSAGING],
        app[RECORDS],
        app[CALLBACKS],
        max_log_bytes=app[SETTINGS].logs.job_log_max_bytes,
        known_tenants=app[SETTINGS].tenants.known(),
    )
    app[COLLECTOR] = asyncio.create_task(collector.run(), name="collector")
    app[BACKLOG_SAMPLER] = asyncio.create_task(
        sample_backlogs(app[MESSAGING], app[SETTINGS].tenants.known()), name="backlog-sampler"
    )
    app[READINESS_CHECKS].append(collector_ready)
    yield
    await tasks.cancel_and_wait(app[BACKLOG_SAMPLER])
    await tasks.cancel_and_wait(app[COLLECTOR])
