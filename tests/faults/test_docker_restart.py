"""The Docker engine SIGKILLed and started again during a job, on an engine of the test's own.

The machine's dockerd serves every test session running at the same time; killing it would fail their tests. So
this scenario starts a private ``dockerd`` (its own socket, data root, exec root and pid file; no bridge, no
iptables, so it does not touch the host's network set-up; its own managed containerd under the exec root), loads the
test image into it from the main engine, and points dispatch at it with ``HADES_DOCKER_HOST``.

The engine runs with ``--live-restore`` (the production setting docs/reliability.md asks for): the step containers
outlive the daemon. Dispatch's attempt loses its engine mid-step, fails to clean up (the engine is down), and hands
the job back; the next attempt, once the engine is back, finds the step container by label and follows it to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.faults.harness import (
    RUN_TOKEN,
    Figures,
    count,
    job,
    leftovers,
    settled_leftovers,
    submit_and_wait_running,
)
from tests.helpers import poll
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(180)]

DOCKERD = shutil.which("dockerd")


@dataclass
class PrivateEngine:
    """One dockerd of this test's own: SIGKILLable and restartable without touching anyone else's containers."""

    root: Path
    log: Path
    bridge: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def command(self) -> list[str]:
        assert DOCKERD is not None
        return [
            DOCKERD,
            f"--host={self.url}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            # A bridge of its own, made by the test. Never ``--bridge=none``: a daemon started with it deletes the
            # host's ``docker0`` (dockerd's removeDefaultBridgeInterface), the main engine's default network.
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--live-restore",
            "--log-level=info",
        ]

    async def start(self) -> None:
        self.starts += 1
        # A SIGKILLed daemon leaves its pid file; a new one refuses to start while it is there.
        (self.root / "docker.pid").unlink(missing_ok=True)
        self.spawn()

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"private dockerd exited with {self.process.returncode}:\n{self.tail()}")
            # A raw ping: the SDK's client leaves its socket unclosed when the daemon is not listening yet.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                try:
                    sock.connect(str(self.root / "docker.sock"))
                    sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                    return sock.recv(64).startswith(b"HTTP/1.0 200")
                except OSError:
                    return False

        await poll(lambda: asyncio.to_thread(answers), timeout_s=60, interval_s=0.2)

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)

    async def kill(self) -> None:
        """SIGKILL: the daemon and its managed containerd die; the containers' shims (live-restore) do not."""
        assert self.process is not None
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        containerd = _pid_in(pidfile)
        self.process.kill()
        await asyncio.to_thread(self.process.wait)
        self.process = None
        if containerd is not None:  # it dies with its daemon; a live one would hold its store's lock for the next
            with contextlib.suppress(ProcessLookupError):
                os.kill(containerd, signal.SIGKILL)
            await poll(lambda: asyncio.to_thread(_gone, containerd), timeout_s=30, interval_s=0.1)
            # Its zombie may wait a while for a reaper, and the next daemon would take it for a live containerd
            # (``kill(pid, 0)`` succeeds on a zombie) and wait for its socket in vain: forget it.
            pidfile.unlink(missing_ok=True)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        self.process = None

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _why_no_private_engine() -> str | None:
    if DOCKERD is None:
        return "no dockerd binary on this machine: the scenario needs a private engine (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "a private dockerd needs root (mounts, cgroups, its bridge): run this scenario as root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2): the private dockerd needs a bridge of its own"
    return None


@pytest.fixture
async def private_engine(busybox_image: str, docker_client: Any, tmp_path: Path) -> AsyncIterator[PrivateEngine]:
    reason = _why_no_private_engine()
    if reason is not None:
        pytest.skip(reason)
    # A short path: the socket's path must fit a sockaddr_un (108 bytes), pytest's tmp_path may not.
    root = Path(tempfile.mkdtemp(prefix="hades-dockerd-", dir="/tmp"))
    bridge = _own_bridge()
    engine = PrivateEngine(root, tmp_path / "dockerd.log", bridge)  # the log is kept with the functions' logs
    try:
        await engine.start()
        image = b"".join(
            await asyncio.to_thread(lambda: list(docker_client.images.get(busybox_image).save(named=True)))
        )
        with contextlib.closing(engine.client()) as client:
            await asyncio.to_thread(client.images.load, image)
        yield engine
    finally:
        try:
            if engine.starts:  # live-restore: a stopped daemon would leave its containers running
                if engine.process is None:
                    await engine.start()
                await asyncio.to_thread(_remove_all, engine)
        finally:
            await engine.stop()
            _unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)
            _delete_bridge(bridge)


def _own_bridge() -> str:
    """A Linux bridge for the private daemon, in a /24 no route uses yet (steps here run with network none)."""
    name = f"hdk{secrets.token_hex(3)}"
    routes = subprocess.run(["ip", "-4", "route"], check=True, capture_output=True, text=True).stdout
    subnet = next(f"10.213.{n}" for n in range(256) if f"10.213.{n}." not in routes)
    for command in (
        ["ip", "link", "add", name, "type", "bridge"],
        ["ip", "addr", "add", f"{subnet}.1/24", "dev", name],
        ["ip", "link", "set", name, "up"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    return name


def _delete_bridge(name: str) -> None:
    subprocess.run(["ip", "link", "delete", name], check=False, capture_output=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _gone(pid: int) -> bool:
    """Exited (a zombie whose parent died counts: it holds no file or lock any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _remove_all(engine: PrivateEngine) -> None:
    with contextlib.closing(engine.client()) as client:
        for container in client.containers.list(all=True):
            container.remove(force=True)


def _unmount_under(root: Path) -> None:
    """What a daemon that was SIGKILLed at some point left mounted there (its data root is bind-mounted on itself)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _leftovers(engine: PrivateEngine, job_ids: list[str]) -> list[str]:
    with contextlib.closing(engine.client()) as client:
        return leftovers(job_ids, engine=client)


async def test_the_docker_engine_restarted_during_a_job(
    private_engine: PrivateEngine, cluster_on: Callable[..., Any], clean_nats: str, stored: StoredEvents
) -> None:
    figures = Figures("docker engine SIGKILL + restart mid-job")
    began = time.monotonic()
    cluster = await cluster_on(
        clean_nats, HADES_DOCKER_HOST=private_engine.url, HADES_CONCURRENCY="4", HADES_MAX_DELIVER="5"
    )
    script = f"echo {RUN_TOKEN}; for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 1; done"
    bodies = [job(script) for _ in range(3)]
    ids = await submit_and_wait_running(cluster["submit"].url, bodies, stored, figures)
    await private_engine.kill()
    killed_at = time.monotonic()

    async def all_handed_back() -> bool:  # each attempt saw the engine go, and its cleanup failed with it
        return all([any((e.get("reason") or "").startswith("retrying") for e in await stored.jobs(i)) for i in ids])

    await poll(all_handed_back, timeout_s=60, interval_s=0.2)
    await private_engine.start()

    async def all_ended() -> bool:
        return all([await stored.terminals(i) for i in ids])

    await poll(all_ended, timeout_s=120, interval_s=0.5)
    figures.recovery_s = time.monotonic() - killed_at
    await count(figures, stored, ids)
    figures.leftovers = len(await settled_leftovers(lambda: _leftovers(private_engine, ids)))  # the private engine
    figures.seconds = time.monotonic() - began
    figures.check()
    assert figures.statuses == {"succeeded": len(ids)}
    for job_id in ids:
        attempts = {e["attempt"] for e in await stored.jobs(job_id)}
        assert max(attempts) >= 2, (job_id, attempts)  # a later attempt followed the step the first one lost
        # The follower reads the engine's own log again: lines printed while the engine was down are in it too.
        missing = [n for n in range(1, 9) if f"line {n}" not in await stored.lines(job_id)]
        assert not missing, (job_id, missing)
