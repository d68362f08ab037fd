"""Watching a stream's subjects: every stored message (the last per subject first), then each new one as it comes.

For read models a process derives from a stream or KV bucket and keeps current (the logs function's listing
index): an ordered push consumer (ephemeral, flow-controlled, re-created by nats-py from the last sequence seen
after a gap or a reconnect), so the callback sees the messages in stream order, each once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js import api as js_api

from runtime.messaging.errors import NATS_ERRORS, translated

OnStored = Callable[[int, str, bytes, dict[str, str]], None]
"""A watch's callback: stream sequence, subject, payload and headers of each message (called on the loop)."""

YIELD_EVERY_MESSAGES = 256
"""A watch lets the loop run other work after this many messages in a row."""
INACTIVE_THRESHOLD_S = 300.0
"""The server drops a watch's consumer this long after its process stopped asking."""


class Watch:
    """A running watch; ``close`` ends it."""

    def __init__(self, subscription: NatsSubscription) -> None:
        self._sub = subscription

    async def close(self) -> None:
        with contextlib.suppress(*NATS_ERRORS):
            await self._sub.unsubscribe()


async def watch(js: JetStreamContext, *, stream: str, subject: str, on_stored: OnStored) -> Watch:
    """Start watching ``subject`` (wildcards allowed) in ``stream``: the last message of every subject, then live."""

    delivered = 0

    async def deliver(msg: Msg) -> None:
        nonlocal delivered
        headers = dict(msg.headers or {})
        on_stored(msg.metadata.sequence.stream, msg.subject, msg.data, headers)
        delivered += 1
        if delivered % YIELD_EVERY_MESSAGES == 0:
            # nats-py hands over queued messages without returning to the loop: a watch catching up on 100,000 would
            # hold it for seconds (requests, probes and heartbeats waiting meanwhile).
            await asyncio.sleep(0)

    with translated(f"watching {stream}"):
        sub = await js.subscribe(
            subject,
            stream=stream,
            cb=deliver,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=INACTIVE_THRESHOLD_S,
        )
    return Watch(sub)
