"""Per-tenant visibility: the metrics (a bounded label set: named tenants, the rest as ``other``) and the
dashboard's lane table per tenant."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs import tenantstats
from functions.logs.ui import lane_stats
from functions.submit.handlers import create_app as create_submit_app
from runtime import messaging, metrics, subjects
from runtime.messaging import topology
from tests.helpers import EXAMPLES, make_settings, poll

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())


def sample_value(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


async def test_queued_and_running_per_tenant_come_from_jetstream_with_unnamed_tenants_as_other(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging
) -> None:
    settings = make_settings(clean_nats, HADES_TENANT_MAX_QUEUED="cs101=100")  # names cs101, lets any tenant in
    submit: TestClient = await aiohttp_client(create_submit_app(settings))
    for tenant, count in [("cs101", 4), ("unnamed-a", 2), ("unnamed-b", 1), ("default", 3)]:
        for _ in range(count):
            response = await submit.post("/jobs", json={**HELLO, "tenant": tenant})
            assert response.status == 202
    # Dispatchers take all of cs101's jobs and one of unnamed-a's from their tenants' consumers; nobody made
    # unnamed-b's consumer yet (its job waits all the same) and default's has delivered nothing.
    taken = []
    for tenant, count in [("cs101", 4), ("unnamed-a", 1), ("default", 0)]:
        config = topology.dispatch_consumer_config(settings, subjects.Lane.HIGH, tenant)
        consumer = await conn.pull_consumer(subjects.JOBS_STREAM, config)
        try:
            if count:
                taken.append(len(await consumer.fetch(count, timeout_s=5)))
        finally:
            await consumer.close()
    assert taken == [4, 1]
    known = settings.tenants.known()
    tenantstats.prime(known)
    await tenantstats.sample(conn, known)
    text = _exposition()
    expected = {"cs101": (0, 4), "other": (2, 1), "default": (3, 0)}
    for tenant, (queued, running) in expected.items():
        assert sample_value(text, "hades_tenant_jobs_queued", tenant=tenant, lane="high") == queued, tenant
        assert sample_value(text, "hades_tenant_jobs_running", tenant=tenant, lane="high") == running, tenant
    assert sample_value(text, "hades_tenant_jobs_queued", tenant="unnamed-a", lane="high") is None  # bounded labels
    assert sample_value(text, "hades_tenant_jobs_queued", tenant="cs101", lane="low") == 0


def _exposition() -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY).decode()


@pytest.mark.parametrize(("tenant", "label"), [("cs101", "cs101"), ("cs999", "other"), (None, "default")])
def test_a_finished_job_counts_for_its_tenants_label(tenant: str | None, label: str) -> None:
    before = sample_value(_exposition(), "hades_tenant_jobs_finished_total", tenant=label, result="failed") or 0
    tenantstats.finished(tenant, "failed", frozenset({"cs101"}))
    after = sample_value(_exposition(), "hades_tenant_jobs_finished_total", tenant=label, result="failed")
    assert after == before + 1


def test_lane_stats_split_queued_and_running_per_tenant() -> None:
    found = [
        {"id": "a", "status": "queued", "lane": "high", "tenant": "cs101"},
        {"id": "b", "status": "queued", "lane": "high", "tenant": "cs101"},
        {"id": "c", "status": "running", "lane": "high", "tenant": "cs101"},
        {"id": "d", "status": "queued", "lane": "high", "tenant": "cs102"},
        {"id": "e", "status": "queued", "lane": "low"},  # stored before tenants
        {"id": "f", "status": "succeeded", "lane": "high", "tenant": "cs103"},
    ]
    stats = lane_stats(found, now=datetime(2026, 12, 1, tzinfo=UTC))  # type: ignore[arg-type]
    assert stats["tenants"] == [
        {"lane": "high", "tenant": "cs101", "queued": 2, "running": 1},
        {"lane": "high", "tenant": "cs102", "queued": 1, "running": 0},
        {"lane": "low", "tenant": "default", "queued": 1, "running": 0},
    ]


def test_a_tenants_job_subject_names_one_span_for_all_tenants() -> None:
    from runtime import tracing

    high = subjects.Lane.HIGH
    assert tracing.destination_template(subjects.jobs_subject(high, "cs101")) == "hades.jobs.high.{tenant}"
    assert tracing.destination_template(subjects.jobs_subject(high)) == "hades.jobs.high"


async def test_the_log_collector_counts_a_tenants_finished_job_once_under_its_label(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging
) -> None:
    import dataclasses

    from functions.logs.handlers import create_app as create_logs_app
    from runtime.jobs import JobStatus
    from tests.fakes import FakeDispatch, ended_record, new_job

    settings = make_settings(clean_nats, HADES_TENANTS="cs101")
    logs = await aiohttp_client(create_logs_app(settings))
    before = sample_value(_exposition(), "hades_tenant_jobs_finished_total", tenant="cs101", result="failed") or 0
    repeats = sample_value(_exposition(), "hades_events_applied_total", kind="job", outcome="duplicate") or 0
    job = FakeDispatch(conn, dataclasses.replace(new_job(), tenant="cs101"))
    await job.submit()
    await job.running()
    await job.finish(JobStatus.FAILED, reason="step 1 failed")
    await job.finish(JobStatus.FAILED, reason="step 1 failed")  # a repeat (another seq): the job ended once
    record = await ended_record(logs, job.id)
    assert record["tenant"] == "cs101"

    async def repeat_seen() -> bool:
        return (
            sample_value(_exposition(), "hades_events_applied_total", kind="job", outcome="duplicate") or 0
        ) > repeats

    await poll(repeat_seen)
    after = sample_value(_exposition(), "hades_tenant_jobs_finished_total", tenant="cs101", result="failed")
    assert after == before + 1
