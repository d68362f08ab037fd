"""Results on Docker: after the last step (also a failed or stopped one) the asked-for files leave the job's volume
for the Object Store, reports are parsed, limits and hostile reports are refused with reasons, nothing is left."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from functions.dispatch.executors.base import StepResult, StopSignal
from functions.dispatch.executors.docker import LABEL_JOB_ID, DockerExecutor
from functions.dispatch.results import attach
from functions.dispatch.results.collector import Collector
from runtime import messaging, subjects
from runtime.jobs import Job, JobId, JobStatus, Step, job_from_document, utc_now
from runtime.messaging import topology
from runtime.settings import Settings
from tests.dockerfixtures import remove_jobs
from tests.helpers import SCOPE, make_settings, poll

pytestmark = pytest.mark.docker

JUNIT = Path(__file__).parent / "data" / "junit"
SUREFIRE = (JUNIT / "surefire-TEST-com.example.CalculatorTest.xml").read_text()
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<testsuite name="x"><testcase name="t"><failure message="&lol2;"/></testcase></testsuite>"""


@dataclass
class Hooks:
    """RunHooks with a results collector, as the job run has."""

    results: Collector
    lines: list[str] = field(default_factory=list)

    async def step_started(self, step: Step, *, started_at: str) -> None:
        pass

    async def step_finished(self, result: StepResult) -> None:
        pass

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        self.lines.append(message)


@pytest.fixture
async def executor() -> AsyncIterator[DockerExecutor]:
    executor = await DockerExecutor.create(Settings.from_env({"HADES_SCOPE": SCOPE}))
    yield executor
    await executor.close()


_created: list[str] = []


@pytest.fixture(autouse=True)
def _remove_what_the_test_left(docker_client: Any) -> Any:
    yield
    remove_jobs(docker_client, _created)


def make_job(image: str, script: str, **document: Any) -> Job:
    job_id = JobId(str(uuid.uuid4()))
    _created.append(job_id)
    steps = [{"id": 1, "image": image, "script": script}]
    return job_from_document(
        {"name": "results", "steps": steps, **document},
        job_id=job_id,
        limits=Settings().limits,
        submitted_at=utc_now(),
    )


async def run(
    executor: DockerExecutor, conn: messaging.Messaging, settings: Settings, job: Job, stop: StopSignal | None = None
) -> tuple[JobStatus, dict[str, Any], Hooks]:
    hooks = Hooks(results=Collector(conn, job, settings))
    result = await executor.run(job, attempt=1, hooks=hooks, stop=stop or StopSignal())
    if result.release is not None:  # collected before: what dispatch does once the job's end is stored
        await result.release()
    return result.status, attach.terminal_fields(hooks.results)["results"], hooks


async def download(conn: messaging.Messaging, settings: Settings, job: Job, name: str) -> bytes:
    objects = await conn.objects(topology.results_bucket_config(settings))
    found = await objects.located(subjects.result_object(job.id, name))
    assert found is not None, name
    return b"".join([chunk async for chunk in conn.object_chunks(objects, found[1])])


async def _said(hooks: Hooks, line: str) -> bool:
    return line in hooks.lines


def remaining(docker_client: Any, job_id: str) -> list[Any]:
    selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
    return docker_client.containers.list(all=True, filters=selector) + docker_client.volumes.list(filters=selector)


MAVEN_SCRIPT = f"""
mkdir -p target/surefire-reports target/classes
cat > target/surefire-reports/TEST-com.example.CalculatorTest.xml <<'XML'
{SUREFIRE}
XML
head -c 300000 /dev/urandom > target/app.jar
sha256sum target/app.jar
echo "Tests run: 4, Failures: 1, Errors: 1, Skipped: 1"
exit 1
"""


async def test_a_failed_maven_like_build_keeps_its_jar_and_reports_its_tests(
    executor: DockerExecutor, conn: messaging.Messaging, settings: Settings, busybox_image: str, docker_client: Any
) -> None:
    job = make_job(
        busybox_image,
        MAVEN_SCRIPT,
        artifacts=[{"path": "target/app.jar", "name": "app.jar"}, {"path": "target/site/**"}],
        reports={"junit": ["target/surefire-reports/TEST-*.xml"]},
    )
    status, results, hooks = await run(executor, conn, settings, job)
    assert status is JobStatus.FAILED  # the step's exit code decides, not the results
    assert results["tests"] == {"tests": 4, "passed": 1, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.036}
    assert [(c["name"], c["kind"]) for c in results["failed_tests"]] == [
        ("dividesByZero", "failure"),
        ("parsesInput", "error"),
    ]
    assert results["reports"] == [
        {"path": "target/surefire-reports/TEST-com.example.CalculatorTest.xml", "parsed": True}
    ]
    jar = next(a for a in results["artifacts"] if a["name"] == "app.jar")
    expected_sha = next(line.split()[0] for line in hooks.lines if line.endswith("target/app.jar"))
    assert (jar["size"], jar["sha256"], jar["content_type"]) == (300000, expected_sha, "application/java-archive")
    data = await download(conn, settings, job, "app.jar")
    assert hashlib.sha256(data).hexdigest() == expected_sha and len(data) == 300000
    report = await download(conn, settings, job, "target/surefire-reports/TEST-com.example.CalculatorTest.xml")
    assert b"dividesByZero" in report
    assert results["warnings"] == ["artifacts/1: /shared/target/site/** matched no file"]
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []  # the helper went with the volume


async def test_limits_and_hostile_reports_are_refused_with_reasons_and_the_rest_is_kept(
    executor: DockerExecutor, conn: messaging.Messaging, clean_nats: str, busybox_image: str
) -> None:
    settings = make_settings(
        clean_nats, HADES_RESULTS_MAX_FILES="5", HADES_RESULTS_MAX_FILE_BYTES="100000", HADES_RESULTS_MAX_BYTES="150000"
    )
    script = f"""
mkdir -p big many reports
head -c 200000 /dev/zero > big/too-big.bin
head -c 90000 /dev/zero > big/b.bin
head -c 90000 /dev/zero > big/c.bin
for i in 1 2 3 4 5 6; do echo $i > many/n$i.txt; done
ln -s /etc/passwd many/link.txt
cat > reports/TEST-evil.xml <<'XML'
{BILLION_LAUGHS}
XML
echo '<testsuite name="s"><testcase name="ok"/></testsuite>' > reports/TEST-ok.xml
"""
    job = make_job(
        busybox_image,
        script,
        artifacts=[{"path": "big/*"}, {"path": "many/*"}, {"path": "nowhere/x"}],
        reports={"junit": ["reports/*.xml"]},
    )
    status, results, _ = await run(executor, conn, settings, job)
    assert status is JobStatus.SUCCEEDED  # nothing about results fails a job
    kept = {a["path"] for a in results["artifacts"]}
    skipped = {s["path"]: s["reason"] for s in results["skipped"]}
    # reports are read first: within the limits although the artifacts are not
    assert {"reports/TEST-evil.xml", "reports/TEST-ok.xml"} <= kept
    evil = next(r for r in results["reports"] if r["path"] == "reports/TEST-evil.xml")
    assert evil["parsed"] is False and "has a DTD" in evil["reason"]
    assert results["tests"]["tests"] == 1  # the safe report still counts
    assert skipped["big/too-big.bin"].startswith("is 200000 bytes; files larger than 100000 bytes are not kept")
    [second] = [p for p in ("big/b.bin", "big/c.bin") if p in skipped]
    assert "would pass the limit of 150000 bytes per job (HADES_RESULTS_MAX_BYTES)" in skipped[second]
    many_skipped = [r for p, r in skipped.items() if p.startswith("many/")]
    assert len(many_skipped) == 4 and all("over the limit of 5 files per job" in r for r in many_skipped)
    assert len(kept) == 5
    assert "many/link.txt" not in kept | set(skipped)  # links are never followed
    assert results["warnings"] == ["artifacts/2: /shared/nowhere/x matched no file"]


async def test_a_timed_out_job_still_keeps_what_it_wrote(
    executor: DockerExecutor, conn: messaging.Messaging, settings: Settings, busybox_image: str
) -> None:
    job = make_job(busybox_image, "echo partial > log.txt; echo ready; sleep 600", artifacts=[{"path": "log.txt"}])
    stop = StopSignal()
    hooks = Hooks(results=Collector(conn, job, settings))
    task = asyncio.ensure_future(executor.run(job, attempt=1, hooks=hooks, stop=stop))
    await poll(lambda: _said(hooks, "ready"), timeout_s=60)
    stop.stop(JobStatus.TIMED_OUT, grace_s=0, reason="job timed out after 1 s")
    result = await task
    assert result.status is JobStatus.TIMED_OUT
    results = attach.terminal_fields(hooks.results)["results"]
    assert [a["name"] for a in results["artifacts"]] == ["log.txt"]
    assert await download(conn, settings, job, "log.txt") == b"partial\n"


async def test_a_job_without_results_has_none(
    executor: DockerExecutor, conn: messaging.Messaging, settings: Settings, busybox_image: str
) -> None:
    job = make_job(busybox_image, "true")
    assert attach.start(conn, job, settings) is None
    assert attach.terminal_fields(None) == {}


async def test_a_tmpfs_shared_is_collected_too_and_the_metrics_count_it(
    conn: messaging.Messaging, settings: Settings, busybox_image: str, docker_client: Any
) -> None:
    """``HADES_SHARED_MAX_BYTES``: /shared is a tmpfs held by a helper between steps; collection still reads it."""
    from runtime import metrics

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0

    executor = await DockerExecutor.create(
        Settings.from_env({"HADES_SCOPE": SCOPE, "HADES_SHARED_MAX_BYTES": str(64 * 1024 * 1024)})
    )
    try:
        job = make_job(
            busybox_image,
            MAVEN_SCRIPT,
            artifacts=[{"path": "target/app.jar", "name": "app.jar"}],
            reports={"junit": ["target/surefire-reports/TEST-*.xml"]},
        )
        before = (sample("hades_artifact_bytes_total"), sample("hades_tests_total", {"outcome": "failed"}))
        status, results, hooks = await run(executor, conn, settings, job)
    finally:
        await executor.close()
    assert status is JobStatus.FAILED and results["tests"]["failures"] == 1
    expected_sha = next(line.split()[0] for line in hooks.lines if line.endswith("target/app.jar"))
    assert hashlib.sha256(await download(conn, settings, job, "app.jar")).hexdigest() == expected_sha
    kept = sum(a["size"] for a in results["artifacts"])
    assert sample("hades_artifact_bytes_total") - before[0] == kept
    assert sample("hades_tests_total", {"outcome": "failed"}) - before[1] == 1
    assert await asyncio.to_thread(remaining, docker_client, job.id) == []


def test_results_too_large_for_an_event_are_made_to_fit() -> None:
    """The terminal event carries the results: they never grow past what NATS takes (1 MiB by default)."""
    case = {"suite": "s", "name": "n" * 200, "classname": "c" * 200, "kind": "failure", "message": "m" * 1000}
    artifact = {"name": "x" * 600, "path": "p" * 600, "size": 1, "sha256": "0" * 64, "content_type": "t", "kind": "a"}
    results: dict[str, Any] = {
        "tests": None,
        "failed_tests": [{**case, "output": "o" * 2000}] * 50,
        "failed_tests_dropped": 0,
        "reports": [],
        "artifacts": [artifact] * 1000,
        "skipped": [],
        "warnings": [],
        "unlisted": 0,
    }
    fitted = attach._within(results)
    assert len(json.dumps(fitted)) <= attach.MAX_RESULTS_BYTES
    assert fitted["unlisted"] == 1000 - len(fitted["artifacts"]) + 50 - len(fitted["failed_tests"])
