"""``GET /scaling`` on the logs function, what KEDA scales dispatch on: every queued and running job of every lane
and tenant (a named tenant's jobs are on no lane consumer, so KEDA's per-consumer trigger would miss them), open
without the logs key, and a quick 503 naming the cause while NATS is away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from functions.logs.handlers import create_app
from functions.submit import enqueue
from runtime import jobs, messaging, subjects, tenants
from runtime.messaging import topology
from runtime.settings import LimitSettings, Settings
from tests.helpers import make_settings, poll
from tests.natsserver import NatsServer


def job(tenant: str, *, priority: int = 3) -> jobs.Job:
    document = {"name": "j", "priority": priority, "steps": [{"id": 1, "name": "s", "image": "alpine"}]}
    return jobs.job_from_document(
        document, job_id=jobs.new_job_id(), limits=LimitSettings(), submitted_at=jobs.utc_now(), tenant=tenant
    )


async def scaling(client: TestClient) -> dict[str, Any]:
    response = await client.get("/scaling")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_every_queued_and_running_job_of_every_lane_and_tenant_counts(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings))
    assert await scaling(client) == {"jobs": 0, "queued": 0, "running": 0}
    for tenant, priority, count in [(tenants.DEFAULT, 3, 3), ("cs101", 3, 2), ("cs102", 1, 4)]:
        for _ in range(count):
            await enqueue.enqueue(conn, job(tenant, priority=priority))
    high = subjects.Lane.HIGH
    default_high = await conn.pull_consumer(subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, high))
    cs101_high = await conn.pull_consumer(
        subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, high, "cs101")
    )
    try:
        taken = await default_high.fetch(1, timeout_s=5) + await cs101_high.fetch(2, timeout_s=5)
        assert len(taken) == 3
        # cs102's jobs (lane low) have no consumer yet: no lane trigger sees them, `jobs` does.
        assert await scaling(client) == {"jobs": 9, "queued": 2, "running": 3}
        await taken[0].ack()  # a job ended: its message is gone from the work queue
        await taken[1].ack()
        assert await poll(lambda: _jobs_below(client, 9), timeout_s=10) == {"jobs": 7, "queued": 2, "running": 1}
    finally:
        await default_high.close()
        await cs101_high.close()


async def _jobs_below(client: TestClient, count: int) -> dict[str, Any] | None:
    body = await scaling(client)
    return body if body["jobs"] < count else None


async def test_it_is_open_with_a_logs_key_and_documented(aiohttp_client: Any, clean_nats: str) -> None:
    client: TestClient = await aiohttp_client(create_app(make_settings(clean_nats, HADES_LOGS_API_KEY="read-only")))
    assert (await client.get("/jobs")).status == 401
    assert await scaling(client) == {"jobs": 0, "queued": 0, "running": 0}  # KEDA's operator sends no key
    document = await (await client.get("/openapi.json")).json()
    validate(document)
    operation = document["paths"]["/scaling"]["get"]
    assert "security" not in operation and {"200", "503"} <= set(operation["responses"])


async def test_without_nats_it_answers_503_at_once_naming_the_cause(aiohttp_client: Any, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "store")
    server.start()
    try:
        client: TestClient = await aiohttp_client(create_app(make_settings(server.url)))
        assert (await scaling(client))["jobs"] == 0
        server.stop()

        async def refused() -> tuple[str, str, str] | None:
            response = await client.get("/scaling")
            if response.status != 503:
                return None
            return response.content_type, response.headers.get("Retry-After", ""), (await response.json())["detail"]

        content_type, retry_after, detail = await poll(refused, timeout_s=15)
        assert content_type == "application/problem+json" and retry_after.isdigit()
        assert "not reachable" in detail, detail
    finally:
        server.stop()


async def test_a_job_message_no_consumer_will_deliver_again_does_not_keep_a_dispatcher(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging
) -> None:
    """A message whose deliveries ran out without an ack (its last attempt's dispatcher died, or the nak of an
    undecided last attempt) stays stored in the work queue, but no dispatcher can take it: counted, it would keep
    dispatch above zero replicas for good."""
    settings = make_settings(clean_nats, HADES_MAX_DELIVER="1", HADES_ACK_WAIT_SECONDS="1")
    await conn.ensure_topology(settings)
    client: TestClient = await aiohttp_client(create_app(settings))
    queued = job(tenants.DEFAULT)
    await enqueue.enqueue(conn, queued)
    lane = await conn.pull_consumer(subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, queued.lane))
    try:
        for _ in range(2):  # max_deliver is HADES_MAX_DELIVER + 1
            [delivery] = await lane.fetch(1, timeout_s=5)
            await delivery.nak()
        assert await lane.fetch(1, timeout_s=2) == []
        assert await conn.stream_messages(subjects.JOBS_STREAM) == 1  # still stored, never delivered again
        assert await poll(lambda: _jobs_at(client, 0), timeout_s=10) == {"jobs": 0, "queued": 0, "running": 0}
    finally:
        await lane.close()


async def _jobs_at(client: TestClient, count: int) -> dict[str, Any] | None:
    body = await scaling(client)
    return body if body["jobs"] == count else None
