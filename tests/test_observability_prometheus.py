"""The metrics as an operator gets them: a real Prometheus scrapes the three functions (separate processes) while
jobs run on Docker, then every dashboard query and every alert expression is evaluated through its HTTP API.
Also ``promtool check metrics`` on every ``/metrics`` and ``promtool check/test rules`` on the alert rules.

Needs Debian's ``prometheus`` package (``prometheus`` and ``promtool``); skipped without it, except under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any

import aiohttp
import pytest
import yaml

from tests.helpers import poll
from tests.natsserver import NatsServer
from tests.processes import FUNCTIONS, Functions, free_port, running_functions

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "manifests" / "prometheus" / "hades-rules.yaml"
RULES_TESTS = ROOT / "manifests" / "prometheus" / "hades-rules.test.yaml"
DASHBOARD = ROOT / "manifests" / "grafana" / "hades-dashboard.json"
RATE_INTERVAL = "1m"
"""What Grafana's ``$__rate_interval`` becomes here: at least four 1 s scrapes, within the test's minute."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"].replace("$__rate_interval", RATE_INTERVAL)) for p in panels for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_unit_test_and_they_pass() -> None:
    tested = set(re.findall(r"alertname: (\w+)", RULES_TESTS.read_text()))
    assert {rule["alert"] for rule in alert_rules()} <= tested
    out = subprocess.run(
        [tool("promtool"), "test", "rules", RULES_TESTS.name], cwd=RULES_TESTS.parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


class Prometheus:
    def __init__(self, binary: str, workdir: Path, functions: Functions) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": f"hades-{name}", "static_configs": [{"targets": [f"127.0.0.1:{functions.ports[name]}"]}]}
                for name in FUNCTIONS
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # sync start-up wait outside the event loop, bounded by the deadline
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query; fails (with Prometheus' error) unless it parses and evaluates."""
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as response:
            body = await response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])


@pytest.fixture
def system(own_nats: NatsServer, busybox_image: str, tmp_path: Path) -> Iterator[tuple[Functions, Prometheus]]:
    binary = tool("prometheus")
    tool("promtool")
    with running_functions(own_nats.url, tmp_path) as functions:
        prometheus = Prometheus(binary, tmp_path, functions)
        try:
            prometheus.wait_ready()
            yield functions, prometheus
        finally:
            prometheus.stop()


JOBS = {
    "succeeded": {"script": "echo fine", "timeout_seconds": 120},
    "failed": {"script": "echo broken >&2; exit 3", "timeout_seconds": 120},
    "timed_out": {"script": "sleep 60", "timeout_seconds": 2},
}


@pytest.mark.docker
@pytest.mark.timeout(240)
async def test_prometheus_scrapes_the_functions_and_every_dashboard_query_and_alert_evaluates(
    system: tuple[Functions, Prometheus],
) -> None:
    functions, prometheus = system
    async with aiohttp.ClientSession() as session:
        ids = {}
        for result, job in JOBS.items():
            body = {
                "name": f"observed {result}",
                "timeout_seconds": job["timeout_seconds"],
                "steps": [{"id": 1, "image": "hades-test-busybox:1", "script": job["script"]}],
            }
            async with session.post(f"{functions.url('submit')}/jobs", json=body) as response:
                assert response.status == 202, await response.text()
                ids[result] = (await response.json())["id"]

        async def ended() -> dict[str, Any] | None:
            statuses: dict[str, Any] = {}
            for result, job_id in ids.items():
                async with session.get(f"{functions.url('logs')}/jobs/{job_id}") as response:
                    statuses[result] = (await response.json()).get("status") if response.status == 200 else None
            return statuses if all(r == s for r, s in statuses.items()) else None

        await poll(ended, timeout_s=90, interval_s=0.5)

        # Every target up, and the counts of the three jobs as Prometheus stored them.
        async def scraped() -> list[tuple[str, str]]:
            up = await prometheus.query(session, "up")
            return sorted((s["metric"]["job"], s["value"][1]) for s in up) if len(up) == 3 else []

        assert await poll(scraped, timeout_s=30, interval_s=0.5) == [
            ("hades-dispatch", "1"),
            ("hades-logs", "1"),
            ("hades-submit", "1"),
        ]

        async def finished() -> dict[str, float] | None:
            series = await prometheus.query(session, "sum by (result) (hades_jobs_finished_total)")
            counts = {s["metric"]["result"]: float(s["value"][1]) for s in series}
            return counts if sum(counts.values()) >= 3 else None  # the three jobs end in any order

        counts = await poll(finished, timeout_s=30, interval_s=0.5)
        assert counts == {"succeeded": 1, "failed": 1, "timed_out": 1, "cancelled": 0}
        reasons = await prometheus.query(session, "sum by (reason) (hades_jobs_finished_total) > 0")
        assert sorted(s["metric"]["reason"] for s in reasons) == ["failed", "succeeded", "timed_out"]
        waits = await prometheus.query(session, "sum by (lane) (hades_job_queue_wait_seconds_count)")
        assert {s["metric"]["lane"]: float(s["value"][1]) for s in waits} == {"high": 3, "normal": 0, "low": 0}
        inf = await prometheus.query(session, 'sum(hades_job_queue_wait_seconds_bucket{le="+Inf"})')
        assert float(inf[0]["value"][1]) == 3

        # The lanes' gauges come from the logs function's JetStream reads: all jobs taken, none waiting.
        async def queue_read() -> list[dict[str, Any]]:
            return await prometheus.query(session, 'hades_jobs_queued{job="hades-logs"} == 0')

        assert len(await poll(queue_read, timeout_s=30, interval_s=0.5)) == 3

        # Every dashboard query parses and returns series (the rate windows need a few scrapes after the jobs).
        for title, expr in dashboard_queries():

            async def answered(expr: str = expr) -> list[dict[str, Any]]:
                return await prometheus.query(session, expr)

            assert await poll(answered, timeout_s=30, interval_s=1), f"{title}: {expr} returned no series"

        # Every alert expression parses and evaluates, and each hades_* series it reads exists (they fire only on
        # trouble: that they fire when they should is the promtool unit tests' part).
        for rule in alert_rules():
            await prometheus.query(session, rule["expr"])
            for name in set(re.findall(r"\b(hades_[a-z_]+)", rule["expr"])):
                assert await prometheus.query(session, f"count({name})"), f"{rule['alert']}: no {name} series"

        # promtool check metrics on what each function serves.
        for name in FUNCTIONS:
            async with session.get(f"{functions.url(name)}/metrics") as response:
                exposition = await response.read()
            check = await asyncio.create_subprocess_exec(
                tool("promtool"), "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
            )
            output, _ = await check.communicate(exposition)
            assert check.returncode == 0, f"{name}: {output.decode()}"
