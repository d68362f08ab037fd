"""Issue 20, finding 4, for real: a live reader across a dispatcher SIGKILL and the adoption of its running step
sees each line once, as the stored log has it (before: lines 1.1-1.4, then 2.1-2.10 repeating them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.faults.harness import Figures, job, submit_and_wait_running
from tests.helpers import poll
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(150)]


async def _read_stream(url: str, lines: list[str]) -> None:
    """Every line event of a job's live stream until its end event (one connection, no resume needed)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as response,
    ):
        event = "message"
        async for raw in response.content:
            text = raw.decode().rstrip("\r\n")
            if text.startswith("event: "):
                event = text[len("event: ") :]
            elif text.startswith("data: ") and event == "message":
                lines.append(json.loads(text[len("data: ") :])["message"])
            elif text.startswith("data: ") and event == "end":
                return
            elif not text:
                event = "message"


async def test_a_live_reader_sees_an_adopted_steps_lines_once(
    cluster_on: Callable[..., Any], clean_nats: str, stored: StoredEvents
) -> None:
    cluster = await cluster_on(clean_nats, HADES_ACK_WAIT_SECONDS="3")
    script = "for i in $(seq 1 8); do echo line $i; sleep 1; done"
    [job_id] = await submit_and_wait_running(cluster["submit"].url, [job(script)], stored, Figures("live reader"))
    seen: list[str] = []
    reader = asyncio.create_task(_read_stream(f"{cluster['logs'].url}/jobs/{job_id}/logs/stream", seen))

    async def some_lines_seen() -> bool:
        return len(seen) >= 2

    await poll(some_lines_seen, timeout_s=30)
    await cluster["dispatch"].kill()
    await cluster["dispatch"].start()
    await asyncio.wait_for(reader, 120)

    printed = [line for line in seen if line.startswith("line ")]
    assert printed == [f"line {i}" for i in range(1, 9)], seen
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cluster['logs'].url}/jobs/{job_id}/logs") as answer,
    ):
        stored_lines = [line["message"] for entry in (await answer.json())["logs"] for line in entry["logs"]]
    assert stored_lines == printed
    attempts = {e["attempt"] for e in await stored.jobs(job_id)}
    assert max(attempts) == 2  # the step was adopted by the restarted dispatcher, not run again
