"""Results on Kubernetes: the pod ends with a collector that streams the asked-for files to its log.

Without a cluster: the manifest (validated strictly), and the pod's scripts run for real in busybox containers on
Docker in the kubelet's order (the steps as init containers sharing /shared and the mark, then the collector),
its log decoded into the same collector as dispatch uses. With one (``k8s``): a job end to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from aiohttp.test_utils import TestClient

from functions.dispatch.executors.k8s import manifest
from functions.dispatch.results import k8s_collect
from functions.dispatch.results.collector import ChunkReader, Collector
from runtime import messaging, subjects
from runtime.jobs import Artifact
from runtime.messaging import topology
from runtime.settings import Settings
from tests.helpers import make_settings
from tests.test_k8s_manifest import SCHEMA_VERSIONS, make_job, make_step

SUREFIRE = (Path(__file__).parent / "data" / "junit" / "surefire-TEST-com.example.CalculatorTest.xml").read_text()


def results_job() -> Any:
    return make_job(
        make_step(1, "mkdir -p target && echo built > target/a.txt"),
        make_step(2, "echo flaky; exit 3", continue_on_error=True),
        make_step(3, f"mkdir -p target/reports; cat > target/reports/TEST-x.xml <<'XML'\n{SUREFIRE}\nXML\nexit 1"),
        make_step(4, "echo never > target/never.txt"),
        artifacts=(Artifact("target/*.txt"), Artifact("target/big.bin")),
        junit_reports=("target/reports/*.xml",),
    )


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_a_job_with_results_validates_and_ends_with_the_collector(version: str) -> None:
    settings = Settings.from_env({"HADES_RESULTS_K8S_IMAGE": "registry.example/busybox:1"})
    body = manifest.build_job(results_job(), attempt=1, settings=settings)
    kubernetes_validate.validate(body, version, strict=True)
    pod = body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["step-1", "step-2", "step-3", "step-4"]
    [collector] = pod["containers"]
    assert collector["name"] == k8s_collect.CONTAINER and collector["image"] == "registry.example/busybox:1"
    assert collector["volumeMounts"] == [{"name": "shared", "mountPath": "/shared", "readOnly": True}]
    assert all(c["command"][2].endswith("exit 0") for c in pod["initContainers"])  # a failure never ends the pod
    assert "automountServiceAccountToken" in pod and pod["automountServiceAccountToken"] is False


def test_a_job_without_results_keeps_its_manifest() -> None:
    body = manifest.build_job(make_job(make_step(1), make_step(2)), attempt=1, settings=Settings())
    pod = body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["step-2"]
    assert all(v["name"] != k8s_collect.MARK_VOLUME for v in pod["volumes"])


@pytest.mark.docker
async def test_the_pod_scripts_run_in_order_and_the_collector_log_carries_the_files(
    docker_client: Any, busybox_image: str, conn: messaging.Messaging, settings: Settings
) -> None:
    """The kubelet's part played by Docker: each init container to its end, then the collector."""
    job = results_job()
    small = make_settings(settings.nats.url, HADES_RESULTS_MAX_FILE_BYTES="100000")
    pod = manifest.build_job(job, attempt=1, settings=small)["spec"]["template"]["spec"]
    tag = uuid.uuid4().hex[:8]
    volumes = {f"t23-shared-{tag}": "/shared", f"t23-mark-{tag}": k8s_collect.MARK_DIR}
    try:
        exits = []
        for container in pod["initContainers"]:
            exits.append(await asyncio.to_thread(_run, docker_client, busybox_image, container["command"], volumes))
        assert exits == [0, 0, 0, 0]  # the pod goes on to the collector whatever failed
        await asyncio.to_thread(
            _run,
            docker_client,
            busybox_image,
            ["sh", "-c", "head -c 200000 /dev/zero > /shared/target/big.bin"],
            volumes,
        )
        collector_command = pod["containers"][0]["command"]
        out = await asyncio.to_thread(_output, docker_client, busybox_image, collector_command, volumes)
    finally:
        for name in volumes:
            await asyncio.to_thread(lambda n=name: docker_client.volumes.get(n).remove(force=True))
    assert b"never" not in out  # step 4 did not run after step 3 failed
    collector = Collector(conn, job, small)
    await collector.read_tar(
        lambda: ChunkReader(k8s_collect._decoded(iter([out[i : i + 1000] for i in range(0, len(out), 1000)]))),
        parent="/shared",
    )
    results = collector.finish()
    kept = {a["path"]: a for a in results["artifacts"]}
    assert set(kept) == {"target/a.txt", "target/reports/TEST-x.xml"}
    assert results["tests"]["failures"] == 1 and results["tests"]["errors"] == 1
    objects = await conn.objects(topology.results_bucket_config(small))
    found = await objects.located(subjects.result_object(job.id, "target/a.txt"))
    assert found is not None
    assert b"".join([c async for c in conn.object_chunks(objects, found[1])]) == b"built\n"
    # big.bin stayed out of the stream (the collector names it in its termination message instead)
    assert "target/big.bin" not in kept


def _run(client: Any, image: str, command: list[str], volumes: dict[str, str]) -> int:
    binds = {name: {"bind": path, "mode": "rw"} for name, path in volumes.items()}
    container = client.containers.run(image, command, volumes=binds, working_dir="/shared", detach=True)
    try:
        return int(container.wait(timeout=60)["StatusCode"])
    finally:
        container.remove(force=True)


def _output(client: Any, image: str, command: list[str], volumes: dict[str, str]) -> bytes:
    binds = {name: {"bind": path, "mode": "ro"} for name, path in volumes.items()}
    container = client.containers.run(image, command, volumes=binds, working_dir="/shared", detach=True)
    try:
        container.wait(timeout=60)
        return bytes(container.logs(stdout=True, stderr=False))
    finally:
        container.remove(force=True)


@pytest.mark.k8s
@pytest.mark.timeout(300)
async def test_on_the_cluster_a_failed_build_keeps_its_report_and_files(
    aiohttp_client: Any,
    aiohttp_server: Any,
    clean_nats: str,
    k8s_namespace: str,
    stored: Any,
    conn: messaging.Messaging,
) -> None:
    from functions.dispatch.handlers import create_app as create_dispatch
    from functions.submit.handlers import create_app as create_submit
    from tests.k8sfixtures import K8S_IMAGE
    from tests.test_k8s_executor import k8s_env

    settings = make_settings(clean_nats, **k8s_env(k8s_namespace, HADES_RESULTS_K8S_IMAGE=K8S_IMAGE))
    await aiohttp_server(create_dispatch(settings))
    client: TestClient = await aiohttp_client(create_submit(settings))
    script = (
        f"mkdir -p target/reports; cat > target/reports/TEST-x.xml <<'XML'\n{SUREFIRE}\nXML\n"
        "head -c 300000 /dev/urandom > target/app.jar; sha256sum target/app.jar; exit 1"
    )
    body = {
        "name": "k8s results",
        "steps": [
            {"id": 1, "image": K8S_IMAGE, "script": script},
            {"id": 2, "image": K8S_IMAGE, "script": "echo must not run"},
        ],
        "artifacts": [{"path": "target/app.jar", "name": "app.jar"}],
        "reports": {"junit": ["target/reports/*.xml"]},
    }
    response = await client.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    final = await stored.terminal(job_id, timeout_s=180)
    assert final["status"] == "failed"
    results = final["results"]
    assert results["tests"]["tests"] == 4 and results["tests"]["failures"] == 1, results
    [jar] = [a for a in results["artifacts"] if a["name"] == "app.jar"]
    objects = await conn.objects(topology.results_bucket_config(settings))
    found = await objects.located(subjects.result_object(job_id, "app.jar"))
    assert found is not None
    data = b"".join([c async for c in conn.object_chunks(objects, found[1])])
    assert len(data) == 300000 and hashlib.sha256(data).hexdigest() == jar["sha256"]


@pytest.mark.k8s
def test_the_real_api_server_accepts_a_job_with_results(k8s_client: Any, k8s_namespace: str) -> None:
    """A server-side dry run on the 1.20 cluster, with the containment settings too: nothing is created."""
    import kubernetes

    env = {"HADES_K8S_NAMESPACE": k8s_namespace, "HADES_STEP_USER": "65534:65534", "HADES_STEP_READ_ONLY_ROOT": "true"}
    body = manifest.build_job(results_job(), attempt=1, settings=Settings.from_env(env))
    answer = kubernetes.client.BatchV1Api(k8s_client).create_namespaced_job(
        k8s_namespace, body, dry_run="All", _request_timeout=30
    )
    assert [c.name for c in answer.spec.template.spec.containers] == [k8s_collect.CONTAINER]


async def test_a_pod_that_ended_before_its_collector_is_a_warning_at_once(
    conn: messaging.Messaging, settings: Settings
) -> None:
    job = results_job()
    hooks = type("Hooks", (), {"results": Collector(conn, job, settings)})()
    failed = {
        "metadata": {"name": "p"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": k8s_collect.CONTAINER, "state": {"waiting": {}}}]},
    }
    await k8s_collect.collect(object(), hooks, job, pod=failed, stopped=False)
    assert hooks.results.finish()["warnings"][0].startswith("results not collected: the pod ended before its collector")
    stopped = type("Hooks", (), {"results": Collector(conn, job, settings)})()
    await k8s_collect.collect(object(), stopped, job, pod=failed, stopped=True)
    assert "stopped or timed-out" in stopped.results.finish()["warnings"][0]
