"""Exam-scale reads (issue 24): the filtered listing at 100,000 records, 1,000 live followers, collector ingest.

Every part runs the logs function as a real process against its own nats-server and compares with a raw NATS
client doing the least the same work needs, in the same run:

- ``listing``: 100,000 records in the bucket; first pages (p50/p99) for each filter, complete (a rare match on
  the first page); baseline: a raw nats-py read of the same number of records by key.
- ``followers``: 200 jobs print ~20 lines/s each (a batch of 4 lines every 200 ms, as dispatch batches), 1,000 SSE
  followers (5 per job); every line once and in order, delay publish → delivery; baseline: a raw core-NATS
  subscriber in the followers' process. Meanwhile the logs process's RSS, and ``/readyz`` and a job page from a
  process of their own.
- ``ingest``: a backlog of log lines and status events drained by 1 and by 2 logs replicas (lines/s, events/s),
  then a steady offered load (50,000 lines/s + 500 status events/s) and how long until each record shows it.

``python -m bench reads`` runs all three; ``python -m bench.reads ingest`` one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import orjson

from bench.common import function, machine, nats_server
from runtime import events, messaging, subjects
from runtime.jobs import JobStatus, StepStatus
from runtime.settings import Settings

LINE = "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/x/y/1.0/y-1.0.jar"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


async def connect(url: str) -> messaging.Messaging:
    return await messaging.connect(Settings.from_env({"HADES_NATS_URL": url}), name="bench-reads")


def summary(job_id: str, index: int) -> dict[str, Any]:
    return {
        "name": f"exam-{index:06d}",
        "priority": 3,
        "lane": "normal",
        "submitted_at": "2026-01-01T00:00:00.000Z",
        "steps": [{"id": s, "name": f"step {s}", "image": "x"} for s in range(1, 10)],
    }


async def publish_all(conn: messaging.Messaging, items: list[tuple[str, bytes, str]], *, in_flight: int = 256) -> None:
    queue = iter(items)

    async def worker() -> None:
        for subject, payload, msg_id in queue:
            await conn.publish(subject, payload, msg_id=msg_id)

    await asyncio.gather(*(worker() for _ in range(in_flight)))


# ---------------------------------------------------------------------------------------------------- ingest


def backlog_items(jobs: int, *, lines_per_job: int, lines_per_batch: int, steps: int) -> list[tuple[str, bytes, str]]:
    """Per job: queued and running, per step a running and a succeeded event, its lines in batches, the end."""
    items: list[tuple[str, bytes, str]] = []

    def status(event: events.StatusEvent) -> None:
        items.append((subjects.status_subject(event["job_id"]), orjson.dumps(event), events.status_msg_id(event)))

    for index in range(jobs):
        job_id = str(uuid.uuid4())
        seq = 0
        status(events.job_event(job_id, attempt=0, seq=0, status=JobStatus.QUEUED, job=summary(job_id, index)))
        seq += 1
        status(events.job_event(job_id, attempt=1, seq=seq, status=JobStatus.RUNNING))
        per_step = lines_per_job // steps
        line = 0
        for step in range(1, steps + 1):
            seq += 1
            status(
                events.step_event(job_id, attempt=1, seq=seq, step_id=step, step_name="s", status=StepStatus.RUNNING)
            )
            for start in range(0, per_step, lines_per_batch):
                batch: events.LogBatch = {
                    "job_id": job_id,
                    "attempt": 1,
                    "lines": [
                        {
                            "seq": line + n + 1,
                            "step_id": step,
                            "stream": "stdout",
                            "at": "2026-01-01T00:00:01.000Z",
                            "message": f"[INFO] Downloading artifact {line + n + 1} from central",
                        }
                        for n in range(min(lines_per_batch, per_step - start))
                    ],
                }
                line += len(batch["lines"])
                items.append((subjects.logs_subject(job_id), orjson.dumps(batch), events.logs_msg_id(batch)))
            seq += 1
            status(
                events.step_event(
                    job_id, attempt=1, seq=seq, step_id=step, step_name="s", status=StepStatus.SUCCEEDED, exit_code=0
                )
            )
        seq += 1
        status(events.job_event(job_id, attempt=1, seq=seq, status=JobStatus.SUCCEEDED))
    return items


async def collector_pending(nc: nats.NATS) -> int:
    info = await nc.jetstream().consumer_info(subjects.EVENTS_STREAM, subjects.LOGS_CONSUMER)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


@contextlib.contextmanager
def replicas(count: int, env: dict[str, str]) -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(function("logs", env, "HADES_LOGS_PORT")) for _ in range(count)]


async def drain(url: str, items: list[tuple[str, bytes, str]]) -> float:
    """Publish the backlog (the replicas are up) and time it until the collector has acked every message."""
    conn = await connect(url)
    nc = await nats.connect(url)
    start = time.perf_counter()
    await publish_all(conn, items)
    while await collector_pending(nc):  # noqa: ASYNC110 (the server is asked; nothing here could set an event)
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    await nc.close()
    await conn.close()
    return elapsed


def ingest_drain(count: int, *, jobs: int, lines_per_job: int) -> dict[str, Any]:
    items = backlog_items(jobs, lines_per_job=lines_per_job, lines_per_batch=100, steps=9)
    lines = jobs * (lines_per_job // 9 * 9)
    statuses = sum(1 for subject, _, _ in items if subject.startswith(subjects.STATUS_SUBJECT_PREFIX))
    with nats_server() as server, replicas(count, {"HADES_NATS_URL": server.url}):
        elapsed = asyncio.run(drain(server.url, items))
    return {
        "replicas": count,
        "messages": len(items),
        "lines": lines,
        "status_events": statuses,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(lines / elapsed),
        "status_events_per_s": round(statuses / elapsed),
    }


async def steady(url: str, *, seconds: float, lines_per_s: int, status_per_s: int) -> dict[str, Any]:
    """Offer the load at a steady rate; watch the bucket for how soon each record shows each batch and event."""
    conn = await connect(url)
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value(subjects.RECORDS_BUCKET)
    published: dict[tuple[str, str, int], float] = {}  # (job, kind, number) -> when
    delays: list[float] = []

    async def on_write(msg: Any) -> None:
        now = time.perf_counter()
        record = orjson.loads(msg.data)
        key = (record["id"], "lines", record.get("last_log_seq", 0))
        when = published.pop(key, None)
        if when is not None:
            delays.append(now - when)
        status_key = (record["id"], "steps", sum(1 for s in record.get("steps", []) if s["status"] != "pending"))
        when = published.pop(status_key, None)
        if when is not None:
            delays.append(now - when)

    sub = await nc.subscribe(f"$KV.{subjects.RECORDS_BUCKET}.>", cb=on_write)
    del kv

    async def send(subject: str, body: Any, msg_id: str) -> None:
        await conn.publish(subject, orjson.dumps(body), msg_id=msg_id)

    jobs = 200
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    for index, job_id in enumerate(ids):
        event = events.job_event(job_id, attempt=1, seq=1, status=JobStatus.RUNNING, job=summary(job_id, index))
        await conn.publish(subjects.status_subject(job_id), orjson.dumps(event), msg_id=events.status_msg_id(event))
    await asyncio.sleep(2)
    line_seq = dict.fromkeys(ids, 0)
    step_seq = dict.fromkeys(ids, 1)
    steps_started = dict.fromkeys(ids, 0)
    lines_per_batch = 100
    tick_s = 0.1
    batches_per_tick = max(1, round(lines_per_s / lines_per_batch * tick_s))
    status_per_tick = max(1, round(status_per_s * tick_s))
    start = time.perf_counter()
    sent_lines = sent_status = 0
    tick = 0
    pending: set[asyncio.Task[Any]] = set()
    while time.perf_counter() - start < seconds:
        for n in range(batches_per_tick):
            job_id = ids[(tick * batches_per_tick + n) % jobs]
            first = line_seq[job_id] + 1
            line_seq[job_id] += lines_per_batch
            batch: events.LogBatch = {
                "job_id": job_id,
                "attempt": 1,
                "lines": [
                    {
                        "seq": first + i,
                        "step_id": 1,
                        "stream": "stdout",
                        "at": "2026-01-01T00:00:01Z",
                        "message": "x" * 60,
                    }
                    for i in range(lines_per_batch)
                ],
            }
            published[(job_id, "lines", line_seq[job_id])] = time.perf_counter()
            pending.add(
                asyncio.create_task(
                    conn.publish(subjects.logs_subject(job_id), orjson.dumps(batch), msg_id=events.logs_msg_id(batch))
                )
            )
            sent_lines += lines_per_batch
        for n in range(status_per_tick):
            job_id = ids[(tick * status_per_tick + n) % jobs]
            step_seq[job_id] += 1
            steps_started[job_id] += 1
            event = events.step_event(
                job_id,
                attempt=1,
                seq=step_seq[job_id],
                step_id=steps_started[job_id],
                step_name="s",
                status=StepStatus.RUNNING,
            )
            published[(job_id, "steps", steps_started[job_id])] = time.perf_counter()
            pending.add(
                asyncio.create_task(
                    conn.publish(
                        subjects.status_subject(job_id), orjson.dumps(event), msg_id=events.status_msg_id(event)
                    )
                )
            )
            sent_status += 1
        pending = {task for task in pending if not task.done()}
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * tick_s - time.perf_counter()))
    offered_s = time.perf_counter() - start
    await asyncio.gather(*pending)
    deadline = time.perf_counter() + 30
    while await collector_pending(nc) and time.perf_counter() < deadline:  # noqa: ASYNC110 (as in drain)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    caught_up_s = time.perf_counter() - start
    await sub.unsubscribe()
    await nc.close()
    await conn.close()
    # A write that folds several batches shows only the last one: the earlier ones were current at the same moment.
    return {
        "offered_s": round(offered_s, 1),
        "lines_per_s": round(sent_lines / offered_s),
        "status_events_per_s": round(sent_status / offered_s),
        "drained_after_s": round(caught_up_s, 1),
        "records_current_p50_ms": ms(pct(delays, 50)),
        "records_current_p99_ms": ms(pct(delays, 99)),
        "records_current_max_ms": ms(max(delays) if delays else float("nan")),
        "samples": len(delays),
        "never_seen": len(published),
    }


def ingest(*, jobs: int = 500, lines_per_job: int = 1000, steady_s: float = 15) -> dict[str, Any]:
    drains = [ingest_drain(count, jobs=jobs, lines_per_job=lines_per_job) for count in (1, 2)]
    with nats_server() as server, replicas(1, {"HADES_NATS_URL": server.url}):
        load = asyncio.run(steady(server.url, seconds=steady_s, lines_per_s=50_000, status_per_s=500))
    return {"drain": drains, "steady_one_replica": load}


def main(parts: list[str] | None = None) -> dict[str, Any]:
    chosen = parts or ["listing", "followers", "ingest"]
    results: dict[str, Any] = {"benchmark": "reads", "machine": machine(), "load_before": _loadavg()}
    for part in chosen:
        results[part] = PARTS[part]()
        results[f"load_after_{part}"] = _loadavg()
    print(json.dumps(results, indent=2))
    return results


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


PARTS = {"ingest": ingest}

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    main(sys.argv[1:] or None)
