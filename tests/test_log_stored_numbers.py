"""Integer fields written as ``2.0`` (JSON Schema's "integer" takes them) are stored and served as integers
(issue 13, finding 12: ``priority: 2.0`` was stored as a float)."""

from __future__ import annotations

import json
from typing import Any

from functions.submit.handlers import create_app
from runtime import messaging
from runtime.jobs import JobId, job_from_document, utc_now
from runtime.settings import LimitSettings
from runtime.subjects import Lane
from tests.helpers import make_settings
from tests.observe import StoredEvents


def test_a_whole_float_priority_and_timeout_become_integers() -> None:
    document = {"name": "n", "priority": 2.0, "timeout_seconds": 600.0, "steps": [{"id": 1.0, "image": "busybox"}]}
    job = job_from_document(document, job_id=JobId("j"), limits=LimitSettings(), submitted_at=utc_now())
    assert (job.priority, job.timeout_s, job.steps[0].id) == (2, 600, 1)
    assert all(type(value) is int for value in (job.priority, job.timeout_s, job.steps[0].id))
    assert job.lane is Lane.NORMAL
    assert '"priority": 2,' in json.dumps(job.summary())


async def test_submit_answers_and_stores_the_integer(
    aiohttp_client: Any, conn: messaging.Messaging, clean_nats: str, stored: StoredEvents
) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats)))
    body = {"name": "float priority", "priority": 2.0, "steps": [{"id": 1, "image": "busybox"}]}
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["priority"] == 2 and type(answer["priority"]) is int and answer["lane"] == "normal"
    queued = await stored.queued(answer["id"])
    assert type(queued["job"]["priority"]) is int
