"""Hades deployed as its users deploy it: the dev overlay rendered with kustomize v5 and applied as rendered into the
real cluster of KUBECONFIG (../shared/k8s-local), the locally built images imported into its containerd, and then
everything through the Services' ClusterIPs (kube-proxy routes them from the host too): jobs submitted to
submit, run by dispatch in-cluster as Kubernetes Jobs under its own ServiceAccount and the Role as shipped, logs
and records read from logs, callbacks delivered to a receiver pod; a rollout restart of dispatch under load; and
dispatch scaled by KEDA's algorithm (tests/deploy/keda.py) on the logs Service's /scaling, from the ScaledObjects as
rendered.

The one change to the rendering: PodDisruptionBudget's policy/v1 → policy/v1beta1 for the 1.20 API server (as
the dry-run test does). KEDA's and the Prometheus operator's CRDs are installed from tests/data/crds, so their
objects are applied too (nothing acts on them: KEDA is emulated, see
test_dispatch_scales_on_every_tenants_jobs_as_keda_would).

Run with `make test-deploy` (it builds the images first); the figures are printed at the end. Takes ≈ 3.5-4.5 min.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy import keda
from tests.deploy.cluster import (
    JobWatch,
    Kubectl,
    dispatch_api_requests,
    import_images,
    pod_trouble,
    ready,
    wait_for,
)
from tests.test_manifests import crd_for_server, for_server, mc

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGES = ("hades:dev", "hades-nats:dev")
"""What the dev overlay names and `make image` builds by default."""
BUILT = {os.environ.get("IMAGE") or IMAGES[0]: IMAGES[0], os.environ.get("NATS_IMAGE") or IMAGES[1]: IMAGES[1]}
"""The images to load, as `make image` was told to tag them (IMAGE, NATS_IMAGE), and the names they get in the
node: on a shared Docker engine `IMAGE=me-hades:dev NATS_IMAGE=me-nats:dev make test-deploy` tests one's own."""
STEP_IMAGE = "local/busybox:test"
"""In the node's containerd already (tools/k8s_up.sh)."""
RECEIVER_NS = "hades-test-receiver"
RECEIVER = f"http://receiver.{RECEIVER_NS}.svc.cluster.local"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
HADES_PODS = {"submit": 1, "logs": 1, "dispatch": 1}

RECEIVER_SCRIPT = """
import http.server, json
got = []
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        got.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def do_GET(self):
        data = json.dumps(got).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


def receiver_objects() -> list[dict[str, Any]]:
    """A callback receiver in its own namespace: the Hades image's Python with a tiny HTTP server (port 80)."""
    labels = {"app": "receiver"}
    pod_spec = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "receiver",
                "image": IMAGES[0],
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", RECEIVER_SCRIPT],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RECEIVER_NS}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "receiver", "namespace": RECEIVER_NS, "labels": labels},
            "spec": pod_spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "receiver", "namespace": RECEIVER_NS},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
    ]


@dataclass
class Deployed:
    kubectl: Kubectl
    objects: list[dict[str, Any]]
    submit: str
    logs: str
    receiver: str
    figures: dict[str, Any] = field(default_factory=dict)

    def post(self, path: str, body: dict[str, Any]) -> tuple[str, float]:
        """Submit through the submit Service; (job id, monotonic time the request was sent)."""
        sent = time.monotonic()
        response = httpx.post(f"{self.submit}{path}", json=body, timeout=30)
        assert response.status_code in (200, 202), response.text
        answer = response.json()
        return str(answer.get("id") or answer["job_id"]), sent

    def record(self, job_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.logs}/jobs/{job_id}", timeout=30)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def terminal(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            record = self.record(job_id)
            return record if record and record["status"] in TERMINAL else None

        return wait_for(ended, timeout_s=timeout_s, interval_s=0.2, what=f"job {job_id} to end")

    def lines(self, job_id: str) -> list[str]:
        response = httpx.get(f"{self.logs}/jobs/{job_id}/logs", timeout=30)
        if response.status_code == 404:
            return []
        assert response.status_code == 200, response.text
        return [line["message"] for entry in response.json()["logs"] for line in entry["logs"]]

    def callbacks(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = httpx.get(self.receiver, timeout=10).json()
        return got


def wait_hades_ready(kubectl: Kubectl, dispatch: int, timeout_s: float) -> None:
    def all_ready() -> bool:
        pods = [p for p in kubectl.pods("hades") if p["metadata"].get("deletionTimestamp") is None]
        by = {}
        for pod in pods:
            component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "nats")
            by.setdefault(component, []).append(ready(pod))
        want = {**HADES_PODS, "dispatch": dispatch, "nats": 1}
        return all(sum(by.get(c, [])) == n and len(by.get(c, [])) == n for c, n in want.items())

    try:
        wait_for(all_ready, timeout_s=timeout_s, interval_s=1, what="every pod in namespace hades Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pod_trouble(kubectl, 'hades')}") from None


@pytest.fixture(scope="module")
def deployed(deploy_figures: dict[str, Any]) -> Iterator[Deployed]:
    kubectl = Kubectl(mc.kubectl_binary())
    missing = [i for i in BUILT if not _docker_has(i)]
    assert not missing, f"{missing} not built: run `make image` (make test-deploy does)"
    import_images(BUILT)

    crds = [crd_for_server(p) for p in sorted(mc.CRDS.glob("*.yaml"))]
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(crds))
    for crd in crds:
        kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")
    kubectl.delete_namespaces("hades", "hades-jobs", RECEIVER_NS)  # a previous run's

    served = set(kubectl.run("api-versions").split())
    objects = mc.render(kubectl.binary, mc.Target("overlays/dev", mc.OVERLAYS / "dev"))
    started = time.monotonic()
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(for_server(objects, served)))
    wait_hades_ready(kubectl, dispatch=1, timeout_s=300)
    deploy_figures["apply → every pod Ready (s)"] = round(time.monotonic() - started, 1)

    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(receiver_objects()))
    wait_for(
        lambda: all(ready(p) for p in kubectl.pods(RECEIVER_NS)) and kubectl.pods(RECEIVER_NS),
        timeout_s=120,
        what="the callback receiver",
    )
    deployment = Deployed(
        kubectl,
        objects,
        submit=f"http://{kubectl.cluster_ip('hades', 'hades-submit')}:8080",
        logs=f"http://{kubectl.cluster_ip('hades', 'hades-logs')}:8081",
        receiver=f"http://{kubectl.cluster_ip(RECEIVER_NS, 'receiver')}:80",
        figures=deploy_figures,
    )
    try:
        yield deployment
    finally:
        if not os.environ.get("HADES_DEPLOY_KEEP"):  # keep it to look around: HADES_DEPLOY_KEEP=1
            kubectl.run("delete", "namespace", "hades", "hades-jobs", RECEIVER_NS, "--wait=false", check=False)


def _docker_has(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0


def three_steps(callback_path: str) -> dict[str, Any]:
    return {
        "name": "deploy-three-steps",
        "callback_url": f"{RECEIVER}{callback_path}",
        "steps": [
            {"id": 1, "name": "write", "image": STEP_IMAGE, "script": "echo one-written && echo one > /shared/out"},
            {"id": 2, "name": "add", "image": STEP_IMAGE, "script": "echo two >> /shared/out && echo two-added"},
            {"id": 3, "name": "read", "image": STEP_IMAGE, "script": "tr '\\n' + < /shared/out && echo"},
        ],
    }


def artemis_build(callback_path: str) -> dict[str, Any]:
    """The body Artemis' HadesService sends (tests/compat/artemis-build.json), on the node's busybox image; the
    Execute step lists the environment instead of reading /proc/1/environ (the Docker executor's own test)."""
    body: dict[str, Any] = json.loads((ROOT / "tests" / "compat" / "artemis-build.json").read_text())
    body["callback_url"] = f"{RECEIVER}{callback_path}"
    for step in body["steps"]:
        step["image"] = STEP_IMAGE
    body["steps"][1]["script"] = (
        "cd /shared/assignment && ls && echo compiling for $PLAN_KEY"
        " && echo 'Tests run: 3, Failures: 0' > /shared/result.txt"
    )
    return body


def scaling(deployment: Deployed) -> dict[str, int]:
    """GET /scaling through the logs Service, as KEDA's operator reads it (no key)."""
    response = httpx.get(f"{deployment.logs}/scaling", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, int] = response.json()
    return body


def first_line_after(deployment: Deployed, job_id: str, submitted: float) -> float:
    wait_for(lambda: deployment.lines(job_id), timeout_s=180, interval_s=0.1, what=f"the first line of {job_id}")
    return time.monotonic() - submitted


# ------------------------------------------------------------------------------------------------------------


def test_jobs_and_builds_run_in_cluster_through_the_services(deployed: Deployed) -> None:
    d = deployed
    # The in-cluster dispatcher's own requests while idle (its readiness probe lists Jobs), to subtract.
    idle_from, idle_start = dispatch_api_requests(d.kubectl), time.monotonic()
    time.sleep(10)
    before, start = dispatch_api_requests(d.kubectl), time.monotonic()
    idle_rate = (before - idle_from) / (start - idle_start)
    creates_before = dispatch_api_requests(d.kubectl, 'method="POST"')
    watch = JobWatch(d.kubectl, "hades-jobs")

    job_id, submitted = d.post("/jobs", three_steps("/jobs-callback"))
    first_line = first_line_after(d, job_id, submitted)
    record = d.terminal(job_id, timeout_s=180)
    to_terminal = time.monotonic() - submitted
    build_id, build_submitted = d.post("/build", artemis_build("/build-callback"))
    build_first_line = first_line_after(d, build_id, build_submitted)
    build = d.terminal(build_id, timeout_s=180)
    build_to_terminal = time.monotonic() - build_submitted

    assert record["status"] == "succeeded", record
    assert [s["exit_code"] for s in record["steps"]] == [0, 0, 0]
    lines = d.lines(job_id)
    assert lines[:2] == ["one-written", "two-added"] and "one+two+" in lines, lines
    assert build["status"] == "succeeded", build
    build_lines = d.lines(build_id)
    assert "compiling for PROG42-SOLUTION" in build_lines and "Tests run: 3, Failures: 0" in build_lines
    assert not any("s3cr3t-clone-token" in line for line in build_lines), "a secret reached the log"

    # One Kubernetes Job each, created by the in-cluster dispatcher (its own count of POSTs: it is the only
    # client creating anything), its pod under the job account, and gone again (dispatch deletes what it read).
    wait_for(
        lambda: not d.kubectl.get("jobs", "-n", "hades-jobs")["items"],
        timeout_s=60,
        what="the finished Jobs to be deleted",
    )
    seen = watch.stop()
    assert {(label, account) for _, label, account in seen} == {(job_id, "hades-job"), (build_id, "hades-job")}
    assert dispatch_api_requests(d.kubectl, 'method="POST"') - creates_before == 2
    after, end = dispatch_api_requests(d.kubectl), time.monotonic()
    per_job = (after - before - idle_rate * (end - start)) / 2

    def both_called_back() -> dict[str, dict[str, Any]] | None:
        by_path = {c["path"]: c for c in d.callbacks()}
        return by_path if {"/jobs-callback", "/build-callback"} <= set(by_path) else None

    by_path = wait_for(both_called_back, timeout_s=60, what="both callbacks at the receiver")
    jobs_callback = json.loads(by_path["/jobs-callback"]["body"])
    assert by_path["/jobs-callback"]["headers"]["X-Hades-Job-Id"] == job_id
    assert jobs_callback["job"]["status"] == "succeeded" and jobs_callback["job"]["id"] == job_id
    assert by_path["/build-callback"]["headers"]["X-Hades-Job-Id"] == build_id
    build_callback = json.loads(by_path["/build-callback"]["body"])
    assert isinstance(build_callback, list) and build_callback, "the original Log Manager's bare array"

    d.figures.update(
        {
            "/jobs 3 steps: submit → first line (s)": round(first_line, 2),
            "/jobs 3 steps: submit → terminal (s)": round(to_terminal, 2),
            "/build: submit → first line (s)": round(build_first_line, 2),
            "/build: submit → terminal (s)": round(build_to_terminal, 2),
            "Kubernetes API requests per job by the in-cluster dispatcher": round(per_job, 1),
            "its idle requests (readiness probe) per second, subtracted": round(idle_rate, 2),
        }
    )


def test_a_rollout_restart_of_dispatch_loses_and_repeats_no_job(deployed: Deployed) -> None:
    d = deployed
    jobs = []
    for i in range(8):
        body = {
            "name": f"restart-{i}",
            "callback_url": f"{RECEIVER}/restart",
            "steps": [
                {"id": 1, "name": "run", "image": STEP_IMAGE, "script": f"echo start-{i}; sleep 6; echo end-{i}"}
            ],
        }
        jobs.append(d.post("/jobs", body)[0])
    wait_for(
        lambda: any((d.record(j) or {}).get("status") == "running" for j in jobs),
        timeout_s=120,
        what="a job running",
    )
    restarted = time.monotonic()
    d.kubectl.run("rollout", "restart", "deployment/hades-dispatch", "-n", "hades")
    d.kubectl.run("rollout", "status", "deployment/hades-dispatch", "-n", "hades", "--timeout=240s", timeout_s=250)
    rollout = time.monotonic() - restarted
    records = {j: d.terminal(j, timeout_s=240) for j in jobs}

    for i, job_id in enumerate(jobs):
        record = records[job_id]
        assert record["status"] == "succeeded", record
        assert record["attempt"] == 1, f"job {job_id} ran {record['attempt']} times"
        lines = d.lines(job_id)
        assert lines.count(f"start-{i}") == 1 and lines.count(f"end-{i}") == 1, lines
    deliveries: dict[str, set[str]] = {}

    def all_called_back() -> bool:
        deliveries.clear()
        for c in d.callbacks():
            if c["path"] == "/restart":
                deliveries.setdefault(c["headers"]["X-Hades-Job-Id"], set()).add(c["headers"]["X-Hades-Delivery"])
        return set(deliveries) == set(jobs)

    wait_for(all_called_back, timeout_s=60, what="a callback for every job")
    assert all(len(ids) == 1 for ids in deliveries.values()), deliveries
    d.figures["rollout restart of dispatch with 8 jobs queued/running (s)"] = round(rollout, 1)


def test_dispatch_scales_on_every_tenants_jobs_as_keda_would(deployed: Deployed) -> None:
    """KEDA's algorithm (tests/deploy/keda.py) on the test overlay's ScaledObjects, reading the logs Service's
    /scaling (dispatch) and the in-cluster NATS monitoring Service (logs): from zero to a burst of 40 jobs, most
    of them a named tenant's (on no lane consumer: only `jobs` of /scaling counts them), and back to zero, then
    one job of another named tenant from zero."""
    d = deployed
    test_overlay = mc.render(mc.kubectl_binary(), mc.Target("deploy-test", ROOT / "tests" / "deploy" / "overlay"))
    targets = keda.scaled_targets(test_overlay)
    assert {t.name for t in targets} == {"hades-dispatch", "hades-logs"}
    dispatch_triggers = next(t for t in targets if t.name == "hades-dispatch").triggers
    assert [(t.name, type(t)) for t in dispatch_triggers] == [("jobs", keda.MetricsApiTrigger)]

    def resolve(endpoint: str) -> str:
        """``<service>.<namespace>.svc:<port>`` → the Service's ClusterIP (the host routes the Service range)."""
        host, _, port = endpoint.partition(":")
        service, namespace, *_ = host.split(".")
        assert (service, namespace) in {("nats", "hades"), ("hades-logs", "hades")}, endpoint
        return f"{d.kubectl.cluster_ip(namespace, service)}:{port}"

    emulator = keda.Emulator(targets, resolve=resolve, get_replicas=d.kubectl.replicas, set_replicas=d.kubectl.scale)
    stop = threading.Event()
    errors: list[str] = []

    def run() -> None:
        while not stop.is_set():
            try:
                emulator.step()
            except Exception as exc:  # as KEDA: a failed poll is logged, the next one tries again
                errors.append(f"{time.monotonic():.1f}: {exc.__class__.__name__}: {exc}")
            stop.wait(0.5)

    thread = threading.Thread(target=run, name="keda-emulator", daemon=True)
    thread.start()

    def dispatch_pods() -> int:
        return len(d.kubectl.pods("hades", "app.kubernetes.io/component=dispatch"))

    try:
        wait_for(
            lambda: d.kubectl.replicas("hades", "hades-dispatch") == 0 and dispatch_pods() == 0,
            timeout_s=120,
            interval_s=1,
            what="dispatch at zero",
        )
        assert scaling(d) == {"jobs": 0, "queued": 0, "running": 0}, "every job of the earlier tests ended"
        burst_start = time.monotonic()
        burst = [
            d.post(
                "/jobs",
                {
                    "name": f"burst-{i}",
                    **({"tenant": "cs101"} if i % 4 else {}),  # 30 of tenant cs101, 10 of the default tenant
                    "steps": [{"id": 1, "name": "b", "image": STEP_IMAGE, "script": f"echo burst-{i}"}],
                },
            )[0]
            for i in range(40)
        ]
        queued = scaling(d)
        assert 1 <= queued["jobs"] <= 40, queued
        records = {j: d.terminal(j, timeout_s=600) for j in burst}
        burst_s = time.monotonic() - burst_start
        wait_for(lambda: scaling(d)["jobs"] == 0, timeout_s=30, what="/scaling's jobs back at 0 (every job acked)")
        assert all(r["status"] == "succeeded" for r in records.values()), records
        peak = max(new for _, name, _, new in emulator.history if name == "hades-dispatch")
        assert peak == 4, f"dispatch did not scale out to maxReplicaCount: {emulator.history}"

        idle_start = time.monotonic()
        wait_for(
            lambda: d.kubectl.replicas("hades", "hades-dispatch") == 0 and dispatch_pods() == 0,
            timeout_s=240,
            interval_s=1,
            what="dispatch back at zero",
        )
        to_zero = time.monotonic() - idle_start

        job_id, submitted = d.post(
            "/jobs",
            {
                "name": "from-zero",
                "tenant": "cs102",  # its first job: no dispatcher and no consumer of it exist yet
                "steps": [{"id": 1, "name": "z", "image": STEP_IMAGE, "script": "echo woke"}],
            },
        )
        record = d.terminal(job_id, timeout_s=300)
        from_zero = time.monotonic() - submitted
        assert record["status"] == "succeeded" and d.lines(job_id) == ["woke"], record
        assert record["tenant"] == "cs102" and {r["tenant"] for r in records.values()} == {"cs101", "default"}
        assert emulator.mismatches == [], emulator.mismatches
        assert d.kubectl.replicas("hades", "hades-logs") >= 1
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nscaling: {emulator.history}\npoll errors: {errors}") from None
    finally:
        stop.set()
        thread.join(timeout=30)

    d.figures.update(
        {
            "burst of 40 jobs (30 of tenant cs101) from zero replicas → all ended (s)": round(burst_s, 1),
            "dispatch replicas (emulated KEDA/HPA), in order": [
                new for _, n, _, new in emulator.history if n == "hades-dispatch"
            ],
            "idle → dispatch at zero again (s)": round(to_zero, 1),
            "a job of a new tenant at zero replicas: submit → terminal (s)": round(from_zero, 1),
            "emulated KEDA polls that failed (retried at the next interval)": len(errors),
        }
    )
