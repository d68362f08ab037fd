"""The submit function, end to end against a real nats-server: what a client and the queue see."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient

from functions.submit.handlers import create_app
from runtime import subjects
from runtime.settings import Settings
from tests.examples import INVALID_EXPECTED
from tests.helpers import EXAMPLES, make_settings, poll

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def js(clean_nats: str) -> AsyncIterator[Any]:
    nc = await nats.connect(clean_nats)
    yield nc.jetstream()
    await nc.close()


async def stored_jobs(js: Any, subject: str) -> list[Any]:
    """Every message on a lane subject, read without consuming it (work-queue streams allow direct get)."""
    info = await js.stream_info(subjects.JOBS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(subjects.JOBS_STREAM, seq)
        except nats.js.errors.NotFoundError:
            continue
        if msg.subject == subject:
            found.append(msg)
    return found


async def test_a_job_is_stored_on_its_lane_with_its_id_and_announced_queued(client: TestClient, js: Any) -> None:
    response = await client.post("/jobs", json=HELLO)
    assert response.status == 202
    body = await response.json()
    job_id = body["id"]
    assert body["status"] == "queued" and body["lane"] == "high"
    assert response.headers["Location"] == f"/jobs/{job_id}"

    [msg] = await stored_jobs(js, "hades.jobs.high")
    assert msg.headers[subjects.HEADER_MSG_ID] == job_id
    assert "traceparent" in msg.headers
    job = json.loads(msg.data)
    assert job["id"] == job_id and job["name"] == "Example Job"
    assert job["steps"][0]["script"] == "echo 'Hello, Hades!'"

    # The queued event is sent without waiting for its ack (one acknowledged publish per POST): poll for it.
    queued = await poll(lambda: stored_queued_event(js, job_id))
    event = json.loads(queued.data)
    assert event["status"] == "queued" and event["job_id"] == job_id and event["seq"] == 0


async def stored_queued_event(js: Any, job_id: str) -> Any:
    try:
        return await js.get_last_msg(subjects.EVENTS_STREAM, f"hades.status.{job_id}")
    except nats.js.errors.NotFoundError:
        return None


@pytest.mark.parametrize(("priority", "lane"), [(2, "normal"), (1, "low"), (0, "low")])
async def test_priority_picks_the_lane(client: TestClient, js: Any, priority: int, lane: str) -> None:
    response = await client.post("/jobs", json={**HELLO, "priority": priority})
    assert response.status == 202
    assert [json.loads(m.data)["id"] for m in await stored_jobs(js, f"hades.jobs.{lane}")] == [
        (await response.json())["id"]
    ]


async def test_build_answers_exactly_as_the_original_hades(client: TestClient, js: Any) -> None:
    original = json.loads((EXAMPLES / "valid" / "original-build.json").read_text())
    response = await client.post("/build", json=original)
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"job_id", "message"}
    assert body["job_id"] != original["id"]  # the server assigns ids
    assert [json.loads(m.data)["id"] for m in await stored_jobs(js, "hades.jobs.high")] == [body["job_id"]]


async def test_a_retried_post_with_the_same_idempotency_key_makes_one_job(client: TestClient, js: Any) -> None:
    first = await client.post("/jobs", json=HELLO, headers={"Idempotency-Key": "exam-42-student-7"})
    second = await client.post("/jobs", json=HELLO, headers={"Idempotency-Key": "exam-42-student-7"})
    other = await client.post("/jobs", json=HELLO, headers={"Idempotency-Key": "exam-42-student-8"})
    assert first.status == second.status == other.status == 202
    first_id = (await first.json())["id"]
    assert (await second.json())["id"] == first_id
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (await other.json())["id"] != first_id
    assert len(await stored_jobs(js, "hades.jobs.high")) == 2


async def assert_problem(response: Any, status: int, *, detail_has: str = "", paths: list[str] | None = None) -> Any:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == status
    assert detail_has in body["detail"]
    if paths is not None:
        assert [e["path"] for e in body["errors"]] == paths
    return body


async def test_malformed_json_is_a_400_saying_where(client: TestClient) -> None:
    response = await client.post("/jobs", data=b'{"name": "x",', headers={"Content-Type": "application/json"})
    await assert_problem(response, 400, detail_has="line 1 column")


async def test_a_form_body_is_a_415(client: TestClient) -> None:
    response = await client.post("/jobs", data=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    await assert_problem(response, 415, detail_has="application/json")


async def test_a_body_over_the_limit_is_a_413(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats, HADES_MAX_PAYLOAD_BYTES="2048")))
    big = {**HELLO, "metadata": {"PAD": "x" * 4000}}
    await assert_problem(await client.post("/jobs", json=big), 413, detail_has="2048 bytes")

    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(big).encode()

    chunked = await client.post("/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    await assert_problem(chunked, 413)


async def test_a_job_over_the_brokers_message_limit_is_a_413(aiohttp_client: Any, clean_nats: str) -> None:
    # The operator allows 2 MiB bodies, but NATS carries at most 1 MiB a message: a clear 413, never a 503.
    client = await aiohttp_client(create_app(make_settings(clean_nats, HADES_MAX_PAYLOAD_BYTES=str(2 * 2**20))))
    big = {**HELLO, "steps": [{**HELLO["steps"][0], "script": "x" * 200_000, "id": i} for i in range(1, 7)]}
    body = io.BytesIO(json.dumps(big).encode())
    response = await client.post("/jobs", data=body, headers={"Content-Type": "application/json"})
    await assert_problem(response, 413, detail_has="the message broker takes at most")


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "invalid").glob("*.json")))
async def test_every_invalid_example_is_a_422_naming_its_fields(client: TestClient, name: str) -> None:

    payload = json.loads((EXAMPLES / "invalid" / name).read_text())
    body = await assert_problem(await client.post("/jobs", json=payload), 422)
    assert body["errors"] == INVALID_EXPECTED[name]


async def test_operator_limits_are_a_422(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(
        create_app(make_settings(clean_nats, HADES_MAX_CPU_LIMIT="2", HADES_MAX_TIMEOUT_SECONDS="60"))
    )
    payload = {
        **HELLO,
        "timeout_seconds": 120,
        "steps": [{**HELLO["steps"][0], "cpu_limit": 4, "network": "bridge"}],
    }
    await assert_problem(
        await client.post("/jobs", json=payload),
        422,
        paths=["/timeout_seconds", "/steps/0/cpu_limit", "/steps/0/network"],
    )


async def test_a_bad_idempotency_key_is_a_400(client: TestClient) -> None:
    response = await client.post("/jobs", json=HELLO, headers={"Idempotency-Key": "x" * 300})
    await assert_problem(response, 400, detail_has="Idempotency-Key")


class TestAuth:
    @pytest.fixture
    async def client(self, aiohttp_client: Any, clean_nats: str) -> TestClient:
        return await aiohttp_client(create_app(make_settings(clean_nats, HADES_API_KEY="s3cret")))

    async def test_without_credentials_a_401_with_a_challenge(self, client: TestClient) -> None:
        response = await client.post("/jobs", json=HELLO)
        await assert_problem(response, 401, detail_has="credentials")
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        wrong = base64.b64encode(b"hades:nope").decode()
        await assert_problem(await client.post("/build", json=HELLO, headers={"Authorization": f"Basic {wrong}"}), 401)

    async def test_basic_as_the_original_and_bearer_both_work(self, client: TestClient) -> None:
        basic = base64.b64encode(b"hades:s3cret").decode()
        assert (await client.post("/build", json=HELLO, headers={"Authorization": f"Basic {basic}"})).status == 200
        assert (await client.post("/jobs", json=HELLO, headers={"Authorization": "Bearer s3cret"})).status == 202

    async def test_probes_stay_open(self, client: TestClient) -> None:
        for path in ("/ping", "/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await client.get(path)).status == 200, path

    def test_the_key_never_shows_in_settings_repr(self, clean_nats: str) -> None:
        assert "s3cret" not in repr(make_settings(clean_nats, HADES_API_KEY="s3cret"))


async def test_cancel_of_a_queued_job_is_recorded(client: TestClient, js: Any) -> None:
    job_id = (await (await client.post("/jobs", json=HELLO)).json())["id"]
    response = await client.delete(f"/jobs/{job_id}")
    assert response.status == 202
    assert (await response.json()) == {"id": job_id, "status": "cancelling"}
    request = await js.get_last_msg(subjects.EVENTS_STREAM, f"hades.cancel.{job_id}")
    assert json.loads(request.data)["job_id"] == job_id


async def test_cancel_of_an_unknown_job_is_a_404(client: TestClient) -> None:
    await assert_problem(await client.delete("/jobs/1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"), 404)
    await assert_problem(await client.delete("/jobs/not-a-job"), 404, detail_has="not-a-job")


async def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    await assert_problem(await client.get("/nope"), 404, detail_has="/nope")
    response = await client.get("/jobs")
    await assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


async def test_ping_answers_as_the_original(client: TestClient) -> None:
    body = await (await client.get("/ping")).json()
    assert body["status"] == "ok" and body["timestamp"].endswith("Z")


async def test_metrics_count_accepted_jobs(client: TestClient) -> None:
    def submitted(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('hades_jobs_submitted_total{lane="high"}'):
                return float(line.split()[-1])
        return 0.0

    before = submitted(await (await client.get("/metrics")).text())
    assert (await client.post("/jobs", json=HELLO)).status == 202
    text = await (await client.get("/metrics")).text()
    assert submitted(text) == before + 1
    assert 'hades_http_request_duration_seconds_count{code="202",function="submit",method="POST",route="/jobs"}' in text


async def test_openapi_describes_every_route_and_the_job_schema(client: TestClient) -> None:
    from openapi_spec_validator import validate

    document = await (await client.get("/openapi.json")).json()
    validate(document)
    assert set(document["paths"]) >= {
        "/jobs",
        "/build",
        "/jobs/{job_id}",
        "/ping",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert set(document["paths"]["/jobs"]["post"]["responses"]) == {
        "202",
        "400",
        "401",
        "409",  # an Idempotency-Key reused with another body
        "413",
        "415",
        "422",
        "429",  # the job's tenant has its most jobs waiting
        "503",
    }
    step = document["components"]["schemas"]["step"]
    assert "memory_limit" in step["properties"]
