"""The ``hades`` command end to end: ``hades up`` runs the real functions (real NATS, real Docker), and the
installed command submits, follows, inspects and cancels jobs there, as a user or a CI script would."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hades_client.follow import Progress
from tests.helpers import EXAMPLES, SCOPE
from tests.natsserver import free_port

HADES = str(Path(sys.executable).parent / "hades")
BUSYBOX = "hades-test-busybox:1"
ESCAPE = "\x1b["


@dataclass(frozen=True)
class System:
    url: str
    logs_url: str
    env: dict[str, str]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADES_") and k not in ("FORCE_COLOR", "NO_COLOR")}
    return {**env, "TERM": "xterm-256color", **extra}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """``hades up`` (the same as ``make run``) on free ports, with a store of its own; Ctrl-C stops it."""
    state = tmp_path_factory.mktemp("hades-up")
    ports = {name: free_port() for name in ("submit", "logs", "dispatch", "nats")}
    env = {
        **_client_env(),
        "HADES_SUBMIT_PORT": str(ports["submit"]),
        "HADES_LOGS_PORT": str(ports["logs"]),
        "HADES_DISPATCH_PORT": str(ports["dispatch"]),
        "HADES_LOCAL_NATS_PORT": str(ports["nats"]),
        "HADES_LOCAL_STATE_DIR": str(state),
        "HADES_SCOPE": SCOPE,
        "HADES_PULL_TIMEOUT_SECONDS": "0.5",
    }
    with (state / "up.log").open("wb") as log_file:
        up = subprocess.Popen([HADES, "up"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        urls = [f"http://127.0.0.1:{ports[name]}/readyz" for name in ("submit", "logs")]
        while not all(_ready(url) for url in urls):
            assert up.poll() is None, (state / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "hades up did not get ready within 60 s"
            time.sleep(0.2)
        url, logs_url = (f"http://127.0.0.1:{ports[name]}" for name in ("submit", "logs"))
        yield System(url, logs_url, _client_env(HADES_URL=url, HADES_LOGS_URL=logs_url))
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
            raise
    assert code == 0, (state / "up.log").read_text()[-3000:]


def hades(system: System, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    """The installed command, its output a pipe (not a terminal)."""
    return subprocess.run([HADES, *args], env=system.env, capture_output=True, text=True, timeout=timeout_s)


def job_file(tmp_path: Path, *scripts: str, name: str = "cli", **job: Any) -> str:
    steps = [
        {"id": index, "name": f"Step {index}", "image": BUSYBOX, "script": script}
        for index, script in enumerate(scripts, start=1)
    ]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "steps": steps, **job}))
    return str(path)


def eventually(read: Callable[[], dict[str, Any]], status: str, *, timeout_s: float = 10) -> dict[str, Any]:
    """Poll a record until it shows ``status``; fail with the last one at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (record := read())["status"] != status:
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    return record


def submitted_id(system: System, path: str) -> str:
    result = hades(system, "submit", path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Without Docker: validation agrees with the server, errors are reported and exit 4.


def _post(system: System, document: object) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        system.url + "/jobs", data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.name)
def test_validate_gives_the_servers_errors_for_every_invalid_example(system: System, path: Path) -> None:
    status, problem = _post(system, json.loads(path.read_text()))
    assert status == 422
    result = hades(system, "validate", "--json", str(path))
    assert result.returncode == 1
    assert json.loads(result.stdout) == {str(path): problem["errors"]}
    submit = hades(system, "submit", str(path))  # the same words when the server refuses it
    assert submit.returncode == 4
    for violation in problem["errors"]:
        assert f"  {violation['path']}: {violation['message']}" in submit.stderr


def test_validate_passes_every_valid_example(system: System) -> None:
    paths = sorted(str(p) for p in (EXAMPLES / "valid").glob("*.json"))
    result = hades(system, "validate", *paths)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [f"{p}: valid" for p in paths]
    assert ESCAPE not in result.stdout


def test_errors_exit_4_with_the_servers_words(system: System, tmp_path: Path) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    result = hades(system, "status", unknown)
    assert result.returncode == 4 and "404 Job not found" in result.stderr
    result = hades(system, "--url", "http://127.0.0.1:9", "submit", job_file(tmp_path, "true"))
    assert result.returncode == 4 and "Connection refused" in result.stderr
    result = hades(system, "submit", "--priority", "high", job_file(tmp_path, "true"))
    assert result.returncode == 4 and "high" in result.stderr  # a usage error is not 2 ("timed out")


def test_the_progress_line_shows_the_place_in_the_queue_then_the_step() -> None:
    progress = Progress("id", lane="high", queue_position=3, since=time.time() - 65)
    assert progress.line() == "queued · position 3 in lane high · 1:05"
    progress.status, progress.step_ids, progress.step_names, progress.current_step = "running", [1, 5], {5: "Test"}, 5
    assert progress.line() == "running · step 2 of 2: Test · 1:05"


# With Docker: jobs really run.


@pytest.mark.docker
def test_follow_shows_every_step_and_line_in_order_and_exits_0(
    system: System, busybox_image: str, tmp_path: Path
) -> None:
    path = job_file(
        tmp_path, "echo one; echo two", "echo three; sleep 0.3; echo four", "echo five", name="cli-multi-step"
    )
    result = hades(system, "submit", path, "--follow")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith(("<==", "job "))] == [
        "==> step 1 of 3: Step 1",
        "one",
        "two",
        "==> step 2 of 3: Step 2",
        "three",
        "four",
        "==> step 3 of 3: Step 3",
        "five",
    ]
    assert lines[-1].endswith(" succeeded") and lines[-1].startswith("job ")
    assert "<== step 3 of 3 succeeded (exit 0" in result.stdout
    assert ESCAPE not in result.stdout + result.stderr  # not a terminal: no colour codes
    job_id = lines[-1].split()[1]
    assert f"job {job_id} queued on lane high" in result.stderr

    # The record lags the live stream by the collector's next batch.
    record = eventually(lambda: json.loads(hades(system, "status", job_id, "--json").stdout), "succeeded")
    assert [s["exit_code"] for s in record["steps"]] == [0, 0, 0]
    assert hades(system, "logs", job_id).stdout.splitlines() == ["one", "two", "three", "four", "five"]
    assert hades(system, "logs", job_id, "--step", "2").stdout.splitlines() == ["three", "four"]
    listed = hades(system, "list", "--name", "cli-multi", "--status", "succeeded", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
    table = hades(system, "status", job_id)
    assert table.returncode == 0 and "succeeded" in table.stdout and ESCAPE not in table.stdout


@pytest.mark.docker
def test_a_failing_job_exits_1(system: System, busybox_image: str, tmp_path: Path) -> None:
    result = hades(system, "submit", job_file(tmp_path, "echo before; exit 3", "echo never"), "--follow")
    assert result.returncode == 1, result.stderr
    assert "before" in result.stdout and "never" not in result.stdout
    assert "<== step 1 of 2 failed (exit 3" in result.stdout
    assert "<== step 2 of 2 skipped" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("exited with code 3")
    waited = hades(system, "submit", job_file(tmp_path, "exit 1", name="quiet"), "--wait")
    assert waited.returncode == 1 and waited.stdout.splitlines()[-1].startswith("job ")


@pytest.mark.docker
def test_a_timed_out_job_exits_2(system: System, busybox_image: str, tmp_path: Path) -> None:
    result = hades(system, "submit", job_file(tmp_path, "echo started; sleep 30", timeout_seconds=1), "--follow")
    assert result.returncode == 2, result.stderr
    assert "started" in result.stdout and "timed_out" in result.stdout.splitlines()[-1]


@pytest.mark.docker
def test_cancel_ends_a_followed_job_with_3(system: System, busybox_image: str, tmp_path: Path) -> None:
    job_id = submitted_id(system, job_file(tmp_path, "echo started; sleep 60"))
    command = [HADES, "logs", job_id, "--follow"]
    with subprocess.Popen(command, env=system.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follow:
        try:
            assert follow.stdout is not None
            assert follow.stdout.readline() == "==> step 1 of 1: Step 1\n"
            assert follow.stdout.readline() == "started\n"
            cancelled = hades(system, "cancel", job_id)
            assert cancelled.returncode == 0 and cancelled.stdout == f"job {job_id} cancelling\n"
            assert follow.wait(60) == 3
            assert follow.stdout.read().splitlines()[-1].startswith(f"job {job_id} cancelled")
        finally:
            if follow.poll() is None:
                follow.kill()
    again = hades(system, "cancel", job_id)
    assert again.returncode == 4 and "409" in again.stderr


class CuttingProxy:
    """Forwards to logs; cuts the first live stream after ``cut_after`` lines, as a flaky network would."""

    def __init__(self, upstream: str, *, cut_after: int) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.resumed_from: list[str | None] = []
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.cleanup_ctx.append(self._session)
        return app

    async def _session(self, app: web.Application) -> AsyncIterator[None]:
        self.session = aiohttp.ClientSession()
        yield
        await self.session.close()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("last-event-id", "accept", "authorization")
        }
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            if not request.path.endswith("/logs/stream"):
                return web.Response(status=upstream.status, body=await upstream.read(), headers={
                    "Content-Type": upstream.headers.get("Content-Type", "application/json")})  # fmt: skip
            self.resumed_from.append(request.headers.get("Last-Event-ID"))
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            lines = 0
            cut = len(self.resumed_from) == 1
            async for raw in upstream.content:
                await response.write(raw)
                lines += raw.startswith(b"id:")
                if cut and lines >= self.cut_after and not raw.strip():  # at the end of an event
                    assert request.transport is not None
                    request.transport.abort()  # mid-body: the client sees a broken connection
                    return response
            with contextlib.suppress(ConnectionError):  # the client leaves at the end event
                await response.write_eof()
            return response


@pytest.mark.docker
async def test_a_dropped_stream_resumes_without_losing_or_repeating_a_line(
    system: System, busybox_image: str, tmp_path: Path, aiohttp_server: Any
) -> None:
    proxy = CuttingProxy(system.logs_url, cut_after=7)
    server = await aiohttp_server(proxy.app())
    path = job_file(
        tmp_path,
        "for i in $(seq 1 10); do echo line-$i; sleep 0.05; done",
        "for i in $(seq 11 20); do echo line-$i; sleep 0.05; done",
    )
    process = await asyncio.create_subprocess_exec(
        HADES, "--logs-url", f"http://127.0.0.1:{server.port}", "submit", path, "--follow",
        env=system.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, stderr.decode()
    lines = [line for line in stdout.decode().splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 21)]
    assert stdout.decode().count("==> step 1 of 2") == 1 and stdout.decode().count("==> step 2 of 2") == 1
    assert len(proxy.resumed_from) == 2 and proxy.resumed_from[0] is None
    assert proxy.resumed_from[1] is not None and proxy.resumed_from[1].endswith(".7")


def run_in_terminal(command: list[str], env: dict[str, str], *, timeout_s: float = 90) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal (120 x 40) as its stdin, stdout and stderr; all it wrote."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(command, env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every writer is gone
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(10)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, output.decode(errors="replace")


@pytest.mark.docker
def test_on_a_terminal_a_progress_line_and_colours_show(system: System, busybox_image: str, tmp_path: Path) -> None:
    path = job_file(tmp_path, "echo warming up; sleep 2; echo warm", "echo done")
    code, screen = run_in_terminal([HADES, "submit", path, "--follow"], system.env)
    assert code == 0, screen
    assert "running · step 1 of 2: Step 1 · 0:0" in screen  # the progress line: status, step k of n, elapsed
    assert ESCAPE in screen  # colours (and the progress line's cursor moves)
    for text in ("warming up", "warm", "done", "==> step 2 of 2: Step 2", "succeeded"):
        assert text in screen


@pytest.mark.docker
def test_job_output_colours_a_terminal_and_steers_nothing(system: System, busybox_image: str, tmp_path: Path) -> None:
    script = r"printf '\033]0;pwned\007title \033[2J\033[Hcleared \302\2335A c1 \033[31mred\033[0m\n'"
    job_id = submitted_id(system, job_file(tmp_path, script, name="cli-escapes"))
    eventually(lambda: json.loads(hades(system, "status", job_id, "--json").stdout), "succeeded", timeout_s=60)
    written = "\x1b]0;pwned\x07title \x1b[2J\x1b[Hcleared \x9b5A c1 \x1b[31mred\x1b[0m\n".encode()
    piped = subprocess.run([HADES, "logs", job_id], env=system.env, capture_output=True, timeout=30)
    assert piped.returncode == 0 and piped.stdout == written  # a script gets the job's bytes
    for command in (["logs", job_id], ["logs", job_id, "--follow"]):
        code, screen = run_in_terminal([HADES, *command], system.env)
        assert code == 0, screen
        assert "^[]0;pwned^Gtitle ^[[2J^[[Hcleared M-^[5A c1 " in screen  # shown, not done
        assert "\x1b]" not in screen and "\x1b[2J" not in screen and "\x9b" not in screen
        assert "\x1b[31mred" in screen
