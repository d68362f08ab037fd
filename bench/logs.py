"""Logs at scale: serve a job's whole log as text, and show the logs function's memory stays bounded.

One logs process; a job with N lines published as dispatch would (batches of 1,000); ``GET ?format=text`` read
to the end. Its peak RSS growth is measured at 20,000 and 200,000 lines (bounded: it must not grow tenfold), and the
time is compared with a raw nats-py read of the same lines from the stream (an ordered consumer) in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import nats

from bench.common import function, machine, nats_server
from runtime import events, messaging, subjects
from runtime.jobs import JobStatus
from runtime.settings import Settings

SIZES = (20_000, 200_000)
BATCH = 1000


def listening_pid(port: int) -> int:
    """The process listening on a local TCP port (from /proc/net/tcp and the fd links; no extra tools)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return int(proc.name)
    raise RuntimeError(f"no process listens on {port}")


def rss_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


async def publish_job(url: str, lines: int) -> str:
    conn = await messaging.connect(Settings.from_env({"HADES_NATS_URL": url}), name="bench-logs")
    job_id = str(uuid.uuid4())
    summary = {
        "name": "big",
        "priority": 3,
        "lane": "high",
        "submitted_at": "2026-01-01T00:00:00.000Z",
        "steps": [{"id": 1, "name": "print", "image": "x"}],
    }
    for seq, status in ((0, JobStatus.QUEUED), (1, JobStatus.RUNNING)):
        event = events.job_event(job_id, attempt=0 if seq == 0 else 1, seq=seq, status=status, job=summary)
        await conn.publish(subjects.status_subject(job_id), messaging.encode(event), msg_id=events.status_msg_id(event))
    for start in range(1, lines + 1, BATCH):
        batch: events.LogBatch = {
            "job_id": job_id,
            "attempt": 1,
            "lines": [
                {"seq": n, "step_id": 1, "stream": "stdout", "at": "2026-01-01T00:00:01.000Z", "message": f"line {n}"}
                for n in range(start, min(start + BATCH, lines + 1))
            ],
        }
        await conn.publish(subjects.logs_subject(job_id), messaging.encode(batch), msg_id=events.logs_msg_id(batch))
    done = events.job_event(job_id, attempt=1, seq=2, status=JobStatus.SUCCEEDED)
    await conn.publish(subjects.status_subject(job_id), messaging.encode(done), msg_id=events.status_msg_id(done))
    await conn.close()
    return job_id


async def raw_read(url: str, job_id: str, lines: int) -> float:
    nc = await nats.connect(url)
    sub = await nc.jetstream().subscribe(subjects.logs_subject(job_id), ordered_consumer=True)
    start, count = time.perf_counter(), 0
    while count < lines:
        count += len(json.loads((await sub.next_msg(timeout=10)).data)["lines"])
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


async def wait_collected(port: int, job_id: str, lines: int) -> None:
    """Until the collector has counted every line into the record (it reads the same backlog)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(f"http://127.0.0.1:{port}/jobs/{job_id}") as response:
                if response.status == 200 and (await response.json()).get("log_lines") == lines:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the collector did not catch up within 60 s")


async def fetch_text(port: int, job_id: str, lines: int) -> float:
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/jobs/{job_id}/logs?format=text") as r,
    ):
        body = await r.text()
    elapsed = time.perf_counter() - start
    got = body.splitlines()
    assert got == [f"line {n}" for n in range(1, lines + 1)], "the text log is not exactly the lines in order"
    return elapsed


def main() -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "logs", "machine": machine(), "runs": []}
    with nats_server() as server:
        env = {"HADES_NATS_URL": server.url}
        for lines in SIZES:
            job_id = asyncio.run(publish_job(server.url, lines))
            raw_s = asyncio.run(raw_read(server.url, job_id, lines))
            with function("logs", env, "HADES_LOGS_PORT") as port:
                pid = listening_pid(port)
                after_collect = rss_kib(pid)  # the collector has read the backlog meanwhile (see below)
                asyncio.run(wait_collected(port, job_id, lines))
                idle = rss_kib(pid)
                text_s = asyncio.run(fetch_text(port, job_id, lines))
                peak = rss_kib(pid)
            results["runs"].append(
                {
                    "lines": lines,
                    "raw_stream_read_s": round(raw_s, 2),
                    "text_response_s": round(text_s, 2),
                    "ratio_to_raw_read": round(text_s / raw_s, 2),
                    "rss_start_mib": round(after_collect["VmRSS"] / 1024, 1),
                    "rss_after_collecting_mib": round(idle["VmRSS"] / 1024, 1),
                    "rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
                    "rss_peak_mib": round(peak["VmHWM"] / 1024, 1),
                    "peak_growth_mib": round((peak["VmHWM"] - idle["VmRSS"]) / 1024, 1),
                }
            )
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
