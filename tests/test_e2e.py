"""The whole system: submit, dispatch on real Docker, logs over HTTP and SSE, callbacks, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from functions.dispatch.handlers import create_app as create_dispatch
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from runtime.settings import Settings
from tests.helpers import make_settings, poll
from tests.natsserver import NatsServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def settings_for(server: NatsServer, **env: str) -> Settings:
    return make_settings(server.url, HADES_PULL_TIMEOUT_SECONDS="0.5", **env)


@pytest.fixture
async def system(
    own_nats: NatsServer, aiohttp_client: Any, busybox_image: str
) -> AsyncIterator[tuple[TestClient, TestClient, Settings]]:
    settings = settings_for(own_nats)
    dispatcher = TestServer(create_dispatch(settings))
    await dispatcher.start_server()
    submit = await aiohttp_client(create_submit(settings))
    logs = await aiohttp_client(create_logs(settings))
    yield submit, logs, settings
    await dispatcher.close()


async def submit_job(submit: TestClient, script: str, **job: Any) -> str:
    body = {"name": "e2e", "steps": [{"id": 1, "image": "hades-test-busybox:1", "script": script}], **job}
    response = await submit.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    return str((await response.json())["id"])


async def read_sse(response: aiohttp.ClientResponse, *, until: str = "end") -> AsyncIterator[dict[str, str]]:
    """Parse Server-Sent Events as they arrive."""
    event: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if event:
                yield event
                if event.get("event") == until:
                    return
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        event[field] = event[field] + "\n" + value if field in event else value


async def test_live_logs_arrive_before_the_job_ends_and_resume_without_gap(
    system: tuple[TestClient, TestClient, Settings],
) -> None:
    submit, logs, _ = system
    job_id = await submit_job(submit, "echo first; sleep 3; echo second; echo third")
    seen: list[dict[str, str]] = []
    async with logs.session.get(logs.make_url(f"/jobs/{job_id}/logs/stream")) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        async for event in read_sse(response):
            seen.append(event)
            if event.get("event", "message") == "message" and json.loads(event["data"])["message"] == "first":
                first_at = time.monotonic()
                record = await (await logs.get(f"/jobs/{job_id}")).json()
                # The line came while the job still ran (the record may still lag behind the stream: not "running").
                assert record["status"] in ("queued", "running"), record
                break
    lines = [e for e in seen if e.get("event", "message") == "message"]
    assert [json.loads(e["data"])["message"] for e in lines] == ["first"]

    # Reconnect from the last id: the rest, no repeat, no gap, then the final status.
    resumed: list[dict[str, str]] = []
    headers = {"Last-Event-ID": lines[-1]["id"]}
    async with logs.session.get(logs.make_url(f"/jobs/{job_id}/logs/stream"), headers=headers) as response:
        async for event in read_sse(response):
            resumed.append(event)
    messages = [json.loads(e["data"])["message"] for e in resumed if e.get("event", "message") == "message"]
    assert messages == ["second", "third"]
    assert time.monotonic() - first_at > 2  # the rest really came live, after the sleep
    end = resumed[-1]
    assert end["event"] == "end" and json.loads(end["data"])["status"] == "succeeded"


async def test_restarts_of_logs_and_of_nats_with_its_store_lose_nothing(
    own_nats: NatsServer, aiohttp_client: Any, aiohttp_server: Any, busybox_image: str
) -> None:
    settings = settings_for(own_nats)
    dispatcher = await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit(settings))
    logs = await aiohttp_client(create_logs(settings))
    job_id = await submit_job(submit, "for i in $(seq 1 500); do echo line-$i; done")

    async def finished() -> bool:
        response = await logs.get(f"/jobs/{job_id}/status")
        return response.status == 200 and (await response.json())["status"] == "Succeeded"

    await poll(finished, timeout_s=60, interval_s=0.2)
    before = await (await logs.get(f"/jobs/{job_id}")).json()
    await logs.close()
    await dispatcher.close()
    await submit.close()

    own_nats.stop()
    own_nats.start()  # same port, same store

    logs = await aiohttp_client(create_logs(settings))
    after = await (await logs.get(f"/jobs/{job_id}")).json()
    assert after["status"] == before["status"] == "succeeded"
    assert after["steps"] == before["steps"]
    text = await (await logs.get(f"/jobs/{job_id}/logs?format=text")).text()
    assert [line for line in text.splitlines() if line.startswith("line-")] == [f"line-{i}" for i in range(1, 501)]


async def test_a_finished_job_posts_one_signed_callback(
    own_nats: NatsServer, aiohttp_client: Any, aiohttp_server: Any, busybox_image: str
) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    receiver_app = web.Application()
    receiver_app.router.add_post("/results", receive)
    receiver = await aiohttp_server(receiver_app)
    settings = settings_for(
        own_nats,
        HADES_CALLBACK_SECRET="shh",
        HADES_CALLBACK_ALLOWED_HOSTS="127.0.0.1",
        HADES_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",  # the receiver is on loopback, refused by default
    )
    await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit(settings))
    await aiohttp_client(create_logs(settings))
    url = f"http://127.0.0.1:{receiver.port}/results"
    job_id = await submit_job(submit, "echo graded: 42", callback_url=url)

    async def delivered() -> bool:
        return bool(received)

    await poll(delivered, timeout_s=60, interval_s=0.2)
    await asyncio.sleep(0.5)  # a second (wrong) delivery would arrive about now
    [(body, headers)] = received
    expected = hmac.new(b"shh", body, hashlib.sha256).hexdigest()
    assert headers["X-Hades-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["job"]["id"] == job_id and payload["job"]["status"] == "succeeded"
    assert [line["message"] for entry in payload["logs"] for line in entry["logs"]] == ["graded: 42"]
