"""The inputs of the capacity model (docs/capacity.md), measured on a three-node JetStream cluster on loopback
(``tests/cluster.py``), and the drain of a burst with 1, 2 and 3 dispatchers against the model's prediction.

- JetStream publish rate, R1 vs R3: a nats-py loop with 64 publishes in flight, 4 s each.
- submit accepted jobs/s, one replica on R3: 32 POSTs in flight from one Python client for 5 s.
- logs records/s and lines/s, one replica on R3: a backlog of ``LOGS_JOBS`` finished jobs (3 status events and
  ``LOG_LINES`` lines each) published first, then the time one logs process takes to fold all of it (from its
  readiness); and what those jobs added to each node's file store (bytes per job).
- each NATS node's peak memory and store size at the end.
- dispatch: ``DRAIN_JOBS`` one-step ``sleep 2`` jobs POSTed at once, drained by 1, 2 and 3 dispatchers at
  ``HADES_CONCURRENCY=4`` each (one Docker engine, as on one node); and the same jobs straight through docker-py at
  the concurrency of 3 dispatchers (12), the engine's own pace. The model predicts the drain with k dispatchers
  from the 1-dispatcher figure: rate = min(k * rate_1, engine rate); prediction vs measurement is reported.

Short on purpose (about 4 minutes): the machine is shared; its load average is recorded with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import docker
import nats

from bench import burst
from bench.common import ROOT, machine
from runtime import events, messaging, subjects
from runtime.jobs import JobStatus
from runtime.settings import Settings
from tests.cluster import Deployment, NatsCluster
from tests.dockerfixtures import BUSYBOX_IMAGE, build_busybox_image
from tests.helpers import SCOPE, poll

PUBLISH_S = 4.0
SUBMIT_S = 5.0
LOGS_JOBS = int(os.environ.get("HADES_BENCH_SCALE_LOGS_JOBS", "1500"))
LOG_LINES = 100
DRAIN_JOBS = int(os.environ.get("HADES_BENCH_SCALE_JOBS", "72"))
CONCURRENCY = 4
SLEEP_S = 2
PAYLOAD = json.loads((ROOT / "schemas" / "examples" / "valid" / "hello.json").read_text())
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def publish_rate(urls: list[str], replicas: int) -> float:
    """Acked JetStream publishes per second into a stream of ``replicas``, 64 in flight."""
    nc = await nats.connect(urls)
    js = nc.jetstream(timeout=10)
    name = f"BENCH_R{replicas}"
    await js.add_stream(name=name, subjects=[f"bench.r{replicas}"], num_replicas=replicas)
    payload = json.dumps(PAYLOAD).encode()
    done = 0
    end = time.perf_counter() + PUBLISH_S

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await js.publish(f"bench.r{replicas}", payload)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(64)))
    elapsed = time.perf_counter() - start
    await js.delete_stream(name)
    await nc.close()
    return done / elapsed


async def submit_rate(url: str) -> dict[str, float]:
    accepted = refused = 0
    latencies: list[float] = []
    end = time.perf_counter() + SUBMIT_S
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def client() -> None:
            nonlocal accepted, refused
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with http.post(f"{url}/jobs", json=PAYLOAD) as answer:
                    await answer.read()
                    if answer.status == 202:
                        accepted += 1
                        latencies.append(time.perf_counter() - t)
                    else:
                        refused += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(32)))
        elapsed = time.perf_counter() - start
    return {
        "accepted_per_s": round(accepted / elapsed, 1),
        "refused": refused,
        "p50_ms": round(1000 * burst.percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * burst.percentile(latencies, 0.99), 1),
    }


async def publish_finished_jobs(urls: list[str], count: int) -> str:
    """``count`` finished jobs' events as submit and dispatch store them: queued, running, a log batch, succeeded."""
    conn = await messaging.connect(
        Settings.from_env({"HADES_NATS_URL": ",".join(urls), "HADES_NATS_REPLICAS": "3"}), name="bench-scale"
    )
    summary = {"name": "scale", "priority": 3, "lane": "high", "submitted_at": "2026-01-01T00:00:00.000Z"}
    summary["steps"] = [{"id": 1, "name": "build", "image": "x"}]

    last = ""

    async def one() -> None:
        nonlocal last
        job_id = last = str(uuid.uuid4())
        queued = events.job_event(job_id, attempt=0, seq=0, status=JobStatus.QUEUED, job=summary)
        running = events.job_event(job_id, attempt=1, seq=1, status=JobStatus.RUNNING, job=summary)
        done = events.job_event(job_id, attempt=1, seq=2, status=JobStatus.SUCCEEDED)
        batch: events.LogBatch = {
            "job_id": job_id,
            "attempt": 1,
            "lines": [
                {"seq": n, "step_id": 1, "stream": "stdout", "at": "2026-01-01T00:00:01.000Z", "message": f"line {n}"}
                for n in range(1, LOG_LINES + 1)
            ],
        }
        for event in (queued, running):
            await conn.publish(
                subjects.status_subject(job_id), messaging.encode(event), msg_id=events.status_msg_id(event)
            )
        await conn.publish(subjects.logs_subject(job_id), messaging.encode(batch), msg_id=events.logs_msg_id(batch))
        await conn.publish(subjects.status_subject(job_id), messaging.encode(done), msg_id=events.status_msg_id(done))

    for start in range(0, count, 50):
        await asyncio.gather(*(one() for _ in range(min(50, count - start))))
    await conn.close()
    return last


async def collector_backlog(urls: list[str]) -> int:
    nc = await nats.connect(urls)
    try:
        info = await nc.jetstream().consumer_info(subjects.EVENTS_STREAM, subjects.LOGS_CONSUMER)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    except nats.js.errors.NotFoundError:
        return -1
    finally:
        await nc.close()


async def _drained(urls: list[str]) -> bool:
    return await collector_backlog(urls) == 0


def store_bytes(nats_cluster: NatsCluster) -> list[int]:
    return [sum(f.stat().st_size for f in node.store.rglob("*") if f.is_file()) for node in nats_cluster.nodes]


def nats_rss_mib(nats_cluster: NatsCluster) -> list[float]:
    """Each node's peak resident memory so far (VmHWM)."""
    found = []
    for node in nats_cluster.nodes:
        assert node.process is not None
        status = Path(f"/proc/{node.process.pid}/status").read_text()
        found.append(round(int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024, 1))
    return found


async def logs_rate(nats_cluster: NatsCluster, root: Path) -> dict[str, Any]:
    before = store_bytes(nats_cluster)
    last = await publish_finished_jobs(nats_cluster.urls, LOGS_JOBS)
    await asyncio.sleep(2)  # the file store writes its blocks
    grown = [after - was for after, was in zip(store_bytes(nats_cluster), before, strict=True)]
    (root / "logs-stage").mkdir(parents=True, exist_ok=True)
    deployment = Deployment.create(nats_cluster, root / "logs-stage", {"logs": 1}, HADES_LOG_LEVEL="warning")
    start = time.perf_counter()
    await deployment.start()
    ready = time.perf_counter()
    url = f"{deployment.urls('logs')[0]}/jobs/{last}"

    async def done() -> bool:  # the last job's record complete (one replica folds in stream order), none pending
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            record = await answer.json() if answer.status == 200 else {}
        complete = (record.get("status"), record.get("log_lines")) == ("succeeded", LOG_LINES)
        return complete and await _drained(nats_cluster.urls)

    await poll(done, timeout_s=600, interval_s=0.2)
    end = time.perf_counter()
    elapsed = end - ready
    await deployment.stop()
    return {
        "jobs": LOGS_JOBS,
        "process_start_s": round(ready - start, 2),
        "seconds_after_ready": round(elapsed, 2),
        "records_per_s": round(LOGS_JOBS / elapsed, 1),
        "status_events_per_s": round(3 * LOGS_JOBS / elapsed, 1),
        "lines_per_s": round(LOGS_JOBS * LOG_LINES / elapsed, 1),
        "store_bytes_per_job_per_node": [round(g / LOGS_JOBS) for g in grown],
    }


async def drain(nats_cluster: NatsCluster, root: Path, dispatchers: int) -> dict[str, Any]:
    """``DRAIN_JOBS`` POSTed at once, ``dispatchers`` dispatch processes: first POST → last terminal event."""
    stage = root / f"drain-{dispatchers}"
    stage.mkdir(parents=True, exist_ok=True)
    deployment = Deployment.create(
        nats_cluster,
        stage,
        {"submit": 1, "logs": 1, "dispatch": dispatchers},
        HADES_CONCURRENCY=str(CONCURRENCY),
        HADES_LOG_LEVEL="warning",
    )
    await deployment.start()
    nc = await nats.connect(nats_cluster.urls)
    ended: dict[str, float] = {}
    started: dict[str, float] = {}
    all_ended = asyncio.Event()

    async def on_status(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("kind") != "job":
            return
        if event["status"] == "running":
            started.setdefault(event["job_id"], time.perf_counter())
        elif event["status"] in TERMINAL:
            ended.setdefault(event["job_id"], time.perf_counter())
            if len(ended) >= DRAIN_JOBS:
                all_ended.set()

    await nc.subscribe("hades.status.*", cb=on_status)
    await nc.flush()
    body = {"name": "drain", "steps": [{"id": 1, "image": BUSYBOX_IMAGE, "script": f"sleep {SLEEP_S}"}]}
    first_post = time.perf_counter()
    async with aiohttp.ClientSession() as http:

        async def post(_: int) -> str:
            async with http.post(f"{deployment.urls('submit')[0]}/jobs", json=body) as answer:
                assert answer.status == 202, await answer.text()
                return str((await answer.json())["id"])

        ids = await asyncio.gather(*(post(i) for i in range(DRAIN_JOBS)))
    await asyncio.wait_for(all_ended.wait(), timeout=600)
    await nc.close()
    await deployment.stop()
    drain_s = max(ended[i] for i in ids) - first_post
    holds = [ended[i] - started[i] for i in ids if i in started]
    return {
        "dispatchers": dispatchers,
        "slots": dispatchers * CONCURRENCY,
        "drain_s": round(drain_s, 2),
        "jobs_per_s": round(DRAIN_JOBS / drain_s, 3),
        "slot_hold_s_mean": round(sum(holds) / len(holds), 2) if holds else None,
        "load_after": load(),
    }


def raw_engine(concurrency: int) -> dict[str, Any]:
    client = docker.from_env()
    try:
        build_busybox_image(client)
        found = burst.raw_docker(client, DRAIN_JOBS, concurrency=concurrency, window_s=0.0, sleep_s=SLEEP_S)
    finally:
        client.close()
    return {
        "concurrency": concurrency,
        "drain_s": round(found["drain_s"], 2),
        "jobs_per_s": round(DRAIN_JOBS / found["drain_s"], 3),
    }


async def run() -> dict[str, Any]:
    os.environ.setdefault("HADES_SCOPE", SCOPE)
    report: dict[str, Any] = {"machine": machine(), "load_before": load()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nats_cluster = NatsCluster.create(root / "nats")
        await nats_cluster.start()
        try:
            report["publish_per_s"] = {
                "r1": round(await publish_rate(nats_cluster.urls, 1), 1),
                "r3": round(await publish_rate(nats_cluster.urls, 3), 1),
            }
            print("publish", report["publish_per_s"], flush=True)
            report["logs_r3"] = await logs_rate(nats_cluster, root)  # first: its backlog is only its own jobs
            print("logs", report["logs_r3"], flush=True)
            stage = root / "submit-stage"
            stage.mkdir()
            submit_only = Deployment.create(nats_cluster, stage, {"submit": 1}, HADES_LOG_LEVEL="warning")
            await submit_only.start()
            report["submit_r3"] = await submit_rate(submit_only.urls("submit")[0])
            await submit_only.stop()
            await _purge_jobs(nats_cluster.urls)
            print("submit", report["submit_r3"], flush=True)
            report["drain"] = [await drain(nats_cluster, root, k) for k in (1, 2, 3)]
            print("drain", report["drain"], flush=True)
            report["nats_peak_rss_mib"] = nats_rss_mib(nats_cluster)
            report["nats_store_mib"] = [round(b / 2**20, 1) for b in store_bytes(nats_cluster)]
        finally:
            await asyncio.to_thread(nats_cluster.stop)
    report["raw_engine"] = await asyncio.to_thread(raw_engine, 3 * CONCURRENCY)
    rate_1 = report["drain"][0]["jobs_per_s"]
    engine = report["raw_engine"]["jobs_per_s"]
    report["model"] = [
        {
            "dispatchers": point["dispatchers"],
            "predicted_jobs_per_s": round(min(point["dispatchers"] * rate_1, engine), 3),
            "measured_jobs_per_s": point["jobs_per_s"],
            "predicted_drain_s": round(DRAIN_JOBS / min(point["dispatchers"] * rate_1, engine), 2),
            "measured_drain_s": point["drain_s"],
            "error": round(point["drain_s"] / (DRAIN_JOBS / min(point["dispatchers"] * rate_1, engine)) - 1, 3),
        }
        for point in report["drain"]
    ]
    report["load_after"] = load()
    print(json.dumps(report, indent=2))
    return report


async def _purge_jobs(urls: list[str]) -> None:
    """The submit stage's jobs are not for the drain stages' dispatchers."""
    nc = await nats.connect(urls)
    await nc.jetstream().purge_stream(subjects.JOBS_STREAM)
    await nc.close()


def main() -> dict[str, Any]:
    return asyncio.run(run())
