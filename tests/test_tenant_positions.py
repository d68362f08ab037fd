"""Queue positions, waiting counts and lane metrics under fair share: a tenant's queued job is placed by its share
of the lane, not behind every job stored before it (issue 22, "Queue position and ETA stay right under fair share").

The numbers come from each tenant's dispatch consumer of the lane (``dispatch-<lane>--<tenant>``), or, before a
dispatcher made it, from every message on the tenant's subject. The tests make the consumers and take jobs from
them as dispatchers do (a fetch not acked: running).
"""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from functions.logs import collector, positions
from runtime import metrics, subjects, tenantqueues
from runtime.messaging import Messaging, Place, topology
from runtime.settings import Settings
from tests.helpers import make_settings

NORMAL = subjects.Lane.NORMAL
LANE_WEIGHTS = {"high": 6, "normal": 3, "low": 1}


def queues(counts: dict[tuple[subjects.Lane, str], tuple[int, int]]) -> tenantqueues.Queues:
    """Queues from (waiting, running) per lane and tenant."""
    return tenantqueues.Queues(
        by_key={
            key: tenantqueues.Counts(stored=waiting + running, waiting=waiting, running=running)
            for key, (waiting, running) in counts.items()
        }
    )


def test_a_small_tenants_job_behind_a_big_burst_is_placed_by_its_share() -> None:
    found = queues({(NORMAL, "a"): (292, 8), (NORMAL, "b"): (1, 0)})
    b_first = positions.placed(
        lane="normal", tenant="b", own=Place(total=1, after=0), queues=found, weights=LANE_WEIGHTS
    )
    assert b_first is not None
    assert (b_first.tenant_position, b_first.lane_position, b_first.ahead_tenants) == (0, 1, {"a": 1, "b": 0})
    # a's last job (its 300th; 8 of them run): every other waiting job of a, then b's one
    a_last = positions.placed(
        lane="normal", tenant="a", own=Place(total=300, after=0), queues=found, weights=LANE_WEIGHTS
    )
    assert a_last is not None
    assert (a_last.tenant_position, a_last.lane_position, a_last.ahead_tenants) == (291, 292, {"a": 291, "b": 1})
    assert a_last.position == 292 and a_last.ahead == {"normal": 292, "high": 0, "low": 0}


def test_weights_share_the_lane_and_other_lanes_count_every_tenants_jobs() -> None:
    found = queues({(NORMAL, "a"): (100, 0), (NORMAL, "b"): (100, 0), (subjects.Lane.HIGH, "c"): (50, 0)})
    weight = {"a": 2, "b": 1}.__getitem__
    place = positions.placed(
        lane="normal",
        tenant="b",
        own=Place(total=100, after=95),  # b's 5th job
        queues=found,
        weights=LANE_WEIGHTS,
        tenant_weight=weight,
    )
    assert place is not None
    assert place.ahead_tenants == {"a": 9, "b": 4}  # two of a's per one of b's, b's 5th at 4.5 turns of b
    assert place.lane_position == 13
    assert place.ahead == {"normal": 13, "high": 27, "low": 0}  # the high lane's c counts, though not default's


def test_a_job_its_tenants_consumer_delivered_has_no_place() -> None:
    found = queues({(NORMAL, "a"): (2, 1)})
    assert (
        positions.placed(lane="normal", tenant="a", own=Place(total=3, after=2), queues=found, weights=LANE_WEIGHTS)
        is None
    )
    place = positions.placed(lane="normal", tenant="a", own=Place(total=3, after=1), queues=found, weights=LANE_WEIGHTS)
    assert place is not None and place.tenant_position == 0


def test_a_capped_tenants_eta_is_bounded_by_its_cap_and_the_mean_run_time() -> None:
    throughput = positions.Throughput(window_s=60.0)
    throughput.since = 0.0
    for n in range(10):  # ten jobs start a second apart and each runs 20 s
        throughput.started(at=float(n), job_id=f"job{n}")
    for n in range(10):
        throughput.ended(f"job{n}", at=float(n + 20))
    assert throughput.mean_duration_s(now=30.0) == pytest.approx(20.0)
    assert throughput.rate(now=30.0) == pytest.approx(10 / 30)
    assert throughput.eta_s(2, now=30.0) == pytest.approx(9.0)  # 3 / (1/3 per second)
    # capped at 2: its 5th job waits for 5 of its own to start, 2 at a time, 20 s each
    assert throughput.eta_s(2, now=30.0, tenant_position=4, cap=2) == pytest.approx(50.0)
    assert throughput.eta_s(2, now=30.0, tenant_position=0, cap=2) == pytest.approx(10.0)


async def test_the_mean_run_time_comes_from_the_running_and_terminal_events() -> None:
    throughput = positions.Throughput()
    await throughput.on_status("hades.status.j1", orjson.dumps({"kind": "job", "status": "running"}))
    await throughput.on_status("hades.status.j1", orjson.dumps({"kind": "step", "status": "succeeded"}))
    assert throughput.mean_duration_s() is None  # a step's end is not the job's
    await throughput.on_status("hades.status.j1", orjson.dumps({"kind": "job", "status": "failed"}))
    await throughput.on_status("hades.status.j2", orjson.dumps({"kind": "job", "status": "succeeded"}))  # start unseen
    assert len(throughput.durations) == 1 and throughput.rate() is not None


async def publish(conn: Messaging, tenant: str, count: int) -> list[int]:
    subject = subjects.jobs_subject(NORMAL, tenant)
    return [(await conn.publish(subject, b"{}", msg_id=f"{tenant}-{n}")).seq for n in range(count)]


async def take(conn: Messaging, settings: Settings, tenant: str, count: int) -> int:
    """Make the tenant's consumer of the lane and take ``count`` jobs from it, not acked (running)."""
    consumer = await conn.pull_consumer(
        subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, NORMAL, tenant)
    )
    try:
        return len(await consumer.fetch(count, timeout_s=5)) if count else 0
    finally:
        await consumer.close()


async def place_of(conn: Messaging, tenant: str, seq: int) -> positions.QueuePlace:
    place = await positions.queue_place(
        conn, lane="normal", stream_seq=seq, weights=LANE_WEIGHTS, throughput=None, tenant=tenant
    )
    assert place is not None
    return place


@pytest.mark.timeout(120)
async def test_b_behind_300_of_a_is_placed_by_its_share_with_and_without_its_consumer(
    conn: Messaging, settings: Settings
) -> None:
    a_seqs = await publish(conn, "a", 300)
    assert await take(conn, settings, "a", 8) == 8  # a's first 8 run
    (b_seq,) = await publish(conn, "b", 1)

    # no dispatcher made b's consumer yet: b's job waits all the same, and is next but one
    assert (await tenantqueues.waiting(conn, "a"), await tenantqueues.waiting(conn, "b")) == (292, 1)
    b_place = await place_of(conn, "b", b_seq)
    assert (b_place.tenant_position, b_place.lane_position, b_place.position) == (0, 1, 1)
    a_place = await place_of(conn, "a", a_seqs[-1])
    assert (a_place.tenant_position, a_place.lane_position) == (291, 292)
    assert a_place.ahead_tenants == {"a": 291, "b": 1}

    assert await take(conn, settings, "b", 0) == 0  # b's consumer made, nothing taken yet: the same place
    assert (await place_of(conn, "b", b_seq)).lane_position == 1
    counts = await tenantqueues.by_tenant(conn)
    assert {key[1]: (c.stored, c.waiting, c.running) for key, c in counts.items()} == {
        "a": (300, 292, 8),
        "b": (1, 1, 0),
    }
    assert await take(conn, settings, "b", 1) == 1
    assert (
        await positions.queue_place(
            conn, lane="normal", stream_seq=b_seq, weights=LANE_WEIGHTS, throughput=None, tenant="b"
        )
        is None
    )  # taken: no longer queued
    assert (await tenantqueues.by_tenant(conn))[NORMAL, "b"].running == 1
    a_place = await place_of(conn, "a", a_seqs[-1])
    assert (a_place.tenant_position, a_place.lane_position, a_place.ahead_tenants) == (291, 291, {"a": 291})


def _value(name: str, **labels: str) -> float | None:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.REGISTRY).decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


async def test_the_lane_metrics_count_every_tenants_queued_jobs_and_the_oldest_of_them(
    conn: Messaging, clean_nats: str
) -> None:
    settings = make_settings(clean_nats, HADES_TENANTS="a,b")
    await publish(conn, "a", 5)  # the lane's oldest job: a named tenant's
    await asyncio.sleep(1.1)
    await publish(conn, "b", 2)
    await conn.publish(subjects.jobs_subject(NORMAL), b"{}", msg_id="default-0")
    assert await take(conn, settings, "a", 2) == 2
    assert await take(conn, settings, "default", 0) == 0  # the default tenant's consumer: nothing of a or b
    await collector.sample_lanes(conn, settings.tenants.known())
    assert _value("hades_jobs_queued", lane="normal") == 3 + 2 + 1  # a's consumer's pending, b's stored, default's
    oldest = _value("hades_queue_oldest_age_seconds", lane="normal")
    assert oldest is not None and oldest >= 1.0  # a's third job, stored before the sleep
    assert _value("hades_tenant_jobs_queued", tenant="a", lane="normal") == 3
    assert _value("hades_tenant_jobs_running", tenant="a", lane="normal") == 2
    assert _value("hades_tenant_jobs_queued", tenant="b", lane="normal") == 2
    assert _value("hades_jobs_queued", lane="high") == 0
