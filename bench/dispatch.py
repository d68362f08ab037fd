"""Dispatch overhead: 100 one-step no-op jobs through submit → dispatch → terminal event, at concurrency 8, vs
the same 100 containers run directly with docker-py at concurrency 8, in the same run on the same engine.

Targets: ratio ≤ 1.15; a single job's submit → terminal ≤ raw ``docker run`` + 150 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import docker
import nats

from bench.common import function, machine, nats_server
from tests.dockerfixtures import BUSYBOX_IMAGE, build_busybox_image

JOBS = 100
CONCURRENCY = 8
SINGLE_RUNS = 7
ROUNDS = 3
"""Raw and Hades batches alternate this many times; the median ratio is reported (one batch of each varies by
±20 % on these machines as the engine's state changes)."""
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def raw_docker(client: Any, count: int, concurrency: int) -> float:
    """Seconds for ``count`` no-op containers, ``concurrency`` at a time, as `docker run --rm --network none`."""

    def one(_: int) -> None:
        client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", "true"], network_mode="none", remove=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - start


async def hades_jobs(url: str, submit_port: int, count: int) -> tuple[float, list[float]]:
    """Seconds from the first POST to the last terminal event, and each job's submit → terminal latency."""
    nc = await nats.connect(url)
    done: dict[str, float] = {}
    finished = asyncio.Event()

    async def on_status(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("kind") == "job" and event["status"] in TERMINAL:
            done[event["job_id"]] = time.perf_counter()
            if len(done) >= count:
                finished.set()

    await nc.subscribe("hades.status.*", cb=on_status)
    body = {"name": "bench", "steps": [{"id": 1, "image": BUSYBOX_IMAGE, "script": "true"}]}
    submitted: dict[str, float] = {}
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:

        async def post() -> None:
            t = time.perf_counter()
            async with http.post(f"http://127.0.0.1:{submit_port}/jobs", json=body) as response:
                submitted[(await response.json())["id"]] = t

        await asyncio.gather(*(post() for _ in range(count)))
    await asyncio.wait_for(finished.wait(), 600)
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed, [done[j] - submitted[j] for j in submitted]


def main() -> dict[str, Any]:
    client = docker.from_env()
    build_busybox_image(client)
    raw_docker(client, 4, 4)  # warm the engine and the page cache
    raw_single, single, raw_batches, hades_batches, latencies = [], [], [], [], []
    with nats_server() as server:
        env = {"HADES_NATS_URL": server.url, "HADES_CONCURRENCY": str(CONCURRENCY)}
        with function("dispatch", env, "HADES_DISPATCH_PORT"), function("submit", env, "HADES_SUBMIT_PORT") as port:
            asyncio.run(hades_jobs(server.url, port, 4))  # warm-up
            for _ in range(SINGLE_RUNS):
                raw_single.append(raw_docker(client, 1, 1))
                single.append(asyncio.run(hades_jobs(server.url, port, 1))[1][0])
            for _ in range(ROUNDS):
                raw_batches.append(raw_docker(client, JOBS, CONCURRENCY))
                elapsed, batch_latencies = asyncio.run(hades_jobs(server.url, port, JOBS))
                hades_batches.append(elapsed)
                latencies.extend(batch_latencies)
    client.close()
    ratios = [h / r for h, r in zip(hades_batches, raw_batches, strict=True)]
    report = {
        "benchmark": "dispatch",
        "machine": machine(),
        "jobs": JOBS,
        "concurrency": CONCURRENCY,
        "rounds": ROUNDS,
        "raw_docker_batch_s": [round(r, 2) for r in raw_batches],
        "hades_batch_s": [round(h, 2) for h in hades_batches],
        "ratio_batch_each": [round(x, 3) for x in ratios],
        "ratio_batch": round(statistics.median(ratios), 3),
        "raw_docker_single_median_s": round(statistics.median(raw_single), 3),
        "hades_single_median_s": round(statistics.median(single), 3),
        "single_overhead_ms": round((statistics.median(single) - statistics.median(raw_single)) * 1000),
        "hades_batch_latency_p50_s": round(statistics.median(latencies), 2),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
