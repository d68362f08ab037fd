"""The three functions as separate processes, each one killable and restartable on its own, and the figures a
fault scenario prints: what was submitted, accepted, ended, lost, run twice, duplicated and left behind.

``tests/processes.py`` starts the three together for the life of a test; a fault scenario needs to SIGKILL one
and start it again on the same port while the others keep running, which is what ``Cluster`` adds.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker

from runtime import subjects
from tests.helpers import SCOPE, poll
from tests.natsserver import free_port
from tests.observe import TERMINAL, StoredEvents
from tests.processes import functions_env

ROOT = Path(__file__).resolve().parent.parent.parent
FUNCTIONS = ("submit", "logs", "dispatch")
IMAGE = "hades-test-busybox:1"
RUN_TOKEN = "run $(cat /proc/sys/kernel/random/uuid)"
"""Echoed first by every step of a scenario: each run of a step prints a token of its own."""


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"functions.{self.name}"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    async with session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=1)) as answer:
                        if answer.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout_s} s:\n{self.tail()}")

    async def start(self) -> None:
        self.spawn()
        await self.ready()

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no nak, no cleanup — a crashed process or a lost node."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    async def _end(self, sig: signal.Signals) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        self.process = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Cluster:
    """submit, logs and dispatch against one NATS, each restartable on its own port."""

    services: dict[str, Service]

    @classmethod
    def create(cls, nats_url: str, tmp_path: Path, **env: str) -> Cluster:
        ports = {name: free_port() for name in FUNCTIONS}
        base = functions_env(nats_url, ports, **env)
        return cls({name: Service(name, ports[name], base, tmp_path / f"{name}.log") for name in FUNCTIONS})

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    async def start(self) -> None:
        for service in self.services.values():
            await service.start()

    async def stop(self) -> None:
        for service in reversed(self.services.values()):
            await service.stop()


def job(script: str, *, name: str = "fault job", **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": 1, "name": "step 1", "image": IMAGE, "script": script}], **extra}


async def submit_and_wait_running(
    url: str, bodies: list[dict[str, Any]], stored: StoredEvents, figures: Figures
) -> list[str]:
    """POST every job, count them, and wait until each accepted one has printed its first line."""
    async with aiohttp.ClientSession() as http:
        ids = [i for body in bodies if (i := await submit(http, url, body))]
    figures.submitted = len(bodies)

    async def all_running() -> bool:
        return all(["line 1" in await stored.lines(i) for i in ids])

    await poll(all_running, timeout_s=60, interval_s=0.2)
    return ids


async def submit(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], *, key: str | None = None
) -> str | None:
    """POST a job; its id when accepted (202), None when refused (a 503 during an outage is a refusal)."""
    headers = {"Idempotency-Key": key} if key else {}
    try:
        async with session.post(
            f"{url}/jobs", json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as answer:
            if answer.status == 202:
                return str((await answer.json())["id"])
            return None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def settled_leftovers(find: Callable[[], list[str]], *, timeout_s: float = 30.0) -> list[str]:
    """What ``find`` (a blocking look at the engine) still finds once the removals have had time: dispatch removes
    what a job made only after its end is stored (``RunResult.release``), so a moment after it, not before."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await asyncio.to_thread(find)
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def leftovers(job_ids: list[str], *, engine: Any = None) -> list[str]:
    """Containers and volumes still labelled with one of these jobs (on ``engine``, a docker client; by default
    the local engine's)."""
    client = engine or docker.from_env()
    try:
        wanted = set(job_ids)
        found = [
            c.name
            for c in client.containers.list(all=True, filters={"label": f"hades.scope={SCOPE}"})
            if c.labels.get("hades.job-id") in wanted
        ]
        found += [
            v.name
            for v in client.volumes.list(filters={"label": "hades.job-id"})
            if (v.attrs.get("Labels") or {}).get("hades.job-id") in wanted
        ]
        return found
    finally:
        if engine is None:
            client.close()


@dataclass
class Figures:
    scenario: str
    submitted: int = 0
    accepted: int = 0
    terminal: int = 0
    lost: int = 0
    run_twice: int = 0
    duplicated_lines: int = 0
    leftovers: int = 0
    refused: int = 0
    """Answers other than 202 (a 503 in an outage), each retried by the client with the same Idempotency-Key."""
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    recovery_s: float | None = None
    """From the fault to the last job's end, when the scenario measures it."""

    def line(self) -> str:
        return (
            f"[faults] {self.scenario}: submitted={self.submitted} accepted={self.accepted} "
            f"terminal={self.terminal} lost={self.lost} run_twice={self.run_twice} "
            f"duplicated_lines={self.duplicated_lines} leftovers={self.leftovers} refused_then_retried={self.refused} "
            f"statuses={dict(sorted(self.statuses.items()))} seconds={self.seconds:.1f}"
            + (f" recovery_s={self.recovery_s:.1f}" if self.recovery_s is not None else "")
        )

    def check(self) -> None:
        print(self.line())
        assert self.accepted == self.terminal, self.line()
        assert (self.lost, self.run_twice, self.duplicated_lines, self.leftovers) == (0, 0, 0, 0), self.line()


async def log_batches(events: StoredEvents, job_id: str) -> list[dict[str, Any]]:
    return await events.read(subjects.logs_subject(job_id))


async def count(figures: Figures, events: StoredEvents, job_ids: list[str]) -> Figures:
    """Fill in the figures from what is stored in HADES_EVENTS and what the engine still has.

    - ``lost``: an accepted job with no terminal status;
    - ``run_twice``: a job with two different terminal statuses, or a step that printed two different
      ``RUN_TOKEN``s (a step followed after a restart prints its one token again, a rerun a new one);
    - ``duplicated_lines``: a line stored twice in one attempt (same seq, or the same text: every script here
      prints numbered lines, so the same text twice is a replay).
    """
    figures.accepted = len(job_ids)
    for job_id in job_ids:
        stored = await events.status(job_id)
        terminals = [e for e in stored if e["kind"] == "job" and e["status"] in TERMINAL]
        if not terminals:
            figures.lost += 1
            continue
        figures.terminal += 1
        figures.statuses[terminals[-1]["status"]] += 1
        seen: Counter[tuple[int, Any]] = Counter()
        runs: dict[int, set[str]] = {}
        for batch in await log_batches(events, job_id):
            for line in batch["lines"]:
                if line["stream"] == "system":
                    continue
                if line["message"].startswith("run "):
                    runs.setdefault(line["step_id"], set()).add(line["message"])
                seen[(batch["attempt"], ("seq", line["seq"]))] += 1
                seen[(batch["attempt"], ("text", line["step_id"], line["message"]))] += 1
        figures.duplicated_lines += sum(n - 1 for n in seen.values())
        if len({t["status"] for t in terminals}) > 1 or any(len(tokens) > 1 for tokens in runs.values()):
            figures.run_twice += 1
    figures.leftovers = len(await settled_leftovers(lambda: leftovers(job_ids)))
    return figures
