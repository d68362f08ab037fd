"""Result callbacks: one signed POST per finished job, retried on 5xx/429, refused for hosts not allowed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from functions.logs.handlers import create_app
from runtime import callbacks, messaging
from runtime.jobs import JobStatus
from tests.conftest import make_settings
from tests.helpers import poll
from tests.test_logs_api import FakeDispatch, conn, new_job, record_when

__all__ = ["conn"]  # the fixture, shared with the API tests

SECRET = "s3cret-for-tests"


@dataclass
class Receiver:
    """A local HTTP endpoint that records every callback and answers with the next of ``answers``."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers, text="ok")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/results"))


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/results", found.handle)
    found.server = await aiohttp_server(app)
    return found


async def logs_app(aiohttp_client: Any, clean_nats: str, **env: str) -> TestClient:
    settings = make_settings(clean_nats, HADES_CALLBACK_BACKOFF_SECONDS="0.01", **env)
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def finished_job(conn: messaging.Messaging, url: str, status: JobStatus = JobStatus.SUCCEEDED) -> FakeDispatch:
    dispatch = FakeDispatch(conn, new_job(callback_url=url))
    await dispatch.submit()
    await dispatch.run({1: ["built"], 2: ["tested", "all green"]}, status=status)
    return dispatch


async def callback_when(client: TestClient, job_id: str, **expected: Any) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        callback = (await record_when(client, job_id)).get("callback") or {}
        return callback if all(callback.get(k) == v for k, v in expected.items()) else None

    return await poll(check)


async def test_one_signed_post_per_job_even_with_two_replicas(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    first = await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_SECRET=SECRET)
    await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_SECRET=SECRET)  # a second replica, same consumer
    jobs = [await finished_job(conn, receiver.url) for _ in range(4)]
    for job in jobs:
        callback = await callback_when(first, job.id, state="done")
        assert callback["outcome"] == "delivered" and callback["attempts"] == 1 and callback["last_status"] == 200
    await asyncio.sleep(0.3)  # a second sender would have posted by now
    assert sorted(headers["X-Hades-Job-Id"] for headers, _ in receiver.requests) == sorted(j.id for j in jobs)

    headers, body = next((h, b) for h, b in receiver.requests if h["X-Hades-Job-Id"] == jobs[0].id)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hades-Signature"], expected)
    assert headers["X-Hades-Delivery"] == callbacks.delivery_id(jobs[0].id)
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["job"]["id"] == jobs[0].id and payload["job"]["status"] == "succeeded"
    assert [(e["step"], [line["message"] for line in e["logs"]]) for e in payload["logs"]] == [
        (1, ["built"]),
        (2, ["tested", "all green"]),
    ]
    assert not any(key.startswith("_") for key in payload["job"])


async def test_a_failing_receiver_gets_it_on_the_third_try(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await logs_app(aiohttp_client, clean_nats)
    receiver.answers = [(500, {}), (429, {"Retry-After": "0"}), (200, {})]
    job = await finished_job(conn, receiver.url, JobStatus.FAILED)
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "delivered" and callback["attempts"] == 3 and callback["last_status"] == 200
    assert len(receiver.requests) == 3
    assert len({headers["X-Hades-Delivery"] for headers, _ in receiver.requests}) == 1  # one delivery, retried
    assert len({body for _, body in receiver.requests}) == 1
    assert "X-Hades-Signature" not in receiver.requests[0][0]  # no secret, no signature
    assert json.loads(receiver.requests[0][1])["job"]["status"] == "failed"


async def test_attempts_are_bounded_and_a_4xx_is_not_retried(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_MAX_ATTEMPTS="3")
    receiver.answers = [(503, {})] * 3 + [(404, {})]
    exhausted = await finished_job(conn, receiver.url)
    callback = await callback_when(client, exhausted.id, state="done")
    assert callback["outcome"] == "failed" and callback["attempts"] == 3 and callback["last_status"] == 503
    rejected = await finished_job(conn, receiver.url)
    callback = await callback_when(client, rejected.id, state="done")
    assert callback["outcome"] == "failed" and callback["attempts"] == 1 and callback["last_status"] == 404
    assert len(receiver.requests) == 4


async def test_an_unreachable_receiver_fails_after_its_attempts(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging
) -> None:
    client = await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_MAX_ATTEMPTS="2")
    job = await finished_job(conn, "http://127.0.0.1:9/nobody-listens")
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "failed" and callback["attempts"] == 2
    assert callback["last_status"] is None and "Connect" in callback["last_error"]


async def test_a_host_not_allowed_gets_no_request(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_ALLOWED_HOSTS="lms.example.org,*.example.net")
    job = await finished_job(conn, receiver.url)
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "refused" and callback["attempts"] == 0
    assert "HADES_CALLBACK_ALLOWED_HOSTS" in callback["last_error"]
    assert receiver.requests == []


async def test_a_running_job_gets_no_callback_yet(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await logs_app(aiohttp_client, clean_nats)
    dispatch = FakeDispatch(conn, new_job(callback_url=receiver.url))
    await dispatch.submit()
    await dispatch.running()
    assert (await callback_when(client, dispatch.id, state="pending"))["attempts"] == 0
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        ("https://lms.example.org/x", (), True),
        ("https://lms.example.org/x", ("lms.example.org",), True),
        ("https://LMS.Example.org:8443/x", ("lms.example.org",), True),
        ("https://evil.org/x", ("lms.example.org",), False),
        ("https://a.b.example.org/x", ("*.example.org",), True),
        ("https://example.org/x", ("*.example.org",), False),
        ("https://badexample.org/x", ("*.example.org",), False),
        ("ftp://lms.example.org/x", (), False),
        ("not a url", (), False),
    ],
)
def test_host_allow_list(url: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert callbacks.host_allowed(url, allowed) is expected


def test_retry_after_is_honoured_within_bounds() -> None:
    assert callbacks.retry_after_s("3") == 3.0
    assert callbacks.retry_after_s("100000") == callbacks.MAX_RETRY_DELAY_S
    assert callbacks.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert callbacks.retry_after_s(None) is None
