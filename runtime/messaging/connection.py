"""The NATS connection every function holds, and everything done with it: the only module family importing nats.

Connect with retry and reconnect; publish with ids and trace headers; read stored messages (last per subject,
or a subject in stream order with batched direct gets); subscribe; bind durable pull consumers; open KV buckets.
Every NATS failure leaves as ``Unavailable`` (``runtime.messaging.errors``), so callers answer 503 (submit) or
retry later (dispatch) and never mistake an unstored message for a stored one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace

from runtime import app as hades_app
from runtime import subjects, tracing
from runtime.errors import PayloadTooLarge, Unavailable
from runtime.messaging import topology
from runtime.messaging.consumers import OnMessage, PullConsumer, Subscription
from runtime.messaging.errors import NATS_ERRORS, translated
from runtime.messaging.kv import Bucket
from runtime.messaging.objects import Objects, ensure_objects
from runtime.messaging.watching import OnStored, Watch, watch
from runtime.settings import Settings

log = logging.getLogger(__name__)

CONNECT_RETRY_S = 60.0
"""How long ``connect`` keeps trying to reach NATS by default (tools, benchmarks, tests); a function's start-up
tries once per attempt and retries itself (``runtime.startup``)."""
READ_BATCH_MESSAGES = 256
"""Messages asked for per direct get."""
READ_BATCH_BYTES = 1024 * 1024
"""...and at most this many bytes (a log batch is at most 256 KiB), so one batch bounds the memory of a read."""
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Published:
    seq: int
    """Its sequence in the stream."""
    duplicate: bool
    """True when the stream already had a message with this ``Nats-Msg-Id`` (nothing new was stored)."""


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    """Its sequence in the stream."""
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Place:
    """Where a stored message stands among the messages of its subject."""

    total: int
    """Messages on the subject now."""
    after: int
    """Of them, stored after this one."""


class Messaging:
    """One NATS connection and its JetStream context, behind methods that speak Hades' terms."""

    def __init__(self, nc: Client, *, publish_timeout_s: float) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=publish_timeout_s)
        self.publish_timeout_s = publish_timeout_s
        self._acks = _Acks(nc)
        self._replies = _Replies(nc)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ensure_topology(self, settings: Settings) -> None:
        with translated("creating the streams"):
            await topology.ensure_topology(self._js, settings)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Published:
        """Store ``payload`` in JetStream and wait for the ack; ``Unavailable`` if it is not stored."""
        if not self.connected:
            raise Unavailable("the message broker is not reachable")
        _refuse_too_large(payload, headers, self._nc.max_payload)  # early: no span, no inject for a lost cause
        hdrs: dict[str, str] = dict(headers or {})
        if msg_id is not None:
            hdrs[subjects.HEADER_MSG_ID] = msg_id
        if not trace.get_current_span().is_recording():
            # Nothing would record the producer span (no exporter, or the trace is not sampled): it cost ~6 % of
            # a submit. Its context is passed on all the same, so the job's trace id travels with the message.
            tracing.inject(hdrs)
            with translated("storing a message"):
                return await self._acks.publish(subject, payload, hdrs, timeout_s=self.publish_timeout_s)
        with tracing.send_span(subject, hdrs, message_id=msg_id), translated("storing a message"):
            return await self._acks.publish(subject, payload, hdrs, timeout_s=self.publish_timeout_s)

    async def publish_nowait(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        """Send ``payload`` to a stream's subject without asking for an ack: JetStream stores it (once, by
        ``msg_id``) unless the broker fails meanwhile, and nobody waits for it. For messages whose loss something
        else repairs; ``Unavailable`` only when the connection is down. Traced as ``publish`` is."""
        if not self.connected:
            raise Unavailable("the message broker is not reachable")
        headers = {subjects.HEADER_MSG_ID: msg_id}
        if not trace.get_current_span().is_recording():
            tracing.inject(headers)
            with translated("sending a message"):
                await self._nc.publish(subject, payload, headers=headers)
            return
        with tracing.send_span(subject, headers, message_id=msg_id), translated("sending a message"):
            await self._nc.publish(subject, payload, headers=headers)

    async def last_message(self, stream: str, subject: str) -> StoredMessage | None:
        """The last message stored on ``subject``, or None when there is none."""
        with translated(f"reading {stream}"):
            try:
                raw = await self._js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                return None
        return StoredMessage(seq=raw.seq or 0, subject=raw.subject or subject, data=raw.data or b"", headers={})

    async def settled_last_message(self, stream: str, subject: str, *, within_s: float) -> StoredMessage | None:
        """``last_message``, asked again (5 ms, then doubling) for up to ``within_s`` while there is none: for a
        message sent with ``publish_nowait`` just before, which may still be on its way into the stream."""
        deadline = time.monotonic() + within_s
        pause_s = 0.005
        while True:
            found = await self.last_message(stream, subject)
            left_s = deadline - time.monotonic()
            if found is not None or left_s <= 0:
                return found
            await asyncio.sleep(min(pause_s, left_s))
            pause_s *= 2

    async def read(
        self,
        *,
        stream: str,
        subject: str,
        start_seq: int = 1,
        timeout_s: float = READ_TIMEOUT_S,
        batch: int = READ_BATCH_MESSAGES,
    ) -> AsyncGenerator[StoredMessage, None]:
        """Every message on ``subject`` (wildcards allowed) from ``start_seq`` on, in stream order, until the end.

        Batched direct gets (``$JS.API.DIRECT.GET``, ``next_by_subj``, ``batch``, ``max_bytes``): at most one batch
        is held at a time, no server-side consumer is created per read, and any replica of the stream can answer.
        A reader that stops early asks for smaller ``batch``es: the rest of a batch is sent (and parsed) anyway.
        """
        with translated(f"reading {stream}"):
            inbox, replies = await self._replies.open()
        request_subject = f"$JS.API.DIRECT.GET.{stream}"
        seq = start_seq
        try:
            with translated(f"reading {stream}"):
                while True:
                    request = {
                        "seq": seq,
                        "next_by_subj": subject,
                        "batch": max(1, min(batch, READ_BATCH_MESSAGES)),
                        "max_bytes": READ_BATCH_BYTES,
                    }
                    await self._nc.publish(request_subject, json.dumps(request).encode(), reply=inbox)
                    while True:
                        async with asyncio.timeout(timeout_s):
                            msg = await replies.get()
                        headers = dict(msg.headers or {})
                        status = headers.get("Status")
                        if status == "404":  # nothing (more) on the subject
                            return
                        if status == "204":  # end of this batch
                            if int(headers.get("Nats-Num-Pending", "0")) == 0:
                                return
                            break
                        if status:
                            raise Unavailable(f"reading {stream} failed: {status} {headers.get('Description', '')}")
                        stored = StoredMessage(
                            seq=int(headers["Nats-Sequence"]),
                            subject=headers["Nats-Subject"],
                            data=msg.data,
                            headers=headers,
                        )
                        seq = stored.seq + 1
                        yield stored
        finally:
            self._replies.close(inbox)  # what is still on its way to it is dropped

    async def last_of_each(self, stream: str, subjects: list[str]) -> dict[str, StoredMessage]:
        """The last message stored on each of ``subjects`` (those that have one), by one batched direct get
        (``multi_last``): a page of records costs one request, not one per record."""
        if not subjects:
            return {}
        inbox = self._nc.new_inbox()
        found: dict[str, StoredMessage] = {}
        with translated(f"reading {stream}"):
            sub = await self._nc.subscribe(inbox)
            try:
                request = {"multi_last": subjects, "batch": len(subjects)}
                await self._nc.publish(f"$JS.API.DIRECT.GET.{stream}", orjson.dumps(request), reply=inbox)
                while True:
                    msg = await sub.next_msg(timeout=self.publish_timeout_s)
                    headers = dict(msg.headers or {})
                    status = headers.get("Status")
                    if status in ("204", "404"):  # the end of the batch; none of them stored
                        return found
                    if status:
                        raise Unavailable(f"reading {stream} failed: {status} {headers.get('Description', '')}")
                    subject = headers["Nats-Subject"]
                    found[subject] = StoredMessage(
                        seq=int(headers["Nats-Sequence"]), subject=subject, data=msg.data, headers=headers
                    )
            finally:
                with contextlib.suppress(*NATS_ERRORS):
                    await sub.unsubscribe()

    async def stream_bounds(self, stream: str) -> tuple[int, int, str]:
        """The sequences of the first and last message ``stream`` stores (messages below the first expired or were
        removed), and when the stream was created: another time means it was made again (sequences from 1)."""
        with translated(f"reading {stream}"):
            info = await self._js.stream_info(stream)
        created = info.created.isoformat() if info.created is not None else ""
        return int(info.state.first_seq or 0), int(info.state.last_seq or 0), created

    async def stream_messages(self, stream: str) -> int:
        """How many messages ``stream`` stores now (one ``STREAM.INFO``): for a work-queue stream, every message
        not yet acked, whichever consumer holds or will take it."""
        with translated(f"reading {stream}"):
            info = await self._js.stream_info(stream)
        return int(info.state.messages or 0)

    async def place(self, stream: str, *, subject: str, seq: int) -> Place | None:
        """Where message ``seq`` stands on ``subject``; None when it is no longer stored there."""
        with translated(f"reading {stream}"):
            info = await self._js.stream_info(stream, subjects_filter=subject)
            request = {"seq": seq, "next_by_subj": subject, "batch": 1}
            reply = await self._nc.request(
                f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=self.publish_timeout_s
            )
        headers = reply.headers or {}
        if headers.get("Status") or headers.get("Nats-Sequence") != str(seq):
            return None
        total = (info.state.subjects or {}).get(subject, 0)
        return Place(total=total, after=int(headers.get("Nats-Num-Pending", "0")))

    async def _first_from(self, stream: str, subject: str, seq: int) -> dict[str, str]:
        """The headers of the first message on ``subject`` (wildcards allowed) from ``seq`` on; empty when none."""
        request: dict[str, Any] = {"seq": seq, "next_by_subj": subject}
        reply = await self._nc.request(
            f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=self.publish_timeout_s
        )
        headers = dict(reply.headers or {})
        return {} if headers.get("Status") else headers

    async def stored_age_s(self, stream: str, *, subject: str, seq: int = 1) -> float:
        """Seconds since the first message on ``subject`` (wildcards allowed) from ``seq`` on was stored; 0 when
        there is none. One direct get."""
        with translated(f"reading {stream}"):
            headers = await self._first_from(stream, subject, max(1, seq))
        stamp = headers.get("Nats-Time-Stamp")
        return max(0.0, time.time() - _parse_stamp(stamp)) if stamp else 0.0

    async def subject_counts(self, stream: str, subject: str) -> dict[str, int]:
        """Messages stored per subject matching ``subject`` (wildcards allowed): one request."""
        with translated(f"reading {stream}"):
            info = await self._js.stream_info(stream, subjects_filter=subject)
        return dict(info.state.subjects or {})

    async def consumer_loads(self, stream: str) -> list[ConsumerLoad]:
        """Every consumer of ``stream`` with what it holds: one ``CONSUMER.LIST`` request per 256 consumers."""
        loads: list[ConsumerLoad] = []
        with translated(f"listing the consumers of {stream}"):
            while True:
                page = await self._js.consumers_info(stream, offset=len(loads) or None)
                loads.extend(ConsumerLoad.of(info) for info in page)
                if len(page) < _CONSUMER_PAGE:
                    return loads

    async def backlog(self, stream: str, consumer: str) -> Backlog:
        """What a durable consumer has not taken yet: how many messages, and how old the oldest is."""
        with translated(f"reading consumer {consumer}"):
            info = await self._js.consumer_info(stream, consumer)
            pending = int(info.num_pending or 0)
            in_flight = int(info.num_ack_pending or 0)
            if not pending:
                return Backlog(pending=0, oldest_age_s=0.0, in_flight=in_flight)
            first = int(info.delivered.stream_seq or 0) + 1 if info.delivered else 1
            config = info.config
            filters = (config.filter_subjects or [config.filter_subject or ">"]) if config else [">"]
            # With several filters (a lane's default and tenant subjects) the oldest is the first of their firsts.
            replies = [await self._first_from(stream, subject, first) for subject in filters]
            found = [headers for headers in replies if headers.get("Nats-Sequence")]
            reply_headers = min(found, key=lambda h: int(h["Nats-Sequence"])) if found else {}
        stamp = reply_headers.get("Nats-Time-Stamp")
        if not stamp:
            return Backlog(pending=pending, oldest_age_s=0.0, in_flight=in_flight)
        return Backlog(pending=pending, oldest_age_s=max(0.0, time.time() - _parse_stamp(stamp)), in_flight=in_flight)

    async def subscribe(self, subject: str, on_message: OnMessage, *, pending_limit: int = 65536) -> Subscription:
        """A plain subscription (no storage, no acks): wake-ups and notifications."""

        async def deliver(msg: Msg) -> None:
            await on_message(msg.subject, msg.data)

        with translated(f"subscribing to {subject}"):
            sub = await self._nc.subscribe(subject, cb=deliver, pending_msgs_limit=pending_limit)
        return Subscription(sub)

    async def watch(self, stream: str, subject: str, on_stored: OnStored) -> Watch:
        """Every stored message on ``subject`` (the last per subject), then each new one, in stream order."""
        return await watch(self._js, stream=stream, subject=subject, on_stored=on_stored)

    async def nak_delivery(self, reply: str) -> None:
        """Hand back a delivery another process took (by its ack subject, ``Delivery.reply``): redelivered at once
        instead of after AckWait. For the delivery of a dispatcher known to be dead; ``Unavailable`` if not sent."""
        if not reply.startswith("$JS.ACK."):
            raise ValueError(f"not a JetStream ack subject: {reply!r}")
        with translated("handing a message back"):
            await self._nc.publish(reply, b"-NAK")
            await self._nc.flush(timeout=max(1, round(self.publish_timeout_s)))

    async def pull_consumer(self, stream: str, config: Any) -> PullConsumer:
        """Create (or update) the durable consumer ``config`` describes and bind to it."""
        with translated(f"binding consumer {config.durable_name}"):
            await topology.ensure_consumer(self._js, stream, config)
            sub = await self._js.pull_subscribe_bind(durable=config.durable_name, stream=stream)
        return PullConsumer(sub, nc=self._nc, next_subject=f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{config.durable_name}")

    async def bucket(self, config: Any) -> Bucket:
        """The KV bucket ``config`` describes, created or brought up to date."""
        with translated(f"opening bucket {config.bucket}"):
            kv = await topology.ensure_bucket(self._js, config)
        return Bucket(kv, name=config.bucket)

    async def objects(self, config: Any) -> Objects:
        """The Object Store bucket ``config`` describes, created or brought up to date."""
        with translated(f"opening object store {config.bucket}"):
            await ensure_objects(self._js, config)
        return Objects(self._nc, self._js, bucket=config.bucket, timeout_s=self.publish_timeout_s)

    async def object_chunks(self, objects: Objects, chunk_subject: str) -> AsyncGenerator[bytes, None]:
        """An object's chunks in order (``Objects.located`` names the subject), read in bounded batches."""
        async for message in self.read(stream=objects.stream, subject=chunk_subject, batch=8):
            yield message.data

    async def close(self) -> None:
        if self._nc.is_closed:
            return
        try:
            await self._nc.drain()
        except NATS_ERRORS as exc:
            log.warning("NATS drain failed (%s); closing", exc)
            await self._nc.close()


def _refuse_too_large(payload: bytes, headers: Mapping[str, str] | None, max_payload: int) -> None:
    """``PayloadTooLarge`` for a message the server would refuse: it counts the headers too, and answers one over
    its limit by resetting the connection, failing every publish in flight on it (nats-py checks the payload only).

    Permanent, unlike the errors of a send: retrying the same message can never succeed.
    """
    size = len(payload)
    if headers:  # NATS/1.0\r\n, a "key: value\r\n" line each, \r\n
        size += 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    if size > max_payload:
        raise PayloadTooLarge(f"the message is {size} bytes; the message broker takes at most {max_payload}")


class _Acks:
    """JetStream publishes of one connection and their acks, which all arrive on one wildcard inbox subscription.

    What nats-py's ``JetStreamContext.publish`` does, leaner: a counter names each publish's reply subject (no NUID
    and random bytes each), ``asyncio.timeout`` bounds the wait (no ``wait_for`` and its extra future), and the ack
    is read with orjson into ``Published`` (no ``json`` and ``PubAck``). Its errors are nats-py's: an ack with an
    ``error`` raises ``APIError``, no stream on the subject ``NoStreamResponseError``, no ack in time ``TimeoutError``.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._count = 0
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._subscribed = asyncio.Lock()

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], *, timeout_s: float) -> Published:
        if not self._prefix:
            await self._subscribe()
        self._count += 1
        token = str(self._count)
        ack: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = ack
        try:
            _refuse_too_large(payload, headers, self._nc.max_payload)  # the headers as sent, trace context included
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            async with asyncio.timeout(timeout_s):
                msg = await ack
        finally:
            del self._waiting[token]
        if msg.headers and msg.headers.get("Status") == "503":
            raise nats.js.errors.NoStreamResponseError
        answer = orjson.loads(msg.data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        return Published(seq=answer["seq"], duplicate=bool(answer.get("duplicate")))

    async def _subscribe(self) -> None:
        async with self._subscribed:
            if not self._prefix:
                prefix = f"{self._nc.new_inbox()}."
                await self._nc.subscribe(f"{prefix}*", cb=self._deliver)
                self._prefix = prefix

    async def _deliver(self, msg: Msg) -> None:
        ack = self._waiting.get(msg.subject[len(self._prefix) :])
        if ack is not None and not ack.done():
            ack.set_result(msg)


class _Replies:
    """Reply subjects for requests answered by several messages (batched direct gets), all on one wildcard inbox
    subscription of the connection: a read no longer subscribes and unsubscribes (a subscription per read was a
    tenth of a logs process's CPU with a thousand live followers)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._count = 0
        self._open: dict[str, asyncio.Queue[Msg]] = {}
        self._subscribed = asyncio.Lock()

    async def open(self) -> tuple[str, asyncio.Queue[Msg]]:
        """A reply subject of its own and the queue its messages arrive in (until ``close``)."""
        if not self._prefix:
            async with self._subscribed:
                if not self._prefix:
                    prefix = f"{self._nc.new_inbox()}."
                    await self._nc.subscribe(f"{prefix}*", cb=self._deliver)
                    self._prefix = prefix
        self._count += 1
        inbox = f"{self._prefix}{self._count}"
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._open[inbox] = queue
        return inbox, queue

    def close(self, inbox: str) -> None:
        self._open.pop(inbox, None)

    async def _deliver(self, msg: Msg) -> None:
        queue = self._open.get(msg.subject)
        if queue is not None:
            queue.put_nowait(msg)


@dataclass(frozen=True)
class Backlog:
    pending: int
    """Messages the consumer has not delivered yet."""
    oldest_age_s: float
    """Seconds since the oldest of them was stored (0 when there is none)."""
    in_flight: int = 0
    """Messages delivered and not acked yet: jobs a dispatcher holds (running, or its holder died within AckWait)."""


_CONSUMER_PAGE = 256
"""Consumers per ``CONSUMER.LIST`` answer (the server's page size)."""


@dataclass(frozen=True)
class ConsumerLoad:
    """One durable consumer's numbers, as the cluster has them (the same for every process that reads them)."""

    name: str
    pending: int
    """Messages not delivered yet (waiting jobs)."""
    ack_pending: int
    """Messages delivered and not acked yet (jobs running, or whose holder died within AckWait)."""
    last_active: float
    """When it last delivered a message (epoch seconds; 0 if never)."""

    @classmethod
    def of(cls, info: Any) -> ConsumerLoad:
        delivered = info.delivered
        active = delivered.last_active.timestamp() if delivered is not None and delivered.last_active else 0.0
        return cls(
            name=info.name or "",
            pending=int(info.num_pending or 0),
            ack_pending=int(info.num_ack_pending or 0),
            last_active=active,
        )


def _parse_stamp(stamp: str) -> float:
    """A ``Nats-Time-Stamp`` (RFC 3339, nanoseconds, UTC) as a Unix time."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def encode(body: Any) -> bytes:
    return orjson.dumps(body)


async def connect(settings: Settings, *, name: str, retry_for_s: float = CONNECT_RETRY_S) -> Messaging:
    """Connect (retrying for ``retry_for_s`` while NATS starts up) and make sure the topology exists."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    connected: list[Client] = []

    async def on_disconnect() -> None:
        if connected and connected[0].is_closed:
            return  # our own close (shutdown, or a start-up attempt that failed), not an outage
        log.warning("NATS: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS: reconnected")

    deadline = time.monotonic() + retry_for_s
    servers = [s.strip() for s in settings.nats.url.split(",") if s.strip()]
    while True:
        try:
            with translated(f"connecting to NATS at {settings.nats.url}"):
                nc = await _connect_once(
                    within_s=settings.nats.connect_timeout_s * len(servers) + 1.5,
                    servers=servers,
                    name=name,
                    connect_timeout=settings.nats.connect_timeout_s,  # type: ignore[arg-type,unused-ignore]
                    reconnect_time_wait=1,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    drain_timeout=5,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                )
            break
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("NATS at %s not reachable yet (%s); retrying", settings.nats.url, exc.detail)
            await asyncio.sleep(1.0)
    connected.append(nc)
    messaging = Messaging(nc, publish_timeout_s=settings.nats.publish_timeout_s)
    try:
        await messaging.ensure_topology(settings)
    except BaseException:
        await messaging.close()  # a start-up retried later connects again: this connection must not linger
        raise
    return messaging


async def _connect_once(*, within_s: float, **options: Any) -> Client:
    """One try at the servers, for at most ``within_s``: with reconnects unbounded (as wanted once connected),
    nats-py's first connect would otherwise go round the servers forever while none answers."""
    nc = Client()
    try:
        async with asyncio.timeout(within_s):
            await nc.connect(**options)
    except OSError as exc:  # refused or unreachable before the client wraps it: the same as a NATS outage
        await nc.close()
        raise nats.errors.NoServersError from exc
    except BaseException:
        await nc.close()
        raise
    return nc


MESSAGING = web.AppKey("messaging", Messaging)


async def nats_ready(app: web.Application) -> str | None:
    return None if app[MESSAGING].connected else "NATS is not reachable"


def messaging_context(settings: Settings, *, name: str) -> Any:
    """A start-up step (``runtime.startup.retrying``): connect and set up the streams, drain after the app stops.

    One try: the start-up retries it with backoff, saying why on ``/readyz``."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[MESSAGING] = await connect(settings, name=name, retry_for_s=0)
        app[hades_app.READINESS_CHECKS].append(nats_ready)
        yield
        await app[MESSAGING].close()

    return context
