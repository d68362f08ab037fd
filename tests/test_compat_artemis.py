"""Drop-in for the original Hades and Artemis: ``/build``, its callback body, ``/ping``, the Log Manager shapes.

Request bodies in ``tests/compat/``: ``artemis-build.json`` has the shape Artemis' ``HadesService`` sends (Jackson:
snake_case, an ISO timestamp, ``volumes``, per step ``volumeMounts`` and ``workingDir``), ``go-*.json`` what Go's
``json.Marshal`` makes of the original's ``payload.RESTPayload`` (zero values included), and
``original-example.json`` is the original's ``shared/payload/example.json``. The invalid cases are those of the
original's ``HadesAPI/router_test.go``, with its status codes and messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from functions.dispatch.handlers import create_app as create_dispatch
from functions.logs import legacy as logs_legacy
from functions.logs.handlers import create_app as create_logs
from functions.submit import legacy
from functions.submit.handlers import create_app as create_submit
from runtime import jobs
from runtime.settings import DispatchSettings, LimitSettings, Settings
from tests.fakes import ended_record
from tests.helpers import make_settings, poll

COMPAT = Path(__file__).resolve().parent / "compat"
API_KEY = "artemis-shared-key"
BASIC = {"Authorization": aiohttp.encode_basic_auth("hades", API_KEY)}


def payload(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((COMPAT / name).read_text())
    return document


def go_step(**fields: Any) -> dict[str, Any]:
    """A ``payload.Step`` as Go marshals it: every field without omitempty, at its zero value unless given."""
    step = {"id": 0, "name": "", "image": "", "script": "", "continue_on_error": False, "metadata": None}
    return {**step, "cpu_limit": 0, "memory_limit": "", **fields}


def go_rest_payload(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A ``payload.RESTPayload`` as Go marshals it (``callback_url`` and ``timeout_seconds`` are omitempty)."""
    body = {"priority": 1, "id": "00000000-0000-0000-0000-000000000000", "name": "example"}
    return {**body, "timestamp": "2026-12-01T10:15:30.5+01:00", "metadata": None, "steps": list(steps), **fields}


# --------------------------------------------------------------------------------------------- submit only


@pytest.fixture
async def submit(clean_nats: str, aiohttp_client: Any) -> TestClient:
    client: TestClient = await aiohttp_client(create_submit(make_settings(clean_nats, HADES_API_KEY=API_KEY)))
    return client


async def post_build(submit: TestClient, body: Any, **kwargs: Any) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await submit.post("/build", json=body, headers=BASIC, **kwargs)
    return response


async def test_ping_answers_pong_as_artemis_reads_it_and_stays_open(submit: TestClient) -> None:
    response = await submit.get("/ping")
    assert response.status == 200
    body = await response.json()
    assert body["message"] == "pong" and body["status"] == "ok" and body["timestamp"]


async def test_build_needs_basic_auth_before_anything_else(submit: TestClient) -> None:
    assert (await submit.post("/build")).status == 401  # no body, no credentials: 401, as the original
    assert (await submit.post("/build", json=payload("artemis-build.json"))).status == 401
    response = await post_build(submit, payload("artemis-build.json"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["message"] == "Successfully enqueued job" and jobs.is_job_id(body["job_id"])


async def test_artemis_payload_is_accepted_and_its_unknown_fields_named(submit: TestClient) -> None:
    response = await post_build(submit, payload("artemis-build.json"))
    assert response.status == 200, await response.text()
    ignored = response.headers[legacy.IGNORED_HEADER].split(", ")
    assert "/volumes" in ignored
    assert {f"/steps/{i}/{name}" for i in range(3) for name in ("volumeMounts", "workingDir")} <= set(ignored)


async def test_post_jobs_stays_strict(submit: TestClient) -> None:
    response = await submit.post("/jobs", json=payload("artemis-build.json"), headers=BASIC)
    assert response.status == 422
    paths = {error["path"] for error in (await response.json())["errors"]}
    assert "/volumes" in paths


VALID_ORIGINAL = {
    # router_test.go TestAddBuildToQueueRoute: two steps, metadata, limits, Go's zero values elsewhere.
    "add-build-to-queue": go_rest_payload(
        go_step(id=1, name="step1", image="image1", script="script1", metadata={}, cpu_limit=1, memory_limit="1G"),
        go_step(id=2, name="step2", image="image2", script="script2", metadata={}, cpu_limit=2, memory_limit="2G"),
        metadata={"key1": "value1", "key2": "value2"},
    ),
    # TestValidCallbackURL
    "valid-callback-url": go_rest_payload(
        go_step(id=1, name="step1", image="image1", script="script1"),
        callback_url="https://example.com/adapter/logs",
    ),
    # TestDashboardEndToEnd's job (priority 3, secret-looking metadata)
    "dashboard-job": go_rest_payload(
        go_step(id=1, name="s1", image="alpine", script="git clone https://u:x@github.com/x/y.git"),
        priority=3,
        metadata={"REPO_URL": "https://github.com/org/repo.git", "GIT_PASSWORD": "supersecret"},
    ),
    # The original's example.json with the name it requires, as it is used (metadata keys with [_*] in them).
    "example-named": {**payload("original-example.json"), "name": "example"},
    "artemis": payload("artemis-build.json"),
    "go-zero-values": payload("go-zero-values.json"),
    "go-unset-everything": payload("go-unset-everything.json"),
    # An older Artemis wrote ContinueOnError: Go matches keys ignoring case, but not underscores, so it is ignored.
    "older-artemis": go_rest_payload(go_step(id=1, image="alpine", ContinueOnError=True), NAME="Case-insensitive"),
    "priority-0-low-lane": go_rest_payload(go_step(id=1, image="alpine"), priority=0),
}


@pytest.mark.parametrize("name", list(VALID_ORIGINAL))
async def test_what_the_original_accepts_is_accepted(submit: TestClient, name: str) -> None:
    response = await post_build(submit, VALID_ORIGINAL[name])
    assert response.status == 200, await response.text()


INVALID_ORIGINAL = {
    # router_test.go, each with the original's message (the problem's errors[].message here).
    "invalid-memory-limit": (
        go_rest_payload(go_step(id=1, name="step1", image="image1", cpu_limit=1, memory_limit="1XXXX")),
        "Failed to parse RAM limit",
    ),
    "invalid-network-mode": (go_rest_payload(go_step(id=1, name="s", image="image1", network="bad net")), "network"),
    "swap-without-memory": (
        go_rest_payload(go_step(id=1, name="s", image="image1", memory_swap="2G")),
        "memory_swap requires memory_limit",
    ),
    "swap-below-memory": (
        go_rest_payload(go_step(id=1, name="s", image="image1", memory_limit="2G", memory_swap="1G")),
        "memory_swap must be greater than or equal to memory_limit",
    ),
    "negative-timeout": (go_rest_payload(go_step(id=1, image="image1"), timeout_seconds=-5), "timeout_seconds"),
    "timeout-too-large": (
        go_rest_payload(go_step(id=1, image="image1"), timeout_seconds=legacy.MAX_TIMEOUT_SECONDS + 1),
        "timeout_seconds",
    ),
    "invalid-callback-url": (
        go_rest_payload(go_step(id=1, image="image1"), callback_url="not-a-url"),
        "Invalid callback_url",
    ),
    "invalid-json": ({"priority": 1, "task_name": "example"}, '"name" is required'),
    # The original's example.json as it stands: its name is "", which the original's binding refuses.
    "example-as-is": (payload("original-example.json"), '"name" is required'),
    "negative-pids-limit": (go_rest_payload(go_step(id=1, image="image1", pids_limit=-1)), "pids_limit"),
    "negative-cpu-limit": (go_rest_payload(go_step(id=1, image="image1", cpu_limit=-1)), "negative"),
    "wrong-type": (go_rest_payload(go_step(id=1, image="image1"), name=5), "string"),
    "not-an-object": ([go_step(id=1, image="image1")], "object"),
}


@pytest.mark.parametrize("name", list(INVALID_ORIGINAL))
async def test_what_the_original_refuses_is_a_400(submit: TestClient, name: str) -> None:
    body, message = INVALID_ORIGINAL[name]
    response = await post_build(submit, body)
    assert response.status == 400, await response.text()
    problem = await response.json()
    assert response.content_type == "application/problem+json"
    assert any(message in error["message"] for error in problem["errors"]), problem


async def test_malformed_or_non_json_bodies_are_400s(submit: TestClient) -> None:
    response = await submit.post("/build", data=b"{not json", headers={**BASIC, "Content-Type": "application/json"})
    assert response.status == 400
    response = await submit.post("/build", data=b"name=x", headers={**BASIC, "Content-Type": "text/plain"})
    assert response.status == 400


# ------------------------------------------------------------------------------- reading, without servers


def test_go_zero_values_mean_the_operator_defaults() -> None:
    limits = LimitSettings()
    build = legacy.read(payload("go-unset-everything.json"), limits)
    job = jobs.job_from_document(
        build.document, job_id=jobs.new_job_id(), limits=limits, submitted_at=jobs.utc_now(), origin="build"
    )
    [step] = job.steps
    assert job.timeout_s == limits.default_timeout_s and job.metadata == {} and job.priority == 3
    assert step.cpu_limit == limits.default_cpu and step.memory_bytes == limits.default_memory_bytes
    assert step.pids_limit == limits.default_pids and step.name == "step-1" and step.network == "none"
    assert build.ignored == ()


def test_any_metadata_key_docker_can_carry_is_kept() -> None:
    document = payload("original-example.json") | {"name": "example"}
    build = legacy.read(document, LimitSettings())
    assert set(build.document["steps"][0]["metadata"]) >= {"GIT_USERNAME[_*]", "GIT_URL_*"}
    for bad in ("", "A=B", "LINE\nBREAK"):
        with pytest.raises(legacy.InvalidBuild):
            legacy.read(go_rest_payload(go_step(id=1, image="a"), metadata={bad: "x"}), LimitSettings())


def test_steps_see_the_priority_as_the_original_sets_it() -> None:
    limits = LimitSettings()
    for priority, number, name in ((1, "1", "low"), (2, "2", "medium"), (7, "3", "high"), (0, "1", "low")):
        document = legacy.read(go_rest_payload(go_step(id=1, image="a"), priority=priority), limits).document
        job = jobs.job_from_document(document, job_id=jobs.new_job_id(), limits=limits, submitted_at=jobs.utc_now())
        env = job.environment(job.steps[0])
        assert env[jobs.PRIORITY_KEY] == number and env[jobs.PRIORITY_NAME_KEY] == name


def test_only_keys_that_name_a_secret_are_masked() -> None:
    dispatch = DispatchSettings()
    for ordinary in ("PLAN_KEY", "BUILD_PLAN_KEY", "KEY", "GIT_BRANCH", "REPOSITORY_URL", "USERNAME", "KEYBOARD"):
        assert not dispatch.is_secret(ordinary), ordinary
    for secret in ("PASSWORD", "GIT_PASSWORD[_*]", "API_TOKEN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "API_KEY"):
        assert dispatch.is_secret(secret), secret
    listed = Settings.from_env({"HADES_SECRET_KEYS": "CLONE_PASS, other"}).dispatch
    assert listed.is_secret("clone_pass") and listed.is_secret("OTHER") and not listed.is_secret("PLAN_KEY")


def test_callback_body_lists_containers_that_ran_with_their_stdout_and_stderr() -> None:
    record = {
        "id": "j",
        "origin": "build",
        "steps": [
            {"id": 1, "started_at": "t", "exit_code": 0},
            {"id": 2, "started_at": "t", "exit_code": 1},  # ran, printed nothing
            {"id": 3, "started_at": None, "exit_code": None, "status": "skipped"},
        ],
    }

    def line(stream: str, message: str) -> dict[str, Any]:
        return {"timestamp": "2026-12-01T10:00:00.000Z", "message": message, "output_stream": stream, "seq": 1}

    entries = [
        {"job_id": "j", "container_id": "j-0", "step": 0, "logs": [line("system", "[hades] pulling")]},
        {"job_id": "j", "container_id": "j-1", "step": 1, "logs": [line("stdout", "a"), line("system", "exit 0")]},
        {"job_id": "j", "container_id": "j-2", "step": 2, "logs": []},
        {"job_id": "j", "container_id": "j-3", "step": 3, "logs": []},
    ]
    body = logs_legacy.callback_body(record, entries)
    assert body == [
        {
            "job_id": "j",
            "container_id": "j-1",
            "logs": [{"timestamp": "2026-12-01T10:00:00.000Z", "message": "a", "output_stream": "stdout"}],
        },
        {"job_id": "j", "container_id": "j-2", "logs": []},
    ]


# ------------------------------------------------------------------------ the whole way, on real Docker


@pytest.fixture
async def system(
    own_nats: Any, aiohttp_client: Any, aiohttp_server: Any, busybox_image: str
) -> AsyncIterator[tuple[TestClient, TestClient, str, list[tuple[bytes, dict[str, str]]]]]:
    """submit, logs (both needing the key), dispatch, and a callback receiver that records what it gets."""
    received: list[tuple[bytes, dict[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=200)

    receiver_app = web.Application()
    receiver_app.router.add_post("/api/public/programming-exercises/new-result", receive)
    receiver = await aiohttp_server(receiver_app)
    settings = make_settings(
        own_nats.url,
        HADES_PULL_TIMEOUT_SECONDS="0.5",
        HADES_API_KEY=API_KEY,
        HADES_CALLBACK_ALLOWED_HOSTS="127.0.0.1",
        HADES_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",  # the receiver is on loopback, refused by default
    )
    await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit(settings))
    logs = await aiohttp_client(create_logs(settings))
    url = f"http://127.0.0.1:{receiver.port}/api/public/programming-exercises/new-result"
    yield submit, logs, url, received


async def finished(logs: TestClient, job_id: str) -> dict[str, Any]:
    return await ended_record(logs, job_id)


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_an_artemis_build_runs_and_calls_back_with_the_bare_array_the_adapter_binds(
    system: tuple[TestClient, TestClient, str, list[tuple[bytes, dict[str, str]]]],
) -> None:
    submit, logs, url, received = system
    document = payload("artemis-build.json") | {"callback_url": url}
    response = await post_build(submit, document)
    assert response.status == 200, await response.text()
    job_id = (await response.json())["job_id"]

    async def delivered() -> bool:
        return bool(received)

    await poll(delivered, timeout_s=90, interval_s=0.2)
    record = await finished(logs, job_id)
    assert record["status"] == "succeeded" and record["priority"] == 1 and record["lane"] == "low"
    await asyncio.sleep(0.5)  # a second (wrong) delivery would arrive about now
    [(raw, headers)] = received
    assert headers["Content-Type"] == "application/json"

    body = json.loads(raw)
    assert isinstance(body, list) and len(body) == 3  # one entry per container that ran, in step order
    assert [entry["container_id"] for entry in body] == [f"{job_id}-{i}" for i in (1, 2, 3)]
    for entry in body:
        assert set(entry) == {"job_id", "container_id", "logs"} and entry["job_id"] == job_id
        for line in entry["logs"]:
            assert set(line) == {"timestamp", "message", "output_stream"}
            assert line["output_stream"] in ("stdout", "stderr")
    execute = body[1]  # the adapter reads the Execute step by its index
    messages = [(line["output_stream"], line["message"]) for line in execute["logs"]]
    assert ("stdout", "Main.java") in messages
    assert ("stdout", "compiling for PROG42-SOLUTION") in messages  # PLAN_KEY is no secret: never masked
    assert ("stderr", "warning: unchecked") in messages
    assert ("stdout", "hades.tum.de/priority=1") in messages and ("stdout", "hades.tum.de/priorityName=low") in messages
    assert [line["message"] for line in body[2]["logs"]] == ["Tests run: 3, Failures: 0"]
    clone = [line["message"] for line in body[0]["logs"]]
    assert clone == ["cloned https://artemis.example/git/PROG42/prog42-solution.git as artemis-ci with ***"]

    # The Log Manager route has the same entries (and our extras); notices=true has everything.
    response = await logs.get(f"/jobs/{job_id}/logs", headers=BASIC)
    entries = (await response.json())["logs"]
    assert [entry["container_id"] for entry in entries] == [entry["container_id"] for entry in body]
    assert all(line["output_stream"] in ("stdout", "stderr") for entry in entries for line in entry["logs"])


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_go_zero_value_payload_runs_with_defaults_and_lists_only_containers_that_ran(
    system: tuple[TestClient, TestClient, str, list[tuple[bytes, dict[str, str]]]],
) -> None:
    submit, logs, url, received = system
    response = await post_build(submit, payload("go-zero-values.json") | {"callback_url": url})
    assert response.status == 200, await response.text()
    job_id = (await response.json())["job_id"]
    record = await finished(logs, job_id)
    assert record["status"] == "failed"
    assert [step["status"] for step in record["steps"]] == ["succeeded", "failed", "skipped"]
    assert record["timeout_seconds"] == LimitSettings().default_timeout_s  # absent: the operator default

    async def delivered() -> bool:
        return bool(received)

    await poll(delivered, timeout_s=60, interval_s=0.2)
    body = json.loads(received[0][0])
    assert [entry["container_id"] for entry in body] == [f"{job_id}-1", f"{job_id}-2"]  # step 3 never ran
    lines = {(line["output_stream"], line["message"]) for line in body[0]["logs"]}
    assert lines == {("stdout", "one"), ("stderr", "to-stderr")}  # two streams: no order between them
    assert [line["message"] for line in body[1]["logs"]] == ["two"]

    plain = await (await logs.get(f"/jobs/{job_id}/logs", headers=BASIC)).json()
    assert [entry["step"] for entry in plain["logs"]] == [1, 2]
    everything = await (await logs.get(f"/jobs/{job_id}/logs?notices=true", headers=BASIC)).json()
    assert 3 in [entry["step"] for entry in everything["logs"]]  # the richer shape keeps the skipped step
