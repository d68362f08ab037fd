"""Results collection: the files of a job's volume into the Object Store, vs a raw copy out of the same volume.

For 1, 100 and 1,000 files of the same total size (32 MiB of random bytes), in one volume each: the raw copy is
``get_archive`` of the directory from a stopped helper, read to the end and dropped (what any collection must at
least do); the collection is Hades' own (``docker_volume.collect``: the same archive, read as a tar stream, each
file streamed into the ``HADES_RESULTS`` bucket of a private nats-server, hashed and listed). Rounds alternate;
medians are reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import docker

from bench.common import machine, nats_server
from functions.dispatch.executors.docker import LABEL_JOB_ID, LABEL_SCOPE, DockerExecutor
from functions.dispatch.results import attach, docker_volume
from functions.dispatch.results.collector import Collector
from runtime import messaging
from runtime.jobs import Artifact, Job, JobId, Step
from runtime.settings import Settings
from tests.dockerfixtures import BUSYBOX_IMAGE, build_busybox_image

TOTAL_BYTES = 32 * 1024 * 1024
COUNTS = (1, 100, 1000)
ROUNDS = 3


class _Hooks:
    def __init__(self, results: Collector) -> None:
        self.results = results


def _job(count: int) -> Job:
    step = Step(1, "s", BUSYBOX_IMAGE, "true", {}, False, 1.0, 2**30, 2**30, 64, "none")
    return Job(
        id=JobId(str(uuid.uuid4())),
        name="bench",
        priority=3,
        metadata={},
        steps=(step,),
        timeout_s=600,
        submitted_at="2026-12-07T00:00:00.000Z",
        artifacts=(Artifact("data/*"),),
    )


def _fill(client: Any, volume: str, count: int) -> None:
    size = TOTAL_BYTES // count
    script = (
        f"mkdir -p /shared/data && i=0; "
        f"while [ $i -lt {count} ]; do head -c {size} /dev/urandom > /shared/data/f$i; i=$((i+1)); done"
    )
    client.containers.run(
        BUSYBOX_IMAGE, ["sh", "-c", script], volumes={volume: {"bind": "/shared", "mode": "rw"}}, remove=True
    )


def _raw_copy(client: Any, volume: str) -> tuple[float, int]:
    helper = client.api.create_container(
        BUSYBOX_IMAGE,
        command=["true"],
        host_config=client.api.create_host_config(binds={volume: {"bind": "/shared", "mode": "ro"}}),
    )
    try:
        start = time.perf_counter()
        chunks, _ = client.api.get_archive(helper["Id"], "/shared/data", chunk_size=64 * 1024)
        total = sum(len(chunk) for chunk in chunks)
        return time.perf_counter() - start, total
    finally:
        client.api.remove_container(helper["Id"], force=True)


async def _collect(
    executor: DockerExecutor, conn: messaging.Messaging, settings: Settings, volume: str, count: int
) -> tuple[float, int, int]:
    job = _job(count)
    collector = Collector(conn, job, settings)
    start = time.perf_counter()
    await docker_volume.collect(
        executor, _Hooks(collector), job, volume=volume, labels={LABEL_JOB_ID: job.id, LABEL_SCOPE: "bench"}
    )
    seconds = time.perf_counter() - start
    results = attach.terminal_fields(collector)["results"]
    kept = sum(a["size"] for a in results["artifacts"])
    return seconds, kept, len(results["artifacts"])


async def _run(url: str) -> list[dict[str, Any]]:
    settings = Settings.from_env(
        {"HADES_NATS_URL": url, "HADES_RESULTS_MAX_FILES": "2000", "HADES_RESULTS_MAX_BYTES": str(2 * TOTAL_BYTES)}
    )
    conn = await messaging.connect(settings, name="bench-results")
    executor = await DockerExecutor.create(settings)
    client = docker.from_env(timeout=120)
    rows = []
    try:
        for count in COUNTS:
            volume = f"hades-bench-results-{uuid.uuid4().hex[:8]}"
            client.volumes.create(volume)
            try:
                await asyncio.to_thread(_fill, client, volume, count)
                raw_s, hades_s = [], []
                raw_bytes = kept = files = 0
                for _ in range(ROUNDS):
                    seconds, raw_bytes = await asyncio.to_thread(_raw_copy, client, volume)
                    raw_s.append(seconds)
                    seconds, kept, files = await _collect(executor, conn, settings, volume, count)
                    hades_s.append(seconds)
                raw, ours = statistics.median(raw_s), statistics.median(hades_s)
                rows.append(
                    {
                        "files": count,
                        "bytes": kept,
                        "kept_files": files,
                        "raw_copy_s": round(raw, 3),
                        "raw_copy_mib_s": round(raw_bytes / raw / 2**20, 1),
                        "collection_s": round(ours, 3),
                        "collection_mib_s": round(kept / ours / 2**20, 1),
                        "ratio": round(ours / raw, 2),
                        "rounds_raw_s": [round(s, 3) for s in raw_s],
                        "rounds_collection_s": [round(s, 3) for s in hades_s],
                    }
                )
                print(rows[-1], flush=True)
            finally:
                client.volumes.get(volume).remove(force=True)
    finally:
        await executor.close()
        await conn.close()
        client.close()
    return rows


def main() -> dict[str, Any]:
    client = docker.from_env(timeout=120)
    build_busybox_image(client)
    client.close()
    with nats_server() as server:
        rows = asyncio.run(_run(server.url))
    return {"benchmark": "results", "machine": machine(), "total_bytes": TOTAL_BYTES, "rounds": ROUNDS, "rows": rows}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
