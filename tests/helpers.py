"""Small test helpers: settings for a test, the examples folder, waiting for a condition against a deadline."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from runtime.settings import Settings

T = TypeVar("T")

SCOPE = f"test-{os.getpid()}"
"""Containers of this test session; a concurrent session on the same engine has its own."""
EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "examples"


def make_settings(nats_url: str, **env: str) -> Settings:
    return Settings.from_env({"HADES_NATS_URL": nats_url, "HADES_SCOPE": SCOPE, **env})


async def poll(check: Callable[[], Awaitable[T]], *, timeout_s: float = 10.0, interval_s: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value: {last!r})")
        await asyncio.sleep(interval_s)
