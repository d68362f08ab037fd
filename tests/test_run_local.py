"""``make run``'s launcher: everything starts, a job is accepted, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, SCOPE
from tests.natsserver import free_port

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_make_run_starts_every_function_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("submit", "logs", "dispatch", "nats")}
    env = {
        **os.environ,
        "HADES_SUBMIT_PORT": str(ports["submit"]),
        "HADES_LOGS_PORT": str(ports["logs"]),
        "HADES_DISPATCH_PORT": str(ports["dispatch"]),
        "HADES_LOCAL_NATS_PORT": str(ports["nats"]),
        "HADES_LOCAL_STATE_DIR": str(tmp_path),
        "HADES_SCOPE": SCOPE,
    }
    env.pop("HADES_NATS_URL", None)
    log_file = tmp_path / "run.log"
    with log_file.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "tools/run_local.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        ready = dict.fromkeys(("submit", "logs", "dispatch"), False)
        while not all(ready.values()) and time.monotonic() < deadline:
            for name in ready:
                ready[name] = ready[name] or get(f"http://127.0.0.1:{ports[name]}/readyz") == 200
            time.sleep(0.2)
        assert ready == dict.fromkeys(ready, True)
        spawned = children_of(launcher.pid)
        assert len(spawned) == 4  # nats-server and three functions

        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['submit']}/jobs",
            data=(EXAMPLES / "valid" / "hello.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202 and json.load(response)["status"] == "queued"
        assert (tmp_path / "nats").is_dir()  # JetStream keeps its store under the state dir

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0
        for pid in spawned:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        output = log_file.read_text()
        assert "submit |" in output and "dispatch |" in output
    finally:
        if launcher.poll() is None:
            launcher.kill()
