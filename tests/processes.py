"""The three functions as separate processes (``python -m functions.<name>``), for tests of what leaves them:
metrics scraped by a real Prometheus, spans exported over OTLP. Each has its own port and its own registry."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import SCOPE

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("submit", "dispatch", "logs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Functions:
    ports: dict[str, int]
    logs_dir: Path

    def url(self, function: str) -> str:
        return f"http://127.0.0.1:{self.ports[function]}"


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)  # a sync start-up wait outside the event loop, bounded by the deadline
    raise AssertionError(f"{url} not ready within {timeout_s} s:\n{log.read_text()[-3000:]}")


def functions_env(nats_url: str, ports: dict[str, int], **env: str) -> dict[str, str]:
    """The environment of the functions run as processes: this one's, without its HADES_*/OTEL_* settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HADES_", "OTEL_"))},
        "HADES_NATS_URL": nats_url,
        "HADES_SCOPE": SCOPE,
        "HADES_SUBMIT_PORT": str(ports["submit"]),
        "HADES_LOGS_PORT": str(ports["logs"]),
        "HADES_DISPATCH_PORT": str(ports["dispatch"]),
        "HADES_PULL_TIMEOUT_SECONDS": "0.5",
        **env,
    }


@contextlib.contextmanager
def running_functions(
    nats_url: str, tmp_path: Path, *, names: tuple[str, ...] = FUNCTIONS, **env: str
) -> Iterator[Functions]:
    """Start submit, dispatch and logs, or only ``names`` (in this order; dispatch last: it needs the others'
    streams no more than they do)."""
    ports = {name: free_port() for name in FUNCTIONS}
    base = functions_env(nats_url, ports, **env)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in (name for name in FUNCTIONS if name in names):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"functions.{name}"],
                    cwd=ROOT,
                    env=base,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            _wait_ready(f"http://127.0.0.1:{ports[name]}", process, log)
        yield Functions(ports=ports, logs_dir=tmp_path)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
