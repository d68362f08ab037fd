"""End to end on Docker: a Maven-like job whose tests partly fail, through submit, dispatch and logs.

Its summary and failed cases are in the record, the callback, ``hades status`` and the dashboard (Chromium, the
failed tests first); its jar downloads byte-exact through the API and the CLI; a hostile report and a file over
the limit are refused with reasons while everything else goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from functions.dispatch.handlers import create_app as create_dispatch
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from hades_client.cli import main as hades_cli
from tests.browser import chrome, serve, serving  # noqa: F401 (fixture)
from tests.conftest import make_settings
from tests.dockerfixtures import BUSYBOX_IMAGE
from tests.natsserver import NatsServer
from tests.test_dashboard import open_dashboard, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

JUNIT = Path(__file__).parent / "data" / "junit"
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    '<testsuite name="x"><testcase name="t"><failure message="&b;"/></testcase></testsuite>'
)
MAVEN = f"""
set -e
mkdir -p target/surefire-reports
cat > target/surefire-reports/TEST-com.example.CalculatorTest.xml <<'XML'
{(JUNIT / "surefire-TEST-com.example.CalculatorTest.xml").read_text()}
XML
cat > target/surefire-reports/TEST-org.acme.ParserTest.xml <<'XML'
{(JUNIT / "gradle-TEST-org.acme.ParserTest.xml").read_text()}
XML
echo '{BILLION_LAUGHS}' > target/surefire-reports/TEST-evil.xml
head -c 1500000 /dev/urandom > target/app.jar
head -c 3000000 /dev/zero > target/huge.bin
sha256sum target/app.jar
echo "[ERROR] Tests run: 7, Failures: 2, Errors: 1, Skipped: 1"
exit 1
"""


class Stack:
    def __init__(self, submit_url: str, logs_url: str, callbacks: list[dict[str, Any]], callback_url: str) -> None:
        self.submit_url, self.logs_url, self.callbacks, self.callback_url = (
            submit_url,
            logs_url,
            callbacks,
            callback_url,
        )

    def submit(self, body: dict[str, Any]) -> str:
        request = urllib.request.Request(
            f"{self.submit_url}/jobs", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["id"])

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"{self.logs_url}{path}", headers=headers or {})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()

    def ended(self, job_id: str, *, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            record = json.loads(self.get(f"/jobs/{job_id}")[2])
            if record["status"] not in ("queued", "running") and record.get("callback", {}).get("state") == "done":
                return dict(record)
            assert time.monotonic() < deadline, record
            time.sleep(0.2)


@pytest.fixture
def results_stack(own_nats: NatsServer, busybox_image: str) -> Iterator[Stack]:
    callbacks: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        callbacks.append(await request.json())
        return web.Response(text="ok")

    async def start(servers: list[TestServer]) -> Stack:
        receiver = web.Application()
        receiver.router.add_post("/results", receive)
        env = {
            "HADES_PULL_TIMEOUT_SECONDS": "0.5",
            "HADES_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "HADES_RESULTS_MAX_FILE_BYTES": "2000000",
        }
        settings = make_settings(own_nats.url, **env)
        receiving = await serve(receiver, servers)
        submit = await serve(create_submit(settings), servers)
        await serve(create_dispatch(settings), servers)
        logs = await serve(create_logs(settings), servers)
        url = "http://127.0.0.1:{}"
        return Stack(url.format(submit.port), url.format(logs.port), callbacks, url.format(receiving.port) + "/results")

    with serving(start) as running:
        yield running


@pytest.mark.timeout(300)
def test_a_maven_like_job_shows_its_tests_everywhere_and_its_jar_downloads_byte_exact(
    results_stack: Stack,
    chrome: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    stack = results_stack
    job_id = stack.submit(
        {
            "name": "maven build",
            "callback_url": stack.callback_url,
            "steps": [{"id": 1, "name": "mvn verify", "image": BUSYBOX_IMAGE, "script": MAVEN}],
            "artifacts": [{"path": "target/app.jar", "name": "app.jar"}, {"path": "target/huge.bin"}],
            "reports": {"junit": ["target/surefire-reports/TEST-*.xml"]},
        }
    )
    record = stack.ended(job_id)
    assert record["status"] == "failed"  # the build's exit code, as without results
    results = record["results"]
    # Surefire's 4 cases and Gradle's 3; the evil report is kept but not parsed
    assert results["tests"] == {"tests": 7, "passed": 3, "failures": 2, "errors": 1, "skipped": 1, "time_s": 1.27}
    failed = sorted((c["classname"], c["name"], c["kind"]) for c in results["failed_tests"])
    assert failed == [
        ("com.example.CalculatorTest", "dividesByZero", "failure"),
        ("com.example.CalculatorTest", "parsesInput", "error"),
        ("org.acme.ParserTest", "parses nested lists()", "failure"),
    ]
    evil = next(r for r in results["reports"] if r["path"].endswith("TEST-evil.xml"))
    assert evil["parsed"] is False and "has a DTD" in evil["reason"]
    assert results["skipped"] == [
        {
            "path": "target/huge.bin",
            "reason": "is 3000000 bytes; files larger than 2000000 bytes are not kept (HADES_RESULTS_MAX_FILE_BYTES)",
        }
    ]

    # the callback carries the same results
    [callback] = stack.callbacks
    assert callback["job"]["results"]["tests"] == results["tests"]

    # the jar, byte-exact: the API (whole and a range) and the CLI, against the step's own sha256sum
    logs = stack.get(f"/jobs/{job_id}/logs?format=text")[2].decode()
    expected = next(line.split()[0] for line in logs.splitlines() if line.endswith("target/app.jar"))
    status, headers, jar = stack.get(f"/jobs/{job_id}/artifacts/app.jar")
    assert status == 200 and headers["Content-Type"] == "application/java-archive"
    assert int(headers["Content-Length"]) == len(jar) == 1_500_000 and hashlib.sha256(jar).hexdigest() == expected
    status, headers, part = stack.get(f"/jobs/{job_id}/artifacts/app.jar", {"Range": "bytes=1000000-1000099"})
    assert status == 206 and part == jar[1_000_000:1_000_100]
    target = tmp_path / "app.jar"
    cli = CliRunner().invoke(
        hades_cli, ["--logs-url", stack.logs_url, "artifacts", "get", job_id, "app.jar", "-o", str(target)]
    )
    assert cli.exit_code == 0, cli.output
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    shown = CliRunner().invoke(hades_cli, ["--logs-url", stack.logs_url, "status", job_id], env={"COLUMNS": "200"})
    assert "tests: 7 run, 3 passed, 2 failed, 1 errors, 1 skipped" in shown.stdout
    assert "failure: com.example.CalculatorTest.dividesByZero" in shown.stdout

    # the dashboard: the failed tests first, then the counts; a download link per kept file
    open_dashboard(chrome, f"{stack.logs_url}/ui/#/job/{job_id}")
    wait_for(chrome, lambda d: d.execute_script("return document.querySelectorAll('#tests tr').length") >= 5)
    kinds = chrome.execute_script("return Array.from(document.querySelectorAll('#tests tr')).map(r => r.dataset.kind)")
    assert sorted(kinds[:3]) == ["error", "failure", "failure"]
    assert kinds[3:] == ["passed", "skipped"]
    assert "7 tests: 3 passed, 2 failed, 1 errors, 1 skipped" in chrome.find_element("id", "tests-summary").text
    links = chrome.execute_script(
        "return Array.from(document.querySelectorAll('#artifacts a')).map(a => [a.textContent, a.href])"
    )
    assert ["app.jar", f"{stack.logs_url}/jobs/{job_id}/artifacts/app.jar"] in links
    notes = chrome.find_element("id", "results-notes").text
    assert "TEST-evil.xml" in notes and "target/huge.bin" in notes
