"""The logs function SIGKILLed while jobs run and print, then started again: every record reaches its end, counts
each line once, and the text log serves each line once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.faults.harness import RUN_TOKEN, Figures, count, job, submit
from tests.helpers import poll
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(150)]

JOBS = 10
LINES = 8


async def test_the_logs_function_restarted_mid_jobs(
    cluster_on: Callable[..., Any], clean_nats: str, stored: StoredEvents
) -> None:
    figures = Figures(f"logs SIGKILL + restart ({JOBS} jobs)")
    began = time.monotonic()
    cluster = await cluster_on(clean_nats, HADES_CONCURRENCY="5")
    script = f"echo {RUN_TOKEN}; for i in $(seq 1 {LINES}); do echo line $i; sleep 0.3; done"
    async with aiohttp.ClientSession() as http:
        ids = [i for n in range(JOBS) if (i := await submit(http, cluster["submit"].url, job(script, name=f"l{n}")))]
        figures.submitted = JOBS

        async def some_printing() -> bool:
            return sum(["line 2" in await stored.lines(i) for i in ids]) >= 3

        await poll(some_printing, timeout_s=60, interval_s=0.2)
        await cluster["logs"].kill()
        await cluster["logs"].start()
        logs = cluster["logs"].url

        async def record(job_id: str) -> dict[str, Any] | None:
            async with http.get(f"{logs}/jobs/{job_id}") as answer:
                found: dict[str, Any] = await answer.json() if answer.status == 200 else {}
            return found if found.get("status") == "succeeded" and found.get("log_lines") == LINES + 1 else None

        records = [await poll(lambda job_id=i: record(job_id), timeout_s=90, interval_s=0.3) for i in ids]
        for job_id in ids:
            async with http.get(f"{logs}/jobs/{job_id}/logs", params={"format": "text"}) as answer:
                text = await answer.text()
            served = [line for line in text.splitlines() if "line " in line]
            assert len(served) == LINES, (job_id, text)
    await count(figures, stored, ids)
    figures.seconds = time.monotonic() - began
    figures.check()
    assert all(r["attempt"] == 1 for r in records)
