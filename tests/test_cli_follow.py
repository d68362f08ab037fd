"""Following a job with the ``hades`` command (issue 20, findings 4, 7 and 8): in process, no Docker needed."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from rich.console import Console

from functions.logs.handlers import create_app
from hades_client import sse, terminal
from hades_client.asyncclient import AsyncHadesClient
from hades_client.follow import Follower
from hades_client.models import EndEvent, Job, JobStatus, LineEvent, StatusEvent, StreamEvent
from runtime import messaging
from runtime.jobs import StepStatus
from runtime.settings import Settings
from tests.fakes import submitted

JOB_ID = "0b9d7c55-1d34-4a55-8d2f-5e8f7f8e7a10"


class Recording(Follower):
    """A follower that notes the progress line as each job line is printed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown: list[tuple[str, str]] = []

    def _line(self, event: LineEvent) -> None:
        super()._line(event)
        self.shown.append((event.message, self.progress.line()))


def _record(status: str) -> Job:
    steps = [{"id": i, "name": f"Step {i}", "status": "pending"} for i in (1, 2, 3)]
    return Job.from_json({"id": JOB_ID, "status": status, "steps": steps})


def _job(status: str, attempt: int, seq: int) -> StatusEvent:
    data = {"kind": "job", "status": status, "attempt": attempt, "seq": seq}
    return StatusEvent("job", status, attempt, seq, None, None, None, None, data)


def _step(step_id: int, status: str, attempt: int, seq: int) -> StatusEvent:
    data = {"kind": "step", "status": status, "step_id": step_id, "attempt": attempt, "seq": seq}
    return StatusEvent("step", status, attempt, seq, step_id, f"Step {step_id}", None, None, data)


def _line(step_id: int, attempt: int, seq: int, message: str) -> LineEvent:
    return LineEvent(f"{attempt}.{seq}", attempt, seq, step_id, message, "stdout", None)


class Scripted:
    """A client whose stream is given: a job that ran step 1 and 2, hit trouble, and ran again from step 1."""

    async def get(self, job_id: str) -> Job:
        return _record("queued")

    async def stream(self, job_id: str) -> AsyncIterator[StreamEvent]:
        yield _job("running", 1, 1)
        yield _step(1, "running", 1, 2)
        yield _line(1, 1, 1, "one")
        yield _step(1, "succeeded", 1, 3)
        yield _step(2, "running", 1, 4)
        yield _line(2, 1, 2, "two")
        yield _job("running", 2, 1)  # attempt 2: from step 1 again
        yield _step(1, "running", 2, 2)
        yield _line(1, 2, 1, "one again")
        yield _step(1, "succeeded", 2, 3)
        yield _step(2, "running", 2, 4)
        yield _line(2, 2, 2, "two again")
        yield EndEvent(JobStatus.SUCCEEDED, None)


async def test_the_progress_line_names_the_step_that_runs_now() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    follower = Recording(Scripted(), JOB_ID, console=console)  # type: ignore[arg-type]
    await follower.run()
    steps = [progress.split(" · ")[1] for _, progress in follower.shown]
    assert steps == [f"step {n} of 3: Step {n}" for n in (1, 2, 1, 2)], follower.shown


@pytest.fixture
async def logs(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def test_follow_prints_an_adopted_steps_lines_once(logs: TestClient, conn: messaging.Messaging) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.step(1, StepStatus.RUNNING)
    await dispatch.lines(1, ["a", "b"])
    await dispatch.running(attempt=2)
    await dispatch.step(1, StepStatus.RUNNING, attempt=2)
    await dispatch.lines(1, ["a", "b", "c"], attempt=2)
    await dispatch.step(1, StepStatus.SUCCEEDED, attempt=2, exit_code=0)
    await dispatch.finish(attempt=2)
    out = io.StringIO()
    async with AsyncHadesClient(str(logs.make_url("")), str(logs.make_url(""))) as client:
        end = await Follower(client, dispatch.id, console=Console(file=out, width=200)).run()
    assert end.status is JobStatus.SUCCEEDED
    assert [line for line in out.getvalue().splitlines() if len(line) == 1] == ["a", "b", "c"]


def _on_terminal(text: str) -> str:
    out = io.StringIO()
    terminal.write_job_output(Console(file=out, force_terminal=True, color_system="truecolor"), text)
    return out.getvalue()


@pytest.mark.parametrize("sgr", ["5", "6", "8", "1;5", "05;31", "8;32"])
def test_job_output_cannot_blink_or_hide_text(sgr: str) -> None:
    shown = _on_terminal(f"\x1b[{sgr}msecret\x1b[0m\n")
    assert "secret" in shown
    assert not re.search(r"\x1b\[[0-9;]*\b(5|6|8)\b[0-9;]*m", shown.replace("38;", "").replace("48;", "")), shown
    assert "\x1b[31m" in _on_terminal("\x1b[31mred\x1b[0m\n")  # colours stay


def test_an_extended_colour_keeps_its_numbers() -> None:
    assert terminal.visible_controls("\x1b[38;5;8mgrey") == "\x1b[38;5;8mgrey"
    assert terminal.visible_controls("\x1b[38;2;5;6;8;5mx") == "\x1b[38;2;5;6;8mx"


@pytest.mark.parametrize(
    "char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
)
def test_bidi_overrides_are_shown_not_applied(char: str) -> None:
    text = f"if access {char}admin\n"
    shown = _on_terminal(text)
    assert char not in shown and f"<U+{ord(char):04X}>" in shown
    assert char not in terminal.label(f"step {char}name")


def test_a_notice_without_an_id_is_shown_and_does_not_move_the_resume_point() -> None:
    resume = sse.Resume()
    assert resume.admit(_line(1, 2, 4, "new"))
    notice = sse.parse_event(sse.RawEvent("message", json.dumps({"message": "[hades] attempt 2 ran step 1 again",
                                                                  "output_stream": "system", "seq": 4, "step": 1,
                                                                  "attempt": 2}), None))  # fmt: skip
    assert isinstance(notice, LineEvent) and notice.notice
    assert resume.admit(notice) and resume.last_event_id == "2.4"
    assert resume.admit(_line(1, 2, 5, "replaces"))
