"""Issue 13, finding 3: an ``Idempotency-Key`` never maps two different bodies, or two runs, to one job id."""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from functions.submit.handlers import create_app
from runtime import subjects
from runtime.settings import Settings
from tests.helpers import EXAMPLES
from tests.observe import StoredEvents

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
KEY = {"Idempotency-Key": "exam-42-student-7"}


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    served: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return served


async def _stored_ids(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(subjects.JOBS_STREAM)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(subjects.JOBS_STREAM, seq)
        except nats.js.errors.NotFoundError:
            continue
        ids.append(json.loads(msg.data)["id"])
    return ids


async def test_the_same_key_with_another_body_is_a_409_naming_the_conflict(
    client: TestClient[Any, Any], js: JetStreamContext
) -> None:
    first = await client.post("/jobs", json=HELLO, headers=KEY)
    assert first.status == 202
    first_id = (await first.json())["id"]

    other = await client.post("/jobs", json={**HELLO, "name": "Another Job"}, headers=KEY)
    assert other.status == 409, await other.text()
    assert other.content_type == "application/problem+json"
    problem = await other.json()
    assert problem["type"] == "urn:hades:problem:idempotency-conflict"
    assert "Idempotency-Key" in problem["title"] and "different request body" in problem["detail"]
    assert await _stored_ids(js) == [first_id]  # the second body was neither stored nor described as accepted


async def test_the_same_key_with_the_same_body_is_a_replay_whatever_the_key_order(
    client: TestClient[Any, Any], js: JetStreamContext
) -> None:
    first = await client.post("/jobs", json=HELLO, headers=KEY)
    reordered = dict(reversed(list(HELLO.items())))
    second = await client.post(
        "/jobs", data=json.dumps(reordered, indent=2), headers={**KEY, "Content-Type": "application/json"}
    )
    assert first.status == second.status == 202
    first_id = (await first.json())["id"]
    assert (await second.json())["id"] == first_id
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await _stored_ids(js) == [first_id]


async def test_after_the_window_a_reused_key_names_a_new_job_never_the_old_id(
    client: TestClient[Any, Any], js: JetStreamContext, settings: Settings, stored: StoredEvents
) -> None:
    # The key's entry lives exactly the duplicate window: its expiry is what "after the window" means.
    info = await js.stream_info(f"KV_{subjects.IDEMPOTENCY_BUCKET}")
    assert info.config.max_age == settings.nats.duplicate_window_s

    first = await client.post("/jobs", json=HELLO, headers=KEY)
    first_id = (await first.json())["id"]
    await js.purge_stream(f"KV_{subjects.IDEMPOTENCY_BUCKET}")  # what the TTL does when the window ends

    again = await client.post("/jobs", json=HELLO, headers=KEY)
    assert again.status == 202
    again_id = (await again.json())["id"]
    assert again_id != first_id  # a second run gets an id of its own, so its status and output can be read
    assert "Idempotent-Replayed" not in again.headers
    assert await _stored_ids(js) == [first_id, again_id]
    assert await stored.queued(again_id)  # sent without waiting for its ack: it may land just after the 202


async def test_a_key_on_build_works_and_build_without_a_key_makes_a_job_each_time(
    client: TestClient[Any, Any], js: JetStreamContext
) -> None:
    original = json.loads((EXAMPLES / "valid" / "original-build.json").read_text())
    plain = [await client.post("/build", json=original) for _ in range(2)]
    keyed = [await client.post("/build", json=original, headers=KEY) for _ in range(2)]
    assert [r.status for r in plain + keyed] == [200] * 4
    ids = [(await r.json())["job_id"] for r in plain + keyed]
    assert len({ids[0], ids[1], ids[2]}) == 3 and ids[3] == ids[2]
    assert sorted(await _stored_ids(js)) == sorted(ids[:3])
