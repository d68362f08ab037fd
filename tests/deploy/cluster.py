"""The deploy test's hands on the cluster: kubectl (the project's v1.33, whose kustomize renders the overlays),
the node's containerd for the images, and plain HTTP to ClusterIPs (the host routes the Service range)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

CONTAINERD_SOCKET = os.environ.get("HADES_K8S_CONTAINERD_SOCKET", "/run/k8s-containerd/containerd.sock")


def wait_for(check: Callable[[], T | None], *, timeout_s: float, interval_s: float = 0.5, what: str = "") -> T:
    """``check()`` until it returns something true (a non-empty list, a record), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class Kubectl:
    binary: str

    def run(self, *args: str, stdin: str | None = None, check: bool = True, timeout_s: float = 180) -> str:
        out = subprocess.run(
            [self.binary, *args], input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def get(self, *args: str, timeout_s: float = 180) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json", timeout_s=timeout_s))
        return data

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        ns = ["-n", namespace] if namespace else []
        return bool(self.run("get", kind, name, *ns, "--ignore-not-found", "-o", "name").strip())

    def cluster_ip(self, namespace: str, service: str) -> str:
        return str(self.get("service", service, "-n", namespace)["spec"]["clusterIP"])

    def replicas(self, namespace: str, deployment: str) -> int:
        # Short timeouts: the KEDA emulator calls these every poll and retries the next one (as KEDA would).
        spec = self.get("deployment", deployment, "-n", namespace, timeout_s=30)["spec"]
        return int(spec.get("replicas", 1))

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.run("scale", f"deployment/{deployment}", "-n", namespace, f"--replicas={replicas}", timeout_s=30)

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        return list(self.get(*args)["items"])

    def delete_namespaces(self, *names: str, wait_s: float = 180) -> None:
        present = [n for n in names if self.exists("namespace", n)]
        if present:
            self.run("delete", "namespace", *present, "--wait=false")
            wait_for(
                lambda: not any(self.exists("namespace", n) for n in present),
                timeout_s=wait_s,
                interval_s=2,
                what=f"namespaces {present} to go",
            )


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    terminating = pod["metadata"].get("deletionTimestamp") is not None
    return not terminating and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_trouble(kubectl: Kubectl, namespace: str) -> str:
    """What a test failure should show about pods that are not Ready: phase, waiting reasons, the last log lines."""
    lines = []
    for pod in kubectl.pods(namespace):
        if ready(pod):
            continue
        name = pod["metadata"]["name"]
        states = []
        for status in pod.get("status", {}).get("containerStatuses") or []:
            state = status.get("state", {})
            reason = state.get("waiting", {}).get("reason", "")
            states.append(f"{status['name']}: {next(iter(state), '?')} {reason} restarts={status.get('restartCount')}")
        lines.append(f"{name} {pod['status'].get('phase')} {'; '.join(states)}")
        tail = kubectl.run("logs", name, "-n", namespace, "--tail=5", "--all-containers", check=False)
        lines += [f"    {line}" for line in tail.splitlines()]
    return "\n".join(lines)


def containerd_name(image: str) -> str:
    """The fully qualified name containerd (and the kubelet) use: ``hades:dev`` → ``docker.io/library/hades:dev``."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    return image if ("." in first or ":" in first or first == "localhost") else f"docker.io/{image}"


def import_images(images: dict[str, str]) -> None:
    """``docker save … | ctr … images import -`` (the node's containerd is not Docker's and no registry is
    reachable), each image then tagged in containerd as the manifests name it: {built: named}."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    assert save.stdout is not None
    out = subprocess.run(
        ["ctr", "-a", CONTAINERD_SOCKET, "-n", "k8s.io", "images", "import", "-"],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    save.stdout.close()
    assert save.wait(timeout=60) == 0, f"docker save {images} failed"
    assert out.returncode == 0, f"ctr images import: {out.stderr}"
    for built, named in images.items():
        if containerd_name(built) != containerd_name(named):
            tag = ["ctr", "-a", CONTAINERD_SOCKET, "-n", "k8s.io", "images", "tag", "--force"]
            subprocess.run([*tag, containerd_name(built), containerd_name(named)], check=True, capture_output=True)


def metric_sum(text: str, name: str, label: str = "") -> float:
    """The sum of the samples of one metric in a Prometheus text exposition (those with ``label``, e.g.
    ``method="POST"``, when given)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if match and label in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def dispatch_api_requests(kubectl: Kubectl, label: str = "") -> float:
    """hades_k8s_api_requests_total summed over the running dispatch pods (read from each pod's :8082/metrics)."""
    total = 0.0
    for pod in kubectl.pods("hades", "app.kubernetes.io/component=dispatch"):
        if ready(pod):
            text = httpx.get(f"http://{pod['status']['podIP']}:8082/metrics", timeout=10).text
            total += metric_sum(text, "hades_k8s_api_requests_total", label)
    return total


class JobWatch:
    """``kubectl get jobs --watch`` in a namespace: every Job seen, as (name, job-id label, pod service account)."""

    FORMAT = (
        'jsonpath={.metadata.name} {.metadata.labels.hades\\.io/job-id} {.spec.template.spec.serviceAccountName}{"\\n"}'
    )

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.process = subprocess.Popen(
            [kubectl.binary, "get", "jobs", "-n", namespace, "--watch", "-o", self.FORMAT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.seen: set[tuple[str, ...]] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.seen.add(tuple(line.split()))

    def stop(self) -> set[tuple[str, ...]]:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.seen
