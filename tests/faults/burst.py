"""An exam burst on the scaled-out install (``tests/cluster.py``): several submitters POSTing short jobs with
callbacks to every submit replica, retrying refusals as a client is told to, a callback receiver, and the figures
a scenario prints once everything has ended.

Figures beyond ``harness.Figures``: callbacks received exactly once per job, records the logs API still serves
stale once every job has ended, and the longest time one client kept being refused (503, or no answer) before a
POST was accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
from aiohttp import web

from runtime import subjects
from tests.cluster import Deployment, NatsCluster
from tests.faults.harness import RUN_TOKEN, Figures, count, job
from tests.helpers import poll
from tests.natsserver import free_port
from tests.observe import TERMINAL, StoredEvents

SHORT_SCRIPT = f"echo {RUN_TOKEN}; echo line 1; echo line 2; echo line 3"


@dataclass
class CallbackReceiver:
    """The LMS: counts the callbacks of each job (by ``X-Hades-Job-Id``) and answers 200."""

    received: Counter[str] = field(default_factory=Counter)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/results", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received[request.headers.get("X-Hades-Job-Id", "?")] += 1
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class BurstFigures(Figures):
    callbacks_once: int = 0
    callbacks_missing: int = 0
    callbacks_repeated: int = 0
    stale_records: int = 0
    longest_refused_s: float = 0.0
    acted_after_handover: int = 0
    """Jobs with two terminal events, or an attempt's event stored after a later attempt's: an earlier owner
    acted on a job that was redelivered (a paused dispatcher that resumed)."""
    run_twice_detail: list[str] = field(default_factory=list)
    """For each job run twice: its attempts' events and the run tokens each attempt stored (to see why)."""

    def line(self) -> str:
        return (
            super().line()
            + f" callbacks_once={self.callbacks_once} callbacks_missing={self.callbacks_missing}"
            + f" callbacks_repeated={self.callbacks_repeated} stale_records={self.stale_records}"
            + f" longest_503_s={self.longest_refused_s:.1f} acted_after_handover={self.acted_after_handover}"
            + "".join(f"\n  run twice: {detail}" for detail in self.run_twice_detail)
        )

    def check(self) -> None:
        super().check()
        assert self.accepted == self.submitted, self.line()  # every refused POST was retried until accepted
        assert self.callbacks_once == self.accepted, self.line()
        assert self.stale_records == 0, self.line()
        assert self.acted_after_handover == 0, self.line()


@dataclass
class Burst:
    """``jobs`` POSTed by ``submitters`` clients, spread over ``window_s``; each client starts on its own submit
    replica and moves to the next one after a refusal, retrying with the same Idempotency-Key."""

    deployment: Deployment
    receiver: CallbackReceiver
    figures: BurstFigures
    jobs: int
    submitters: int = 4
    window_s: float = 20.0
    script: str = SHORT_SCRIPT
    ids: list[str] = field(default_factory=list)
    _began: float = field(default_factory=time.monotonic)

    async def run(self) -> None:
        urls = self.deployment.urls("submit")
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(self._client(http, urls, n) for n in range(self.submitters)))

    async def _client(self, http: aiohttp.ClientSession, urls: list[str], n: int) -> None:
        mine = range(n, self.jobs, self.submitters)
        pace_s = self.window_s / max(1, len(mine))
        target = n
        for i in mine:
            body = job(self.script, name=f"burst {i}", callback_url=self.receiver.url)
            key = f"burst-{self._began}-{i}"
            refused_since: float | None = None
            self.figures.submitted += 1
            while True:
                job_id = await _post(http, urls[target % len(urls)], body, key)
                if job_id is not None:
                    break
                self.figures.refused += 1
                refused_since = refused_since or time.monotonic()
                target += 1
                await asyncio.sleep(0.2)
            if refused_since is not None:
                self.figures.longest_refused_s = max(self.figures.longest_refused_s, time.monotonic() - refused_since)
            self.ids.append(job_id)
            await asyncio.sleep(pace_s)

    async def submitted_at_least(self, fraction: float) -> bool:
        return len(self.ids) >= fraction * self.jobs


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str) -> str | None:
    try:
        async with http.post(
            f"{url}/jobs", json=body, headers={"Idempotency-Key": key}, timeout=aiohttp.ClientTimeout(total=10)
        ) as answer:
            return str((await answer.json())["id"]) if answer.status == 202 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def settle(burst: Burst, nats_cluster: NatsCluster, *, timeout_s: float = 180.0) -> BurstFigures:
    """Wait for every job's terminal event, its callback and its record, then count."""
    figures = burst.figures
    nc = await nats.connect(nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        events = StoredEvents(nc.jetstream())
        pending = set(burst.ids)

        async def all_ended() -> bool:
            for job_id in list(pending):
                if await events.terminals(job_id):
                    pending.discard(job_id)
            return not pending

        await poll(all_ended, timeout_s=timeout_s, interval_s=1.0)
        await count(figures, events, burst.ids)
        figures.acted_after_handover = sum([await _acted_after_handover(events, i) for i in burst.ids])
        if figures.run_twice:
            figures.run_twice_detail = [d for i in burst.ids if (d := await _twice(events, i))]
        received = burst.receiver.received
        await _poll_quietly(lambda: _all_called(burst), timeout_s=30)  # a callback follows its job's end
        figures.callbacks_once = sum(1 for i in burst.ids if received[i] == 1)
        figures.callbacks_missing = sum(1 for i in burst.ids if received[i] == 0)
        figures.callbacks_repeated = sum(1 for i in burst.ids if received[i] > 1)
        figures.stale_records = len(await _stale_after(burst, events, timeout_s=30))
    finally:
        await nc.close()
    return figures


async def _acted_after_handover(events: StoredEvents, job_id: str) -> bool:
    stored = await events.status(job_id)
    ends = [e for e in stored if e["kind"] == "job" and e["status"] in TERMINAL]
    latest = 0
    for event in stored:
        attempt = event.get("attempt", 0)
        if attempt == 0:  # submit's queued event may land after dispatch's running (it is sent without an ack)
            continue
        if attempt < latest:
            return True
        latest = max(latest, attempt)
    return len(ends) > 1


async def _twice(events: StoredEvents, job_id: str) -> str | None:
    tokens: dict[int, set[tuple[int, str]]] = {}
    for batch in await events.read(subjects.logs_subject(job_id)):
        for line in batch["lines"]:
            if line["message"].startswith("run "):
                tokens.setdefault(line["step_id"], set()).add((batch["attempt"], line["message"][-8:]))
    if all(len({t for _, t in found}) < 2 for found in tokens.values()):
        return None
    history = [(e["attempt"], e["status"], e.get("reason", "")) for e in await events.jobs(job_id)]
    return f"{job_id} tokens={sorted(tokens.items())} history={history}"


async def _all_called(burst: Burst) -> bool:
    return all(burst.receiver.received[i] for i in burst.ids)


async def _poll_quietly(check: Callable[[], Awaitable[bool]], *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def _stale_after(burst: Burst, events: StoredEvents, *, timeout_s: float) -> list[str]:
    """The jobs whose record (asked of every logs replica in turn) does not show their stored terminal status
    within ``timeout_s`` of their end."""
    wanted = {}
    for job_id in burst.ids:
        ends = await events.terminals(job_id)
        wanted[job_id] = ends[-1]["status"] if ends else None
    logs_urls = burst.deployment.urls("logs")
    stale = set(burst.ids)
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while stale and time.monotonic() < deadline:
            for n, job_id in enumerate(sorted(stale)):
                url = logs_urls[n % len(logs_urls)]
                try:
                    async with http.get(f"{url}/jobs/{job_id}", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                        record = await answer.json() if answer.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError):
                    continue
                if record.get("status") == wanted[job_id] and record.get("status") in TERMINAL:
                    stale.discard(job_id)
            if stale:
                await asyncio.sleep(1.0)
    return sorted(stale)
