"""One acknowledged publish per POST: the queued event is sent unacknowledged, yet a GET or a DELETE sent right
after the 202 finds the job, also when that event arrives after the reader first asked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs import handlers as logs_handlers
from functions.logs import recordstore
from functions.submit import enqueue
from functions.submit import handlers as submit_handlers
from runtime import events, jobs, messaging, subjects
from runtime.jobs import JobStatus
from runtime.messaging import topology
from runtime.settings import Settings
from tests.helpers import EXAMPLES

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
UNKNOWN = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"


@pytest.fixture
async def submit(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(submit_handlers.create_app(settings))


@pytest.fixture
async def logs(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(logs_handlers.create_app(settings))


async def post(submit: TestClient) -> str:
    response = await submit.post("/jobs", json=HELLO)
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def test_a_post_awaits_one_ack_and_sends_the_queued_event_without_waiting(
    submit: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    acknowledged: list[str] = []
    unacknowledged: list[str] = []
    publish, publish_nowait = messaging.Messaging.publish, messaging.Messaging.publish_nowait

    async def counted_publish(self: messaging.Messaging, subject: str, payload: bytes, **kw: Any) -> Any:
        acknowledged.append(subject)
        return await publish(self, subject, payload, **kw)

    async def counted_nowait(self: messaging.Messaging, subject: str, payload: bytes, **kw: Any) -> None:
        unacknowledged.append(subject)
        await publish_nowait(self, subject, payload, **kw)

    monkeypatch.setattr(messaging.Messaging, "publish", counted_publish)
    monkeypatch.setattr(messaging.Messaging, "publish_nowait", counted_nowait)
    job_id = await post(submit)
    assert acknowledged == ["hades.jobs.high"]
    assert unacknowledged == [f"hades.status.{job_id}"]


async def test_a_get_right_after_the_202_finds_the_queued_job(submit: TestClient, logs: TestClient) -> None:
    job_id = await post(submit)
    response = await logs.get(f"/jobs/{job_id}")
    assert response.status == 200, await response.text()
    record = await response.json()
    assert record["id"] == job_id and record["status"] == "queued" and record["lane"] == "high"


async def test_a_delete_right_after_the_202_cancels_the_job(submit: TestClient, js: Any) -> None:
    job_id = await post(submit)
    response = await submit.delete(f"/jobs/{job_id}")
    assert response.status == 202, await response.text()
    assert await response.json() == {"id": job_id, "status": "cancelling"}
    stored = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.cancel_subject(job_id))
    assert json.loads(stored.data)["job_id"] == job_id


def late_queued_event(conn: messaging.Messaging, job: jobs.Job, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the job's queued event reach the stream only after the reader's first look found nothing."""
    looks: list[int] = []
    last_message = messaging.Messaging.last_message

    async def overtaken(self: messaging.Messaging, stream: str, subject: str) -> Any:
        found = await last_message(self, stream, subject)
        looks.append(1)
        if len(looks) == 1 and subject == subjects.status_subject(job.id):
            assert found is None
            event = events.job_event(job.id, attempt=0, seq=0, status=JobStatus.QUEUED, job=job.summary())
            await self.publish(subject, messaging.encode(event), msg_id=events.status_msg_id(event))
        return found

    monkeypatch.setattr(messaging.Messaging, "last_message", overtaken)
    return looks


def a_job(settings: Settings) -> jobs.Job:
    return jobs.job_from_document(
        HELLO, job_id=jobs.new_job_id(), limits=settings.limits, submitted_at=jobs.utc_now(), origin="jobs"
    )


async def test_a_cancel_waits_for_a_queued_event_still_on_its_way(
    conn: messaging.Messaging, settings: Settings, monkeypatch: pytest.MonkeyPatch, js: Any
) -> None:
    job = a_job(settings)
    looks = late_queued_event(conn, job, monkeypatch)
    await enqueue.request_cancel(conn, job.id, reason="test")
    assert len(looks) >= 2  # found on a second look, not the first
    stored = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.cancel_subject(job.id))
    assert json.loads(stored.data)["reason"] == "test"


async def test_a_record_load_waits_for_a_queued_event_still_on_its_way(
    conn: messaging.Messaging, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = a_job(settings)
    bucket = await conn.bucket(topology.records_bucket_config(settings))
    store = recordstore.RecordStore(conn, bucket)
    looks = late_queued_event(conn, job, monkeypatch)
    record = await store.load(job.id)
    assert len(looks) >= 2
    assert record is not None and record["id"] == job.id and record["status"] == "queued"


async def test_an_unknown_job_is_still_unknown(submit: TestClient, logs: TestClient) -> None:
    assert (await submit.delete(f"/jobs/{UNKNOWN}")).status == 404
    assert (await logs.get(f"/jobs/{UNKNOWN}")).status == 404
