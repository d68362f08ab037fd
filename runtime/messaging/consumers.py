"""What the door hands out for reading: a delivered message, a durable pull consumer, a plain subscription.

Each wraps its nats-py object so that callers ack, nak, fetch and unsubscribe without touching NATS types, and
every failure arrives as ``Unavailable`` (``runtime.messaging.errors``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext

from runtime.messaging.errors import NATS_ERRORS, translated


class Delivery:
    """One message delivered by a durable consumer, with its acknowledgements."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._msg.headers or {})

    @property
    def reply(self) -> str:
        """The ack subject of this delivery: ``Messaging.nak_delivery`` hands it back from another process."""
        return self._msg.reply

    @property
    def consumer(self) -> str:
        """The durable consumer that delivered it."""
        return consumer_of(self._msg.reply)

    @property
    def attempt(self) -> int:
        """How often this message has been delivered, this time included (1 on the first delivery)."""
        return int(self._msg.metadata.num_delivered)

    async def ack(self) -> None:
        """Acknowledge and wait until the server has it (``Unavailable`` if it may not have)."""
        with translated("acknowledging a message"):
            await self._msg.ack_sync()

    async def ack_nowait(self) -> None:
        """Acknowledge without waiting for the server's confirmation: for a consumer whose work is idempotent, so a
        lost ack costs one redelivery that changes nothing (``Unavailable`` only when the connection is down)."""
        with translated("acknowledging a message"):
            await self._msg.ack()

    async def nak(self, *, delay_s: float | None = None) -> None:
        """Hand the message back for redelivery, after ``delay_s`` when given."""
        with translated("handing a message back"):
            await self._msg.nak(delay=delay_s)

    async def in_progress(self) -> None:
        """Reset the consumer's AckWait for this message: its work is still going on."""
        with translated("extending a message's ack wait"):
            await self._msg.in_progress()

    async def term(self) -> None:
        """Never deliver this message again (it cannot be processed)."""
        with translated("dropping a message"):
            await self._msg.term()


def consumer_of(reply: str) -> str:
    """The consumer a delivery's ack subject (``Delivery.reply``) names; "" when it is not one. Both forms:
    ``$JS.ACK.<stream>.<consumer>.…`` (9 tokens) and, with a domain and account, ``$JS.ACK.<domain>.<account>.
    <stream>.<consumer>.…`` (12 or more)."""
    tokens = reply.split(".")
    if tokens[:2] != ["$JS", "ACK"]:
        return ""
    if len(tokens) == 9:
        return tokens[3]
    return tokens[5] if len(tokens) >= 12 else ""


class PullConsumer:
    """A bound durable pull consumer."""

    def __init__(self, subscription: JetStreamContext.PullSubscription, *, nc: Client, next_subject: str) -> None:
        self._sub = subscription
        self._nc = nc
        self._next_subject = next_subject
        """``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``: where a pull request goes."""
        self._ready: NatsSubscription | None = None

    async def fetch_ready(self, *, timeout_s: float) -> Delivery | None:
        """One message the consumer can deliver right now — a waiting one, or a redelivery that is due — or None as
        soon as the server says it has none (a ``no_wait`` pull request). Unlike ``fetch``, no request lingers at
        the server for ``timeout_s`` to take a message stored meanwhile; ``timeout_s`` only bounds the round trip.
        On its own inbox: the server sends a delivery under the job's subject, so a request/reply mux would not
        match it to the request."""
        with translated("fetching a message"):
            if self._ready is None:
                self._ready = await self._nc.subscribe(self._nc.new_inbox())
            while self._ready.pending_msgs:  # answers to earlier requests that timed out: a delivery is still one
                earlier = await self._ready.next_msg(timeout=timeout_s)
                if not _is_status(earlier):
                    return Delivery(earlier)
            await self._nc.publish(self._next_subject, _NO_WAIT, reply=self._ready.subject)
            try:
                answer = await self._ready.next_msg(timeout=timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                return None
        return None if _is_status(answer) else Delivery(answer)

    async def fetch(self, batch: int, *, timeout_s: float) -> list[Delivery]:
        """Up to ``batch`` messages; empty when none came within ``timeout_s``."""
        with translated("fetching messages"):
            try:
                msgs = await self._sub.fetch(batch, timeout=timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                return []
        return [Delivery(msg) for msg in msgs]

    async def pending(self) -> int:
        """Messages waiting to be delivered (not counting those delivered and not yet acked)."""
        with translated("reading a consumer's state"):
            info = await self._sub.consumer_info()
        return int(info.num_pending or 0)

    async def close(self) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self._sub.unsubscribe()
            if self._ready is not None:
                await self._ready.unsubscribe()


_NO_WAIT = b'{"batch": 1, "no_wait": true}'


def _is_status(msg: Msg) -> bool:
    """A status answer to a pull request (404 no messages, 408 expired, 409 at max ack pending…), not a message."""
    return bool((msg.headers or {}).get("Status"))


class Subscription:
    """A plain (core NATS) subscription; messages go to a callback with the subject."""

    def __init__(self, subscription: NatsSubscription) -> None:
        self._sub = subscription

    async def close(self) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self._sub.unsubscribe()


OnMessage = Callable[[str, bytes], Awaitable[None]]
"""A subscription's callback: the subject and the payload of each message."""
