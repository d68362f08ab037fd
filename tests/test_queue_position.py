"""A queued job's place: in its lane, across lanes with their weights, as dispatchers take jobs; and its ETA."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from functions.logs import positions
from functions.logs.handlers import create_app
from functions.submit.handlers import create_app as create_submit
from runtime import messaging, subjects
from runtime.messaging import topology
from runtime.settings import Settings
from tests.fakes import FakeDispatch, record_when, submitted
from tests.helpers import poll

WEIGHTS = {"high": 6, "normal": 3, "low": 1}
PRIORITY = {"high": 3, "normal": 2, "low": 1}


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def queue_of(client: TestClient, job: FakeDispatch, **expected: Any) -> dict[str, Any]:
    """The record's ``queue`` once it matches ``expected``."""

    async def check() -> dict[str, Any] | None:
        body = await (await client.get(f"/jobs/{job.id}")).json()
        queue: dict[str, Any] | None = body.get("queue")
        return queue if queue and all(queue.get(k) == v for k, v in expected.items()) else None

    return await poll(check)


async def left_the_queue(client: TestClient, job: FakeDispatch) -> bool:
    async def check() -> bool:
        body = await (await client.get(f"/jobs/{job.id}")).json()
        return "queue" not in body and "queue_position" not in body

    return await poll(check)


def test_other_lanes_run_by_their_weight_and_never_more_than_they_hold() -> None:
    queued = {"high": 100, "normal": 100, "low": 100}
    assert positions.ahead_overall("high", 0, queued, WEIGHTS) == {"high": 0, "normal": 0, "low": 0}
    assert positions.ahead_overall("high", 5, queued, WEIGHTS) == {"high": 5, "normal": 3, "low": 1}
    # low's second job ties with normal's fifth (both at 1.5 turns): the higher lane goes first, not both
    assert positions.ahead_overall("normal", 4, queued, WEIGHTS) == {"normal": 4, "high": 9, "low": 1}
    assert positions.ahead_overall("low", 2, queued, WEIGHTS) == {"low": 2, "high": 15, "normal": 8}
    assert positions.ahead_overall("low", 2, {"high": 4, "normal": 0, "low": 3}, WEIGHTS) == {
        "low": 2,
        "high": 4,
        "normal": 0,
    }


@pytest.mark.parametrize(
    ("queued", "weights"),
    [
        ({"high": 4, "normal": 2, "low": 3}, WEIGHTS),  # issue 20: a low and a normal job both at position 5
        ({"high": 30, "normal": 30, "low": 30}, WEIGHTS),
        ({"high": 7, "normal": 11, "low": 13}, {"high": 3, "normal": 2, "low": 1}),
        ({"high": 5, "normal": 5, "low": 5}, {"high": 1, "normal": 1, "low": 1}),
        ({"high": 0, "normal": 9, "low": 4}, {"high": 4, "normal": 2, "low": 2}),
    ],
)
def test_queued_jobs_have_one_strict_order(queued: dict[str, int], weights: dict[str, int]) -> None:
    places = sorted(
        sum(positions.ahead_overall(lane, k, queued, weights).values())
        for lane, count in queued.items()
        for k in range(count)
    )
    assert places == list(range(sum(queued.values())))


def test_the_eta_follows_the_recent_start_rate() -> None:
    throughput = positions.Throughput(window_s=60.0)
    throughput.since = 0.0
    assert throughput.eta_s(10, now=100.0) is None  # no start seen yet
    for at in range(30, 90):  # one start a second, from 30 s to 89 s
        throughput.started(at=float(at))
    assert throughput.rate(now=90.0) == pytest.approx(1.0)  # 60 starts in the last 60 s
    assert throughput.eta_s(9, now=90.0) == pytest.approx(10.0)
    assert throughput.rate(now=120.0) == pytest.approx(0.5)  # the first 30 left the window
    assert throughput.rate(now=200.0) is None


async def test_the_place_across_lanes_shrinks_as_jobs_ahead_start(
    client: TestClient, conn: messaging.Messaging, js: JetStreamContext, settings: Settings
) -> None:
    high = [await submitted(conn, priority=PRIORITY["high"]) for _ in range(4)]
    normal = [await submitted(conn, priority=PRIORITY["normal"]) for _ in range(2)]
    low = [await submitted(conn, priority=PRIORITY["low"]) for _ in range(3)]
    for job in high + normal + low:
        await record_when(client, job.id, status="queued")

    mine = low[2]  # two ahead in the low lane: 2.5 turns of it let 15 high and 7.5 normal run, capped by the queues
    place = await queue_of(client, mine, lane="low", lane_position=2)
    assert place == {
        "lane": "low",
        "lane_position": 2,
        "tenant_position": 2,  # one tenant (default): its lane position
        "position": 8,
        "ahead": {"low": 2, "high": 4, "normal": 2},
        "ahead_tenants": {"default": 2},
        "eta_seconds": None,  # nothing has started yet
    }
    body = await (await client.get(f"/jobs/{mine.id}")).json()
    assert body["queue_position"] == 2  # the dashboard's field: jobs ahead in its lane
    # the last high job: three ahead in its lane, and half a turn of the others each per high turn
    assert await queue_of(client, high[3], lane_position=3, position=6, ahead={"high": 3, "normal": 2, "low": 1})

    # a dispatcher (any replica: it is the lane consumer's state) takes two high jobs; they run, unacked
    taker = await conn.pull_consumer(
        subjects.JOBS_STREAM, topology.dispatch_consumer_config(settings, subjects.Lane.HIGH)
    )
    taken = await taker.fetch(2, timeout_s=5.0)
    assert [m.subject for m in taken] == ["hades.jobs.high"] * 2
    await high[0].running()
    assert await queue_of(client, mine, position=6, ahead={"low": 2, "high": 2, "normal": 2})
    assert await queue_of(client, high[3], lane_position=1, position=2, ahead={"high": 1, "normal": 1, "low": 0})
    assert await left_the_queue(client, high[1])  # taken (not running yet): no longer in the queue

    # the first low job finishes and leaves the work queue: mine moves up in its lane too
    info = await js.stream_info("HADES_JOBS", subjects_filter="hades.jobs.low")
    first_low = await js.get_msg("HADES_JOBS", subject="hades.jobs.low", seq=info.state.first_seq, next=True)
    await js.delete_msg("HADES_JOBS", first_low.seq)
    place = await queue_of(client, mine, lane_position=1)
    assert place["ahead"] == {"low": 1, "high": 2, "normal": 2} and place["position"] == 5

    # a start was seen, so there is an estimate now
    place = await queue_of(client, mine, lane_position=1)
    assert isinstance(place["eta_seconds"], float) and place["eta_seconds"] > 0


async def test_no_eta_while_no_dispatcher_holds_a_job(client: TestClient, conn: messaging.Messaging) -> None:
    started = await submitted(conn, priority=PRIORITY["normal"])
    await started.running()  # a start was seen (the rate behind an ETA), then its dispatcher went away
    throughput = client.app[positions.THROUGHPUT]

    async def start_seen() -> bool:
        return throughput.rate() is not None

    await poll(start_seen)
    waiting = await submitted(conn, priority=PRIORITY["normal"])
    place = await queue_of(client, waiting, lane="normal")
    assert place["eta_seconds"] is None


async def test_a_job_alone_in_its_lane_is_next_there(client: TestClient, conn: messaging.Messaging) -> None:
    job = await submitted(conn, priority=PRIORITY["normal"])
    place = await queue_of(client, job, lane="normal")
    assert place["lane_position"] == 0 and place["position"] == 0


async def test_a_get_and_a_delete_right_after_the_202_find_the_job(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging
) -> None:
    submit = await aiohttp_client(create_submit(settings))
    logs = await aiohttp_client(create_app(settings))
    body = {"name": "fresh", "steps": [{"id": 1, "image": "hades-test-busybox:1", "script": "true"}]}
    for _ in range(5):  # no waiting between the answers: the record may not be written yet
        accepted = await submit.post("/jobs", json=body)
        assert accepted.status == 202, await accepted.text()
        job_id = (await accepted.json())["id"]
        record = await logs.get(f"/jobs/{job_id}")
        assert record.status == 200, await record.text()
        assert (await record.json())["status"] == "queued"
        cancel = await submit.delete(f"/jobs/{job_id}")
        assert cancel.status == 202, await cancel.text()
        assert (await cancel.json()) == {"id": job_id, "status": "cancelling"}
