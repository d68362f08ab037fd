"""The ``batch/v1`` Job of one Hades job: a plain dict, built without the client, so it is tested and validated alone.

Steps 1..n-1 are ``initContainers`` (the kubelet runs them in order, each to its end) and step n is the one
container; all mount one ``emptyDir`` at ``/shared`` and start there. A script runs under a small ``sh`` wrapper
that writes the script's exit code to the termination message: a ``continue_on_error`` step then exits 0 (a failing
init container would end the pod) and its real code still comes back. Only fields Kubernetes 1.20 knows are used.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from functions.dispatch.results import k8s_collect
from runtime import units
from runtime.jobs import Job, Step
from runtime.settings import Settings

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "hades"
LABEL_JOB_ID = "hades.io/job-id"
LABEL_SCOPE = "hades.io/scope"
LABEL_ATTEMPT = "hades.io/attempt"
SHARED_PATH = "/shared"
SHARED_VOLUME = "shared"
TERMINATION_LOG = "/dev/termination-log"
CONTINUE_MARK = "hades-exit="
"""Prefix of the termination message a wrapped step writes: ``hades-exit=<code>``."""

_WRAPPER = 'sh -c "$1"; code=$?; printf "' + CONTINUE_MARK + '%d" "$code" > ' + TERMINATION_LOG + "; exit {exit}"
"""``sh -c WRAPPER sh SCRIPT``: the script runs as ``sh -c SCRIPT`` (as on Docker), then its code is recorded."""
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
"""What Kubernetes 1.20 accepts as a variable name; others (``hades.tum.de/priority``: no shell can read it
anyway) are left out, where Docker would pass them on."""
MAX_NAME_CHARS = 52
"""Job names stay short: the Job controller derives pod names (+6) and the ``job-name`` label (≤ 63) from them."""


def job_name(job_id: str) -> str:
    """``hades-<id>`` as a DNS-1123 label; an id that had to be changed or cut gets a hash so names stay unique."""
    safe = _DNS_UNSAFE.sub("-", job_id.lower()).strip("-")
    name = f"hades-{safe}"
    if safe != job_id or len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME_CHARS - 11].rstrip('-')}-{digest}"
    return name


def container_name(step: Step) -> str:
    return f"step-{step.id}"


def labels(job: Job, *, scope: str, attempt: int) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB_ID: job.id,
        LABEL_SCOPE: scope,
        LABEL_ATTEMPT: str(attempt),
    }


def selector(scope: str, job_id: str | None = None) -> str:
    """Label selector of this deployment's objects (of one job when ``job_id`` is given)."""
    parts = [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_SCOPE}={scope}"]
    if job_id is not None:
        parts.append(f"{LABEL_JOB_ID}={job_id}")
    return ",".join(parts)


def cpu_quantity(cores: float) -> str:
    millis = max(1, math.ceil(cores * 1000 - 1e-6))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size_bytes: int) -> str:
    return units.to_kubernetes_quantity(size_bytes)


def resources(step: Step, *, request_fraction: float) -> dict[str, dict[str, str]]:
    mebibyte = 1024**2
    request_bytes = max(mebibyte, int(step.memory_bytes * request_fraction) // mebibyte * mebibyte)
    return {
        "limits": {"cpu": cpu_quantity(step.cpu_limit), "memory": memory_quantity(step.memory_bytes)},
        "requests": {
            "cpu": cpu_quantity(step.cpu_limit * request_fraction),
            "memory": memory_quantity(min(request_bytes, step.memory_bytes)),
        },
    }


def command(step: Step) -> list[str] | None:
    """The container's command; None runs the image's own (an empty script, as on Docker)."""
    if not step.script.strip():
        return None
    wrapper = _WRAPPER.format(exit="0" if step.continue_on_error else '"$code"')
    return ["sh", "-c", wrapper, "sh", step.script]


def container(job: Job, step: Step, settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": container_name(step),
        "image": step.image,
        "imagePullPolicy": settings.kubernetes.image_pull_policy,
        "env": [{"name": k, "value": v} for k, v in job.environment(step).items() if _ENV_NAME.fullmatch(k)],
        "workingDir": SHARED_PATH,
        "volumeMounts": [{"name": SHARED_VOLUME, "mountPath": SHARED_PATH}],
        "resources": resources(step, request_fraction=settings.kubernetes.request_fraction),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "stdin": False,
        "tty": False,  # keeps the log a plain stream
    }
    dispatch = settings.dispatch
    if dispatch.step_user:  # HADES_STEP_USER, as the Docker executor's ``user``
        uid, _, gid = dispatch.step_user.partition(":")
        spec["securityContext"].update(runAsUser=int(uid), runAsGroup=int(gid or uid))
        if int(uid) != 0:
            spec["securityContext"]["runAsNonRoot"] = True
    if dispatch.step_read_only_root:  # HADES_STEP_READ_ONLY_ROOT, with a writable /tmp
        spec["securityContext"]["readOnlyRootFilesystem"] = True
        spec["volumeMounts"].append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    cmd = command(step)
    if cmd is not None:
        # ``command`` replaces the image's ENTRYPOINT, as the Docker executor's ``entrypoint`` does.
        spec["command"] = cmd
    return spec


def build_job(job: Job, *, attempt: int, settings: Settings, timeout_s: int | None = None) -> dict[str, Any]:
    """The Job; ``timeout_s`` (default: the job's) is what is left of its deadline for a Job made afresh."""
    k8s = settings.kubernetes
    timeout_s = job.timeout_s if timeout_s is None else timeout_s
    job_labels = labels(job, scope=settings.dispatch.scope, attempt=attempt)
    *init_steps, last_step = job.steps
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The pod's own deadline makes a timeout visible on the pod (reason DeadlineExceeded), so the one pod
        # watch sees it; the Job's deadline below is the backstop when no dispatcher is left to act on it.
        "activeDeadlineSeconds": timeout_s,
        "terminationGracePeriodSeconds": math.ceil(settings.dispatch.cancel_grace_s),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": SHARED_VOLUME, "emptyDir": shared_empty_dir(settings)}],
        "containers": [container(job, last_step, settings)],
    }
    if settings.dispatch.step_user:  # the emptyDir's group: a non-root step can write /shared
        uid, _, gid = settings.dispatch.step_user.partition(":")
        pod_spec["securityContext"]["fsGroup"] = int(gid or uid)
    if settings.dispatch.step_read_only_root:
        pod_spec["volumes"].append({"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
    if init_steps:
        pod_spec["initContainers"] = [container(job, step, settings) for step in init_steps]
    if k8s.service_account:
        pod_spec["serviceAccountName"] = k8s.service_account
    if k8s.node_selector:
        pod_spec["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in k8s.tolerations]
    if k8s.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    k8s_collect.add_collector(pod_spec, job, settings)  # results: steps as init containers, then a collector
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job.id), "namespace": k8s.namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout_s + JOB_DEADLINE_MARGIN_S,
            "ttlSecondsAfterFinished": k8s.ttl_after_finished_s,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def shared_empty_dir(settings: Settings) -> dict[str, Any]:
    """/shared: an ``emptyDir`` on the node's disk, with ``HADES_SHARED_MAX_BYTES`` as its ``sizeLimit`` (the
    kubelet evicts the pod when it is exceeded, checked periodically rather than at the write)."""
    if settings.dispatch.shared_max_bytes:
        return {"sizeLimit": str(settings.dispatch.shared_max_bytes)}
    return {}


TMP_VOLUME = "tmp"
"""The writable /tmp of a step with a read-only root file system (a memory ``emptyDir`` of 64 MiB)."""

JOB_DEADLINE_MARGIN_S = 30
"""The Job's deadline is the pod's plus this, so the pod's own (the one with a clear reason) fires first."""


def exit_code(terminated: dict[str, Any]) -> int:
    """A terminated container's real exit code: the wrapper's record when it wrote one, else the container's."""
    message = (terminated.get("message") or "").strip()
    if message.startswith(CONTINUE_MARK):
        try:
            return int(message.removeprefix(CONTINUE_MARK))
        except ValueError:
            pass
    return int(terminated.get("exitCode", -1))
