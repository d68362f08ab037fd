"""Tenants: where a job's tenant comes from, that a key's tenant cannot be overridden, and where it shows.

Against a real nats-server: submit and logs (with its collector) as the real apps, a client's view only.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs.handlers import create_app as create_logs_app
from functions.submit.handlers import create_app as create_submit_app
from runtime import messaging, schemas, tenants
from runtime.errors import InvalidJob
from runtime.settings import Settings, SettingsError
from tests.helpers import EXAMPLES, make_settings, poll

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
OPERATOR_KEY = "operator-key-0123456789"
CS101_KEY = "cs101-secret-key-0123456789"
CS102_KEY = "cs102-secret-key-0123456789"


def keys_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "submit-keys"
    path.write_text(text)
    return str(path)


@pytest.fixture
def keyed_settings(clean_nats: str, tmp_path: Path) -> Settings:
    keys = keys_file(tmp_path, f"# course: key\ncs101: {CS101_KEY}\n\ncs102: {CS102_KEY}\n")
    return make_settings(
        clean_nats,
        HADES_API_KEY=OPERATOR_KEY,
        HADES_SUBMIT_API_KEYS_FILE=keys,
        HADES_BUILD_TENANT_METADATA_KEY="COURSE",
    )


@pytest.fixture
async def submit(aiohttp_client: Any, keyed_settings: Settings) -> TestClient:
    return await aiohttp_client(create_submit_app(keyed_settings))


@pytest.fixture
async def logs(aiohttp_client: Any, keyed_settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_logs_app(keyed_settings))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def record_of(logs: TestClient, job_id: str) -> dict[str, Any] | None:
    response = await logs.get(f"/jobs/{job_id}")
    if response.status != 200:
        return None
    body: dict[str, Any] = await response.json()
    return body if body.get("tenant") else None


async def listed(logs: TestClient, query: str) -> set[str]:
    response = await logs.get(f"/jobs?{query}")
    assert response.status == 200, await response.text()
    return {job["id"] for job in (await response.json())["jobs"]}


async def test_a_jobs_tenant_comes_from_its_key_then_its_field_then_default_and_shows_in_the_record(
    submit: TestClient, logs: TestClient
) -> None:
    made = {}
    for label, headers, document in [
        ("keyed", bearer(CS101_KEY), HELLO),
        ("keyed-basic", {"Authorization": "Basic " + base64.b64encode(f"cs102:{CS102_KEY}".encode()).decode()}, HELLO),
        ("keyed-same-field", bearer(CS101_KEY), {**HELLO, "tenant": "cs101"}),
        ("field", bearer(OPERATOR_KEY), {**HELLO, "tenant": "cs102"}),
        ("default", bearer(OPERATOR_KEY), HELLO),
    ]:
        response = await submit.post("/jobs", json=document, headers=headers)
        assert response.status == 202, await response.text()
        made[label] = (await response.json())["id"], (await response.json())["tenant"]
    assert {label: tenant for label, (_, tenant) in made.items()} == {
        "keyed": "cs101",
        "keyed-basic": "cs102",
        "keyed-same-field": "cs101",
        "field": "cs102",
        "default": "default",
    }
    for job_id, tenant in made.values():
        record = await poll(lambda job_id=job_id: record_of(logs, job_id))  # type: ignore[misc]
        assert record["tenant"] == tenant

    ids = {label: job_id for label, (job_id, _) in made.items()}
    assert await listed(logs, "tenant=cs101") == {ids["keyed"], ids["keyed-same-field"]}
    assert await listed(logs, "tenant=cs102&status=queued") == {ids["keyed-basic"], ids["field"]}
    assert await listed(logs, "tenant=default") == {ids["default"]}
    assert await listed(logs, "tenant=nobody") == set()


async def test_a_key_that_names_a_tenant_cannot_charge_another(submit: TestClient) -> None:
    response = await submit.post("/jobs", json={**HELLO, "tenant": "cs102"}, headers=bearer(CS101_KEY))
    assert response.status == 422
    problem = await response.json()
    assert problem["errors"] == [
        {"path": "/tenant", "message": "must be 'cs101' (the tenant of this API key) or left out"}
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (bearer("not-a-key-at-all-0123"), 401), (bearer(CS101_KEY), 401), (bearer(OPERATOR_KEY), 202)],
)
async def test_cancels_take_only_the_operators_key(submit: TestClient, headers: dict[str, str], status: int) -> None:
    response = await submit.post("/jobs", json=HELLO, headers=bearer(OPERATOR_KEY))
    job_id = (await response.json())["id"]
    cancelled = await submit.delete(f"/jobs/{job_id}", headers=headers)
    assert cancelled.status == status, await cancelled.text()


async def test_a_bad_tenant_field_is_a_422_naming_it_and_a_bad_filter_a_400(
    submit: TestClient, logs: TestClient
) -> None:
    for bad in ["CS101", "cs.101", "a" * 33, "", "other"]:
        response = await submit.post("/jobs", json={**HELLO, "tenant": bad}, headers=bearer(OPERATOR_KEY))
        assert response.status == 422, bad
        assert [error["path"] for error in (await response.json())["errors"]] == ["/tenant"]
    response = await logs.get("/jobs?tenant=cs.101")
    assert response.status == 400
    assert "tenant" in (await response.json())["detail"]


async def test_build_takes_the_tenant_from_the_operators_metadata_key_unless_keyed(
    submit: TestClient, logs: TestClient
) -> None:
    build = {
        "name": "Build",
        "metadata": {"COURSE": "cs102"},
        "steps": [{"id": 1, "image": "alpine", "script": "true"}],
    }
    by_metadata = await submit.post("/build", json=build, headers=bearer(OPERATOR_KEY))
    keyed = await submit.post("/build", json=build, headers=bearer(CS101_KEY))
    not_a_name = await submit.post(
        "/build", json={**build, "metadata": {"COURSE": "CS 102"}}, headers=bearer(OPERATOR_KEY)
    )
    expected = {by_metadata: "cs102", keyed: "cs101", not_a_name: "default"}
    for response, tenant in expected.items():
        assert response.status == 200, await response.text()
        job_id = (await response.json())["job_id"]
        record = await poll(lambda job_id=job_id: record_of(logs, job_id))  # type: ignore[misc]
        assert record["tenant"] == tenant


def test_the_schema_and_the_model_agree_on_a_tenant_name() -> None:
    assert schemas.job_schema()["properties"]["tenant"]["pattern"] == tenants.NAME_PATTERN


def test_resolution_order_and_the_allowed_list() -> None:
    assert tenants.resolve(keyed=None, named=None) == "default"
    assert tenants.resolve(keyed="a", named=None, metadata={"K": "b"}, metadata_key="K") == "a"
    assert tenants.resolve(keyed=None, named=None, metadata={"K": "b"}, metadata_key="K") == "b"
    assert tenants.resolve(keyed=None, named=None, metadata={"K": "b"}, metadata_key="") == "default"
    assert tenants.resolve(keyed=None, named="b", allowed={"a", "b"}) == "b"
    assert tenants.resolve(keyed=None, named=None, metadata={"K": "c"}, metadata_key="K", allowed={"a"}) == "default"
    with pytest.raises(InvalidJob):
        tenants.resolve(keyed=None, named="c", allowed={"a", "b"})


def test_the_keys_file_is_checked_at_start_up_without_echoing_a_key(tmp_path: Path, clean_nats: str) -> None:
    for text, complaint in [
        ("cs101 secret-key-0123456789\n", "line 1 must be 'tenant: key'"),
        ("CS101: secret-key-0123456789\n", "line 1 must be 'tenant: key'"),
        ("cs101: short\n", "line 1 must be 'tenant: key'"),
        ("a: secret-key-0123456789\nb: secret-key-0123456789\n", "line 2 repeats a key"),
        ("# nothing\n", "at least one"),
    ]:
        with pytest.raises(SettingsError, match="HADES_SUBMIT_API_KEYS_FILE") as raised:
            make_settings(clean_nats, HADES_API_KEY=OPERATOR_KEY, HADES_SUBMIT_API_KEYS_FILE=keys_file(tmp_path, text))
        assert complaint in str(raised.value) and "secret-key" not in str(raised.value)
    with pytest.raises(SettingsError, match="readable file"):
        make_settings(clean_nats, HADES_API_KEY=OPERATOR_KEY, HADES_SUBMIT_API_KEYS_FILE=str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="needs HADES_API_KEY"):
        make_settings(clean_nats, HADES_SUBMIT_API_KEYS_FILE=keys_file(tmp_path, f"cs101: {CS101_KEY}\n"))
    settings = make_settings(
        clean_nats,
        HADES_API_KEY=OPERATOR_KEY,
        HADES_SUBMIT_API_KEYS_FILE=keys_file(tmp_path, f"cs101: {CS101_KEY}\n"),
        HADES_TENANTS="cs102",
        HADES_TENANT_MAX_QUEUED="cs103=5,*=100",
    )
    assert CS101_KEY not in repr(settings)
    assert settings.tenants.known() == {"cs101", "cs102", "cs103", "default"}
    assert settings.tenants.queued_limit("cs103") == 5 and settings.tenants.queued_limit("cs104") == 100
    with pytest.raises(SettingsError, match="HADES_TENANT_MAX_QUEUED"):
        make_settings(clean_nats, HADES_TENANT_MAX_QUEUED="cs.103=5")


async def test_two_tenant_keys_with_the_same_idempotency_key_get_two_jobs(submit: TestClient) -> None:
    ids = {}
    for key in (CS101_KEY, CS102_KEY, CS101_KEY):
        headers = {**bearer(key), "Idempotency-Key": "exam-42"}
        response = await submit.post("/jobs", json=HELLO, headers=headers)
        assert response.status == 202, await response.text()
        body = await response.json()
        ids.setdefault(body["tenant"], set()).add(body["id"])
    assert {tenant: len(found) for tenant, found in ids.items()} == {"cs101": 1, "cs102": 1}
    assert ids["cs101"] != ids["cs102"]
