"""Issue 20, finding 4: after an adoption the live stream shows what the stored log shows, each line once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs.handlers import create_app
from functions.logs.replays import Replays
from runtime import messaging
from runtime.events import LogLine
from runtime.jobs import JobStatus, StepStatus
from runtime.settings import Settings
from tests.fakes import FakeDispatch, record_when, submitted
from tests.test_logs_api import SseEvent, events_until, messages, next_event


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def _stored_messages(client: TestClient, job_id: str) -> list[str]:
    response = await client.get(f"/jobs/{job_id}/logs")
    assert response.status == 200
    return [line["message"] for entry in (await response.json())["logs"] for line in entry["logs"]]


async def _adopted(dispatch: FakeDispatch, first: int, total: int) -> None:
    """Attempt 1 printed ``first`` lines and died; attempt 2 followed the step and read its output again."""
    await dispatch.running()
    await dispatch.step(1, StepStatus.RUNNING)
    await dispatch.lines(1, [f"line {n}" for n in range(1, first + 1)])
    await dispatch.running(attempt=2)
    await dispatch.step(1, StepStatus.RUNNING, attempt=2)
    await dispatch.lines(1, [f"line {n}" for n in range(1, total + 1)], attempt=2)


async def test_a_live_reader_sees_an_adopted_steps_lines_once(client: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.step(1, StepStatus.RUNNING)
    await dispatch.lines(1, [f"line {n}" for n in range(1, 5)])
    response = await client.get(f"/jobs/{dispatch.id}/logs/stream")
    seen: list[SseEvent] = []
    while len(messages(seen)) < 4:
        seen.append(await next_event(response))

    await dispatch.running(attempt=2)  # the restarted dispatcher adopted the step: its output, from the start
    await dispatch.step(1, StepStatus.RUNNING, attempt=2)
    await dispatch.lines(1, [f"line {n}" for n in range(1, 11)], attempt=2)
    await dispatch.step(1, StepStatus.SUCCEEDED, attempt=2, exit_code=0)
    await dispatch.finish(attempt=2)
    seen += await events_until(response)

    expected = [f"line {n}" for n in range(1, 11)]
    assert messages(seen) == expected
    assert [e.id for e in seen if e.event == "message"] == [
        *(f"1.{n}" for n in range(1, 5)),
        *(f"2.{n}" for n in range(5, 11)),
    ]
    await record_when(client, dispatch.id, status="succeeded")
    assert await _stored_messages(client, dispatch.id) == expected


async def test_a_reader_arriving_after_the_adoption_and_one_resuming_see_each_line_once(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await _adopted(dispatch, 4, 10)
    await dispatch.finish(attempt=2)
    found = await events_until(await client.get(f"/jobs/{dispatch.id}/logs/stream"))
    assert messages(found) == [f"line {n}" for n in range(1, 11)]

    resumed = await events_until(await client.get(f"/jobs/{dispatch.id}/logs/stream", headers={"Last-Event-ID": "2.6"}))
    assert messages(resumed) == [f"line {n}" for n in range(7, 11)]
    from_first = await events_until(
        await client.get(f"/jobs/{dispatch.id}/logs/stream", headers={"Last-Event-ID": "1.2"})
    )
    assert messages(from_first) == [f"line {n}" for n in range(3, 11)]


async def test_a_retry_with_other_output_is_marked_before_its_lines(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.lines(1, ["same", "old output"])
    await dispatch.running(attempt=2)
    await dispatch.lines(1, ["same", "new output", "more"], attempt=2)
    await dispatch.finish(JobStatus.SUCCEEDED, attempt=2)
    found = await events_until(await client.get(f"/jobs/{dispatch.id}/logs/stream"))
    shown = messages(found)
    assert shown[:2] == ["same", "old output"]
    assert shown[2].startswith("[hades] attempt 2 ran step 1 again") and shown[3:] == ["new output", "more"]
    notice = next(e for e in found if e.event == "message" and json.loads(e.data)["message"] == shown[2])
    assert notice.id is None and json.loads(notice.data)["output_stream"] == "system"  # no place to resume after


def _line(seq: int, message: str, *, step: int = 1, stream: str = "stdout") -> LogLine:
    return {"seq": seq, "step_id": step, "stream": stream, "at": "", "message": message}


def test_repeated_system_lines_are_dropped_and_other_steps_are_unaffected() -> None:
    replays = Replays()
    assert replays.admit(1, _line(1, "a")) == [_line(1, "a")]
    assert replays.admit(1, _line(2, "[hades] pulling", step=0, stream="system")) != []
    assert replays.admit(2, _line(1, "a")) == []
    assert replays.admit(2, _line(2, "[hades] pulling", step=0, stream="system")) == []
    assert replays.admit(2, _line(3, "b", step=2)) == [_line(3, "b", step=2)]


def test_stdout_and_stderr_are_compared_each_in_its_own_order() -> None:
    replays = Replays()
    for seq, (message, stream) in enumerate([("out 1", "stdout"), ("err 1", "stderr"), ("out 2", "stdout")], 1):
        replays.admit(1, _line(seq, message, stream=stream))
    # The engine's log gives each stream back in order, not their interleaving.
    again = [("out 1", "stdout"), ("out 2", "stdout"), ("err 1", "stderr"), ("out 3", "stdout")]
    sent = [out for seq, (m, st) in enumerate(again, 1) for out in replays.admit(2, _line(seq, m, stream=st))]
    assert sent == [_line(4, "out 3")]
