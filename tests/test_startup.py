"""``runtime.startup.retrying`` in process: set-up steps that fail with ``Unavailable`` are left and tried again
with backoff while the app serves its probes (503 with the reason) and refuses other routes; a later attempt
that succeeds makes the app ready, and shutting down leaves every step that was entered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from runtime import app as hades_app
from runtime import startup
from runtime.errors import Unavailable
from tests.helpers import make_settings, poll

WIDGET = web.AppKey("widget", str)


class Broker:
    """A dependency that refuses ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.entered: list[str] = []
        self.left: list[str] = []

    def step(self, name: str, *, fails: bool = False) -> startup.CleanupContext:
        async def context(app: web.Application) -> AsyncIterator[None]:
            if fails and self.failures > 0:
                self.failures -= 1
                raise Unavailable(f"{name}: the message broker is not reachable (TimeoutError)")
            self.entered.append(name)
            app[hades_app.READINESS_CHECKS].append(_ready)
            app[WIDGET] = name
            yield
            self.left.append(name)

        return context


async def _ready(app: web.Application) -> str | None:
    return None


async def _widget(request: web.Request) -> web.Response:
    return web.json_response({"widget": request.app[WIDGET]})


def _app(broker: Broker) -> web.Application:
    app = hades_app.create_app(make_settings("nats://127.0.0.1:1"), service="test")
    app.router.add_get("/widget", _widget)
    app.cleanup_ctx.append(startup.retrying(broker.step("connect"), broker.step("streams", fails=True)))
    return app


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "FIRST_RETRY_S", 0.05)


async def test_a_failing_step_is_retried_while_readyz_says_why_then_ready() -> None:
    broker = Broker(failures=3)
    async with TestClient(TestServer(_app(broker))) as client:
        readyz = await client.get("/readyz")
        body = await readyz.json()
        assert readyz.status == 503
        assert body["reasons"][0].startswith("starting: streams: the message broker is not reachable"), body
        refused = await client.get("/widget")
        assert refused.status == 503 and refused.headers["Retry-After"]
        assert "streams" in (await refused.json())["detail"]
        assert (await client.get("/healthz")).status == 200

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await poll(ready, timeout_s=10)
        assert (await (await client.get("/widget")).json()) == {"widget": "streams"}
        # each failed attempt left the step it had entered, and dropped its readiness check
        assert broker.entered == ["connect"] * 4 + ["streams"]
        assert broker.left == ["connect"] * 3
        assert len(client.app[hades_app.READINESS_CHECKS]) == 3  # starting, and one per step
    assert broker.left == ["connect"] * 3 + ["streams", "connect"]  # shutdown: last entered, first left


async def test_a_start_that_works_at_once_serves_at_once() -> None:
    broker = Broker(failures=0)
    async with TestClient(TestServer(_app(broker))) as client:
        assert (await client.get("/readyz")).status == 200
        assert (await client.get("/widget")).status == 200
    assert broker.left == ["streams", "connect"]


async def test_a_shutdown_while_retrying_leaves_nothing_entered() -> None:
    broker = Broker(failures=10**6)
    async with TestClient(TestServer(_app(broker))) as client:
        assert (await client.get("/readyz")).status == 503
    assert broker.entered.count("connect") == broker.left.count("connect")
