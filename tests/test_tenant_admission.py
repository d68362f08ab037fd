"""Admission control per tenant, and the per-tenant job subjects it counts on (real submit, real nats-server).

A queued cap turns tenant A's extra submits into 429s (nothing stored) while tenant B is never refused; "queued"
means waiting: jobs the tenant's dispatch consumer has delivered free room. Jobs stored before tenants (on the plain
lane subject) are taken by the lane's default consumer, also one made before tenants existed; every named tenant's
by its own consumer in the lane.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient

from functions.logs.handlers import create_app as create_logs_app
from functions.submit.handlers import create_app as create_submit_app
from runtime import messaging, subjects, tenantqueues
from runtime.messaging import topology
from runtime.settings import Settings
from tests.helpers import EXAMPLES, make_settings, poll

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())


@pytest.fixture
def capped(clean_nats: str) -> Settings:
    return make_settings(clean_nats, HADES_TENANT_MAX_QUEUED="cs101=3", HADES_TENANT_RETRY_AFTER_SECONDS="7")


@pytest.fixture
async def submit(aiohttp_client: Any, capped: Settings) -> TestClient:
    return await aiohttp_client(create_submit_app(capped))


async def post(submit: TestClient, tenant: str) -> Any:
    return await submit.post("/jobs", json={**HELLO, "tenant": tenant})


async def stored_per_subject(conn: messaging.Messaging) -> dict[str, int]:
    return await conn.subject_counts(subjects.JOBS_STREAM, "hades.jobs.>")


def quota_refusals(exported: str) -> float:
    """``hades_jobs_rejected_total{reason="tenant-quota"}``: counted per process, so read before and after."""
    for line in exported.splitlines():
        if line.startswith('hades_jobs_rejected_total{reason="tenant-quota"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_queued_cap_refuses_a_tenants_extra_jobs_before_storing_and_never_another_tenant(
    submit: TestClient, conn: messaging.Messaging
) -> None:
    refused_before = quota_refusals(await (await submit.get("/metrics")).text())
    for _ in range(3):
        assert (await post(submit, "cs101")).status == 202
    for _ in range(2):
        refused = await post(submit, "cs101")
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "7"
        assert refused.content_type == "application/problem+json"
        problem = await refused.json()
        assert problem["type"] == "urn:hades:problem:tenant-queue-full"
        assert (problem["tenant"], problem["max_queued"], problem["queued"]) == ("cs101", 3, 3)
        assert "cs101" in problem["detail"] and "3" in problem["detail"]
    for tenant in ["cs102"] * 10 + ["default"] * 2:
        response = await post(submit, tenant)
        assert response.status == 202, await response.text()
    assert await stored_per_subject(conn) == {
        "hades.jobs.high.cs101": 3,
        "hades.jobs.high.cs102": 10,
        "hades.jobs.high": 2,
    }
    assert quota_refusals(await (await submit.get("/metrics")).text()) == refused_before + 2


@pytest.mark.parametrize("cap", [3, 40])
async def test_concurrent_submits_past_the_cap_store_exactly_the_cap(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, cap: int
) -> None:
    submit = await aiohttp_client(create_submit_app(make_settings(clean_nats, HADES_TENANT_MAX_QUEUED=f"cs101={cap}")))
    answers = await asyncio.gather(*(post(submit, "cs101") for _ in range(cap + 30)))
    assert sorted(answer.status for answer in answers) == [202] * cap + [429] * 30
    assert await stored_per_subject(conn) == {"hades.jobs.high.cs101": cap}


async def test_jobs_a_dispatcher_took_no_longer_count_as_queued(
    submit: TestClient, conn: messaging.Messaging, capped: Settings
) -> None:
    for _ in range(3):
        assert (await post(submit, "cs101")).status == 202
    assert (await post(submit, "cs101")).status == 429
    assert await tenantqueues.waiting(conn, "cs101") == 3  # no dispatcher made cs101's consumer yet: all wait
    lane = subjects.Lane.HIGH
    consumer = await conn.pull_consumer(
        subjects.JOBS_STREAM, topology.dispatch_consumer_config(capped, lane, "cs101")
    )  # the tenant's consumer in the lane, as dispatchers make it
    try:
        assert await tenantqueues.waiting(conn, "cs101") == 3
        taken = await consumer.fetch(2, timeout_s=5)  # as a dispatcher does: running, not acked yet
        assert len(taken) == 2
        assert await tenantqueues.waiting(conn, "cs101") == 1
        assert await tenantqueues.stored(conn, "cs101") == 3
        assert [(await post(submit, "cs101")).status for _ in range(3)] == [202, 202, 429]
    finally:
        await consumer.close()


async def test_a_lane_consumer_made_before_tenants_takes_old_and_default_jobs_and_a_tenants_consumer_its_own(
    clean_nats: str, submit: TestClient, conn: messaging.Messaging, capped: Settings
) -> None:
    lane = subjects.Lane.NORMAL
    nc = await nats.connect(clean_nats)
    try:
        js = nc.jetstream()
        # The consumer and a job as an older Hades left them: one filter, the plain lane subject.
        old = topology.dispatch_consumer_config(capped, lane)
        old.filter_subjects, old.filter_subject = None, "hades.jobs.normal"
        await js.add_consumer(subjects.JOBS_STREAM, old)
        await js.publish("hades.jobs.normal", json.dumps({"id": "old"}).encode())
    finally:
        await nc.close()
    for tenant in ("cs102", "default"):
        assert (await submit.post("/jobs", json={**HELLO, "priority": 2, "tenant": tenant})).status == 202
    taken_subjects = []
    for tenant in ("default", "cs102"):  # the old consumer (updated in place), then the tenant's own
        consumer = await conn.pull_consumer(
            subjects.JOBS_STREAM, topology.dispatch_consumer_config(capped, lane, tenant)
        )
        try:
            taken = await consumer.fetch(10, timeout_s=1)
            taken_subjects.append([delivery.subject for delivery in taken])
        finally:
            await consumer.close()
    assert taken_subjects == [["hades.jobs.normal", "hades.jobs.normal"], ["hades.jobs.normal.cs102"]]


async def test_a_tenants_queue_position_counts_every_tenants_jobs_ahead_in_its_lane_by_fair_share(
    aiohttp_client: Any, submit: TestClient, capped: Settings, conn: messaging.Messaging
) -> None:
    logs = await aiohttp_client(create_logs_app(capped))
    ids = []
    for tenant in ("default", "cs102", "default", "cs101", "cs102"):
        response = await post(submit, tenant)
        ids.append((await response.json())["id"])

    async def queue(job_id: str) -> dict[str, Any] | None:
        record = await (await logs.get(f"/jobs/{job_id}")).json()
        found: dict[str, Any] | None = record.get("queue")
        return found

    places = [await poll(lambda job_id=job_id: queue(job_id)) for job_id in ids]  # type: ignore[misc]
    # The tenants alternate (equal weights; a tie goes to the name first): each one's first job, then the seconds.
    assert [place["lane_position"] for place in places] == [2, 1, 4, 0, 3]
    assert [place["tenant_position"] for place in places] == [0, 0, 1, 0, 1]
    assert places[2]["ahead_tenants"] == {"default": 1, "cs101": 1, "cs102": 2}


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_named_tenants_job_runs_to_its_end_and_its_record_names_the_tenant(
    aiohttp_client: Any, aiohttp_server: Any, clean_nats: str, busybox_image: str, conn: messaging.Messaging
) -> None:
    from functions.dispatch.handlers import create_app as create_dispatch

    settings = make_settings(clean_nats, HADES_PULL_TIMEOUT_SECONDS="0.5")
    await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit_app(settings))
    logs = await aiohttp_client(create_logs_app(settings))
    job = {"name": "t", "tenant": "cs101", "steps": [{"id": 1, "image": busybox_image, "script": "echo hi"}]}
    response = await submit.post("/jobs", json=job)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]

    async def ended() -> dict[str, Any] | None:
        record: dict[str, Any] = await (await logs.get(f"/jobs/{job_id}")).json()
        return record if record.get("status") == "succeeded" else None

    record = await poll(ended, timeout_s=60)
    assert record["tenant"] == "cs101"
    assert await stored_per_subject(conn) == {}  # acked: the work queue let it go


async def test_a_refused_submit_leaves_its_idempotency_key_free(
    submit: TestClient, conn: messaging.Messaging, clean_nats: str
) -> None:
    for _ in range(3):
        assert (await post(submit, "cs101")).status == 202
    headers = {"Idempotency-Key": "retry-me"}
    refused = await submit.post("/jobs", json={**HELLO, "tenant": "cs101"}, headers=headers)
    assert refused.status == 429
    # The tenant frees room (here: its jobs go), and the student sends a changed job with the same key.
    nc = await nats.connect(clean_nats)
    try:
        await nc.jetstream().purge_stream(subjects.JOBS_STREAM)
    finally:
        await nc.close()
    changed = await submit.post("/jobs", json={**HELLO, "name": "fixed", "tenant": "cs101"}, headers=headers)
    assert changed.status == 202, await changed.text()
