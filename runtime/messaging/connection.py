"""The NATS connection every function holds: connect with retry and reconnect, publish with ids and trace headers.

Publishing translates every NATS failure into ``Unavailable``, so callers answer 503 (submit) or retry later
(dispatch) and never mistake an unstored message for a stored one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from runtime import topology, tracing
from runtime import web as hades_web
from runtime.errors import PayloadTooLarge, Unavailable, truncate
from runtime.settings import Settings

log = logging.getLogger(__name__)

CONNECT_RETRY_S = 60.0
"""How long start-up keeps trying to reach NATS before the function gives up (and its pod restarts)."""


class Messaging:
    """One NATS connection and its JetStream context."""

    def __init__(self, nc: Client, *, publish_timeout_s: float) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=publish_timeout_s)
        self.publish_timeout_s = publish_timeout_s

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> js_api.PubAck:
        """Store ``payload`` in JetStream and wait for the ack; ``Unavailable`` if it is not stored."""
        if not self.connected:
            raise Unavailable("the message broker is not reachable")
        if len(payload) > self.nc.max_payload:
            # Permanent, unlike the errors below: retrying the same message can never succeed.
            raise PayloadTooLarge(
                f"the message is {len(payload)} bytes; the message broker takes at most {self.nc.max_payload}"
            )
        hdrs: dict[str, str] = dict(headers or {})
        if msg_id is not None:
            hdrs[topology.HEADER_MSG_ID] = msg_id
        tracing.inject(hdrs)
        try:
            return await self.js.publish(subject, payload, headers=hdrs, timeout=self.publish_timeout_s)
        except nats.js.errors.APIError as exc:
            raise Unavailable(f"the message broker did not store the message: {truncate(str(exc))}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"the message broker is not reachable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("NATS drain failed (%s); closing", exc)
            await self.nc.close()


def encode(body: Any) -> bytes:
    return orjson.dumps(body)


async def connect(settings: Settings, *, name: str) -> Messaging:
    """Connect (retrying while NATS starts up) and make sure the topology exists."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    async def on_disconnect() -> None:
        log.warning("NATS: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS: reconnected")

    deadline = time.monotonic() + CONNECT_RETRY_S
    servers = [s.strip() for s in settings.nats.url.split(",") if s.strip()]
    while True:
        try:
            nc = await nats.connect(
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
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"cannot reach NATS at {settings.nats.url}: {exc}") from exc
            log.warning("NATS at %s not reachable yet (%s); retrying", settings.nats.url, exc)
            await asyncio.sleep(1.0)
    messaging = Messaging(nc, publish_timeout_s=settings.nats.publish_timeout_s)
    await topology.ensure_topology(messaging.js, settings)
    return messaging


MESSAGING = web.AppKey("messaging", Messaging)


async def nats_ready(app: web.Application) -> str | None:
    return None if app[MESSAGING].connected else "NATS is not reachable"


def messaging_context(settings: Settings, *, name: str) -> Any:
    """A ``cleanup_ctx`` entry: connect before the app serves, drain after it stops."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[MESSAGING] = await connect(settings, name=name)
        app[hades_web.READINESS_CHECKS].append(nats_ready)
        yield
        await app[MESSAGING].close()

    return context
