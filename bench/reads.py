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
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import nats
import orjson

from bench.common import function, machine, nats_server
from bench.logs import listening_pid, rss_kib
from functions.logs import records
from runtime import events, messaging, subjects
from runtime.jobs import JobStatus, StepStatus
from runtime.messaging import topology
from runtime.settings import Settings

LINE = "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/x/y/1.0/y-1.0.jar"


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    with nats_server() as server, replicas(count, {"HADES_NATS_URL": server.url}) as ports:
        pids = [listening_pid(port) for port in ports]
        before = [cpu_s(pid) for pid in pids]
        elapsed = asyncio.run(drain(server.url, items))
        used = sum(cpu_s(pid) - start for pid, start in zip(pids, before, strict=True))
    return {
        "replicas": count,
        "messages": len(items),
        "lines": lines,
        "status_events": statuses,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(lines / elapsed),
        "status_events_per_s": round(statuses / elapsed),
        "logs_cpu_s": round(used, 1),
        "lines_per_logs_cpu_s": round(lines / used),
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


# --------------------------------------------------------------------------------------------------- listing

LISTING_RECORDS = 100_000
RARE_STATUS = "timed_out"
RARE_NAME = "zz-rare-build"


def listing_records(count: int) -> list[dict[str, Any]]:
    """Written oldest first: most succeeded, some failed or queued; the rare ones among the oldest written."""
    made: list[dict[str, Any]] = []
    for index in range(count):
        record = dict(records.new_record(str(uuid.uuid4())))
        status = ("succeeded", "succeeded", "succeeded", "failed", "queued")[index % 5]
        name = f"exam-{index:06d}"
        if index in (3, 1_000, 7_777):
            name = RARE_NAME
        if index < 10 * 997 and index % 997 == 0:
            status = RARE_STATUS
        hour, minute = divmod(index * 6000 // count, 60)  # 100 hours, oldest first
        record.update(
            name=name,
            status=status,
            lane="normal",
            priority=3,
            submitted_at=f"2026-01-{1 + hour // 24:02d}T{hour % 24:02d}:{minute:02d}:00.000Z",
            steps=[
                {
                    "id": step,
                    "name": f"step {step}",
                    "image": "maven:3-eclipse-temurin-21",
                    "status": "succeeded",
                    "exit_code": 0,
                    "started_at": "2026-01-01T00:00:01.000Z",
                    "finished_at": "2026-01-01T00:00:09.000Z",
                    "duration_s": 8.0,
                    "reason": None,
                }
                for step in (1, 2, 3)
            ],
            log_lines=1200,
            log_bytes=90_000,
            last_log_seq=1200,
        )
        made.append(record)
    return made


LISTING_QUERIES = {
    "no filter": "",
    "status common (succeeded)": "status=succeeded",
    "status rare (10 timed_out, oldest written)": f"status={RARE_STATUS}",
    "name common (exam-0)": "name=exam-0",
    "name rare (3 jobs, oldest written)": f"name={RARE_NAME}",
    "time range recent hour": "submitted_after=2026-01-05T02:00:00Z&submitted_before=2026-01-05T03:00:00Z",
    "time range oldest hour": "submitted_after=2026-01-01T00:00:00Z&submitted_before=2026-01-01T01:00:00Z",
    "status + name (failed, exam-00)": "status=failed&name=exam-00",
}


def expected_count(made: list[dict[str, Any]], query: str) -> int:
    from functions.logs import jobindex

    params = dict(part.split("=", 1) for part in query.split("&") if part)
    flt = jobindex.Filter(
        statuses=frozenset(params["status"].split(",")) if "status" in params else None,
        name=params.get("name"),
        submitted_after_s=jobindex.parse_time(params["submitted_after"]) if "submitted_after" in params else None,
        submitted_before_s=jobindex.parse_time(params["submitted_before"]) if "submitted_before" in params else None,
    )
    return sum(1 for r in made if (e := jobindex.entry_from(0, r)) is not None and flt.admits(e))


async def listing_run(url: str, port: int, made: list[dict[str, Any]], *, rounds: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value(subjects.RECORDS_BUCKET)
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        async with http.get(f"http://127.0.0.1:{port}/jobs?limit=1") as response:
            await response.read()
        out["first_request_after_start_ms"] = ms(time.perf_counter() - start)
        raw: list[float] = []
        for round_ in range(rounds):
            keys = [made[(round_ * 50 + n * 1999) % len(made)]["id"] for n in range(50)]
            start = time.perf_counter()
            await asyncio.gather(*(kv.get(key) for key in keys))
            raw.append(time.perf_counter() - start)
        out["baseline_raw_50_gets"] = {"p50_ms": ms(pct(raw, 50)), "p99_ms": ms(pct(raw, 99))}
        for label, query in LISTING_QUERIES.items():
            expected = min(50, expected_count(made, query))
            times: list[float] = []
            sizes: set[int] = set()
            for _ in range(rounds):
                start = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{port}/jobs?limit=50&{query}") as response:
                    body = await response.json()
                times.append(time.perf_counter() - start)
                sizes.add(len(body["jobs"]))
            out[label] = {
                "p50_ms": ms(pct(times, 50)),
                "p99_ms": ms(pct(times, 99)),
                "ratio_p99_to_baseline": round(pct(times, 99) / pct(raw, 99), 1),
                "first_page_jobs": sorted(sizes),
                "complete": sizes == {expected},
            }
    await nc.close()
    return out


async def fill_bucket(url: str, made: list[dict[str, Any]]) -> float:
    conn = await connect(url)
    store = await conn.bucket(topology.records_bucket_config(Settings.from_env({"HADES_NATS_URL": url})))
    start = time.perf_counter()
    queue = iter(made)

    async def worker() -> None:
        for record in queue:
            await store.put(record["id"], orjson.dumps(record), revision=0)

    await asyncio.gather(*(worker() for _ in range(256)))
    elapsed = time.perf_counter() - start
    await conn.close()
    return elapsed


def listing(*, count: int = LISTING_RECORDS, rounds: int = 30) -> dict[str, Any]:
    made = listing_records(count)
    with nats_server() as server:
        fill_s = asyncio.run(fill_bucket(server.url, made))
        with function("logs", {"HADES_NATS_URL": server.url}, "HADES_LOGS_PORT") as port:
            pid = listening_pid(port)
            result = asyncio.run(listing_run(server.url, port, made, rounds=rounds))
            memory = rss_kib(pid)
    return {
        "records": count,
        "fill_s": round(fill_s, 1),
        "logs_rss_mib": round(memory["VmRSS"] / 1024, 1),
        **result,
    }


# ------------------------------------------------------------------------------------------------- followers

FOLLOW_JOBS = 200
FOLLOWERS_PER_JOB = 5
LINES_PER_BATCH = 4
BATCH_EVERY_S = 0.2


async def follow_one(port: int, job_id: str, stats: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /jobs/{job_id}/logs/stream HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass  # the response's headers
    stats["connected"] += 1
    expected = 1
    event = b"message"
    while True:
        line = await reader.readline()
        if not line:
            stats["cut"] += 1
            break
        if line.startswith(b"event: "):
            event = line[7:].strip()
        elif line.startswith(b"id: "):
            seq = int(line[4:].split(b".")[1])
            if seq != expected:
                stats["out_of_order_or_repeated"] += 1
            expected = seq + 1
        elif line.startswith(b"data: "):
            if event == b"message":
                message = orjson.loads(line[6:])["message"]
                stats["delays"].append(time.time() - float(message.split(" ", 3)[2]))
                stats["lines"] += 1
            elif event == b"end":
                stats["ended"] += 1
                break
            event = b"message"
    writer.close()


def followers_process(port: int, url: str, job_ids: list[str], ready: Any, results: Any) -> None:
    async def run() -> dict[str, Any]:
        stats: dict[str, Any] = {
            "connected": 0,
            "lines": 0,
            "ended": 0,
            "cut": 0,
            "out_of_order_or_repeated": 0,
            "delays": [],
        }
        raw: list[float] = []
        nc = await nats.connect(url)

        async def on_batch(msg: Any) -> None:
            now = time.time()
            for line in orjson.loads(msg.data)["lines"]:
                raw.append(now - float(line["message"].split(" ", 3)[2]))

        await nc.subscribe(f"{subjects.LOGS_SUBJECT_PREFIX}.*", cb=on_batch)
        tasks = [
            asyncio.create_task(follow_one(port, job_id, stats)) for job_id in job_ids for _ in range(FOLLOWERS_PER_JOB)
        ]
        while stats["connected"] < len(tasks):  # noqa: ASYNC110 (counted by the tasks; a poll is enough here)
            await asyncio.sleep(0.1)
        ready.set()
        await asyncio.wait(tasks, timeout=300)
        await nc.close()
        delays = stats.pop("delays")
        return {
            **stats,
            "followers": len(tasks),
            "delay_p50_ms": ms(pct(delays, 50)),
            "delay_p99_ms": ms(pct(delays, 99)),
            "delay_max_ms": ms(max(delays) if delays else float("nan")),
            "raw_nats_delay_p50_ms": ms(pct(raw, 50)),
            "raw_nats_delay_p99_ms": ms(pct(raw, 99)),
            "raw_nats_lines": len(raw),
        }

    results.put(asyncio.run(run()))


def probe_process(port: int, job_id: str, stop: Any, results: Any) -> None:
    import http.client

    times: dict[str, list[float]] = {"/readyz": [], f"/jobs/{job_id}": []}
    while not stop.is_set():
        for path, found in times.items():
            start = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
            found.append(time.perf_counter() - start)
        time.sleep(0.1)
    results.put(
        {
            ("job page" if "jobs" in k else k): {"p50_ms": ms(pct(v, 50)), "p99_ms": ms(pct(v, 99))}
            for k, v in times.items()
        }
    )


async def start_jobs(url: str, job_ids: list[str]) -> None:
    conn = await connect(url)
    for index, job_id in enumerate(job_ids):
        for seq, status in ((0, JobStatus.QUEUED), (1, JobStatus.RUNNING)):
            event = events.job_event(job_id, attempt=min(seq, 1), seq=seq, status=status, job=summary(job_id, index))
            await conn.publish(subjects.status_subject(job_id), orjson.dumps(event), msg_id=events.status_msg_id(event))
    await conn.close()


async def print_lines(url: str, job_ids: list[str], seconds: float) -> int:
    """Each job a batch of 4 lines every 200 ms (as dispatch batches), the jobs spread over the 200 ms; then the end."""
    conn = await connect(url)
    sent = 0

    async def job(index: int, job_id: str) -> None:
        nonlocal sent
        await asyncio.sleep(BATCH_EVERY_S * index / len(job_ids))
        seq = 0
        start = time.perf_counter()
        rounds = round(seconds / BATCH_EVERY_S)
        for round_ in range(rounds):
            lines: list[events.LogLine] = []
            for _ in range(LINES_PER_BATCH):
                seq += 1
                message = f"{index} {seq} {time.time():.6f} [INFO] Compiling 42 source files to target/classes"
                lines.append(
                    {"seq": seq, "step_id": 1, "stream": "stdout", "at": "2026-01-01T00:00:00Z", "message": message}
                )
            batch: events.LogBatch = {"job_id": job_id, "attempt": 1, "lines": lines}
            await conn.publish(subjects.logs_subject(job_id), orjson.dumps(batch), msg_id=events.logs_msg_id(batch))
            sent += len(lines)
            await asyncio.sleep(max(0.0, start + (round_ + 1) * BATCH_EVERY_S - time.perf_counter()))
        done = events.job_event(job_id, attempt=1, seq=2, status=JobStatus.SUCCEEDED)
        await conn.publish(subjects.status_subject(job_id), orjson.dumps(done), msg_id=events.status_msg_id(done))

    await asyncio.gather(*(job(index, job_id) for index, job_id in enumerate(job_ids)))
    await conn.close()
    return sent


def followers(*, seconds: float = 30, client_processes: int = 2) -> dict[str, Any]:
    job_ids = [str(uuid.uuid4()) for _ in range(FOLLOW_JOBS)]
    context = multiprocessing.get_context("spawn")
    with nats_server() as server, function("logs", {"HADES_NATS_URL": server.url}, "HADES_LOGS_PORT") as port:
        pid = listening_pid(port)
        asyncio.run(start_jobs(server.url, job_ids))
        results = context.Queue()
        readies = []
        clients = []
        share = len(job_ids) // client_processes
        for n in range(client_processes):
            ready = context.Event()
            part = job_ids[n * share : (n + 1) * share]
            process = context.Process(target=followers_process, args=(port, server.url, part, ready, results))
            process.start()
            readies.append(ready)
            clients.append(process)
        for ready in readies:
            ready.wait(120)
        idle = rss_kib(pid)
        stop = context.Event()
        probes = context.Queue()
        probe = context.Process(target=probe_process, args=(port, job_ids[0], stop, probes))
        probe.start()
        peak = [idle["VmRSS"]]
        sampling = True

        async def sample() -> None:
            while sampling:
                peak.append(rss_kib(pid)["VmRSS"])
                await asyncio.sleep(0.5)

        async def publish() -> int:
            nonlocal sampling
            sampler = asyncio.create_task(sample())
            sent = await print_lines(server.url, job_ids, seconds)
            sampling = False
            await sampler
            return sent

        cpu_before, wall_before = cpu_s(pid), time.perf_counter()
        sent = asyncio.run(publish())
        cpu_used, wall = cpu_s(pid) - cpu_before, time.perf_counter() - wall_before
        stop.set()
        parts = [results.get(timeout=300) for _ in clients]
        probe_result = probes.get(timeout=60)
        for process in [*clients, probe]:
            process.join(30)
        memory = rss_kib(pid)
    lines = sum(p["lines"] for p in parts)
    return {
        "jobs": FOLLOW_JOBS,
        "followers": sum(p["followers"] for p in parts),
        "lines_per_job_per_s": LINES_PER_BATCH / BATCH_EVERY_S,
        "seconds": seconds,
        "lines_published": sent,
        "lines_delivered": lines,
        "every_line_once_in_order": lines == sent * FOLLOWERS_PER_JOB
        and all(p["out_of_order_or_repeated"] == 0 and p["cut"] == 0 for p in parts),
        "ended": sum(p["ended"] for p in parts),
        "client_processes": parts,
        "logs_cpu_s_per_s": round(cpu_used / wall, 2),
        "logs_cpu_us_per_delivered_line": round(cpu_used / max(lines, 1) * 1e6, 1),
        "logs_rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "logs_rss_max_sampled_mib": round(max(peak) / 1024, 1),
        "logs_rss_hwm_mib": round(memory["VmHWM"] / 1024, 1),
        "probes_during_run": probe_result,
    }


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


PARTS = {"listing": listing, "followers": followers, "ingest": ingest}

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    main(sys.argv[1:] or None)
