"""Shared fixtures: one real nats-server per session (purged between tests), settings, markers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from runtime import topology
from runtime.settings import Settings
from tests.natsserver import NatsServer

pytest_plugins = ["tests.dockerfixtures"]


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
async def clean_nats(nats_server: NatsServer) -> AsyncIterator[str]:
    """The session server with the Hades streams removed, so each test starts from an empty topology."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for stream in (topology.JOBS_STREAM, topology.EVENTS_STREAM, topology.DEAD_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await nc.close()
    yield nats_server.url


SCOPE = f"test-{os.getpid()}"
"""Containers of this test session; a concurrent session on the same engine has its own."""


def make_settings(nats_url: str, **env: str) -> Settings:
    return Settings.from_env({"HADES_NATS_URL": nats_url, "HADES_SCOPE": SCOPE, **env})


@pytest.fixture
def settings(clean_nats: str) -> Settings:
    return make_settings(clean_nats)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("KUBECONFIG"):
        skip = pytest.mark.skip(reason="needs a real Kubernetes cluster: set KUBECONFIG")
        for item in items:
            if "k8s" in item.keywords:
                item.add_marker(skip)


EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "examples"
