"""A production-shaped install on loopback, for tests and benchmarks: a three-node JetStream cluster (routes, a
cluster name, a ``server_name`` and a store of its own per node) with every stream and bucket R3, and several
processes of each function spread over the three servers' URLs.

Each node can be SIGKILLed and started again on its ports and store; each function process can be SIGKILLed,
paused (SIGSTOP), resumed (SIGCONT) and restarted; ``stream_leader`` names the node leading a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.harness import Service
from tests.natsserver import free_port, nats_server_binary
from tests.processes import functions_env

CLUSTER_NAME = "hades-test"


@dataclass
class NatsNode:
    name: str
    store: Path
    log: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    routes: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route(self) -> str:
        return f"nats://127.0.0.1:{self.cluster_port}"

    def start(self) -> None:
        command = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            str(self.store),
            "--server_name",
            self.name,
            "--cluster_name",
            CLUSTER_NAME,
            "--cluster",
            self.route,
            "--routes",
            ",".join(self.routes),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no flush, no leadership hand-over — a lost node."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def jsz(self, query: str = "") -> dict[str, Any] | None:
        """The node's JetStream monitoring page, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz{query}", timeout=2) as answer:
                return dict(json.load(answer))
        except (OSError, ValueError):
            return None


@dataclass
class NatsCluster:
    nodes: list[NatsNode]

    @classmethod
    def create(cls, root: Path, size: int = 3) -> NatsCluster:
        nodes = [NatsNode(f"n{i + 1}", root / f"n{i + 1}", root / f"n{i + 1}.log") for i in range(size)]
        for node in nodes:
            node.store.mkdir(parents=True, exist_ok=True)
            node.routes = [other.route for other in nodes if other is not node]
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start every node and wait for the JetStream meta leader (the cluster can create streams)."""
        for node in self.nodes:
            node.start()
        await self.wait_meta_leader(timeout_s)

    async def wait_meta_leader(self, timeout_s: float = 60.0) -> str:
        """The meta leader's name, once it sees every running node as a current peer (before that, creating an R3
        stream fails with "no suitable peers for placement")."""
        deadline = time.monotonic() + timeout_s
        running = sum(node.running for node in self.nodes)
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.running and (page := await asyncio.to_thread(node.jsz)) is not None:
                    meta = page.get("meta_cluster") or {}
                    peers = [p for p in meta.get("replicas") or [] if p.get("current") and not p.get("offline")]
                    if meta.get("leader") == node.name and len(peers) >= running - 1:
                        return node.name
            await asyncio.sleep(0.2)
        raise AssertionError(f"no JetStream meta leader with all peers within {timeout_s} s")

    async def stream_leader(self, stream: str, timeout_s: float = 30.0) -> NatsNode:
        """The node leading ``stream``'s replica group, as the stream info of any running node tells it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.running:
                    continue
                page = await asyncio.to_thread(node.jsz, "?streams=true")
                for account in (page or {}).get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        leader = (detail.get("cluster") or {}).get("leader")
                        if detail.get("name") == stream and leader:
                            return self.node(str(leader))
            await asyncio.sleep(0.2)
        raise AssertionError(f"no leader for {stream} within {timeout_s} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class Replica(Service):
    """One process of a function; ``Service`` with the signals a scale-out scenario sends."""

    def pause(self) -> None:
        """SIGSTOP: the process holds everything and does nothing (a stalled VM, a long GC pause)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class Deployment:
    """Several processes of each function on one NATS cluster, each told all three URLs, its own one first."""

    replicas: dict[str, list[Replica]]

    @classmethod
    def create(cls, nats: NatsCluster, root: Path, counts: dict[str, int], **env: str) -> Deployment:
        replicas: dict[str, list[Replica]] = {}
        n = 0
        for function, how_many in counts.items():
            for i in range(how_many):
                urls = nats.urls[n % len(nats.urls) :] + nats.urls[: n % len(nats.urls)]
                n += 1
                ports = {name: free_port() for name in ("submit", "logs", "dispatch")}
                process_env = functions_env(",".join(urls), ports, HADES_NATS_REPLICAS="3", **env)
                log = root / f"{function}-{i}.log"
                replicas.setdefault(function, []).append(Replica(function, ports[function], process_env, log))
        return cls(replicas)

    def __getitem__(self, function: str) -> list[Replica]:
        return self.replicas[function]

    def all(self) -> list[Replica]:
        return [replica for group in self.replicas.values() for replica in group]

    def urls(self, function: str) -> list[str]:
        return [replica.url for replica in self.replicas[function]]

    def spawn_all(self) -> None:
        """Start every process at once, as pods of a fresh install do."""
        for replica in self.all():
            replica.spawn()

    async def ready(self, timeout_s: float = 120.0) -> None:
        await asyncio.gather(*(replica.ready(timeout_s) for replica in self.all()))

    async def start(self, timeout_s: float = 120.0) -> None:
        self.spawn_all()
        await self.ready(timeout_s)

    async def stop(self) -> None:
        for replica in self.all():
            with contextlib.suppress(ProcessLookupError):
                if replica.process is not None:
                    replica.process.send_signal(signal.SIGCONT)  # a paused one could not stop
        await asyncio.gather(*(replica.stop() for replica in self.all()))
