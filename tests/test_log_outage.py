"""Log lines through a NATS outage (issue 13, finding 4): kept and stored in order once NATS is back, and when
lines are really lost, counted, flagged in the record and marked in the log.

Each test has a nats-server of its own (``own_nats``), stopped and started again with its store mid-job.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from functions.dispatch import logsink
from functions.dispatch.executors.docker import LABEL_JOB_ID
from functions.dispatch.handlers import create_app as create_dispatch
from functions.dispatch.logsink import LogSink
from functions.logs import records
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from runtime import events, messaging
from runtime.jobs import JobStatus
from tests.fakes import ended_record
from tests.helpers import make_settings, poll
from tests.natsserver import NatsServer
from tests.observe import stored_on

pytestmark = pytest.mark.slow

PRINT_EVERY_S = 0.05
"""How often the simulated job prints a line (its pace, not a wait for anything)."""


async def stored_lines(server: NatsServer, job_id: str) -> list[dict[str, Any]]:
    async with stored_on(server.url) as stored:
        return await stored.log_lines(job_id)


async def print_lines(sink: LogSink, numbers: range) -> None:
    for n in numbers:
        sink.add(1, "stdout", f"line {n}", at="2026-12-01T00:00:00Z")
        await asyncio.sleep(PRINT_EVERY_S)


async def wait_until_disconnected(conn: messaging.Messaging) -> None:
    async def down() -> bool:
        return not conn.connected

    await poll(down, timeout_s=10)


async def test_lines_printed_while_nats_is_down_are_stored_once_and_in_order(
    own_nats: NatsServer, own_conn: messaging.Messaging
) -> None:
    sink = LogSink(own_conn, job_id="job-outage", attempt=1, settings=make_settings(own_nats.url).dispatch)
    await print_lines(sink, range(1, 11))
    own_nats.stop()
    await wait_until_disconnected(own_conn)
    await print_lines(sink, range(11, 71))  # about 3 s of output with NATS away
    own_nats.start()
    await print_lines(sink, range(71, 81))
    await sink.flush()
    await sink.close()

    lines = await stored_lines(own_nats, "job-outage")
    assert [line["message"] for line in lines] == [f"line {n}" for n in range(1, 81)]
    assert [line["seq"] for line in lines] == list(range(1, 81))
    assert sink.lost_lines == 0


async def test_lines_past_the_outage_buffer_are_counted_and_marked_where_they_are_missing(
    own_nats: NatsServer, own_conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logsink, "MAX_BUFFERED_BYTES", 20 * logsink.line_cost("line 00"))  # room for 20 lines
    sink = LogSink(own_conn, job_id="job-full", attempt=1, settings=make_settings(own_nats.url).dispatch)
    await print_lines(sink, range(1, 6))
    await sink.flush()
    own_nats.stop()
    await wait_until_disconnected(own_conn)
    await print_lines(sink, range(6, 36))  # 30 lines, 20 fit
    own_nats.start()
    await sink.flush()
    await print_lines(sink, range(36, 41))
    await sink.close()

    messages = [line["message"] for line in await stored_lines(own_nats, "job-full")]
    assert sink.lost_lines == 10
    assert messages == [
        *(f"line {n}" for n in range(1, 26)),
        "[hades] 10 log lines lost here: NATS was unreachable",
        *(f"line {n}" for n in range(36, 41)),
    ]


async def test_lines_still_unstored_when_nats_stays_away_are_counted_as_lost(
    own_nats: NatsServer, own_conn: messaging.Messaging
) -> None:
    settings = make_settings(own_nats.url).dispatch
    sink = LogSink(own_conn, job_id="job-gone", attempt=1, settings=settings, give_up_after_s=1, flush_wait_s=0.5)
    await print_lines(sink, range(1, 4))
    await sink.flush()
    own_nats.stop()
    await wait_until_disconnected(own_conn)
    await print_lines(sink, range(4, 10))
    await sink.flush()  # gives up waiting; the lines stay buffered
    assert sink.lost_lines == 0
    await sink.close()
    assert sink.lost_lines == 6
    own_nats.start()
    assert [line["message"] for line in await stored_lines(own_nats, "job-gone")] == ["line 1", "line 2", "line 3"]


def test_the_record_counts_lost_lines_and_flags_the_log_incomplete() -> None:
    running = events.job_event("job-r", attempt=1, seq=1, status=JobStatus.RUNNING)
    record = records.apply_status(None, running, now="t")
    assert record is not None and record["log_lost_lines"] == 0 and record["log_incomplete"] is False
    ended = events.job_event("job-r", attempt=1, seq=5, status=JobStatus.SUCCEEDED, log_lost_lines=12)
    record = records.apply_status(record, ended, now="t")
    assert record is not None and record["log_lost_lines"] == 12 and record["log_incomplete"] is True
    assert records.apply_status(record, ended, now="t") is None  # a repeat changes nothing


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_job_printing_through_a_nats_outage_keeps_every_line(
    own_nats: NatsServer, aiohttp_client: Any, aiohttp_server: Any, busybox_image: str, docker_client: Any
) -> None:
    """The issue's case: NATS away for several seconds while a job prints lost 12 of 20 lines, unreported."""
    settings = make_settings(own_nats.url, HADES_PULL_TIMEOUT_SECONDS="0.5", HADES_NATS_PUBLISH_TIMEOUT_SECONDS="1")
    await aiohttp_server(create_dispatch(settings))
    submit = await aiohttp_client(create_submit(settings))
    script = "for i in $(seq 1 20); do echo line-$i; sleep 0.4; done"
    body = {"name": "outage", "steps": [{"id": 1, "image": busybox_image, "script": script}]}
    response = await submit.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]

    def engine_output() -> str:
        selector = {"label": f"{LABEL_JOB_ID}={job_id}"}
        return "".join(c.logs().decode() for c in docker_client.containers.list(all=True, filters=selector))

    async def printed(line: str) -> bool:
        return line in await asyncio.to_thread(engine_output)

    await poll(lambda: printed("line-3\n"), timeout_s=60, interval_s=0.1)
    own_nats.stop()
    await poll(lambda: printed("line-17\n"), timeout_s=30, interval_s=0.1)  # about 6 s of output with NATS away
    own_nats.start()

    logs = await aiohttp_client(create_logs(settings))

    record = await ended_record(logs, job_id)
    assert record["status"] == "succeeded", record
    assert (record["log_lost_lines"], record["log_incomplete"], record["log_truncated"]) == (0, False, False)
    text = await (await logs.get(f"/jobs/{job_id}/logs?format=text")).text()
    assert [line for line in text.splitlines() if line.startswith("line-")] == [f"line-{i}" for i in range(1, 21)]
