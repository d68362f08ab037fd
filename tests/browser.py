"""Browser fixtures: headless Debian chromium through Selenium, and the three functions served from a thread.

Selenium is synchronous, so the functions run on an event loop of their own in a background thread and the
browser tests are plain sync tests. Without chromium or chromedriver the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from functions.dispatch.handlers import create_app as create_dispatch
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from tests.conftest import make_settings
from tests.dockerfixtures import BUSYBOX_IMAGE, IN_CI
from tests.natsserver import NatsServer

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: .ci/run must apt-get install chromium chromium-driver")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    """One headless chromium for the session, with a fresh profile."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable("chromium or chromedriver is missing: apt-get install chromium chromium-driver")
    assert binary is not None and driver_path is not None
    with tempfile.TemporaryDirectory(prefix="hades-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


@dataclass
class Stack:
    """submit, dispatch and logs on one event loop in a thread; their base URLs."""

    submit_url: str
    logs_url: str

    def submit(self, script: str, *, name: str = "dashboard", **job: Any) -> str:
        body = {"name": name, "steps": [{"id": 1, "name": "main", "image": BUSYBOX_IMAGE, "script": script}], **job}
        request = urllib.request.Request(
            f"{self.submit_url}/jobs",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            return str(json.load(response)["id"])

    def record(self, job_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.logs_url}/jobs/{job_id}", timeout=10) as response:
            return dict(json.load(response))


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hades-stack", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def serve(app: web.Application, servers: list[TestServer]) -> TestServer:
    """``app`` on a free loopback port, remembered in ``servers`` so that ``serving`` closes it."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    servers.append(server)
    return server


@contextlib.contextmanager
def serving(start: Callable[[list[TestServer]], Coroutine[Any, Any, T]]) -> Iterator[T]:
    """What ``start`` serves, on an event loop of its own in a thread (the browser tests are synchronous), and
    every server it started (``serve``) closed afterwards, last first."""
    runner = _LoopThread()
    servers: list[TestServer] = []

    async def stop() -> None:
        for server in reversed(servers):
            await server.close()

    try:
        yield runner.run(start(servers))
    finally:
        try:
            runner.run(stop())
        finally:
            runner.stop()


@pytest.fixture
def stack(own_nats: NatsServer, busybox_image: str) -> Iterator[Stack]:
    async def start(servers: list[TestServer]) -> Stack:
        base = {"HADES_PULL_TIMEOUT_SECONDS": "0.5", "HADES_CANCEL_GRACE_SECONDS": "1"}
        submit = await serve(create_submit(make_settings(own_nats.url, **base)), servers)
        submit_url = f"http://127.0.0.1:{submit.port}"
        settings = make_settings(own_nats.url, HADES_UI_SUBMIT_URL=submit_url, **base)
        await serve(create_dispatch(settings), servers)
        logs = await serve(create_logs(settings), servers)
        return Stack(submit_url=submit_url, logs_url=f"http://127.0.0.1:{logs.port}")

    with serving(start) as running:
        yield running
