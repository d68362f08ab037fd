"""``hades status`` shows what a job kept; ``hades artifacts list|get`` list and download it (respx at the edge)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from click.testing import CliRunner, Result

from hades_client.cli import main

LOGS = "http://logs.test"
JOB_ID = "6c0c1f9e-8a55-4d8e-9b49-4f3f2f0d9c11"
JAR = os.urandom(70_000)
RESULTS: dict[str, Any] = {
    "tests": {"tests": 4, "passed": 1, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.036},
    "failed_tests": [
        {
            "suite": "CalculatorTest",
            "name": "dividesByZero",
            "classname": "com.example.CalculatorTest",
            "kind": "failure",
            "message": "expected: <Infinity> but was: <NaN>\nmore",
            "output": "trace",
        }
    ],
    "failed_tests_dropped": 0,
    "reports": [{"path": "evil.xml", "parsed": False, "reason": "not parsed: it has a DTD"}],
    "artifacts": [
        {
            "name": "app.jar",
            "path": "target/app.jar",
            "size": len(JAR),
            "sha256": "ab" * 32,
            "content_type": "application/java-archive",
            "kind": "artifact",
        }
    ],
    "skipped": [{"path": "huge.bin", "reason": "is 9 bytes; files larger than 8 bytes are not kept"}],
    "warnings": ["artifacts/1: /shared/site/** matched no file"],
    "unlisted": 0,
}
RECORD: dict[str, Any] = {
    "id": JOB_ID,
    "name": "maven",
    "status": "failed",
    "attempt": 1,
    "steps": [{"id": 1, "name": "Build", "image": "maven", "status": "failed", "exit_code": 1}],
    "log_lines": 3,
    "results": RESULTS,
}


def hades(*args: str) -> Result:
    env = {"NO_COLOR": "1", "COLUMNS": "200"}
    return CliRunner().invoke(main, ["--logs-url", LOGS, *args], env=env)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_status_prints_the_test_summary_failed_cases_and_what_was_not_kept(api: respx.MockRouter) -> None:
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=RECORD)
    result = hades("status", JOB_ID)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tests: 4 run, 1 passed, 1 failed, 1 errors, 1 skipped (0.036 s)" in out
    assert "failure: com.example.CalculatorTest.dividesByZero  expected: <Infinity> but was: <NaN>" in out
    assert "report evil.xml: not parsed: it has a DTD" in out
    assert f"artifacts: 1 files, {len(JAR)} bytes" in out
    assert "not kept: huge.bin: is 9 bytes" in out and "warning: artifacts/1" in out


def test_status_of_a_job_without_results_prints_none(api: respx.MockRouter) -> None:
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "results": None})
    result = hades("status", JOB_ID)
    assert result.exit_code == 0 and "tests:" not in result.stdout


def test_artifacts_list_and_get(api: respx.MockRouter, tmp_path: Path) -> None:
    body = {"job_id": JOB_ID, "status": "failed", "artifacts": RESULTS["artifacts"], "skipped": [], "warnings": []}
    api.get(f"{LOGS}/jobs/{JOB_ID}/artifacts").respond(200, json=body)
    listed = hades("artifacts", "list", JOB_ID)
    assert listed.exit_code == 0 and "app.jar" in listed.stdout and str(len(JAR)) in listed.stdout
    as_json = hades("artifacts", "list", JOB_ID, "--json")
    assert json.loads(as_json.stdout)["artifacts"][0]["name"] == "app.jar"

    api.get(f"{LOGS}/jobs/{JOB_ID}/artifacts/app.jar").respond(200, content=JAR)
    target = tmp_path / "out.jar"
    got = hades("artifacts", "get", JOB_ID, "app.jar", "-o", str(target))
    assert got.exit_code == 0, got.output
    assert target.read_bytes() == JAR


def test_a_missing_artifact_exits_4_and_leaves_no_file(api: respx.MockRouter, tmp_path: Path) -> None:
    problem = {
        "type": "urn:hades:problem:artifact-not-found",
        "title": "Artifact not found",
        "status": 404,
        "detail": "job kept no file named 'x.jar'",
    }
    api.get(f"{LOGS}/jobs/{JOB_ID}/artifacts/x.jar").respond(
        404, json=problem, headers={"Content-Type": "application/problem+json"}
    )
    target = tmp_path / "x.jar"
    result = hades("artifacts", "get", JOB_ID, "x.jar", "-o", str(target))
    assert result.exit_code == 4 and "kept no file named" in result.output
    assert list(tmp_path.iterdir()) == []
