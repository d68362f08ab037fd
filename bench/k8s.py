"""Kubernetes executor overhead on the cluster of ``KUBECONFIG`` (tools/k8s_up.sh starts ../shared/k8s-local):

- single: submit → terminal event of the 3-step job vs creating the same Job (same manifest) directly with the
  client and waiting for its ``Complete`` condition. Target: Hades ≤ raw + 1 s.
- batch: 100 one-step jobs through Hades at ``HADES_CONCURRENCY=50`` vs the same 100 Jobs created directly, 50 at
  a time. Target: ratio ≤ 1.15. API requests per job are counted (dispatch runs in this process to count them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kubernetes
import nats
from aiohttp import web

from bench.common import function, machine, nats_server
from functions.dispatch.executors.k8s import manifest
from functions.dispatch.handlers import DISPATCH
from functions.dispatch.handlers import create_app as create_dispatch
from runtime.jobs import Job
from runtime.settings import Settings
from tests.k8sfixtures import K8S_IMAGE

JOBS = 100
CONCURRENCY = 50
SINGLE_RUNS = 3
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
THREE_STEPS = [
    {"id": 1, "name": "setup", "image": K8S_IMAGE, "script": "echo setting up > /shared/out"},
    {"id": 2, "name": "work", "image": K8S_IMAGE, "script": "cat /shared/out; echo working >> /shared/out"},
    {"id": 3, "name": "finish", "image": K8S_IMAGE, "script": "cat /shared/out"},
]
ONE_STEP = [{"id": 1, "name": "noop", "image": K8S_IMAGE, "script": "true"}]


def k8s_env(namespace: str) -> dict[str, str]:
    return {
        "HADES_EXECUTOR": "kubernetes",
        "HADES_K8S_NAMESPACE": namespace,
        "HADES_K8S_REQUEST_FRACTION": "0.01",
        "HADES_CONCURRENCY": str(CONCURRENCY),
        "HADES_SCOPE": "bench",
        "HADES_PULL_TIMEOUT_SECONDS": "0.5",
    }


class RawJobs:
    """The baseline: the same Jobs created with the client, followed by one watch, deleted when complete."""

    def __init__(self, client: Any, namespace: str, settings: Settings) -> None:
        self.batch = kubernetes.client.BatchV1Api(client)
        self.namespace, self.settings = namespace, settings
        self.done: dict[str, threading.Event] = {}
        self.requests = 0
        self._stop = threading.Event()
        self._watch = kubernetes.watch.Watch()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        selector = manifest.selector("raw-bench")
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a window ended or the namespace went away: watch again or stop
                self._watch_once(selector)

    def _watch_once(self, selector: str) -> None:
        for event in self._watch.stream(
            self.batch.list_namespaced_job, self.namespace, label_selector=selector, timeout_seconds=60
        ):
            job = event["raw_object"]
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
                flag = self.done.get(job["metadata"]["name"])
                if flag is not None:
                    flag.set()

    def run(self, steps: list[dict[str, Any]]) -> None:
        job = Job.from_message(
            {
                "id": str(uuid.uuid4()),
                "name": "raw",
                "priority": 3,
                "metadata": {},
                "timeout_seconds": 600,
                "submitted_at": "2026-12-01T00:00:00.000Z",
                "steps": [
                    {
                        **s,
                        "metadata": {},
                        "continue_on_error": False,
                        "cpu_limit": 1.0,
                        "memory_bytes": 2**30,
                        "memory_swap_bytes": 2**30,
                        "pids_limit": 1024,
                        "network": "none",
                    }
                    for s in steps
                ],
            }
        )
        body = manifest.build_job(job, attempt=1, settings=self.settings)
        name = body["metadata"]["name"]
        flag = self.done[name] = threading.Event()
        self.batch.create_namespaced_job(self.namespace, body, _request_timeout=30)
        self.requests += 1
        if not flag.wait(300):
            raise RuntimeError(f"raw Job {name} did not complete")
        self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background", _request_timeout=30)
        self.requests += 1

    def batch_s(self, steps: list[dict[str, Any]], count: int, concurrency: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: self.run(steps), range(count)))
        return time.perf_counter() - start

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()


async def hades_jobs(url: str, submit_port: int, steps: list[dict[str, Any]], count: int) -> float:
    """Seconds from the first POST to the last terminal event."""
    nc = await nats.connect(url)
    done: set[str] = set()
    finished = asyncio.Event()

    async def on_status(msg: Any) -> None:
        event = json.loads(msg.data)
        if event.get("kind") == "job" and event["status"] in TERMINAL:
            done.add(event["job_id"])
            if len(done) >= count:
                finished.set()

    await nc.subscribe("hades.status.*", cb=on_status)
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:

        async def post() -> None:
            async with http.post(f"http://127.0.0.1:{submit_port}/jobs", json={"name": "bench", "steps": steps}) as r:
                assert r.status == 202, await r.text()

        await asyncio.gather(*(post() for _ in range(count)))
    await asyncio.wait_for(finished.wait(), 900)
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def hades_side(url: str, namespace: str) -> dict[str, Any]:
    settings = Settings.from_env({"HADES_NATS_URL": url, **k8s_env(namespace)})
    app = create_dispatch(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    env = {"HADES_NATS_URL": url}
    try:
        with function("submit", env, "HADES_SUBMIT_PORT") as port:
            await hades_jobs(url, port, ONE_STEP, 2)  # warm-up
            executor: Any = app[DISPATCH].executor
            single = [await hades_jobs(url, port, THREE_STEPS, 1) for _ in range(SINGLE_RUNS)]
            before = executor.api_requests
            batch = await hades_jobs(url, port, ONE_STEP, JOBS)
            per_job = (executor.api_requests - before) / JOBS
    finally:
        await runner.cleanup()
    return {"single": single, "batch": batch, "requests_per_job": per_job}


def main() -> dict[str, Any]:
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit("bench k8s needs KUBECONFIG (tools/k8s_up.sh starts the test cluster)")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONCURRENCY + 4
    client = kubernetes.client.ApiClient(configuration)
    core = kubernetes.client.CoreV1Api(client)
    namespace = f"hades-bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    raw = RawJobs(client, namespace, Settings.from_env({**k8s_env(namespace), "HADES_SCOPE": "raw-bench"}))
    try:
        raw.run(ONE_STEP)  # warm-up
        raw_single = [raw.batch_s(THREE_STEPS, 1, 1) for _ in range(SINGLE_RUNS)]
        before = raw.requests
        raw_batch = raw.batch_s(ONE_STEP, JOBS, CONCURRENCY)
        raw_per_job = (raw.requests - before) / JOBS
        with nats_server() as server:
            hades = asyncio.run(hades_side(server.url, namespace))
    finally:
        raw.stop()
        core.delete_namespace(namespace, propagation_policy="Background")
        client.close()
    report = {
        "benchmark": "k8s",
        "machine": machine(),
        "jobs": JOBS,
        "concurrency": CONCURRENCY,
        "raw_single_median_s": round(statistics.median(raw_single), 2),
        "hades_single_median_s": round(statistics.median(hades["single"]), 2),
        "single_overhead_s": round(statistics.median(hades["single"]) - statistics.median(raw_single), 2),
        "raw_batch_s": round(raw_batch, 2),
        "hades_batch_s": round(hades["batch"], 2),
        "ratio_batch": round(hades["batch"] / raw_batch, 3),
        "raw_requests_per_job": round(raw_per_job, 2),
        "hades_requests_per_job": round(hades["requests_per_job"], 2),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
