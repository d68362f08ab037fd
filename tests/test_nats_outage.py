"""NATS going away and coming back: submit answers 503 (never 500, never a hang) and recovers by itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats

from functions.submit.handlers import create_app
from tests.helpers import EXAMPLES, make_settings, poll
from tests.natsserver import NatsServer

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())


async def test_submit_answers_503_while_nats_is_down_and_recovers(aiohttp_client: Any, own_nats: NatsServer) -> None:
    client = await aiohttp_client(create_app(make_settings(own_nats.url, HADES_NATS_PUBLISH_TIMEOUT_SECONDS="2")))
    first = await client.post("/jobs", json=HELLO)
    assert first.status == 202
    stored_id = (await first.json())["id"]
    assert (await client.get("/readyz")).status == 200

    own_nats.stop()

    async def not_ready() -> bool:
        return (await client.get("/readyz")).status == 503

    await poll(not_ready, timeout_s=10)
    response = await asyncio.wait_for(client.post("/jobs", json=HELLO), timeout=5)
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert "not reachable" in (await response.json())["detail"]
    cancel = await asyncio.wait_for(client.delete(f"/jobs/{stored_id}"), timeout=10)
    assert cancel.status == 503 and "Retry-After" in cancel.headers

    own_nats.start()  # same port, same store: the stored job must still be there

    async def accepted() -> bool:
        return (await client.post("/jobs", json=HELLO)).status == 202

    await poll(accepted, timeout_s=15, interval_s=0.5)
    assert (await client.get("/readyz")).status == 200
    nc = await nats.connect(own_nats.url)
    try:
        stored = await nc.jetstream().get_last_msg("HADES_JOBS", "hades.jobs.high")
        first_stored = await nc.jetstream().get_msg("HADES_JOBS", 1)
    finally:
        await nc.close()
    assert json.loads(first_stored.data)["id"] == stored_id  # the job stored before the outage is still there
    assert stored.seq > first_stored.seq
