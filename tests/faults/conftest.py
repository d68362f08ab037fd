"""Fixtures of the fault scenarios: the three functions as processes on the test's NATS, each restartable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Cluster


@pytest.fixture
async def cluster_on(tmp_path: Path, busybox_image: str) -> AsyncIterator[Callable[..., Any]]:
    """``await cluster_on(nats_url, **env)``: submit, logs and dispatch started; all stopped afterwards."""
    started: list[Cluster] = []

    async def start(nats_url: str, **env: str) -> Cluster:
        cluster = Cluster.create(nats_url, tmp_path, **env)
        started.append(cluster)
        await cluster.start()
        return cluster

    yield start
    for cluster in started:
        await cluster.stop()
