"""A deep backlog: 100,000 queued jobs with no dispatcher. Does submit slow down, do the functions grow, do
``GET /jobs`` pages and a queued job's place stay fast?

One submit and one logs process on a private nats-server, no dispatch (the queue only grows). Jobs go in over HTTP
(64 in flight, the three lanes in turn); the submit rate is measured over 2,000 jobs at 0, 10,000 and 100,000
queued. Once the collector has written every record: the RSS of both processes, the latency of ``GET /jobs``
pages (following ``next`` from the newest, and filtered by status and name) and of ``GET /jobs/{id}`` of random
queued jobs (their place in the queue across lanes: three consumer reads and a stream read each).
``HADES_BENCH_BACKLOG_JOBS`` sets a smaller backlog for a quick run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from typing import Any

import aiohttp
import nats

from bench.common import ROOT, function, machine, nats_server
from bench.logs import listening_pid, rss_kib

JOBS = int(os.environ.get("HADES_BENCH_BACKLOG_JOBS", "100000"))
WINDOW = 2_000
"""Jobs over which a submit rate is measured."""
IN_FLIGHT = 64
SAMPLES = 300
"""Requests per latency figure."""
DOCUMENT = json.loads((ROOT / "schemas" / "examples" / "valid" / "hello.json").read_text())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def figures(latencies_s: list[float]) -> dict[str, float]:
    ms = [value * 1000 for value in latencies_s]
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
    }


async def submit_range(http: aiohttp.ClientSession, port: int, start: int, stop: int, ids: list[str]) -> float:
    """Submit jobs ``start`` to ``stop - 1`` (IN_FLIGHT at a time); their rate in jobs/s."""
    queue = iter(range(start, stop))

    async def worker() -> None:
        for index in queue:
            body = {**DOCUMENT, "name": f"backlog-{index:06d}", "priority": index % 3 + 1}
            async with http.post(f"http://127.0.0.1:{port}/jobs", json=body) as response:
                if response.status != 202:
                    raise RuntimeError(f"submit answered {response.status}: {await response.text()}")
                ids.append((await response.json())["id"])

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return (stop - start) / (time.perf_counter() - began)


async def fill(port: int, pids: dict[str, int]) -> tuple[dict[str, float], list[str], dict[str, dict[str, float]]]:
    """Submit JOBS jobs; the submit rate measured at 0, 10,000 and the full backlog, and every function's RSS
    (MiB) after each of those measurements, keyed by the jobs queued then."""
    ids: list[str] = []
    rates: dict[str, float] = {}
    rss: dict[str, dict[str, float]] = {}
    marks = sorted({0, min(10_000, JOBS - WINDOW), JOBS - WINDOW})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as http:
        done = 0
        for mark in marks:
            if mark > done:
                await submit_range(http, port, done, mark, ids)
            rates[f"at_{mark}_queued_jobs_per_s"] = round(await submit_range(http, port, mark, mark + WINDOW, ids))
            done = mark + WINDOW
            rss[str(done)] = {name: round(rss_kib(pid)["VmRSS"] / 1024, 1) for name, pid in pids.items()}
    return rates, ids, rss


async def wait_collected(url: str, jobs: int) -> float:
    """Until the records bucket holds every job and the collector has nothing pending; seconds waited."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    began = time.perf_counter()
    try:
        for _ in range(6000):
            records = (await js.stream_info("KV_HADES_RECORDS")).state.messages
            pending = (await js.consumer_info("HADES_EVENTS", "collect-logs")).num_pending
            if records >= jobs and not pending:
                return time.perf_counter() - began
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    raise RuntimeError(f"the collector did not write {jobs} records within 10 minutes")


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[float, Any]:
    began = time.perf_counter()
    async with http.get(url) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {body}")
    return time.perf_counter() - began, body


async def read_side(port: int, ids: list[str]) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        pages: list[float] = []
        cursor: str | None = None
        for _ in range(SAMPLES):  # 300 pages of 50 from the newest: 15,000 records
            elapsed, body = await timed_get(http, f"{base}/jobs?limit=50" + (f"&cursor={cursor}" if cursor else ""))
            pages.append(elapsed)
            cursor = body["next"]
            if cursor is None:
                break
        result["list_page_of_50"] = figures(pages)
        filtered: list[float] = []
        for index in range(SAMPLES // 3):
            name = f"backlog-0{random.randrange(10):01d}{index % 10}"
            elapsed, _ = await timed_get(http, f"{base}/jobs?limit=20&status=queued&name={name}")
            filtered.append(elapsed)
        result["list_filtered_status_and_name"] = figures(filtered)
        places: list[float] = []
        positions: list[int] = []
        for job_id in random.sample(ids, min(SAMPLES, len(ids))):
            elapsed, body = await timed_get(http, f"{base}/jobs/{job_id}")
            places.append(elapsed)
            positions.append(body.get("queue", {}).get("position", -1))
        result["queued_job_with_its_place"] = figures(places)
        result["places_known"] = sum(1 for position in positions if position >= 0)
    return result


def main() -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "backlog", "machine": machine(), "queued_jobs": JOBS}
    with nats_server() as server:
        env = {"HADES_NATS_URL": server.url}
        with (
            function("submit", env, "HADES_SUBMIT_PORT") as submit_port,
            function("logs", env, "HADES_LOGS_PORT") as logs_port,
        ):
            submit_pid, logs_pid = listening_pid(submit_port), listening_pid(logs_port)
            rss_start = {"submit": rss_kib(submit_pid), "logs": rss_kib(logs_pid)}
            rates, ids, rss_at = asyncio.run(fill(submit_port, {"submit": submit_pid, "logs": logs_pid}))
            report["submit"] = rates
            report["rss_mib_at_queued"] = rss_at
            report["collector_caught_up_after_s"] = round(asyncio.run(wait_collected(server.url, JOBS)), 1)
            report.update(asyncio.run(read_side(logs_port, ids)))
            rss_end = {"submit": rss_kib(submit_pid), "logs": rss_kib(logs_pid)}
            report["rss_mib"] = {
                name: {
                    "start": round(rss_start[name]["VmRSS"] / 1024, 1),
                    "end": round(rss_end[name]["VmRSS"] / 1024, 1),
                    "peak": round(rss_end[name]["VmHWM"] / 1024, 1),
                }
                for name in ("submit", "logs")
            }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
