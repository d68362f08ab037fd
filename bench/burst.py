"""The last ten minutes of an exam: a burst of jobs submitted within 10 s, drained at the engine's pace.

``HADES_BENCH_BURST_JOBS`` jobs (default 1,000), POSTed evenly over 10 s to one submit process, each one step
``sleep 2`` in the local busybox test image; one dispatch process at ``HADES_CONCURRENCY=16`` runs them. Measured
until every job has a terminal status: drain time (first POST → last terminal event), queue wait (POST → its
``running`` event) p50/p95/p99, start latency (POST → ``running`` of the jobs that found a free slot) and slot
refill (a terminal event → the next ``running``). Checked: every job ended ``succeeded`` exactly once and ran in
exactly one attempt (none lost, none run twice).

Baseline, same run, same engine: the same jobs through docker-py at concurrency 16, released on the same arrival
schedule, each doing what the Docker executor asks of the engine for a one-step job (a volume, a container with
an init process and no network, its logs, removal of both). Target: drain ratio ≤ 1.15.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import docker
import nats

from bench.common import function, machine, nats_server
from tests.dockerfixtures import BUSYBOX_IMAGE, build_busybox_image

JOBS = int(os.environ.get("HADES_BENCH_BURST_JOBS", "1000"))
SUBMIT_WINDOW_S = 10.0
CONCURRENCY = 16
SLEEP_S = 2
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
DRAIN_TIMEOUT_S = 3600.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {f"p{int(q * 100)}": round(percentile(values, q), 3) for q in (0.5, 0.95, 0.99)}


def raw_docker(
    client: Any,
    count: int,
    *,
    concurrency: int = CONCURRENCY,
    window_s: float = SUBMIT_WINDOW_S,
    sleep_s: float = SLEEP_S,
) -> dict[str, Any]:
    """The same jobs straight through docker-py: arrival schedule, concurrency, engine calls as the executor."""
    start = time.perf_counter()
    arrivals = [start + i * window_s / count for i in range(count)]
    started: list[float] = [0.0] * count
    finished: list[float] = [0.0] * count

    def one(i: int) -> None:
        delay = arrivals[i] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # a worker thread, not the loop: waits for this job's arrival
        started[i] = time.perf_counter()  # taken by a worker: where Hades publishes ``running``
        name = f"burst-raw-{uuid.uuid4().hex[:12]}"
        volume = client.volumes.create(name)
        try:
            container = client.containers.create(
                BUSYBOX_IMAGE,
                ["sh", "-c", f"sleep {sleep_s}"],
                name=name,
                network_mode="none",
                init=True,
                working_dir="/shared",
                volumes={name: {"bind": "/shared", "mode": "rw"}},
                security_opt=["no-new-privileges"],
            )
            try:
                container.start()
                for _ in container.logs(stream=True, follow=True):
                    pass
                container.wait()
                finished[i] = time.perf_counter()
            finally:
                container.remove(force=True)
        finally:
            volume.remove(force=True)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    return {
        "drain_s": max(finished) - start,
        "queue_wait_s": [s - a for s, a in zip(started, arrivals, strict=True)],
        "finished_at_s": sorted(f - start for f in finished),
    }


async def hades_burst(url: str, submit_port: int, count: int) -> dict[str, Any]:
    """POST ``count`` jobs over 10 s; follow their status events until every job is terminal."""
    nc = await nats.connect(url)
    running: dict[str, list[tuple[int, float]]] = {}
    terminal: dict[str, list[tuple[str, float]]] = {}
    finished = asyncio.Event()

    async def on_status(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("kind") != "job":
            return
        now = time.perf_counter()
        if event["status"] == "running":
            running.setdefault(event["job_id"], []).append((event["attempt"], now))
        elif event["status"] in TERMINAL:
            terminal.setdefault(event["job_id"], []).append((event["status"], now))
            if len(terminal) >= count:
                finished.set()

    await nc.subscribe("hades.status.*", cb=on_status, pending_msgs_limit=1_000_000)
    await nc.flush()
    body = {"name": "burst", "steps": [{"id": 1, "image": BUSYBOX_IMAGE, "script": f"sleep {SLEEP_S}"}]}
    posted: dict[str, float] = {}
    failures = 0
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def post(i: int) -> None:
            nonlocal failures
            await asyncio.sleep(max(0.0, start + i * SUBMIT_WINDOW_S / count - time.perf_counter()))
            t = time.perf_counter()
            async with http.post(f"http://127.0.0.1:{submit_port}/jobs", json=body) as response:
                if response.status != 202:
                    failures += 1
                    return
                posted[(await response.json())["id"]] = t

        await asyncio.gather(*(post(i) for i in range(count)))
    submitted_in_s = max(posted.values()) - start if posted else 0.0
    await asyncio.wait_for(finished.wait(), DRAIN_TIMEOUT_S)
    await nc.close()
    first_start = {job: min(at for _, at in runs) for job, runs in running.items()}
    waits = [first_start[job] - posted[job] for job in posted if job in first_start]
    ordered = sorted(posted, key=posted.__getitem__)
    idle = [first_start[job] - posted[job] for job in ordered[:CONCURRENCY] if job in first_start]
    ends = sorted(at for outcomes in terminal.values() for _, at in outcomes)
    refills = []
    for begun in sorted(first_start.values())[CONCURRENCY:]:
        before = [end for end in ends if end <= begun]
        if before:
            refills.append(begun - before[-1])
    return {
        "submitted_in_s": submitted_in_s,
        "post_failures": failures,
        "drain_s": max(ends) - start,
        "queue_wait_s": waits,
        "start_latency_s": idle,
        "slot_refill_s": refills,
        "finished_at_s": [end - start for end in ends],
        "lost": sorted(set(posted) - set(terminal)),
        "ended_twice": sorted(job for job, outcomes in terminal.items() if len(outcomes) > 1),
        "run_twice": sorted(job for job, runs in running.items() if len({attempt for attempt, _ in runs}) > 1),
        "not_succeeded": sorted(job for job, outcomes in terminal.items() if outcomes[0][0] != "succeeded"),
    }


def main() -> dict[str, Any]:
    client = docker.from_env()
    build_busybox_image(client)
    with nats_server() as server:
        env = {"HADES_NATS_URL": server.url, "HADES_CONCURRENCY": str(CONCURRENCY)}
        with (
            function("logs", env, "HADES_LOGS_PORT"),  # as deployed: the collector writes every record meanwhile
            function("dispatch", env, "HADES_DISPATCH_PORT"),
            function("submit", env, "HADES_SUBMIT_PORT") as port,
        ):
            hades = asyncio.run(hades_burst(server.url, port, JOBS))
    raw = raw_docker(client, JOBS)
    client.close()
    report = {
        "benchmark": "burst",
        "machine": machine(),
        "jobs": JOBS,
        "submit_window_s": SUBMIT_WINDOW_S,
        "concurrency": CONCURRENCY,
        "step": f"sleep {SLEEP_S}",
        "ideal_drain_s": round(JOBS * SLEEP_S / CONCURRENCY, 1),
        "hades_submitted_in_s": round(hades["submitted_in_s"], 2),
        "hades_post_failures": hades["post_failures"],
        "hades_drain_s": round(hades["drain_s"], 2),
        "raw_docker_drain_s": round(raw["drain_s"], 2),
        "ratio_drain": round(hades["drain_s"] / raw["drain_s"], 3),
        "hades_queue_wait_s": summary(hades["queue_wait_s"]),
        "raw_docker_queue_wait_s": summary(raw["queue_wait_s"]),
        "hades_start_latency_s": summary(hades["start_latency_s"]),
        "hades_slot_refill_s": summary(hades["slot_refill_s"]),
        "lost": len(hades["lost"]),
        "ended_twice": len(hades["ended_twice"]),
        "run_twice": len(hades["run_twice"]),
        "not_succeeded": len(hades["not_succeeded"]),
        "series": {
            "hades_finished_at_s": [round(x, 3) for x in hades["finished_at_s"]],
            "raw_docker_finished_at_s": [round(x, 3) for x in raw["finished_at_s"]],
            "hades_queue_wait_s": [round(x, 3) for x in sorted(hades["queue_wait_s"])],
            "raw_docker_queue_wait_s": [round(x, 3) for x in sorted(raw["queue_wait_s"])],
        },
    }
    print(json.dumps({k: v for k, v in report.items() if k != "series"}, indent=2))
    return report


if __name__ == "__main__":
    main()
