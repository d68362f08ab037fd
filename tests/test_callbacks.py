"""Result callbacks: one signed POST per finished job, retried on 5xx/429, refused for hosts not allowed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from functions.logs import callbacks, logstore
from functions.logs.handlers import create_app
from functions.logs.records import JobRecord
from functions.logs.recordstore import RECORDS
from runtime import messaging
from runtime.errors import Unavailable
from runtime.jobs import JobStatus
from tests.fakes import FakeDispatch, new_job, record_when
from tests.helpers import make_settings, poll

SECRET = "s3cret-for-tests"


@dataclass
class Receiver:
    """A local HTTP endpoint that records every callback and answers with the next of ``answers``.

    With ``gate`` set, each request waits for it before answering (``in_flight`` counts the waiting ones).
    """

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: TestServer | None = None
    gate: asyncio.Event | None = None
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        if self.gate is not None:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await self.gate.wait()
            finally:
                self.in_flight -= 1
        return web.Response(status=status, headers=headers, text="ok")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/results"))


async def start_receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/results", found.handle)
    found.server = await aiohttp_server(app)
    return found


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    return await start_receiver(aiohttp_server)


async def until(check: Callable[[], bool]) -> None:
    """``poll`` for a plain condition on the test's own state."""

    async def checked() -> bool:
        return check()

    await poll(checked)


async def holds(check: Callable[[], bool], *, for_s: float, interval_s: float = 0.05) -> bool:
    """Whether ``check`` stays true for ``for_s`` seconds: how to wait for something that must not happen."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        if not check():
            return False
        await asyncio.sleep(interval_s)
    return check()


async def logs_app(aiohttp_client: Any, clean_nats: str, **env: str) -> TestClient:
    # The receivers listen on loopback, which callbacks refuse unless the operator opens it (issue 13, finding 11).
    env = {"HADES_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", **env}
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
    started = int(time.time())
    first = await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_SECRET=SECRET)
    await logs_app(aiohttp_client, clean_nats, HADES_CALLBACK_SECRET=SECRET)  # a second replica, same consumer
    jobs = [await finished_job(conn, receiver.url) for _ in range(4)]
    for job in jobs:
        callback = await callback_when(first, job.id, state="done")
        assert callback["outcome"] == "delivered" and callback["attempts"] == 1 and callback["last_status"] == 200
    assert await holds(lambda: len(receiver.requests) == len(jobs), for_s=0.5)  # no second sender posts late
    assert sorted(headers["X-Hades-Job-Id"] for headers, _ in receiver.requests) == sorted(j.id for j in jobs)

    headers, body = next((h, b) for h, b in receiver.requests if h["X-Hades-Job-Id"] == jobs[0].id)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hades-Signature"], expected)
    assert headers["X-Hades-Delivery"] == callbacks.delivery_id(jobs[0].id)
    assert headers["Content-Type"] == "application/json"
    assert started <= int(headers["X-Hades-Timestamp"]) <= int(time.time())  # informational: not signed
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
    await record_when(client, dispatch.id, status="running")
    assert await holds(lambda: receiver.requests == [], for_s=1.0)
    callback = (await record_when(client, dispatch.id, status="running"))["callback"]
    assert callback["state"] == "pending" and callback["attempts"] == 0


async def test_a_passing_error_after_the_claim_is_tried_again(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver, monkeypatch: Any
) -> None:
    calls = 0
    job_logs = logstore.job_logs

    async def flaky(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("the message broker did not answer: TimeoutError")  # a NATS blip
        return await job_logs(*args, **kwargs)

    monkeypatch.setattr(logstore, "job_logs", flaky)
    client = await logs_app(aiohttp_client, clean_nats)
    job = await finished_job(conn, receiver.url)
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "delivered" and callback["attempts"] == 1 and calls == 2
    assert await holds(lambda: len(receiver.requests) == 1, for_s=0.5)
    assert json.loads(receiver.requests[0][1])["logs"][1]["logs"][1]["message"] == "all green"


async def test_a_stale_claim_is_taken_over_while_replicas_run(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver, monkeypatch: Any
) -> None:
    monkeypatch.setattr(callbacks, "resume_every_s", lambda settings: 0.1)
    client = await logs_app(aiohttp_client, clean_nats)
    dispatch = FakeDispatch(conn, new_job(callback_url=receiver.url))
    await dispatch.submit()
    await dispatch.running()

    def claimed_by_a_dead_replica(record: JobRecord | None) -> JobRecord | None:
        if record is None or record["status"] != "running" or not record["callback"]:
            return None  # not stored by the collector yet
        stale = {"state": "sending", "claimed_by": "logs-gone", "claimed_at": "2000-01-01T00:00:00.000Z"}
        return {**record, "callback": {**record["callback"], **stale}}

    async def claimed() -> bool:
        return await client.app[RECORDS].update(dispatch.id, claimed_by_a_dead_replica) is not None

    await poll(claimed)
    await dispatch.finish()  # the collector sees nothing due: the claim is someone else's
    callback = await callback_when(client, dispatch.id, state="done")
    assert callback["outcome"] == "delivered" and callback["claimed_by"] != "logs-gone"
    assert await holds(lambda: len(receiver.requests) == 1, for_s=0.3)


async def test_at_most_so_many_callbacks_are_sent_at_once(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver, monkeypatch: Any
) -> None:
    monkeypatch.setattr(callbacks, "MAX_CONCURRENT_SENDS", 2)
    client = await logs_app(aiohttp_client, clean_nats)
    receiver.gate = asyncio.Event()
    jobs = [await finished_job(conn, receiver.url) for _ in range(4)]
    await until(lambda: receiver.in_flight == 2)
    assert await holds(lambda: receiver.in_flight == 2 and len(receiver.requests) == 2, for_s=0.5)
    receiver.gate.set()
    for job in jobs:
        assert (await callback_when(client, job.id, state="done"))["outcome"] == "delivered"
    assert receiver.most_in_flight == 2 and len(receiver.requests) == 4


async def test_a_huge_answer_is_not_read(
    aiohttp_client: Any,
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    clean_nats: str,
    conn: messaging.Messaging,
) -> None:
    huge_bytes, chunk = 50 * 1024 * 1024, b"x" * (1024 * 1024)
    sent, ended = [0], asyncio.Event()

    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = huge_bytes
        await response.prepare(request)
        try:
            while sent[0] < huge_bytes:
                await response.write(chunk)
                sent[0] += len(chunk)
        except ConnectionError:
            pass  # the sender hung up: what this test wants
        finally:
            ended.set()
        return response

    app = web.Application()
    app.router.add_post("/results", flood)
    server = await aiohttp_server(app)
    client = await logs_app(aiohttp_client, clean_nats)
    job = await finished_job(conn, str(server.make_url("/results")))
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "delivered" and callback["last_status"] == 200
    await until(ended.is_set)
    assert sent[0] < huge_bytes  # the sender closed the connection instead of downloading the answer


async def test_a_redirect_is_not_followed(
    aiohttp_client: Any,
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    clean_nats: str,
    conn: messaging.Messaging,
    receiver: Receiver,
) -> None:
    elsewhere = await start_receiver(aiohttp_server)
    receiver.answers = [(307, {"Location": elsewhere.url})]
    client = await logs_app(aiohttp_client, clean_nats)
    job = await finished_job(conn, receiver.url)
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "failed" and callback["attempts"] == 1 and callback["last_status"] == 307
    assert "redirect" in callback["last_error"]
    assert len(receiver.requests) == 1
    assert await holds(lambda: elsewhere.requests == [], for_s=0.3)


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
    assert callbacks.retry_after_s("0") == 0.0
    assert callbacks.retry_after_s("100000") == callbacks.MAX_RETRY_DELAY_S
    assert callbacks.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert callbacks.retry_after_s(None) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "-5", "-0.5", "inf", "-inf", "1e999"])
def test_a_retry_after_that_is_no_delay_falls_back_to_the_backoff(value: str) -> None:
    assert callbacks.retry_after_s(value) is None


NOW = 1_700_000_000.0
LEASE = 140.0


def record_with(state: str, *, status: str = "succeeded", **callback: Any) -> JobRecord:
    base = {"url": "https://lms.example/results", "state": state, "outcome": None, "attempts": 0}
    return {"id": "job-1", "status": status, "callback": {**base, "claimed_by": None, "claimed_at": None, **callback}}


def at(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


@pytest.mark.parametrize(
    ("record", "ours"),
    [
        (record_with("pending"), True),
        (record_with("pending", status="running"), False),
        (record_with("sending", claimed_by="logs-b", claimed_at=at(NOW - 10)), False),
        (record_with("sending", claimed_by="logs-b", claimed_at=at(NOW - LEASE - 10)), True),
        (record_with("sending", claimed_by="logs-a", claimed_at=at(NOW - 10)), True),  # our own, left over
        (record_with("done", claimed_by="logs-a", claimed_at=at(NOW - LEASE - 10)), False),
    ],
)
def test_who_may_claim_a_callback(record: JobRecord, ours: bool) -> None:
    claimed = callbacks.claim(record, replica="logs-a", lease=LEASE, now=NOW)
    assert (claimed is not None) is ours
    if claimed is not None:
        assert claimed["callback"]["state"] == "sending" and claimed["callback"]["claimed_by"] == "logs-a"


def test_only_a_claim_still_sending_is_handed_back() -> None:
    sending = record_with("sending", claimed_by="logs-a", claimed_at=at(NOW))
    back = callbacks.handed_back(sending, replica="logs-a")
    assert back is not None and back["callback"]["state"] == "pending" and back["callback"]["claimed_by"] is None
    assert callbacks.handed_back(sending, replica="logs-b") is None  # someone else's
    done = record_with("done", outcome="delivered", claimed_by="logs-a", claimed_at=at(NOW))
    assert callbacks.handed_back(done, replica="logs-a") is None  # a cancel landing after the finish


def test_the_lease_outlasts_what_a_live_sender_goes_without_renewing() -> None:
    settings = make_settings("nats://unused").logs
    between_writes = callbacks.CLAIM_STEP_S + settings.callback_timeout_s
    assert callbacks.lease_s(settings) >= 2 * between_writes
    assert callbacks.lease_s(settings) <= 5 * 60  # a crashed replica's callbacks wait minutes, not half an hour
    assert callbacks.resume_every_s(settings) < callbacks.lease_s(settings)


async def test_an_unparsable_callback_url_is_refused_once_not_retried_forever(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 20, finding 5: stored before submit checked URLs fully, "http://[::1" raised at every look-up.
    client = await logs_app(aiohttp_client, clean_nats)
    job = await finished_job(conn, "http://[::1")
    callback = await callback_when(client, job.id, state="done")
    assert callback["outcome"] == "refused" and callback["attempts"] == 0
    assert "does not parse" in callback["last_error"]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
