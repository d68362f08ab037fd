"""Fair share between tenants (issue 22): three tenants' bursts of different sizes into one lane, drained by
``DISPATCHERS`` dispatch processes at ``HADES_CONCURRENCY=CONCURRENCY``, each job one 50 ms sleep.

The dispatchers run the real dispatch loop with the sleep-only test executor (``python -m tests.sleepexecutor``), so
what is measured is the order dispatch starts jobs in, not a container engine. Bursts: tenant ``a`` 600 jobs at
0 s, ``b`` 120 at 1 s, ``c`` 20 at 2 s (``BURSTS``), each POSTed to one submit process with 32 in flight.

Per tenant: p50 / p95 / max queue wait (the ``running`` event's ``queue_wait_s``: submit → taken), against two
schedules simulated on the same arrivals (each job's ``submitted_at``) and ``DISPATCHERS * CONCURRENCY`` slots:

- **ideal fair share**: at each free slot ``runtime.fairshare.pick`` chooses the tenant (the rule dispatch uses);
- **FIFO**: the oldest job first, which is what one consumer per lane in stream order gives (before fair share).

Both simulations hold a slot for the measured mean slot time (slots * drain time / jobs), so they drain exactly
as fast as the real run and the differences are the order alone. Short (under a minute): the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.common import function, machine, nats_server
from runtime import fairshare, messaging
from runtime.jobs import parse_time
from runtime.settings import Settings
from tests.observe import TERMINAL, job_events

BURSTS: dict[str, tuple[int, float]] = {"a": (600, 0.0), "b": (120, 1.0), "c": (20, 2.0)}
"""Tenant → (jobs, when its burst starts, seconds after the first)."""
DISPATCHERS = 2
CONCURRENCY = 4
JOB_S = 0.05
IN_FLIGHT = 32


@dataclass(frozen=True)
class Job:
    tenant: str
    arrived_s: float
    """Seconds after the first submit."""


@contextlib.contextmanager
def dispatcher(env: dict[str, str]) -> Iterator[int]:
    """One dispatch process with the sleep executor (``python -m tests.sleepexecutor``)."""
    with function("dispatch", env, "HADES_DISPATCH_PORT", module="tests.sleepexecutor") as port:
        yield port


async def submit_bursts(submit_port: int) -> dict[str, str]:
    """POST every burst on its schedule; job id → tenant."""
    tenants: dict[str, str] = {}
    step = {"id": 1, "name": "nap", "image": "busybox:1", "script": f"sleep {JOB_S}"}
    async with aiohttp.ClientSession() as http:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def post(tenant: str) -> None:
            body = {"name": "bench", "priority": 2, "tenant": tenant, "steps": [step]}
            async with gate, http.post(f"http://127.0.0.1:{submit_port}/jobs", json=body) as response:
                answer = await response.json()
                if response.status != 202:
                    raise RuntimeError(f"submit refused a job: {response.status} {answer}")
                tenants[answer["id"]] = tenant

        async def burst(tenant: str, count: int, after_s: float) -> None:
            await asyncio.sleep(after_s)
            await asyncio.gather(*(post(tenant) for _ in range(count)))

        await asyncio.gather(*(burst(tenant, count, after_s) for tenant, (count, after_s) in BURSTS.items()))
    return tenants


async def stored_job_events(url: str) -> list[dict[str, Any]]:
    """Every job's own status events, in stream order."""
    conn = await messaging.connect(Settings.from_env({"HADES_NATS_URL": url}), name="bench-fair")
    try:
        return await job_events(conn)
    finally:
        await conn.close()


async def drained(url: str, count: int, timeout_s: float = 150) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await stored_job_events(url)
        if sum(1 for e in found if e["status"] in TERMINAL) >= count:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"not drained within {timeout_s} s")
        await asyncio.sleep(1)


Picker = Callable[[Mapping[str, deque[float]], Mapping[str, int], Mapping[str, float]], str | None]


def fair_pick(
    queues: Mapping[str, deque[float]], running: Mapping[str, int], served: Mapping[str, float]
) -> str | None:
    loads = {t: fairshare.Load(len(q), running.get(t, 0), served.get(t, 0.0)) for t, q in queues.items()}
    return fairshare.pick(loads, weight=lambda _: 1, cap=lambda _: None)


def fifo_pick(
    queues: Mapping[str, deque[float]], running: Mapping[str, int], served: Mapping[str, float]
) -> str | None:
    heads = [(q[0], t) for t, q in queues.items() if q]
    return min(heads)[1] if heads else None


def simulate(jobs: Sequence[Job], *, slots: int, hold_s: float, pick: Picker) -> dict[str, list[float]]:
    """Each tenant's queue waits when ``slots`` slots each hold a job ``hold_s`` and ``pick`` chooses the tenant."""
    arrivals = sorted(jobs, key=lambda j: j.arrived_s)
    queues: dict[str, deque[float]] = {j.tenant: deque() for j in jobs}
    running: dict[str, int] = defaultdict(int)
    served: dict[str, float] = {}
    ends: list[tuple[float, str]] = []
    waits: dict[str, list[float]] = defaultdict(list)
    free, index, done = slots, 0, 0
    while done < len(arrivals):
        now = min(arrivals[index].arrived_s if index < len(arrivals) else math.inf, ends[0][0] if ends else math.inf)
        while ends and ends[0][0] <= now:
            _, ended = heapq.heappop(ends)
            running[ended] -= 1
            free += 1
            done += 1
        while index < len(arrivals) and arrivals[index].arrived_s <= now:
            queues[arrivals[index].tenant].append(arrivals[index].arrived_s)
            index += 1
        while free and (tenant := pick(queues, running, served)) is not None:
            waits[tenant].append(now - queues[tenant].popleft())
            running[tenant] += 1
            served[tenant] = now
            heapq.heappush(ends, (now + hold_s, tenant))
            free -= 1
    return waits


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def figures(waits: Sequence[float]) -> dict[str, float]:
    return {
        "p50_s": round(percentile(waits, 0.50), 2),
        "p95_s": round(percentile(waits, 0.95), 2),
        "max_s": round(max(waits), 2),
    }


def analyse(found: list[dict[str, Any]], tenants: dict[str, str]) -> dict[str, Any]:
    starts = {e["job_id"]: e for e in found if e["status"] == "running" and e["job_id"] in tenants}
    endings = {e["job_id"]: e for e in found if e["status"] in TERMINAL and e["job_id"] in tenants}
    submitted = {job_id: parse_time(start["job"]["submitted_at"]).timestamp() for job_id, start in starts.items()}
    first = min(submitted.values())
    jobs = [Job(tenants[job_id], at - first) for job_id, at in submitted.items()]
    began = min(parse_time(e["at"]).timestamp() for e in starts.values())
    finished = max(parse_time(e["at"]).timestamp() for e in endings.values())
    slots = DISPATCHERS * CONCURRENCY
    hold_s = slots * (finished - began) / len(jobs)
    measured: dict[str, list[float]] = defaultdict(list)
    for job_id, start in starts.items():
        measured[tenants[job_id]].append(float(start["queue_wait_s"]))
    held = [parse_time(endings[j]["at"]).timestamp() - parse_time(s["at"]).timestamp() for j, s in starts.items()]
    ideal = simulate(jobs, slots=slots, hold_s=hold_s, pick=fair_pick)
    fifo = simulate(jobs, slots=slots, hold_s=hold_s, pick=fifo_pick)
    order = [tenants[e["job_id"]] for e in found if e["status"] == "running" and e["job_id"] in tenants]
    return {
        "jobs": len(jobs),
        "not_succeeded": sum(1 for e in endings.values() if e["status"] != "succeeded"),
        "submitted_over_s": round(max(j.arrived_s for j in jobs), 2),
        "drain_s": round(finished - first, 2),
        "slot_time_s": round(hold_s, 4),
        "running_to_end_p50_s": round(percentile(held, 0.5), 4),
        "first_start_index": {t: order.index(t) for t in BURSTS},
        "tenants": {
            tenant: {
                "jobs": len(measured[tenant]),
                "measured": figures(measured[tenant]),
                "ideal_fair": figures(ideal[tenant]),
                "fifo": figures(fifo[tenant]),
            }
            for tenant in BURSTS
        },
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| tenant | jobs | arrives | measured p50 / p95 / max | ideal fair share | FIFO (stream order) |",
        "|---|---|---|---|---|---|",
    ]
    for tenant, row in report["tenants"].items():
        cells = [
            " / ".join(f"{row[kind][k]:.2f}" for k in ("p50_s", "p95_s", "max_s"))
            for kind in ("measured", "ideal_fair", "fifo")
        ]
        lines.append(f"| {tenant} | {row['jobs']} | {BURSTS[tenant][1]:.0f} s | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    with nats_server() as server:
        env = {"HADES_NATS_URL": server.url, "HADES_CONCURRENCY": str(CONCURRENCY)}
        with contextlib.ExitStack() as stack:
            for _ in range(DISPATCHERS):
                stack.enter_context(dispatcher(env))
            port = stack.enter_context(function("submit", env, "HADES_SUBMIT_PORT"))
            tenants = asyncio.run(submit_bursts(port))
            found = asyncio.run(drained(server.url, len(tenants)))
    report = {
        "benchmark": "fair",
        "machine": machine(),
        "nproc": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dispatchers": DISPATCHERS,
        "concurrency": CONCURRENCY,
        "job_s": JOB_S,
        "bursts": {tenant: {"jobs": count, "at_s": at} for tenant, (count, at) in BURSTS.items()},
        **analyse(found, tenants),
    }
    print(json.dumps(report, indent=2))
    print(table(report))
    return report


if __name__ == "__main__":
    main()
