"""SIGKILL of the dispatcher mid-job: the restarted dispatcher follows the step still running (no second run),
every job ends once, no line twice in an attempt, nothing left on the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.harness import RUN_TOKEN, Figures, count, job, submit_and_wait_running
from tests.helpers import poll
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(150)]


async def test_a_sigkilled_dispatcher_is_followed_not_rerun(
    cluster_on: Callable[..., Any], clean_nats: str, stored: StoredEvents
) -> None:
    figures = Figures("dispatch SIGKILL mid-job")
    began = time.monotonic()
    cluster = await cluster_on(clean_nats, HADES_ACK_WAIT_SECONDS="3", HADES_CONCURRENCY="4")
    script = f"echo {RUN_TOKEN}; for i in 1 2 3 4 5 6; do echo line $i; sleep 1; done"
    two_steps = job(script)
    two_steps["steps"].append({"id": 2, "name": "step 2", "image": "hades-test-busybox:1", "script": "cat /shared/x"})
    two_steps["steps"][0]["script"] = f"echo kept > /shared/x; {script}"
    bodies = [job(script) for _ in range(3)] + [two_steps]
    ids = await submit_and_wait_running(cluster["submit"].url, bodies, stored, figures)
    await cluster["dispatch"].kill()
    killed_at = time.monotonic()
    await cluster["dispatch"].start()

    async def all_ended() -> bool:
        return all([await stored.terminals(i) for i in ids])

    await poll(all_ended, timeout_s=90, interval_s=0.5)
    figures.recovery_s = time.monotonic() - killed_at  # handed back at once, then followed
    await count(figures, stored, ids)
    figures.seconds = time.monotonic() - began
    figures.check()
    assert figures.statuses == {"succeeded": len(ids)}
    assert "kept" in await stored.lines(ids[-1])  # step 2 ran in the volume step 1 wrote
    for job_id in ids:
        attempts = {e["attempt"] for e in await stored.jobs(job_id)}
        assert max(attempts) == 2, (job_id, attempts)  # the redelivery, following the first attempt's step
