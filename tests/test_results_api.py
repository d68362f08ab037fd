"""A job's results where a job is shown: the record, GET /jobs/{id}/tests, /artifacts and each file streamed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs.handlers import create_app
from runtime import messaging, subjects
from runtime.jobs import JobStatus
from runtime.messaging import topology
from runtime.settings import Settings
from tests.fakes import record_when, submitted

JAR = os.urandom(300_001)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 50_000):
        yield data[start : start + 50_000]


def results_of(jar_sha: str) -> dict[str, Any]:
    return {
        "tests": {"tests": 4, "passed": 1, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.036},
        "failed_tests": [
            {"suite": "S", "name": "dividesByZero", "classname": "C", "kind": "failure", "message": "m", "output": "o"}
        ],
        "failed_tests_dropped": 0,
        "reports": [{"path": "target/surefire-reports/TEST-C.xml", "parsed": True}],
        "artifacts": [
            {
                "name": "app.jar",
                "path": "target/app.jar",
                "size": len(JAR),
                "sha256": jar_sha,
                "content_type": "application/java-archive",
                "kind": "artifact",
            },
            {
                "name": "gone.txt",
                "path": "gone.txt",
                "size": 1,
                "sha256": "0" * 64,
                "content_type": "text/plain",
                "kind": "artifact",
            },
        ],
        "skipped": [{"path": "big.bin", "reason": "is 9 bytes; files larger than 8 bytes are not kept"}],
        "warnings": [],
        "unlisted": 0,
    }


async def finished_job(client: TestClient, conn: messaging.Messaging, settings: Settings) -> str:
    dispatch = await submitted(conn)
    objects = await conn.objects(topology.results_bucket_config(settings))
    stored = await objects.put(subjects.result_object(dispatch.id, "app.jar"), pieces(JAR), max_bytes=10**7)
    await dispatch.running()
    await dispatch.finish(
        JobStatus.FAILED, reason="step 1 (build) exited with code 1", results=results_of(stored.sha256)
    )
    await record_when(client, dispatch.id, status="failed")
    return dispatch.id


async def test_the_record_and_tests_route_carry_the_summary_and_failed_cases(
    client: TestClient, conn: messaging.Messaging, settings: Settings
) -> None:
    job_id = await finished_job(client, conn, settings)
    record = await (await client.get(f"/jobs/{job_id}")).json()
    assert record["results"]["tests"]["failures"] == 1
    tests = await (await client.get(f"/jobs/{job_id}/tests")).json()
    assert tests["tests"] == {"tests": 4, "passed": 1, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.036}
    assert [c["name"] for c in tests["failed_tests"]] == ["dividesByZero"]
    listed = await (await client.get(f"/jobs/{job_id}/artifacts")).json()
    assert [a["name"] for a in listed["artifacts"]] == ["app.jar", "gone.txt"]
    assert listed["skipped"][0]["path"] == "big.bin"


async def test_an_artifact_downloads_byte_exact_with_its_type_length_and_ranges(
    client: TestClient, conn: messaging.Messaging, settings: Settings
) -> None:
    job_id = await finished_job(client, conn, settings)
    response = await client.get(f"/jobs/{job_id}/artifacts/app.jar")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/java-archive"
    assert response.headers["Content-Length"] == str(len(JAR)) and response.headers["Accept-Ranges"] == "bytes"
    body = await response.read()
    assert body == JAR and response.headers["ETag"] == f'"{hashlib.sha256(JAR).hexdigest()}"'
    # The submitter's bytes are never sniffed into HTML nor run as a page of this origin.
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")

    for header, start, end in (("bytes=131000-131071", 131000, 131071), ("bytes=300000-", 300000, 300000)):
        ranged = await client.get(f"/jobs/{job_id}/artifacts/app.jar", headers={"Range": header})
        assert ranged.status == 206
        assert ranged.headers["Content-Range"] == f"bytes {start}-{end}/{len(JAR)}"
        assert await ranged.read() == JAR[start : end + 1]
    suffix = await client.get(f"/jobs/{job_id}/artifacts/app.jar", headers={"Range": "bytes=-5"})
    assert suffix.status == 206 and await suffix.read() == JAR[-5:]

    refused = await client.get(f"/jobs/{job_id}/artifacts/app.jar", headers={"Range": "bytes=400000-"})
    assert refused.status == 416 and refused.headers["Content-Range"] == f"bytes */{len(JAR)}"
    assert refused.content_type == "application/problem+json"
    head = await client.head(f"/jobs/{job_id}/artifacts/app.jar")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(JAR))


async def test_unknown_files_and_jobs_are_404s_that_say_why(
    client: TestClient, conn: messaging.Messaging, settings: Settings
) -> None:
    job_id = await finished_job(client, conn, settings)
    missing = await client.get(f"/jobs/{job_id}/artifacts/nope.jar")
    assert missing.status == 404 and "kept no file named 'nope.jar'" in (await missing.json())["detail"]
    gone = await client.get(f"/jobs/{job_id}/artifacts/gone.txt")
    assert gone.status == 404 and "no longer stored" in (await gone.json())["detail"]
    for path in ("tests", "artifacts", "artifacts/app.jar"):
        unknown = await client.get(f"/jobs/00000000-0000-4000-8000-000000000000/{path}")
        assert unknown.status == 404


async def test_a_job_without_results_answers_empty(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.finish(JobStatus.SUCCEEDED)
    record = await record_when(client, dispatch.id, status="succeeded")
    assert record["results"] is None
    tests = await (await client.get(f"/jobs/{dispatch.id}/tests")).json()
    assert tests["tests"] is None and tests["failed_tests"] == []
    assert (await (await client.get(f"/jobs/{dispatch.id}/artifacts")).json())["artifacts"] == []


async def test_the_native_callback_carries_the_test_summary(
    aiohttp_client: Any, aiohttp_server: Any, clean_nats: str, conn: messaging.Messaging
) -> None:
    from tests.fakes import FakeDispatch, new_job
    from tests.test_callbacks import logs_app, start_receiver, until

    receiver = await start_receiver(aiohttp_server)
    await logs_app(aiohttp_client, clean_nats)
    dispatch = FakeDispatch(conn, new_job(callback_url=receiver.url))
    await dispatch.submit()
    await dispatch.running()
    await dispatch.finish(JobStatus.FAILED, results=results_of("0" * 64))
    await until(lambda: len(receiver.requests) == 1)
    payload = json.loads(receiver.requests[0][1])
    assert payload["job"]["results"]["tests"]["failures"] == 1
    assert payload["job"]["results"]["failed_tests"][0]["name"] == "dividesByZero"
