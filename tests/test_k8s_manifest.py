"""The Job manifest: what each job becomes, and that every shape validates against the oldest and newest schemas
kubernetes-validate ships (and, with a cluster, against the real 1.20 API server by a server-side dry run)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from functions.dispatch.executors.k8s import manifest, podstate
from runtime.jobs import Job, JobId, Step, StepStatus
from runtime.settings import Settings

SCHEMA_VERSIONS = [kubernetes_validate.utils.all_versions()[0], kubernetes_validate.utils.latest_version()]
"""The installed kubernetes-validate ships schemas from 1.25 on (none for 1.20: that one is the dry run below)."""


def make_step(step_id: int, script: str = "echo hi", **extra: Any) -> Step:
    values: dict[str, Any] = {
        "id": step_id,
        "name": f"step {step_id}",
        "image": "local/busybox:test",
        "script": script,
        "metadata": {},
        "continue_on_error": False,
        "cpu_limit": 1.0,
        "memory_bytes": 512 * 1024**2,
        "memory_swap_bytes": 512 * 1024**2,
        "pids_limit": 256,
        "network": "none",
    }
    values.update(extra)
    return Step(**values)


def make_job(*steps: Step, job_id: str = "6c0c5b1e-0000-4000-8000-000000000001", **extra: Any) -> Job:
    values: dict[str, Any] = {
        "id": JobId(job_id),
        "name": "manifest test",
        "priority": 3,
        "metadata": {"GLOBAL": "g", "hades.tum.de/priority": "3"},
        "steps": steps,
        "timeout_s": 600,
        "submitted_at": "2026-12-01T10:00:00.000Z",
    }
    values.update(extra)
    return Job(**values)


FULL_ENV = {
    "HADES_SCOPE": "prod",
    "HADES_K8S_NAMESPACE": "hades-jobs",
    "HADES_K8S_IMAGE_PULL_POLICY": "Never",
    "HADES_K8S_NODE_SELECTOR": "pool=jobs,kubernetes.io/arch=amd64",
    "HADES_K8S_TOLERATIONS": json.dumps([{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}]),
    "HADES_K8S_SERVICE_ACCOUNT": "hades-job",
    "HADES_K8S_IMAGE_PULL_SECRETS": "registry-a,registry-b",
    "HADES_K8S_TTL_AFTER_FINISHED_SECONDS": "60",
}
CONTAINED_ENV = {
    "HADES_STEP_USER": "65534:65533",
    "HADES_STEP_READ_ONLY_ROOT": "true",
    "HADES_SHARED_MAX_BYTES": str(512 * 1024**2),
}
SHAPES = {
    "one step": (make_job(make_step(1)), {}),
    "three steps": (make_job(make_step(1), make_step(2, continue_on_error=True), make_step(3)), {}),
    "no script": (make_job(make_step(1, ""), make_step(2, "")), {}),
    "odd limits": (make_job(make_step(1, cpu_limit=0.25, memory_bytes=3 * 1024**3 + 512)), {}),
    "every setting": (make_job(make_step(1), make_step(2)), FULL_ENV),
    "contained": (make_job(make_step(1), make_step(2)), CONTAINED_ENV),
}


def build(job: Job, env: dict[str, str] | None = None) -> dict[str, Any]:
    return manifest.build_job(job, attempt=1, settings=Settings.from_env(env or {}))


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_validates_strictly(shape: str, version: str) -> None:
    job, env = SHAPES[shape]
    kubernetes_validate.validate(build(job, env), version, strict=True)


def test_steps_become_init_containers_in_order_and_the_last_the_container() -> None:
    body = build(make_job(make_step(1), make_step(2), make_step(3)))
    pod = body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["step-1", "step-2"]
    assert [c["name"] for c in pod["containers"]] == ["step-3"]
    assert "initContainers" not in build(make_job(make_step(1)))["spec"]["template"]["spec"]


def test_the_job_is_named_labelled_bounded_and_hardened() -> None:
    job = make_job(make_step(1))
    body = build(job, {"HADES_SCOPE": "prod"})
    assert body["metadata"]["name"] == f"hades-{job.id}"
    labels = body["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "hades"
    assert labels["hades.io/job-id"] == job.id and labels["hades.io/scope"] == "prod"
    assert body["spec"]["template"]["metadata"]["labels"] == labels
    spec, pod = body["spec"], body["spec"]["template"]["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (0, 600)
    assert pod["activeDeadlineSeconds"] == 600 and spec["activeDeadlineSeconds"] > 600
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["volumes"] == [{"name": "shared", "emptyDir": {}}]
    [container] = pod["containers"]
    assert container["workingDir"] == "/shared"
    assert container["volumeMounts"] == [{"name": "shared", "mountPath": "/shared"}]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_env_is_the_docker_environment_without_names_kubernetes_refuses() -> None:
    job = make_job(make_step(1, metadata={"GLOBAL": "step wins"}))
    env = {e["name"]: e["value"] for e in build(job)["spec"]["template"]["spec"]["containers"][0]["env"]}
    expected = {k: v for k, v in job.environment(job.steps[0]).items() if "/" not in k}
    assert env == expected and env["GLOBAL"] == "step wins" and env["HADES_STEP_ID"] == "1"
    assert "hades.tum.de/priority" not in env


def test_resources_use_binary_memory_units_and_cores() -> None:
    step = make_step(1, cpu_limit=0.5, memory_bytes=2 * 1024**3)
    resources = manifest.resources(step, request_fraction=0.1)
    assert resources["limits"] == {"cpu": "500m", "memory": "2Gi"}
    assert resources["requests"] == {"cpu": "50m", "memory": "204Mi"}
    assert manifest.resources(make_step(1, cpu_limit=2.0), request_fraction=1)["limits"]["cpu"] == "2"


def test_the_wrapper_keeps_the_exit_code_and_continue_on_error_exits_zero() -> None:
    failing = manifest.command(make_step(1, "exit 3"))
    assert failing is not None and failing[-1] == "exit 3" and failing[2].endswith('exit "$code"')
    going_on = manifest.command(make_step(1, "exit 3", continue_on_error=True))
    assert going_on is not None and going_on[2].endswith("exit 0")
    assert manifest.command(make_step(1, "  ")) is None  # the image's own command
    assert manifest.exit_code({"exitCode": 0, "message": "hades-exit=3"}) == 3
    assert manifest.exit_code({"exitCode": 137, "message": "oops"}) == 137


def test_names_are_dns_labels_even_for_odd_ids() -> None:
    assert manifest.job_name("6C0C_x/y") != manifest.job_name("6c0c-x-y")
    for job_id in ("6C0C_x/y", "a" * 80, "--x--"):
        name = manifest.job_name(job_id)
        assert len(name) <= manifest.MAX_NAME_CHARS and name[-1] != "-"
        assert all(c.islower() or c.isdigit() or c == "-" for c in name)


def test_every_setting_reaches_the_pod() -> None:
    pod = build(make_job(make_step(1)), FULL_ENV)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "jobs", "kubernetes.io/arch": "amd64"}
    assert pod["tolerations"] == [{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "hades-job"
    assert pod["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    assert pod["containers"][0]["imagePullPolicy"] == "Never"


def test_the_containment_settings_reach_every_container_and_the_volumes() -> None:
    default = build(make_job(make_step(1)))["spec"]["template"]["spec"]
    assert default["volumes"] == [{"name": "shared", "emptyDir": {}}]
    assert "runAsUser" not in default["containers"][0]["securityContext"]
    assert "readOnlyRootFilesystem" not in default["containers"][0]["securityContext"]

    pod = build(make_job(make_step(1), make_step(2)), CONTAINED_ENV)["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 65533  # /shared writable for the step's group
    assert pod["volumes"] == [
        {"name": "shared", "emptyDir": {"sizeLimit": str(512 * 1024**2)}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    for spec in [*pod["initContainers"], *pod["containers"]]:
        context = spec["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (65534, 65533, True)
        assert context["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in spec["volumeMounts"]


def test_container_states_become_step_results() -> None:
    step = make_step(1, memory_bytes=32 * 1024**2)
    times = {"startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:02Z"}
    ok = podstate.step_result(step, {"exitCode": 0, "reason": "Completed", **times})
    assert (ok.status, ok.exit_code, ok.duration_s, ok.started_at) == (
        StepStatus.SUCCEEDED,
        0,
        2.0,
        "2026-12-01T10:00:00.000Z",
    )
    oom = podstate.step_result(step, {"exitCode": 137, "reason": "OOMKilled", **times})
    assert oom.status is StepStatus.FAILED and oom.reason == "killed: out of memory (limit 32M)"
    kept = podstate.step_result(step, {"exitCode": 0, "reason": "Completed", "message": "hades-exit=2", **times})
    assert (kept.status, kept.exit_code, kept.reason) == (StepStatus.FAILED, 2, "exited with code 2")


def test_pod_failures_are_told_apart() -> None:
    evicted = {"status": {"phase": "Failed", "reason": "Evicted", "message": "node low on memory"}}
    assert podstate.pod_failure(evicted) == "Evicted: node low on memory"
    assert podstate.pod_failure({"status": {"phase": "Failed"}}) is None  # a step failed: the steps say why
    pending = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}
    assert podstate.unschedulable(pending) == "no node fits"


@pytest.mark.k8s
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_accepted_by_the_real_api_server(shape: str, k8s_client: Any, k8s_namespace: str) -> None:
    """A server-side dry run on the cluster of KUBECONFIG (1.20 in ../shared/k8s-local): nothing is created."""
    import kubernetes

    job, env = SHAPES[shape]
    body = build(job, {**env, "HADES_K8S_NAMESPACE": k8s_namespace})
    batch = kubernetes.client.BatchV1Api(k8s_client)
    answer = batch.create_namespaced_job(k8s_namespace, body, dry_run="All", _request_timeout=30)
    assert answer.spec.template.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert answer.spec.ttl_seconds_after_finished == body["spec"]["ttlSecondsAfterFinished"]
