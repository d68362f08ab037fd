"""Stopping background tasks for sure.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives just as the awaited future completes
(nats-py's ``fetch`` awaits through it), leaving a loop running after ``task.cancel()``. Stopping a loop therefore
cancels until the task is done, not once.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, retry_s: float = 1.0) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
