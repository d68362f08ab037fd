"""The Kubernetes manifests (kustomize/): what each overlay promises, that the checker of `make manifests-check`
really refuses bad manifests, and — marked k8s, with KUBECONFIG — that a real API server accepts every overlay
(`kubectl apply --dry-run=server`) and gives dispatch's account exactly the permissions it needs.

The renderer and validators are tools/manifests_check.py's (loaded by path: tools/ is not a package).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from functions.logs import scaling

ROOT = Path(__file__).resolve().parent.parent


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manifests_check", ROOT / "tools" / "manifests_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["manifests_check"] = module
    spec.loader.exec_module(module)
    return module


mc = _load_checker()
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def kubectl() -> str:
    return str(mc.kubectl_binary())


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    return dict(mc.crd_schemas())


@pytest.fixture(scope="module")
def dev(kubectl: str) -> Objects:
    return list(mc.render(kubectl, mc.Target("overlays/dev", mc.OVERLAYS / "dev")))


@pytest.fixture(scope="module")
def production(kubectl: str) -> Objects:
    return list(mc.render(kubectl, mc.Target("overlays/production", mc.OVERLAYS / "production")))


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert found, f"no {kind}/{name}"
    return found[0]


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    return dict(find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0])


# ---------------------------------------------------------------- every rendering


def test_every_target_renders_validates_and_keeps_the_invariants(kubectl: str, crds: Any) -> None:
    """What `make manifests-check` does, target by target, so a failure names the target."""
    names = [t.name for t in mc.targets()]
    assert {"overlays/dev", "overlays/production", "base", "base+keda+monitoring+networkpolicy"} <= set(names)
    assert len(names) == 2 + 2 ** len(mc.component_names())
    for target in mc.targets():
        objects = mc.render(kubectl, target)
        assert mc.validate(objects, crds) == [], target.name
        assert mc.invariants(target.name, objects) == [], target.name


def test_the_monitoring_component_is_in_sync_with_manifests() -> None:
    assert mc.stale_generated_files() == []


def test_no_kustomization_uses_common_labels() -> None:
    assert mc.kustomization_errors() == []
    base = yaml.safe_load((mc.BASE / "kustomization.yaml").read_text())
    assert base["labels"][0]["includeSelectors"] is False


def test_the_checker_refuses_unknown_fields_and_wrong_types(dev: Objects, crds: Any) -> None:
    deployment = copy.deepcopy(find(dev, "Deployment", "hades-dispatch"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    scaled = copy.deepcopy(find(dev, "ScaledObject", "hades-dispatch"))
    scaled["spec"]["minReplicas"] = 0
    monitor = copy.deepcopy(find(dev, "PodMonitor", "hades"))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    rule = copy.deepcopy(find(dev, "PrometheusRule", "hades"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5
    errors = "\n".join(mc.validate([deployment, scaled, monitor, rule], crds))
    for expected in ("'resource' was unexpected", "'minReplicas' was unexpected", "'intervall' was unexpected"):
        assert expected in errors
    assert "5 is not of type 'string'" in errors


def test_the_invariants_catch_a_grace_shorter_than_the_shutdown(dev: Objects) -> None:
    broken = copy.deepcopy(dev)
    find(broken, "Deployment", "hades-dispatch")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    find(broken, "PodDisruptionBudget", "hades-logs")["spec"] = {"minAvailable": 1}
    find(broken, "Role", "hades-dispatch")["rules"][0]["verbs"].append("patch")
    del find(broken, "Deployment", "hades-submit")["spec"]["template"]["spec"]["enableServiceLinks"]
    find(broken, "StatefulSet", "nats")["spec"]["template"]["spec"]["enableServiceLinks"] = True
    errors = "\n".join(mc.invariants("dev", broken))
    assert "Deployment/hades-submit: needs enableServiceLinks: false" in errors
    assert "StatefulSet/nats: needs enableServiceLinks: false" in errors
    assert "terminationGracePeriodSeconds 30 < HADES_SHUTDOWN_GRACE_SECONDS 20" in errors
    assert "PodDisruptionBudget/hades-logs" in errors
    assert "Role/hades-dispatch" in errors


# ---------------------------------------------------------------- what the overlays promise


def settings_of(objects: Objects) -> dict[str, str]:
    return dict(find(objects, "ConfigMap", "hades-settings")["data"])


def test_dev_runs_nats_with_jetstream_on_a_volume_and_monitoring_on(dev: Objects) -> None:
    nats = find(dev, "StatefulSet", "nats")
    args = nats["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--jetstream" in args and "--http_port=8222" in args and "--store_dir=/data" in args
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    ports = {p["port"] for p in find(dev, "Service", "nats")["spec"]["ports"]}
    assert ports == {4222, 8222}
    settings = settings_of(dev)
    assert settings["HADES_EXECUTOR"] == "kubernetes"
    assert settings["HADES_NATS_URL"] == "nats://nats.hades.svc:4222"
    assert settings["HADES_K8S_NAMESPACE"] == "hades-jobs"
    assert settings["HADES_K8S_SERVICE_ACCOUNT"] == "hades-job"


def test_dev_has_auth_off_and_small_pods(dev: Objects) -> None:
    secret = find(dev, "Secret", "hades-secrets")
    assert set(secret["data"].values()) == {""}
    for name in ("hades-submit", "hades-logs", "hades-dispatch"):
        assert container(dev, name)["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
        assert container(dev, name)["image"] == "hades:dev"


def test_production_pins_digests_uses_external_nats_and_needs_the_secret(production: Objects) -> None:
    settings = settings_of(production)
    assert "nats.hades.svc" not in settings["HADES_NATS_URL"] and settings["HADES_NATS_REPLICAS"] == "3"
    assert not [o for o in production if o["kind"] in ("Secret", "StatefulSet")]
    api_key = next(e for e in container(production, "hades-submit")["env"] if e["name"] == "HADES_API_KEY")
    assert api_key["valueFrom"]["secretKeyRef"] == {"name": "hades-secrets", "key": "api-key"}  # not optional
    for name in ("hades-submit", "hades-logs", "hades-dispatch"):
        assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", container(production, name)["image"])
    scaled = {o["metadata"]["name"]: o["spec"] for o in production if o["kind"] == "ScaledObject"}
    assert scaled["hades-submit"]["minReplicaCount"] == 2 and scaled["hades-logs"]["minReplicaCount"] == 2
    endpoints = {
        t["metadata"]["natsServerMonitoringEndpoint"]
        for s in scaled.values()
        for t in s["triggers"]
        if t["type"] == "nats-jetstream"
    }
    assert endpoints == {"nats.nats.svc:8222"}
    assert [t["type"] for t in scaled["hades-dispatch"]["triggers"]] == ["metrics-api"]  # the component's, in-cluster


def test_dispatch_grace_matches_the_shutdown_settings_in_every_overlay(dev: Objects, production: Objects) -> None:
    for objects in (dev, production):
        settings = settings_of(objects)
        pod = find(objects, "Deployment", "hades-dispatch")["spec"]["template"]["spec"]
        budget = float(settings["HADES_SHUTDOWN_GRACE_SECONDS"]) + float(settings["HADES_SHUTDOWN_TIMEOUT_SECONDS"])
        assert budget + mc.SHUTDOWN_MARGIN_S <= pod["terminationGracePeriodSeconds"] <= budget + 30


def test_dispatch_scales_from_zero_on_every_tenants_jobs_and_logs_never_below_one(dev: Objects) -> None:
    dispatch = find(dev, "ScaledObject", "hades-dispatch")["spec"]
    assert dispatch["minReplicaCount"] == 0
    port = find(dev, "Service", "hades-logs")["spec"]["ports"][0]["port"]
    assert dispatch["triggers"] == [
        {
            "type": "metrics-api",
            "name": "jobs",
            "metadata": {
                "url": f"http://hades-logs.hades.svc:{port}{scaling.ROUTE}",
                "valueLocation": "jobs",
                "targetValue": settings_of(dev)["HADES_CONCURRENCY"],
                "activationTargetValue": "0",
            },
        }
    ]
    logs = find(dev, "ScaledObject", "hades-logs")["spec"]
    assert logs["minReplicaCount"] == 1 and logs["triggers"][0]["metadata"]["consumer"] == "collect-logs"
    submit = find(dev, "ScaledObject", "hades-submit")["spec"]
    assert submit["minReplicaCount"] >= 1 and submit["triggers"][0]["type"] == "cpu"


def test_the_invariants_catch_dispatch_scaling_on_the_lane_consumers(dev: Objects) -> None:
    """The triggers before tenants had their own consumers: they count only the default tenant's jobs now."""
    broken = copy.deepcopy(dev)
    find(broken, "ScaledObject", "hades-dispatch")["spec"]["triggers"] = [
        {
            "type": "nats-jetstream",
            "metadata": {"stream": "HADES_JOBS", "consumer": f"dispatch-{lane}", "lagThreshold": "4"},
        }
        for lane in ("high", "normal", "low")
    ]
    errors = "\n".join(mc.invariants("dev", broken))
    assert "hades-dispatch: one metrics-api trigger on `jobs` of http://hades-logs.hades.svc:8081/scaling" in errors
    assert "woken by the first job" in errors and "targetValue must be HADES_CONCURRENCY (4)" in errors
    assert mc.invariants("dev", dev) == []


def test_consumer_and_stream_names_are_the_ones_the_code_uses(dev: Objects) -> None:
    """The KEDA triggers name consumers the code creates: a rename there must show up here."""
    code = "\n".join(p.read_text() for p in (ROOT / "runtime").rglob("*.py"))
    code += "\n".join(p.read_text() for p in (ROOT / "functions").rglob("*.py"))
    for scaled in (o for o in dev if o["kind"] == "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "nats-jetstream":
                for key in ("stream", "consumer"):
                    name = trigger["metadata"][key]
                    assert f'"{name}"' in code or f'"{name.split("-")[0]}-' in code, name


def test_the_dashboard_and_rules_use_metrics_that_exist(dev: Objects) -> None:
    metrics_code = "\n".join(p.read_text() for p in (ROOT / "runtime").rglob("metrics*.py"))
    defined = set(re.findall(r'"(hades_[a-z_]+)"', metrics_code))
    dashboard = find(dev, "ConfigMap", "hades-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = dashboard["data"]["hades-dashboard.json"] + yaml.safe_dump(find(dev, "PrometheusRule", "hades")["spec"])
    used = set(re.findall(r"\b(hades_[a-z_]+)", text))
    assert used, "no hades_* metric used"
    for name in used:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert base in defined or base.removesuffix("_total") in defined, name


def test_the_lock_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text().lower()
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert re.search(rf"^{re.escape(name)}==", lock, re.MULTILINE), f"{name} is not in requirements.lock"


# ---------------------------------------------------------------- a real API server (KUBECONFIG)


def run(kubectl: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([kubectl, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out


def for_server(objects: Objects, served: set[str]) -> Objects:
    """Older API servers (the 1.20 test cluster) serve PodDisruptionBudget only as policy/v1beta1, with the same
    fields we use; everything else is sent as rendered."""
    if "policy/v1" in served:
        return objects
    converted = copy.deepcopy(objects)
    for obj in converted:
        if obj["apiVersion"] == "policy/v1":
            obj["apiVersion"] = "policy/v1beta1"
    return converted


def crd_for_server(path: Path) -> dict[str, Any]:
    """The vendored CRD as an older API server takes it: without CEL rules (x-kubernetes-validations, 1.25+)
    and without `default: ""`, which 1.20's defaulting validation misreads as null."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: strip(v)
                for k, v in node.items()
                if k != "x-kubernetes-validations" and not (k == "default" and v == "")
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return dict(strip(yaml.safe_load(path.read_text())))


@pytest.fixture(scope="module")
def cluster(kubectl: str) -> Iterator[set[str]]:
    """The CRDs installed, the Hades namespaces present; yields the served API versions. Removes the namespaces
    it created (CRDs stay: other tests and users may rely on them)."""
    crds = [crd_for_server(p) for p in sorted(mc.CRDS.glob("*.yaml"))]
    run(kubectl, "apply", "-f", "-", stdin=yaml.safe_dump_all(crds))
    for crd in crds:
        run(kubectl, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")
    for ns in ("hades", "hades-jobs"):  # a previous run's namespace may still be terminating
        phase = run(kubectl, "get", "namespace", ns, "-o", "jsonpath={.status.phase}", check=False).stdout
        if phase == "Terminating":
            run(kubectl, "wait", "--for=delete", f"namespace/{ns}", "--timeout=90s")
    existing = set(run(kubectl, "get", "namespaces", "-o", "name").stdout.split())
    created = [ns for ns in ("hades", "hades-jobs") if f"namespace/{ns}" not in existing]
    for ns in created:
        run(kubectl, "create", "namespace", ns)
    try:
        yield set(run(kubectl, "api-versions").stdout.split())
    finally:
        for ns in created:
            run(kubectl, "delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.k8s
@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_the_api_server_accepts_every_overlay(kubectl: str, cluster: set[str], overlay: str) -> None:
    objects = for_server(mc.render(kubectl, mc.Target(overlay, mc.OVERLAYS / overlay)), cluster)
    out = run(kubectl, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(objects), check=False)
    assert out.returncode == 0, out.stderr
    accepted = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), out.stdout


@pytest.mark.k8s
def test_dispatch_may_do_exactly_what_it_needs_in_the_job_namespace(
    kubectl: str, cluster: set[str], dev: Objects
) -> None:
    """RBAC applied for real (impersonation needs real bindings), asked with `kubectl auth can-i`."""
    rbac = [o for o in dev if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    run(kubectl, "apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    try:
        dispatch = "system:serviceaccount:hades:hades-dispatch"
        job = "system:serviceaccount:hades-jobs:hades-job"

        def can(who: str, verb: str, resource: str, namespace: str = "hades-jobs") -> bool:
            out = run(kubectl, "auth", "can-i", verb, resource, "-n", namespace, f"--as={who}", check=False)
            return out.stdout.strip() == "yes"

        allowed = [(v, "jobs.batch") for v in ("create", "get", "list", "watch", "delete")]
        allowed += [(v, "pods") for v in ("get", "list", "watch")] + [("get", "pods/log")]
        for verb, resource in allowed:
            assert can(dispatch, verb, resource), f"dispatch cannot {verb} {resource}"
        denied = [
            ("update", "jobs.batch"),
            ("patch", "jobs.batch"),
            ("create", "pods"),
            ("delete", "pods"),
            ("create", "pods/exec"),
            ("get", "secrets"),
            ("list", "secrets"),
            ("get", "configmaps"),
            ("create", "cronjobs.batch"),
            ("create", "roles.rbac.authorization.k8s.io"),
        ]
        for verb, resource in denied:
            assert not can(dispatch, verb, resource), f"dispatch may {verb} {resource}"
        for namespace in ("hades", "default", "kube-system"):
            assert not can(dispatch, "create", "jobs.batch", namespace), f"dispatch may create jobs in {namespace}"
            assert not can(dispatch, "get", "secrets", namespace)
        for verb, resource in [("get", "pods"), ("list", "jobs.batch"), ("get", "secrets")]:
            assert not can(job, verb, resource), f"the job pods' account may {verb} {resource}"
    finally:
        run(
            kubectl,
            "delete",
            "-f",
            "-",
            "--ignore-not-found",
            "--wait=false",
            stdin=yaml.safe_dump_all(rbac),
            check=False,
        )
