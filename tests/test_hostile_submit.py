"""Issue 20, findings 2, 3, 5 and 6: what a hostile (or careless) submitter still got through submit."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from functions.logs import callbacks
from functions.logs.handlers import create_app as create_logs
from functions.submit import handlers, legacy
from runtime import jobs, netguard
from runtime.settings import Settings
from tests.fakes import record_when
from tests.helpers import EXAMPLES, make_settings

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
PROBLEM_JSON = "application/problem+json"
API_KEY = "hostile-key"
BASIC = {"Authorization": aiohttp.encode_basic_auth("hades", API_KEY)}
INTERNAL_NAMES = {"vm": ["127.0.0.1"], "intranet.example": ["203.0.113.9", "10.1.2.3"], "public.example": ["8.8.8.8"]}


async def fake_resolve(host: str) -> Sequence[netguard.Address]:
    """What a resolver with an /etc/hosts entry ``vm`` → 127.0.0.1 answers; no network needed."""
    return [ipaddress.ip_address(a) for a in INTERNAL_NAMES.get(host, [])]


@pytest.fixture
async def client(aiohttp_client: Any, clean_nats: str) -> TestClient[Any, Any]:
    app = handlers.create_app(make_settings(clean_nats, HADES_API_KEY=API_KEY))
    app[handlers.RESOLVE] = fake_resolve
    served: TestClient[Any, Any] = await aiohttp_client(app)
    return served


def _with_step(**fields: Any) -> dict[str, Any]:
    return {**HELLO, "steps": [{**HELLO["steps"][0], **fields}]}


def _build_body(**fields: Any) -> dict[str, Any]:
    step = {"id": 1, "name": "s", "image": "alpine:3.20", "script": "true"}
    return {"name": "b", "steps": [{**step, **fields.pop("step", {})}], **fields}


async def _errors(response: aiohttp.ClientResponse, status: int) -> dict[str, str]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM_JSON
    return {error["path"]: error["message"] for error in (await response.json())["errors"]}


# --- finding 2: registry names that resolve inward -------------------------------------------------------------


@pytest.mark.parametrize("image", ["vm:15002/internal/app:1", "intranet.example/team/app:1", "VM:15002/x"])
async def test_a_registry_name_resolving_to_an_internal_address_is_refused(
    client: TestClient[Any, Any], image: str
) -> None:
    errors = await _errors(await client.post("/jobs", json=_with_step(image=image), headers=BASIC), 422)
    assert "resolves to a loopback, link-local or private address" in errors["/steps/0/image"]
    build = await client.post("/build", json=_build_body(step={"image": image}), headers=BASIC)
    assert "/steps/0/image" in await _errors(build, 400)


async def test_a_public_registry_name_and_the_default_registry_pass(client: TestClient[Any, Any]) -> None:
    for image in ("public.example/team/app:1", "alpine:3.20", "unknown.example/x:1"):
        response = await client.post("/jobs", json=_with_step(image=image), headers=BASIC)
        assert response.status == 202, await response.text()


async def test_dispatch_refuses_the_same_names_with_its_own_look_up() -> None:
    job = jobs.job_from_document(
        _with_step(image="vm:15002/internal/app:1"),
        job_id=jobs.new_job_id(),
        limits=Settings.from_env({}).limits,
        submitted_at=jobs.utc_now(),
    )
    refusal = await jobs.image_refusals(job, Settings.from_env({}).limits, resolve=fake_resolve)
    assert refusal is not None and "resolves to a loopback" in refusal


async def test_the_system_resolver_is_asked_for_a_registry_name() -> None:
    host = socket.gethostname()  # in /etc/hosts on most machines, as 127.0.1.1 or the container's private address
    addresses = await netguard.resolve_addresses(host)
    if not addresses or not all(netguard.internal_address(a) for a in addresses) or netguard.local_name(host):
        pytest.skip(f"this host's name {host!r} does not resolve to internal addresses only")
    refusal = await netguard.registry_refusal(f"{host}:5000/team/app:1", ())
    assert refusal is not None and "resolves to a loopback" in refusal


async def test_an_allowed_pattern_opens_an_internal_registry_name(aiohttp_client: Any, clean_nats: str) -> None:
    app = handlers.create_app(make_settings(clean_nats, HADES_ALLOWED_IMAGES="vm:15002/*"))
    app[handlers.RESOLVE] = fake_resolve
    client = await aiohttp_client(app)
    response = await client.post("/jobs", json=_with_step(image="vm:15002/internal/app:1"))
    assert response.status == 202, await response.text()


# --- finding 3: user text in a header or a log line --------------------------------------------------------------


async def test_an_ignored_field_name_with_crlf_is_encoded_in_the_header_and_the_log(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    body = {**_build_body(), "a\r\nX-Evil: 1": 1, "b,c": 2, "ü": 3}
    with caplog.at_level(logging.INFO, logger="functions.submit"):
        response = await client.post("/build", json=body, headers=BASIC)
    assert response.status == 200, await response.text()
    assert "X-Evil" not in response.headers
    ignored = response.headers[legacy.IGNORED_HEADER].split(", ")
    assert ignored == ["/a%0D%0AX-Evil: 1", "/b%2Cc", "/%C3%BC"]
    submit_lines = [r.getMessage() for r in caplog.records if r.name.startswith("functions.submit")]
    assert any("/a%0D%0AX-Evil" in line for line in submit_lines)
    assert not any("\n" in line or "\r" in line for line in submit_lines)


# --- finding 5: inputs that broke a function ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://[::1", "http://example.com:99999/", "http://exa..mple.com/", "http://[zz]/"])
async def test_an_unopenable_callback_url_is_refused_at_submit(client: TestClient[Any, Any], url: str) -> None:
    for field in ("callback_url", "status_callback_url"):
        errors = await _errors(await client.post("/jobs", json={**HELLO, field: url}, headers=BASIC), 422)
        assert f"/{field}" in errors, errors
        build = await client.post("/build", json=_build_body(**{field: url}), headers=BASIC)
        assert f"/{field}" in await _errors(build, 400)


def test_the_callback_sender_refuses_an_unparsable_url_instead_of_raising() -> None:
    assert callbacks.host_allowed("http://[::1", ()) is False
    assert callbacks.host_allowed("http://example.com:99999/", ()) is False


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("route", ["/jobs", "/build"])
async def test_a_body_that_does_not_match_its_content_encoding_is_a_400(
    client: TestClient[Any, Any], encoding: str, route: str
) -> None:
    headers = {**BASIC, "Content-Type": "application/json", "Content-Encoding": encoding}
    response = await client.post(route, data=json.dumps(_build_body()).encode(), headers=headers)
    assert "Content-Encoding" in str((await _errors(response, 400)) if route == "/build" else await response.json())


async def test_a_413_from_the_broker_leaves_the_idempotency_key_free(aiohttp_client: Any, clean_nats: str) -> None:
    settings = make_settings(clean_nats, HADES_MAX_PAYLOAD_BYTES=str(2 * 2**20))
    client = await aiohttp_client(handlers.create_app(settings))
    key = {"Idempotency-Key": "retry-after-413", "Content-Type": "application/json"}
    big = {**HELLO, "steps": [{**HELLO["steps"][0], "script": "x" * 200_000, "id": i} for i in range(1, 7)]}
    too_large = await client.post("/jobs", data=io.BytesIO(json.dumps(big).encode()), headers=key)
    assert too_large.status == 413, await too_large.text()
    retry = await client.post("/jobs", data=json.dumps(HELLO).encode(), headers=key)
    assert retry.status == 202, await retry.text()
    again = await client.post("/jobs", data=json.dumps(HELLO).encode(), headers=key)
    assert again.status == 202 and (await again.json())["id"] == (await retry.json())["id"]


# --- finding 6: accepted but unrunnable ------------------------------------------------------------------------


UNRUNNABLE_IMAGES = [
    "Local/Busybox:test",
    "a" * 300,
    "local/busybox@sha256:zz",
    "alpine:" + "t" * 200,
    "127.0.0.1.:15000/x",
    "alpine@sha256:" + "0" * 63,
    "team/-app:1",
    "alpine:.hidden",
]


@pytest.mark.parametrize("image", UNRUNNABLE_IMAGES, ids=lambda image: image[:24])
async def test_an_image_the_engine_cannot_parse_is_refused(client: TestClient[Any, Any], image: str) -> None:
    errors = await _errors(await client.post("/jobs", json=_with_step(image=image), headers=BASIC), 422)
    assert errors["/steps/0/image"].startswith("must be a valid image reference")
    build = await client.post("/build", json=_build_body(step={"image": image}), headers=BASIC)
    assert "/steps/0/image" in await _errors(build, 400)


@pytest.mark.parametrize(
    "image",
    [
        "alpine",
        "alpine:3.20",
        "local/busybox:test",
        "Local/busybox:test",  # an upper-case first component is a registry host, as Docker reads it
        "registry.example:5000/team/my_app__x-y.z:v1.0-rc_1",
        "ubuntu@sha256:" + "a" * 64,
        "ghcr.io/org/app:1@sha256:" + "b" * 64,
    ],
)
async def test_valid_image_references_pass(client: TestClient[Any, Any], image: str) -> None:
    response = await client.post("/jobs", json=_with_step(image=image), headers=BASIC)
    assert response.status == 202, await response.text()


# --- finding 7: a cancelled queued job reads cancelled at once ---------------------------------------------------


async def test_a_cancelled_queued_job_is_cancelled_at_once_without_a_dispatcher(
    client: TestClient[Any, Any], aiohttp_client: Any, settings: Settings
) -> None:
    logs = await aiohttp_client(create_logs(settings))
    accepted = await client.post("/jobs", json=HELLO, headers=BASIC)
    job_id = (await accepted.json())["id"]
    await record_when(logs, job_id, status="queued")
    cancel = await client.delete(f"/jobs/{job_id}", headers=BASIC)
    assert cancel.status == 202, await cancel.text()
    record = await record_when(logs, job_id, status="cancelled")  # no dispatcher runs here
    assert record["reason"] == "cancelled by request" and record["finished_at"]
    assert all(step["status"] != "running" for step in record["steps"])
    again = await client.delete(f"/jobs/{job_id}", headers=BASIC)
    assert again.status == 409
