"""The ``hades`` commands at their HTTP boundary (respx, click's runner): what ``list`` asks the server, what
``status`` warns about, and what a job's output may do to the user's terminal (colour, nothing else) or to a
pipe (arrive byte for byte). A terminal is simulated with ``FORCE_COLOR``, which rich treats as one."""

from __future__ import annotations

import json
import os
import pty
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner, Result
from rich.console import Console

from hades_client import terminal
from hades_client.cli import main

SUBMIT = "http://submit.test"
LOGS = "http://logs.test"
JOB_ID = "6c0c1f9e-8a55-4d8e-9b49-4f3f2f0d9c11"
RECORD: dict[str, Any] = {
    "id": JOB_ID,
    "name": "grade-42",
    "status": "succeeded",
    "priority": 3,
    "lane": "high",
    "submitted_at": "2026-12-01T10:00:00+00:00",
    "started_at": "2026-12-01T10:00:01+00:00",
    "attempt": 1,
    "steps": [{"id": 1, "name": "Build", "image": "alpine", "status": "succeeded", "exit_code": 0}],
    "log_lines": 3,
}

HOSTILE = (
    "\x1b]0;pwned\x07title "  # OSC: retitles the terminal
    "\x1b]8;;http://evil.test\x1b\\link\x1b]8;;\x1b\\ "  # OSC 8: a hyperlink
    "\x1b[2J\x1b[1;1Hcleared "  # CSI: clears the screen, moves the cursor
    "\x9b2J\x9b5Ac1 "  # the same as C1 controls (CSI = U+009B)
    "secret\rover "  # CR: would overwrite the line so far (shown as a new line)
    "\x1b[31mred\x1b[0m\tdone"  # colour (kept on a terminal) and a tab
)
SHOWN = "^[]0;pwned^Gtitle ^[]8;;http://evil.test^[\\link^[]8;;^[\\ ^[[2J^[[1;1Hcleared M-^[2JM-^[5Ac1 secret\nover "
JOBS_OWN = ("\x1b]", "\x1b[2J", "\x1b[1;1H", "\x9b", "\x07", "secret\r")
"""The job's sequences: none may reach a terminal as it wrote them (the progress line's own are other ones)."""


def hades(*args: str, tty: bool = False) -> Result:
    env = {"NO_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "200", "TERM": "xterm-256color"}
    env["FORCE_COLOR"] = "1" if tty else None
    return CliRunner().invoke(main, ["--url", SUBMIT, "--logs-url", LOGS, *args], env=env)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def harmless(screen: str) -> None:
    for sequence in JOBS_OWN:
        assert sequence not in screen
    assert SHOWN in screen
    assert "\x1b[31mred\x1b[0m" in screen  # the job's colour, rendered by rich


# list: the server filters by name.


def test_list_sends_the_name_and_pages_on_until_it_has_enough(api: respx.MockRouter) -> None:
    jobs = [{**RECORD, "id": f"{n}" * 8, "name": f"Grade-{n}"} for n in range(1, 4)]
    pages = [
        {"jobs": [], "next": "c1"},  # a short page: the server's scan budget ran out
        {"jobs": jobs[:1], "next": "c2"},
        {"jobs": jobs[1:], "next": "c3"},
    ]
    route = api.get(f"{LOGS}/jobs").mock(side_effect=[httpx.Response(200, json=page) for page in pages])
    result = hades("list", "--name", "grade", "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    assert [job["id"] for job in json.loads(result.stdout)] == ["1" * 8, "2" * 8]
    params = [dict(call.request.url.params) for call in route.calls]
    assert params == [
        {"name": "grade", "limit": "2"},
        {"name": "grade", "limit": "2", "cursor": "c1"},
        {"name": "grade", "limit": "2", "cursor": "c2"},
    ]


def test_list_without_a_name_sends_none_and_asks_at_most_a_full_page(api: respx.MockRouter) -> None:
    route = api.get(f"{LOGS}/jobs").respond(200, json={"jobs": [RECORD], "next": None})
    result = hades("list", "--status", "failed", "--limit", "5000")
    assert result.exit_code == 0, result.output
    assert dict(route.calls.last.request.url.params) == {"status": "failed", "limit": "500"}
    assert JOB_ID in result.stdout and "grade-42" in result.stdout


# status: lost log lines are a warning.


def test_status_warns_when_the_log_lost_lines(api: respx.MockRouter) -> None:
    lossy = {**RECORD, "log_lost_lines": 12, "log_incomplete": True}
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=lossy)
    result = hades("status", JOB_ID)
    assert result.exit_code == 0, result.output
    assert "warning: the log is incomplete: 12 lines could not be stored" in result.stdout
    assert json.loads(hades("status", JOB_ID, "--json").stdout) == lossy  # the record as served


def test_status_warns_of_a_truncated_log_and_is_quiet_about_a_whole_one(api: respx.MockRouter) -> None:
    route = api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "log_truncated": True})
    assert "warning: the log is truncated" in hades("status", JOB_ID).stdout
    route.return_value = httpx.Response(200, json={**RECORD, "log_lost_lines": 0, "log_incomplete": False})
    assert "warning" not in hades("status", JOB_ID).stdout


def test_status_shows_names_with_escapes_as_text(api: respx.MockRouter) -> None:
    steps = [{**RECORD["steps"][0], "name": "Bu\x1b]0;x\x07ild"}]
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "name": "n\x1b[2Jame", "steps": steps})
    screen = hades("status", JOB_ID, tty=True).stdout
    assert "n^[[2Jame" in screen and "Bu^[]0;x^Gild" in screen
    assert "\x1b[2J" not in screen and "\x1b]" not in screen


def test_status_of_a_queued_job_says_how_many_ahead_are_its_own_tenants(api: respx.MockRouter) -> None:
    queue = {"lane": "high", "lane_position": 5, "tenant_position": 2, "position": 5, "ahead": {"high": 5}}
    queued = {**RECORD, "status": "queued", "tenant": "cs101", "queue_position": 5, "queue": queue}
    route = api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=queued)
    assert "position 5 in the queue (2 of them cs101's)" in hades("status", JOB_ID).stdout
    alone = {**queued, "queue": {**queue, "tenant_position": 5}}  # only its own tenant's jobs ahead
    route.return_value = httpx.Response(200, json=alone)
    assert "position 5 in the queue\n" in hades("status", JOB_ID).stdout


# logs: colour on a terminal, nothing else; the bytes as served in a pipe.


def test_logs_on_a_terminal_keep_colours_and_show_other_escapes_as_text(api: respx.MockRouter) -> None:
    api.get(f"{LOGS}/jobs/{JOB_ID}/logs", params={"format": "text"}).respond(200, text=f"{HOSTILE}\nnext\n")
    result = hades("logs", JOB_ID, tty=True)
    assert result.exit_code == 0, result.output
    harmless(result.stdout)
    # Every escape left is a colour (SGR); the tab is laid out as the terminal would, the lines stay lines.
    assert re.findall(r"\x1b(?!\[[0-9;]*m)", result.stdout) == []
    assert result.stdout.endswith("done\nnext\n") and re.search(r"\x1b\[0m +done", result.stdout)


def test_logs_in_a_pipe_are_the_bytes_as_served(api: respx.MockRouter) -> None:
    served = f"{HOSTILE}\n\x00nul é\n".encode()
    api.get(f"{LOGS}/jobs/{JOB_ID}/logs", params={"format": "text"}).respond(
        200, content=served, headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    result = hades("logs", JOB_ID)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == served


# logs --follow: the same for live lines.


def sse(*events: tuple[str | None, str | None, dict[str, Any]]) -> bytes:
    blocks = []
    for event, event_id, data in events:
        head = (f"event: {event}\n" if event else "") + (f"id: {event_id}\n" if event_id else "")
        blocks.append(f"{head}data: {json.dumps(data)}\n\n")
    return "".join(blocks).encode()


def followed_job(api: respx.MockRouter) -> None:
    name = "Bu\x1b]0;x\x07ild"
    steps = [{**RECORD["steps"][0], "name": name, "status": "running", "exit_code": None}]
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "status": "running", "steps": steps})

    def line(seq: int, message: str, *, step: int = 1, stream: str = "stdout") -> tuple[None, str, dict[str, Any]]:
        data = {"message": message, "output_stream": stream, "seq": seq, "step": step, "attempt": 1}
        return (None, f"1.{seq}", data)

    def status(seq: int, state: str, **extra: Any) -> tuple[str, None, dict[str, Any]]:
        data = {"kind": "step", "attempt": 1, "seq": seq, "step_id": 1, "step_name": name, "status": state}
        return ("status", None, {**data, **extra})

    body = sse(
        status(1, "running"),
        line(1, "pulling \x1b]0;image\x07", step=0),
        line(2, HOSTILE),
        line(3, "oops \x1b[2J", stream="stderr"),
        status(2, "succeeded", exit_code=0),
        ("end", None, {"status": "succeeded", "reason": None}),
    )
    api.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").respond(
        200, content=body, headers={"Content-Type": "text/event-stream"}
    )


def test_follow_on_a_terminal_keeps_colours_and_shows_other_escapes_as_text(api: respx.MockRouter) -> None:
    followed_job(api)
    result = hades("logs", JOB_ID, "--follow", tty=True)
    assert result.exit_code == 0, result.output
    harmless(result.stdout)
    for shown in ("==> step 1 of 1: Bu^[]0;x^Gild", "hades: pulling ^[]0;image^G", "oops ^[[2J", "succeeded"):
        assert shown in result.stdout


def test_follow_in_a_pipe_writes_the_lines_as_served(api: respx.MockRouter) -> None:
    followed_job(api)
    result = hades("logs", JOB_ID, "--follow")
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.split(b"\n")
    assert lines[:4] == [
        b"==> step 1 of 1: Bu^[]0;x^Gild",  # ours: a name is shown as text everywhere
        b"hades: pulling \x1b]0;image\x07",
        HOSTILE.encode(),
        b"oops \x1b[2J",
    ]
    assert b"\x1b[31m" not in result.stdout_bytes.replace(HOSTILE.encode(), b"")  # no colour of ours in a pipe


# The rendering itself.


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b", "^["),
        ("\x07\x08\x0b\x0c\r\x00", "^G^H^K^L^M^@"),
        ("\x7f", "^?"),
        ("\x9b\x9d\x80\x9f", "M-^[M-^]M-^@M-^_"),
        ("tab\tnew\nline é ✓", "tab\tnew\nline é ✓"),
        ("\x1b[1;38;5;196mbold\x1b[m", "\x1b[1;38;5;196mbold\x1b[m"),
        ("\x1b[?25l\x1b[>4m\x1b[31", "^[[?25l^[[>4m^[[31"),
    ],
)
def test_control_characters_are_shown_in_caret_notation(text: str, shown: str) -> None:
    assert terminal.visible_controls(text) == shown


def test_a_label_shows_colours_as_text_too() -> None:
    assert terminal.label("a\x1b[31mb") == "a^[[31mb"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("windows line\r\nnext\r\n", "windows line\nnext\n"),  # CRLF output reads as lines
        ("10%\r50%\r\r100%\n", "10%\n50%\n100%\n"),  # a progress bar: every state stays visible
        ("end\r", "end"),
        ("a\ud800b", "a?b"),  # a lone surrogate no terminal encoding can write
    ],
)
def test_carriage_returns_and_surrogates_on_a_terminal(text: str, shown: str) -> None:
    assert terminal.for_terminal(text) == shown


def test_a_colour_lasts_into_the_next_followed_line_as_in_the_whole_log(api: respx.MockRouter) -> None:
    def line(seq: int, message: str) -> tuple[None, str, dict[str, Any]]:
        return (None, f"1.{seq}", {"message": message, "output_stream": "stdout", "seq": seq, "step": 1, "attempt": 1})

    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "status": "running"})
    body = sse(line(1, "\x1b[31mred from here"), line(2, "still red"), ("end", None, {"status": "succeeded"}))
    api.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").respond(
        200, content=body, headers={"Content-Type": "text/event-stream"}
    )
    api.get(f"{LOGS}/jobs/{JOB_ID}/logs", params={"format": "text"}).respond(
        200, text="\x1b[31mred from here\nstill red\n"
    )
    followed = hades("logs", JOB_ID, "--follow", tty=True).stdout
    whole = hades("logs", JOB_ID, tty=True).stdout
    for screen in (followed, whole):
        assert "\x1b[31mstill red" in screen


@pytest.mark.parametrize("env", [{"TTY_COMPATIBLE": "0"}, {"FORCE_COLOR": ""}, {"NO_COLOR": "1"}])
def test_a_tty_with_colours_off_still_never_gets_the_jobs_escapes(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", encoding="utf-8", closefd=False) as file:
            terminal.write_job_output(Console(file=file), f"{HOSTILE}\n")
        screen = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "\x1b" not in screen and "\x9b" not in screen and "\x07" not in screen
    assert "^[]0;pwned^Gtitle" in screen and "red" in screen and "^[[31m" not in screen
