"""Stopping background loops for sure, even when a cancellation is swallowed once."""

from __future__ import annotations

import asyncio

from runtime import tasks


async def test_a_loop_that_swallows_one_cancel_is_still_stopped() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what Python 3.11's wait_for can do as a fetch times out

    once = asyncio.create_task(loop())
    await asyncio.sleep(0)
    once.cancel()
    await asyncio.wait({once}, timeout=0.2)
    assert not once.done()  # a single cancel leaves it running: the bug cancel_and_wait exists for

    await asyncio.wait_for(tasks.cancel_and_wait(once, retry_s=0.05), timeout=5)
    assert once.cancelled()
