"""The logs function against a real nats-server: events go in as dispatch publishes them, a client reads them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import nats
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext
from openapi_spec_validator import validate

from functions.logs.handlers import create_app
from runtime import events, jobs, messaging, metrics
from runtime.errors import HadesError
from runtime.jobs import JobStatus, StepStatus
from runtime.settings import Settings
from tests.fakes import FakeDispatch, publish_json, record_when, submitted
from tests.helpers import make_settings, poll
from tests.natsserver import NatsServer


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


def applied(kind: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("hades_events_applied_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


async def assert_problem(response: ClientResponse, status: int, *, detail_has: str = "") -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status and detail_has in body["detail"]
    return body


# --- records -------------------------------------------------------------------------------------------------


async def test_a_finished_job_has_its_whole_record(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.run({1: ["hello"], 2: ["a", "b"]})
    record = await record_when(client, dispatch.id, status="succeeded", log_lines=3)
    assert record["id"] == dispatch.id and record["name"] == "Example Job"
    assert record["lane"] == "high" and record["priority"] == 3 and record["attempt"] == 1
    assert record["submitted_at"] == dispatch.job.submitted_at
    assert record["started_at"] and record["finished_at"] and record["queue_wait_s"] == 0.1
    assert [(s["id"], s["name"], s["image"], s["status"], s["exit_code"]) for s in record["steps"]] == [
        (1, "step 1", "alpine", "succeeded", 0),
        (2, "step 2", "alpine", "succeeded", 0),
    ]
    assert "queue_position" not in record and not any(key.startswith("_") for key in record)
    response = await client.get(f"/jobs/{dispatch.id}/status")
    assert await response.json() == {"status": "Succeeded"}


async def test_served_records_have_exactly_the_documented_shape(client: TestClient, conn: messaging.Messaging) -> None:
    """The record is built in ``records.py`` and documented in ``apidoc.py``: this ties the two together."""
    document = (await (await client.get("/openapi.json")).json())["components"]["schemas"]
    closed = {name: {**schema, "additionalProperties": False} for name, schema in document.items()}
    queued, done = await submitted(conn), await submitted(conn)
    await done.run({1: ["hello"], 2: []}, JobStatus.FAILED)
    served = [
        await record_when(client, queued.id, status="queued"),
        await record_when(client, done.id, status="failed"),
    ]
    for record in served:
        resolver = {"components": {"schemas": closed}, **closed["JobRecord"]}
        jsonschema.validate(record, resolver)
    assert "queue_position" in served[0] and served[1]["steps"][0]["exit_code"] == 0


@pytest.mark.parametrize(
    ("status", "legacy"),
    [
        (JobStatus.FAILED, "Failed"),
        (JobStatus.TIMED_OUT, "Failed"),
        (JobStatus.CANCELLED, "Stopped"),
    ],
)
async def test_status_answers_with_the_original_names(
    client: TestClient, conn: messaging.Messaging, status: JobStatus, legacy: str
) -> None:
    dispatch = await submitted(conn)
    assert await (await client.get(f"/jobs/{dispatch.id}/status")).json() == {"status": "Queued"}
    await dispatch.running()
    await record_when(client, dispatch.id, status="running")
    assert await (await client.get(f"/jobs/{dispatch.id}/status")).json() == {"status": "Running"}
    await dispatch.finish(status, reason="because")
    await record_when(client, dispatch.id, status=str(status), reason="because")
    assert await (await client.get(f"/jobs/{dispatch.id}/status")).json() == {"status": legacy}


@pytest.mark.parametrize("path", ["", "/status", "/logs", "/logs/stream"])
async def test_an_unknown_job_is_a_404_in_both_shapes(client: TestClient, path: str) -> None:
    job_id = str(jobs.new_job_id())
    body = await assert_problem(await client.get(f"/jobs/{job_id}{path}"), 404, detail_has=job_id)
    assert body["error"] == f"job not found: {job_id}"
    assert body["type"] == "urn:hades:problem:job-not-found"
    body = await assert_problem(await client.get(f"/jobs/not-a-uuid{path}"), 404)
    assert body["error"] == "job not found: not-a-uuid"


async def test_a_job_is_found_before_the_collector_has_seen_it(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging
) -> None:
    app = create_app(settings)
    client = await aiohttp_client(app)
    from functions.logs.collector import COLLECTOR

    app[COLLECTOR].cancel()  # no collector: the record must come from the stored events
    dispatch = await submitted(conn)
    body = await (await client.get(f"/jobs/{dispatch.id}")).json()
    assert body["status"] == "queued" and body["name"] == "Example Job"


async def test_a_queued_job_knows_its_place_in_its_lane(
    client: TestClient, conn: messaging.Messaging, js: JetStreamContext
) -> None:
    ahead = [await submitted(conn, priority=1) for _ in range(3)]
    other_lane = await submitted(conn, priority=3)
    mine = await submitted(conn, priority=1)
    body = await record_when(client, mine.id, status="queued")
    assert body["queue_position"] == 3
    assert (await record_when(client, ahead[0].id))["queue_position"] == 0
    assert (await record_when(client, other_lane.id))["queue_position"] == 0
    # the first two leave the queue (a dispatcher took them): the work queue drops their messages
    info = await js.stream_info("HADES_JOBS")
    for seq in range(info.state.first_seq, info.state.first_seq + 2):
        await js.delete_msg("HADES_JOBS", seq)
    assert (await record_when(client, mine.id))["queue_position"] == 1
    body = await record_when(client, ahead[0].id)
    assert body["status"] == "queued" and "queue_position" not in body


async def test_duplicate_and_out_of_order_events_never_move_a_record_backwards(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    running = await dispatch.running()
    step_running = await dispatch.step(1, StepStatus.RUNNING)
    batch = await dispatch.lines(1, ["one", "two"])
    await dispatch.step(1, StepStatus.SUCCEEDED, exit_code=0)
    await dispatch.finish(JobStatus.SUCCEEDED)
    await record_when(client, dispatch.id, status="succeeded", log_lines=2)
    job_repeats, malformed = applied("job", "duplicate"), applied("unknown", "malformed")
    # the same events again, under new message ids (past JetStream's duplicate window), and older ones late
    await publish_json(conn, f"hades.status.{dispatch.id}", running, msg_id="again-1")
    await publish_json(conn, f"hades.status.{dispatch.id}", step_running, msg_id="again-2")
    await dispatch.publish_batch(batch, msg_id="again-3")
    queued_late = events.job_event(dispatch.id, attempt=0, seq=0, status=JobStatus.QUEUED)
    await publish_json(conn, f"hades.status.{dispatch.id}", queued_late, msg_id="again-4")
    await publish_json(conn, f"hades.status.{dispatch.id}", {"kind": "nonsense"}, msg_id="again-5")
    await publish_json(conn, f"hades.logs.{dispatch.id}", [1, 2], msg_id="again-6")

    async def repeats_seen() -> bool:
        return applied("job", "duplicate") >= job_repeats + 2 and applied("unknown", "malformed") >= malformed + 2

    await poll(repeats_seen)
    record = await record_when(client, dispatch.id)
    assert record["status"] == "succeeded" and record["log_lines"] == 2
    assert record["steps"][0]["status"] == "succeeded"
    logs = await (await client.get(f"/jobs/{dispatch.id}/logs")).json()
    assert [line["message"] for line in logs["logs"][0]["logs"]] == ["one", "two"]


async def test_lines_published_out_of_order_come_back_in_order(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    first = dispatch.batch(1, ["1", "2"])
    second = dispatch.batch(1, ["3", "4"])
    third = dispatch.batch(2, ["5"])
    for batch in (third, second, first, second):
        await dispatch.publish_batch(batch, msg_id=f"{events.logs_msg_id(batch)}-{id(batch)}-{batch is first}")
    await dispatch.finish()
    await record_when(client, dispatch.id, status="succeeded", log_lines=5)
    text = await (await client.get(f"/jobs/{dispatch.id}/logs?format=text")).text()
    assert text == "1\n2\n3\n4\n5\n"


async def test_a_restarted_logs_app_loses_no_record(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging
) -> None:
    first = await aiohttp_client(create_app(settings))
    done = await submitted(conn)
    await done.run({1: ["x"]})
    await record_when(first, done.id, status="succeeded")
    await first.close()
    while_down = await submitted(conn)
    await while_down.running()
    await while_down.lines(1, ["during the restart"])
    second = await aiohttp_client(create_app(settings))
    assert (await record_when(second, done.id))["status"] == "succeeded"
    await record_when(second, while_down.id, status="running", log_lines=1)


# --- listing -------------------------------------------------------------------------------------------------


async def test_list_is_newest_first_filtered_and_paged(client: TestClient, conn: messaging.Messaging) -> None:
    async def listed(job_id: str, status: str) -> bool:
        body = await (await client.get("/jobs")).json()
        return any(j["id"] == job_id and j["status"] == status for j in body["jobs"])

    made: list[FakeDispatch] = []
    for _ in range(5):  # one at a time, so the records are written in submission order
        made.append(await submitted(conn))
        await poll(lambda: listed(made[-1].id, "queued"))
    await made[1].running()
    await poll(lambda: listed(made[1].id, "running"))
    await made[3].running()
    await made[3].finish(JobStatus.CANCELLED)
    await poll(lambda: listed(made[3].id, "cancelled"))
    # newest written first: a status change moves a job to the front
    newest_written = [made[3], made[1], made[4], made[2], made[0]]

    body = await (await client.get("/jobs")).json()
    assert [j["id"] for j in body["jobs"]] == [j.id for j in newest_written] and body["next"] is None

    seen: list[str] = []
    url = "/jobs?limit=2"
    while True:
        page = await (await client.get(url)).json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        url = f"/jobs?limit=2&cursor={page['next']}"
    assert seen == [j.id for j in newest_written]

    running = await (await client.get("/jobs?status=running")).json()
    assert [j["id"] for j in running["jobs"]] == [made[1].id]
    stopped = await (await client.get("/jobs?status=Stopped")).json()
    assert [j["id"] for j in stopped["jobs"]] == [made[3].id]
    queued = await (await client.get("/jobs?status=Queued,cancelled")).json()
    assert {j["id"] for j in queued["jobs"]} == {made[0].id, made[2].id, made[3].id, made[4].id}


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=Exploded", "status"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90IGpzb24", "cursor"),
    ],
)
async def test_a_bad_list_query_is_a_400(client: TestClient, query: str, detail: str) -> None:
    await assert_problem(await client.get(f"/jobs?{query}"), 400, detail_has=detail)


# --- logs ----------------------------------------------------------------------------------------------------


async def test_logs_come_per_step_in_step_order(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn, steps=3)
    await dispatch.run({1: ["compiling", "done"], 2: ["testing"]})
    await record_when(client, dispatch.id, status="succeeded")
    ran = await (await client.get(f"/jobs/{dispatch.id}/logs")).json()  # the original's: containers that ran
    assert [e["step"] for e in ran["logs"]] == [1, 2]
    body = await (await client.get(f"/jobs/{dispatch.id}/logs?notices=true")).json()  # every step
    assert [(e["step"], e["step_name"], e["container_id"], e["job_id"]) for e in body["logs"]] == [
        (1, "step 1", f"{dispatch.id}-1", dispatch.id),
        (2, "step 2", f"{dispatch.id}-2", dispatch.id),
        (3, "step 3", f"{dispatch.id}-3", dispatch.id),
    ]
    first = body["logs"][0]["logs"]
    assert [(line["message"], line["seq"], line["output_stream"]) for line in first] == [
        ("compiling", 1, "stdout"),
        ("done", 2, "stdout"),
    ]
    assert first[0]["timestamp"].endswith("Z")
    assert body["logs"][2]["logs"] == []

    only = await (await client.get(f"/jobs/{dispatch.id}/logs?step=2")).json()
    assert [(e["step"], [line["message"] for line in e["logs"]]) for e in only["logs"]] == [(2, ["testing"])]
    text = await client.get(f"/jobs/{dispatch.id}/logs?format=text&step=1")
    assert text.content_type == "text/plain" and await text.text() == "compiling\ndone\n"
    await assert_problem(await client.get(f"/jobs/{dispatch.id}/logs?step=x"), 400, detail_has="step")
    await assert_problem(await client.get(f"/jobs/{dispatch.id}/logs?format=xml"), 400, detail_has="format")


async def test_a_running_job_shows_its_lines_so_far_of_its_current_attempt(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running(attempt=1)
    await dispatch.lines(1, ["first try"], attempt=1)
    await dispatch.job_status(JobStatus.RUNNING, attempt=1, reason="retrying: engine down")
    await dispatch.running(attempt=2)
    await dispatch.lines(1, ["second try"], attempt=2)
    await record_when(client, dispatch.id, attempt=2, log_lines=1)
    body = await (await client.get(f"/jobs/{dispatch.id}/logs")).json()
    assert [line["message"] for line in body["logs"][0]["logs"]] == ["second try"]


async def test_a_200000_line_job_comes_back_whole_as_text(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn, steps=1)
    await dispatch.running()
    total, per_batch = 200_000, 1000
    pending: list[Any] = []
    for first in range(0, total, per_batch):
        batch = dispatch.batch(1, [f"line {n}" for n in range(first, first + per_batch)])
        pending.append(dispatch.publish_batch(batch))
        if len(pending) == 32:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await dispatch.finish()
    await record_when(client, dispatch.id, status="succeeded")
    response = await client.get(f"/jobs/{dispatch.id}/logs?format=text")
    assert response.status == 200
    expected = 0
    async for raw in response.content:
        assert raw == f"line {expected}\n".encode()
        expected += 1
    assert expected == total
    await record_when(client, dispatch.id, log_lines=total)


# --- live logs -----------------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None


async def next_event(response: ClientResponse, *, timeout_s: float = 5.0) -> SseEvent:
    """The next event of a text/event-stream (pings and blank keep-alives skipped)."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await response.content.readline()
            if not raw:
                raise AssertionError("the stream ended")
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    return SseEvent(fields.get("event", "message"), fields["data"], fields.get("id"))
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def events_until(response: ClientResponse, end: str = "end") -> list[SseEvent]:
    found = []
    while True:
        event = await next_event(response)
        found.append(event)
        if event.event == end:
            return found


def messages(found: list[SseEvent]) -> list[str]:
    return [json.loads(e.data)["message"] for e in found if e.event == "message"]


async def test_a_live_stream_shows_lines_as_they_come_then_ends(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.step(1, StepStatus.RUNNING)
    await dispatch.lines(1, ["line 1"])
    response = await client.get(f"/jobs/{dispatch.id}/logs/stream")
    assert response.status == 200 and response.content_type == "text/event-stream"

    seen = []
    while not messages(seen):
        seen.append(await next_event(response))
    assert [e.event for e in seen] == ["status", "status", "status", "message"]  # queued, running, step 1
    [line] = [e for e in seen if e.event == "message"]
    assert line.id == "1.1" and json.loads(line.data)["step"] == 1

    await dispatch.lines(1, ["line 2", "line 3"])  # the job still runs: these come live
    live = [await next_event(response), await next_event(response)]
    assert [e.id for e in live] == ["1.2", "1.3"] and messages(live) == ["line 2", "line 3"]

    await dispatch.step(1, StepStatus.SUCCEEDED, exit_code=0)
    await dispatch.lines(2, ["line 4"])
    await dispatch.finish(JobStatus.FAILED, reason="step 2 failed")
    rest = await events_until(response)
    assert messages(rest) == ["line 4"]
    assert [json.loads(e.data)["status"] for e in rest if e.event == "status"] == ["succeeded", "failed"]
    end = json.loads(rest[-1].data)
    assert end == {"status": "failed", "legacy_status": "Failed", "reason": "step 2 failed"}
    assert await response.content.read() == b""  # the server closed the stream


async def test_reconnecting_with_last_event_id_has_no_gap_and_no_repeat(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.lines(1, [f"a{i}" for i in range(5)])
    response = await client.get(f"/jobs/{dispatch.id}/logs/stream")
    got: list[SseEvent] = []
    while len(messages(got)) < 3:
        got.append(await next_event(response))
    last_id = [e for e in got if e.event == "message"][-1].id
    assert last_id == "1.3"
    response.close()  # the client drops the connection

    await dispatch.lines(1, [f"b{i}" for i in range(3)])
    await dispatch.finish()
    resumed = await client.get(f"/jobs/{dispatch.id}/logs/stream", headers={"Last-Event-ID": last_id})
    rest = await events_until(resumed)
    assert messages(got) + messages(rest) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    assert [e.id for e in rest if e.event == "message"] == [f"1.{n}" for n in range(4, 9)]
    assert [json.loads(e.data)["status"] for e in rest if e.event == "status"] == ["succeeded"]

    bad = await client.get(f"/jobs/{dispatch.id}/logs/stream", headers={"Last-Event-ID": "garbage"})
    await assert_problem(bad, 400, detail_has="Last-Event-ID")


async def test_a_gap_does_not_hold_back_a_job_that_keeps_printing(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.lines(1, ["1", "2"])
    dispatch.batch(1, ["3"])  # numbered but never published: a lost batch
    response = await client.get(f"/jobs/{dispatch.id}/logs/stream")

    async def keep_printing() -> None:
        # A line every 0.2 s: each wakes the reader sooner than GAP_WAIT_S.
        for n in itertools.count(4):
            await dispatch.lines(1, [str(n)])
            await asyncio.sleep(0.2)

    printer = asyncio.create_task(keep_printing())
    seen: list[SseEvent] = []
    deadline = time.monotonic() + 5.0
    try:
        while "5" not in messages(seen):
            left = deadline - time.monotonic()
            try:
                seen.append(await next_event(response, timeout_s=max(left, 0.01)))
            except TimeoutError:
                raise AssertionError(f"lines after the gap held back; got {messages(seen)}") from None
    finally:
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
    assert messages(seen)[:4] == ["1", "2", "4", "5"]
    assert [e.id for e in seen if e.event == "message"][:4] == ["1.1", "1.2", "1.4", "1.5"]


async def test_a_stream_of_a_finished_job_replays_it_and_ends(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.run({1: ["x", "y"]})
    extra = dispatch.batch(1, ["x", "y"])
    extra["lines"] = [{**line, "seq": line["seq"] - 2} for line in extra["lines"]]  # the same lines again
    await dispatch.publish_batch(extra, msg_id="repeat")
    await record_when(client, dispatch.id, status="succeeded")
    found = await events_until(await client.get(f"/jobs/{dispatch.id}/logs/stream"))
    assert messages(found) == ["x", "y"]
    assert found[-1].event == "end" and json.loads(found[-1].data)["legacy_status"] == "Succeeded"


async def test_open_streams_end_cleanly_on_shutdown(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    async with aiohttp.ClientSession() as session:
        response = await session.get(client.make_url(f"/jobs/{dispatch.id}/logs/stream"))
        assert (await next_event(response)).event == "status"
        # Without the close-on-shutdown hook the server would wait its 60 s shutdown timeout for the stream.
        await asyncio.wait_for(client.server.close(), timeout=10)
        assert await response.content.read() == b""  # ended by the server, not cut off


# --- the rest ------------------------------------------------------------------------------------------------


async def test_health_readiness_metrics_and_openapi(client: TestClient) -> None:
    assert (await client.get("/health")).status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert "hades_events_applied_total" in await (await client.get("/metrics")).text()
    document = await (await client.get("/openapi.json")).json()
    validate(document)
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/status", "/jobs/{job_id}/logs"} <= set(document["paths"])


async def test_settings_for_other_tests_are_independent(clean_nats: str) -> None:
    assert make_settings(clean_nats).http.logs_port == 8081


@pytest.mark.slow
async def test_collecting_and_answering_survive_a_nats_outage(aiohttp_client: Any, tmp_path: Any) -> None:
    server = NatsServer(tmp_path / "store")
    server.start()
    try:
        client = await aiohttp_client(create_app(make_settings(server.url, HADES_NATS_PUBLISH_TIMEOUT_SECONDS="1")))
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        conn = messaging.Messaging(nc, publish_timeout_s=2.0)
        before = await submitted(conn)
        await record_when(client, before.id, status="queued")

        server.stop()
        response = await asyncio.wait_for(client.get(f"/jobs/{before.id}"), timeout=10)
        await assert_problem(response, 503)
        assert (await client.get("/readyz")).status == 503

        server.start()  # same port, same store
        await poll(lambda: _ready(client), timeout_s=15, interval_s=0.2)
        await poll(lambda: _published(before), timeout_s=15, interval_s=0.2)
        await record_when(client, before.id, status="running")
        await nc.close()
        await client.close()  # while NATS is still up, so the app drains cleanly
    finally:
        server.stop()


async def _ready(client: TestClient) -> bool:
    return (await client.get("/readyz")).status == 200


async def _published(dispatch: FakeDispatch) -> bool:
    try:
        await dispatch.running()
    except HadesError:
        return False
    return True
