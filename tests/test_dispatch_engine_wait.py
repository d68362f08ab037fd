"""Dispatch started before the container engine: not ready, jobs wait, then they run once the engine answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from functions.dispatch.handlers import create_app as create_dispatch
from functions.submit.handlers import create_app as create_submit
from tests.helpers import make_settings, poll
from tests.natsserver import free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]
DOCKER_SOCKET = "/var/run/docker.sock"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def engine_at(port: int) -> AsyncIterator[None]:
    """The local engine's unix socket, reachable at tcp://127.0.0.1:<port> from now on."""

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(DOCKER_SOCKET)
        await asyncio.gather(_pipe(client_reader, engine_writer), _pipe(engine_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def test_dispatch_waits_for_the_engine_then_runs_the_queued_job(
    aiohttp_client: Any, clean_nats: str, busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.dispatch import handlers

    monkeypatch.setattr(handlers, "ENGINE_RETRY_S", 0.5)
    port = free_port()
    settings = make_settings(clean_nats, HADES_DOCKER_HOST=f"tcp://127.0.0.1:{port}", HADES_PULL_TIMEOUT_SECONDS="0.5")
    dispatch = await aiohttp_client(create_dispatch(settings))  # nothing answers at that address yet
    submit = await aiohttp_client(create_submit(settings))

    response = await dispatch.get("/readyz")
    assert response.status == 503
    assert "waiting for the container engine" in json.dumps(await response.json())
    body = {"name": "waits", "steps": [{"id": 1, "image": busybox_image, "script": "echo ran"}]}
    job_id = (await (await submit.post("/jobs", json=body)).json())["id"]

    async with engine_at(port):

        async def ready() -> bool:
            return (await dispatch.get("/readyz")).status == 200

        await poll(ready, timeout_s=30, interval_s=0.2)
        nc = await nats.connect(clean_nats)
        try:

            async def succeeded() -> bool:
                msg = await nc.jetstream().get_last_msg("HADES_EVENTS", f"hades.status.{job_id}")
                return json.loads(msg.data)["status"] == "succeeded"

            await poll(succeeded, timeout_s=60, interval_s=0.2)
        finally:
            await nc.close()


async def test_a_broker_hiccup_while_binding_the_consumers_is_retried(
    aiohttp_client: Any, clean_nats: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the first seconds, a failed start must not leave dispatch forever not ready (nor leak what it bound)."""
    from functions.dispatch import dispatcher as dispatcher_module
    from functions.dispatch import handlers as dispatch_handlers
    from runtime.errors import Unavailable

    monkeypatch.setattr(dispatch_handlers, "ENGINE_RETRY_S", 0.2)
    real_start = dispatcher_module.Dispatcher.start
    failures = [Unavailable("binding consumer dispatch-high: the message broker is not reachable")] * 3

    async def flaky_start(self: Any) -> None:
        if failures:
            raise failures.pop()
        await real_start(self)

    monkeypatch.setattr(dispatcher_module.Dispatcher, "start", flaky_start)
    client = await aiohttp_client(create_dispatch(make_settings(clean_nats)))

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await poll(ready, timeout_s=30)
    assert failures == []
