"""Issue 13's findings: inputs that must be refused at the door, and limits that must hold."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.dispatch import jobrun
from functions.dispatch.executors import docker as docker_executor
from functions.dispatch.executors.base import Capabilities, RunHooks, RunResult, StepResult, StopSignal
from functions.submit.handlers import create_app
from runtime import messaging, metrics
from runtime.errors import JobError, Unavailable
from runtime.jobs import Job, JobStatus, StepStatus, job_from_document, new_job_id, utc_now
from runtime.settings import LimitSettings, Settings
from tests.helpers import EXAMPLES, make_settings, poll
from tests.observe import StoredEvents

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    served: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return served


def _with_step(**fields: Any) -> dict[str, Any]:
    return {**HELLO, "steps": [{**HELLO["steps"][0], **fields}]}


async def _violations(response: Any) -> list[dict[str, str]]:
    assert response.status == 422, await response.text()
    assert response.content_type == PROBLEM_JSON
    body = await response.json()
    violations: list[dict[str, str]] = body["errors"]
    return violations


# --- finding 2 and 7: a CPU limit too small to enforce -------------------------------------------------------


@pytest.mark.parametrize("cores", [1e-10, 0.001, 0.0099])
async def test_a_cpu_limit_below_a_hundredth_of_a_core_is_refused(client: TestClient[Any, Any], cores: float) -> None:
    response = await client.post("/jobs", json=_with_step(cpu_limit=cores))
    assert await _violations(response) == [{"path": "/steps/0/cpu_limit", "message": "must be at least 0.01"}]


async def test_the_smallest_cpu_limit_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.post("/jobs", json=_with_step(cpu_limit=0.01))
    assert response.status == 202, await response.text()


@pytest.mark.parametrize(
    ("cores", "nano"), [(0.01, 10_000_000), (1.5, 1_500_000_000), (1e-10, 10_000_000), (0, 10_000_000)]
)
def test_a_cpu_limit_never_becomes_nano_cpus_zero(cores: float, nano: int) -> None:
    # NanoCpus=0 is "no limit at all" for the engine: rounding must never get there.
    assert docker_executor.nano_cpus(cores) == nano


# --- finding 7: NUL bytes cannot reach a container ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({**HELLO, "name": "exam\x00"}, "/name"),
        ({**HELLO, "metadata": {"API_TOKEN": "se\x00cret"}}, "/metadata/API_TOKEN"),
        (_with_step(metadata={"X": "\x00"}), "/steps/0/metadata/X"),
        (_with_step(script="echo a\x00b"), "/steps/0/script"),
        (_with_step(name="step\x00"), "/steps/0/name"),
    ],
)
async def test_a_nul_character_is_refused_at_submit(
    client: TestClient[Any, Any], document: dict[str, Any], path: str
) -> None:
    response = await client.post("/jobs", json=document)
    assert await _violations(response) == [{"path": path, "message": "must not contain a NUL character"}]


# --- finding 8: deep nesting is a 422, not a 500 ------------------------------------------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        _nested(1000),
        '{"a":' * 1000 + "1" + "}" * 1000,
        '{"name": "x", "steps": ' + _nested(1000) + "}",
        '{"name": "x", "steps": [{"id": 1, "image": "a"}], "metadata": {"A": ' + _nested(1000) + "}}",
        '{"name": "x", "steps": [{"id": 1, "image": "a", "metadata": {"A": ' + _nested(1000) + "}}]}",
    ],
    ids=["array", "object", "steps", "metadata", "step-metadata"],
)
async def test_deep_nesting_is_refused_with_a_problem_body(client: TestClient[Any, Any], body: str) -> None:
    response = await client.post("/jobs", data=body, headers={"Content-Type": "application/json"})
    [violation] = await _violations(response)
    assert violation["message"] == "is nested too deeply (at most 16 levels)"


# --- finding 10: HTTP framing errors get a problem body ----------------------------------------------------------


async def _raw(client: TestClient[Any, Any], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client would, read the whole answer (the server closes after a framing error)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ],
    ids=["negative-content-length", "long-path", "space-in-header-name", "length-and-chunked"],
)
async def test_a_framing_error_gets_a_problem_body(client: TestClient[Any, Any], request_bytes: bytes) -> None:
    status, headers, body = await _raw(client, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith(PROBLEM_JSON)
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]


# --- finding 9: slow clients and aborts --------------------------------------------------------------------------

PARTIAL_POST = b'POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"na'


def _requests_counted(code: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "hades_http_request_duration_seconds_count",
        {"function": "submit", "route": "/jobs", "method": "POST", "code": code},
    )
    return value or 0.0


async def test_a_body_that_never_ends_gets_408(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats, HADES_BODY_READ_TIMEOUT_SECONDS="0.3")))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(PARTIAL_POST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    assert int(status_line.split()[1]) == 408
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert json.loads(body)["status"] == 408


async def test_a_client_abort_is_counted_as_499_without_a_traceback(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    before_500, before_499 = _requests_counted("500"), _requests_counted("499")
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(PARTIAL_POST)
    await writer.drain()
    writer.close()

    async def counted() -> bool:
        return _requests_counted("499") > before_499

    await poll(counted)
    assert _requests_counted("500") == before_500
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# --- finding 6: secrets are masked in every reason ----------------------------------------------------------------

SECRET = "s3cr3t-value-0123456789"


class _QuotingExecutor:
    """An engine whose errors quote the environment, as Docker's did for a value it could not pass."""

    name = "quoting"
    capabilities = Capabilities()

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def run(self, job: Job, *, attempt: int, hooks: RunHooks, stop: StopSignal) -> RunResult:
        if self.error is not None:
            raise self.error
        step = job.steps[0]
        await hooks.step_started(step, started_at=utc_now())
        failed = StepResult(step.id, StepStatus.FAILED, reason=f"could not start: invalid env API_TOKEN={SECRET}")
        await hooks.step_finished(failed)
        return RunResult(status=JobStatus.FAILED, steps=(failed,), reason=f"step 1 failed: API_TOKEN={SECRET}")

    async def cleanup(self, job_id: str) -> None:
        pass


@dataclass
class _Msg:
    data: bytes
    attempt: int
    headers: dict[str, str] = field(default_factory=dict)
    subject: str = "hades.jobs.high"
    reply: str = ""  # the ack subject (a real one starts with $JS.ACK.)

    async def ack(self) -> None:
        pass

    async def nak(self, *, delay_s: float | None = None) -> None:
        pass

    async def in_progress(self) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [None, JobError(f"refused: API_TOKEN={SECRET}"), Unavailable(f"engine down: API_TOKEN={SECRET}")],
    ids=["step-and-job-reason", "job-error", "infrastructure"],
)
async def test_a_secret_in_an_engine_error_never_reaches_a_reason(
    conn: messaging.Messaging, stored: StoredEvents, caplog: pytest.LogCaptureFixture, error: Exception | None
) -> None:
    document = {"name": "j", "metadata": {"API_TOKEN": SECRET}, "steps": [{"id": 1, "image": "x", "script": "true"}]}
    job = job_from_document(document, job_id=new_job_id(), limits=LimitSettings(), submitted_at=utc_now())
    settings = make_settings("nats://unused", HADES_MAX_DELIVER="1")
    deps = jobrun.Deps(conn=conn, executor=_QuotingExecutor(error), settings=settings, dispatcher_id="t")  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)

    await jobrun.handle(deps, _Msg(json.dumps(job.to_message()).encode(), attempt=1), stop=StopSignal())  # type: ignore[arg-type]

    every = await stored.status(job.id)
    reasons = [e.get("reason") or "" for e in every]
    assert (await stored.jobs(job.id))[-1]["status"] == "failed" and any("***" in r for r in reasons)
    assert not [r for r in reasons if SECRET in r]
    assert not [line for line in await stored.lines(job.id) if SECRET in line]
    assert SECRET not in caplog.text
