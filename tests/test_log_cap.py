"""The per-job log cap as readers see it (issue 13, finding 12): the cap notice reaches JSON, text and SSE readers,
and a later step whose output was dropped says so instead of looking silent."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from functions.dispatch.logsink import LogSink
from functions.logs.handlers import create_app
from runtime import messaging
from runtime.jobs import JobStatus, StepStatus, utc_now
from tests.fakes import record_when, submitted
from tests.helpers import make_settings

CAP = {"HADES_JOB_LOG_MAX_BYTES": "2048", "HADES_LOGS_JOB_LOG_MAX_BYTES": "2048"}
CAP_NOTICE = "[hades] the job's log limit of 0.00195312 MiB was reached: further output is dropped"
STEP_2_NOTICE = "[hades] output of step 2 dropped: the job's log limit of 0.00195312 MiB was reached"


async def capped_job(conn: messaging.Messaging, nats_url: str) -> str:
    """A job whose step 1 prints past the cap and whose step 2 prints after it."""
    dispatch = await submitted(conn)
    sink = LogSink(conn, job_id=dispatch.id, attempt=1, settings=make_settings(nats_url, **CAP).dispatch)
    await dispatch.running()
    await dispatch.step(1, StepStatus.RUNNING, started_at=utc_now())
    for i in range(40):
        sink.add(1, "stdout", f"{i:02d} " + "x" * 97, at=utc_now())
    await sink.flush()
    await dispatch.step(1, StepStatus.SUCCEEDED, exit_code=0, finished_at=utc_now())
    await dispatch.step(2, StepStatus.RUNNING, started_at=utc_now())
    for i in range(5):
        sink.add(2, "stdout", f"step two {i}", at=utc_now())
    await sink.close()
    await dispatch.step(2, StepStatus.SUCCEEDED, exit_code=0, finished_at=utc_now())
    await dispatch.finish(JobStatus.SUCCEEDED)
    return dispatch.id


async def sse_lines(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    text = await (await client.get(f"/jobs/{job_id}/logs/stream")).text()
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith('data: {"timestamp"')]


async def test_the_cap_notice_and_the_dropped_steps_reach_every_reader(
    aiohttp_client: Any, conn: messaging.Messaging, clean_nats: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats, **CAP)))
    job_id = await capped_job(conn, clean_nats)
    record = await record_when(client, job_id, status="succeeded")
    assert record["log_truncated"] is True

    text = (await (await client.get(f"/jobs/{job_id}/logs?format=text")).text()).splitlines()
    assert text[-2:] == [CAP_NOTICE, STEP_2_NOTICE]
    assert text[0].startswith("00 ") and len(text) == 2 + 2048 // 101

    entries = (await (await client.get(f"/jobs/{job_id}/logs?notices=true")).json())["logs"]
    by_step = {entry["step"]: entry["logs"] for entry in entries}
    assert by_step[1][-1]["message"] == CAP_NOTICE and by_step[1][-1]["output_stream"] == "system"
    assert [line["message"] for line in by_step[2]] == [STEP_2_NOTICE]

    live = await sse_lines(client, job_id)
    assert [line["message"] for line in live[-2:]] == [CAP_NOTICE, STEP_2_NOTICE]
    assert live[-1]["step"] == 2


async def test_a_reader_limit_below_the_writers_says_the_rest_is_not_shown(
    aiohttp_client: Any, conn: messaging.Messaging, clean_nats: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats, HADES_LOGS_JOB_LOG_MAX_BYTES="1024")))
    job_id = await capped_job(conn, clean_nats)
    await record_when(client, job_id, status="succeeded")
    text = (await (await client.get(f"/jobs/{job_id}/logs?format=text")).text()).splitlines()
    assert len(text) == 1 + 1024 // 101
    assert text[-1] == "[hades] the log limit of 0.000976562 MiB was reached: the rest is not shown"
