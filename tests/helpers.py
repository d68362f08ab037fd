"""Small test helpers: wait for a condition against a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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
