"""Shared fixtures: one real nats-server per session (purged between tests), settings, markers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from blockbuster import blockbuster_ctx
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime import messaging, subjects
from runtime.settings import Settings
from tests.helpers import SCOPE, make_settings
from tests.natsserver import NatsServer, free_port
from tests.observe import StoredEvents

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.dockerfixtures", "tests.k8sfixtures"]


@pytest.fixture(autouse=True)
def no_blocking_calls() -> Iterator[None]:
    """Fail any test in which the project's own code blocks the event loop with network I/O or sleep (a docker or
    kubernetes SDK call made on the loop by ``runtime`` or ``functions``: those belong in threads). Tests themselves
    may block. Local files, locks and logging are allowed: start-up reads the schema and static files, thread pools
    and log handlers take short locks."""
    with blockbuster_ctx(["runtime", "functions"]) as guard:
        for name, function in guard.functions.items():
            if not name.startswith(("socket.", "ssl.", "time.sleep", "builtins.input")):
                function.deactivate()
        yield


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-store"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test's own, so it can be stopped and restarted with its store."""
    server = NatsServer(tmp_path / "store")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_conn(own_nats: NatsServer) -> AsyncIterator[messaging.Messaging]:
    """A connection to this test's own server that notices a stopped server within a second."""
    settings = make_settings(own_nats.url, HADES_NATS_PUBLISH_TIMEOUT_SECONDS="1")
    connection = await messaging.connect(settings, name="test-own")
    yield connection
    await connection.close()


@pytest.fixture
async def clean_nats(nats_server: NatsServer) -> AsyncIterator[str]:
    """The session server with the Hades streams removed, so each test starts from an empty topology."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    idempotency = f"KV_{subjects.IDEMPOTENCY_BUCKET}"
    results = f"OBJ_{subjects.RESULTS_BUCKET}"
    for stream in (subjects.JOBS_STREAM, subjects.EVENTS_STREAM, subjects.DEAD_STREAM, idempotency, results):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await nc.close()
    yield nats_server.url


@pytest.fixture
def settings(clean_nats: str) -> Settings:
    return make_settings(clean_nats)


@pytest.fixture
async def conn(clean_nats: str) -> AsyncIterator[messaging.Messaging]:
    """The test's own door to NATS, for publishing as submit and dispatch do; the records bucket gone too."""
    nc = await nats.connect(clean_nats)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream(f"KV_{subjects.RECORDS_BUCKET}")
    await nc.close()
    connection = await messaging.connect(make_settings(clean_nats), name="test")
    yield connection
    await connection.close()


@pytest.fixture
async def js(clean_nats: str) -> AsyncIterator[JetStreamContext]:
    """A raw JetStream context to observe what the functions stored (tests may look behind the door)."""
    nc = await nats.connect(clean_nats)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
def dispatcher_processes(clean_nats: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start dispatchers as real processes (``start(**env)``), so a test can SIGKILL or SIGTERM one; all are
    killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> subprocess.Popen[bytes]:
        defaults = {
            "HADES_NATS_URL": clean_nats,
            "HADES_DISPATCH_PORT": str(free_port()),
            "HADES_PULL_TIMEOUT_SECONDS": "0.5",
            "HADES_SCOPE": SCOPE,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "functions.dispatch"], cwd=ROOT, env={**os.environ, **defaults, **env}
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def stored(js: JetStreamContext) -> StoredEvents:
    """What the functions stored in HADES_EVENTS."""
    return StoredEvents(js)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("KUBECONFIG"):
        skip = pytest.mark.skip(reason="needs a real Kubernetes cluster: set KUBECONFIG")
        for item in items:
            if "k8s" in item.keywords:
                item.add_marker(skip)
