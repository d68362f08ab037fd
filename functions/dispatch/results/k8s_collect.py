"""Kubernetes: a job's results read before its pod (and with it the ``emptyDir`` /shared) is gone.

When a job asks for results, its pod is changed in three ways (``add_collector``, called by the manifest):

- every step becomes an init container (the last one too), so the kubelet runs them in order and then the one
  main container, the collector; a scripted step is wrapped so that it always exits 0 — its real exit code goes to
  its termination message as before (``hades-exit=<code>``, which dispatch reads) — and a failing one (without
  ``continue_on_error``) leaves a mark in a small memory ``emptyDir``; the steps after it see the mark and exit at
  once without running, so a failed build still reaches the collector. (A step without a script runs the image's
  own command unwrapped: its failure ends the pod, and the results are not collected — a warning says so.)
- the collector container (``HADES_RESULTS_K8S_IMAGE``: it needs ``sh``, ``find``, ``tar`` and ``base64``) mounts
  /shared read-only and writes the files under the prefixes the globs need as a base64 tar stream to its log;
  files over ``HADES_RESULTS_MAX_FILE_BYTES`` stay out of the stream, named in its termination message instead.
- dispatch reads that log through ``pods/log`` — which the dispatcher's Role already grants to follow the steps'
  logs — and hands the stream to the same ``Collector`` as on Docker. No new permission: the pod needs no
  service-account token, and nothing but the dispatcher reads the stream.

A job that timed out or was cancelled has its pod deleted by its deadline or by dispatch, so nothing is collected
then (a warning says so); on Docker those jobs keep their results.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import shlex
import time
from collections.abc import Iterator
from typing import IO, Any

from functions.dispatch.results import match
from functions.dispatch.results.collector import ChunkReader, Collector, job_globs
from runtime.errors import HadesError
from runtime.jobs import Job
from runtime.settings import Settings

log = logging.getLogger(__name__)

CONTAINER = "hades-results"
MARK_VOLUME = "hades-results-mark"
MARK_DIR = "/.hades-results"
MARK = f"{MARK_DIR}/failed"
START_WAIT_S = 60.0
"""How long the collector's log may stay unavailable (the container not started yet) before giving up."""
_CONTINUE_MARK = "hades-exit="
_TERMINATION_LOG = "/dev/termination-log"


def step_command(script: str, *, continue_on_error: bool) -> list[str]:
    """A step's command in a pod that ends with the collector: always exits 0, records its real code."""
    mark = "" if continue_on_error else f" || : > {MARK}"
    wrapper = (
        f'[ -e {MARK} ] && exit 0; sh -c "$1"; code=$?; printf "{_CONTINUE_MARK}%d" "$code" > {_TERMINATION_LOG}; '
        f'[ "$code" -eq 0 ]{mark}; exit 0'
    )
    return ["sh", "-c", wrapper, "sh", script]


def collector_script(prefixes: list[str], max_file_bytes: int) -> str:
    paths = " ".join(shlex.quote(p) for p in prefixes) if "" not in prefixes else "."
    return (
        f"cd /shared || exit 0; "
        f"find {paths} -type f -size +{max_file_bytes}c 2>/dev/null | head -c 3000 > {_TERMINATION_LOG}; "
        f"find {paths} -type f ! -size +{max_file_bytes}c -exec tar -cf - {{}} \\; 2>/dev/null | base64"
    )


def add_collector(pod_spec: dict[str, Any], job: Job, settings: Settings) -> None:
    """Change a job pod's spec (``manifest.build_job``) to end with the collector; nothing when no results."""
    if not job.wants_results:
        return
    steps = [*pod_spec.get("initContainers", []), *pod_spec["containers"]]
    for container, step in zip(steps, job.steps, strict=True):
        if step.script.strip():
            container["command"] = step_command(step.script, continue_on_error=step.continue_on_error)
        container["volumeMounts"] = [*container["volumeMounts"], {"name": MARK_VOLUME, "mountPath": MARK_DIR}]
    pod_spec["initContainers"] = steps
    pod_spec["volumes"] = [
        *pod_spec["volumes"],
        {"name": MARK_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    prefixes = match.covering_prefixes(job_globs(job))  # one read per file: no prefix inside another
    last = steps[-1]
    collector: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.results.k8s_image,
        "imagePullPolicy": settings.kubernetes.image_pull_policy,
        "command": ["sh", "-c", collector_script(prefixes, settings.results.max_file_bytes)],
        "workingDir": "/shared",
        "volumeMounts": [{"name": "shared", "mountPath": "/shared", "readOnly": True}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "50m", "memory": "16Mi"}},
        "securityContext": dict(last["securityContext"]),
        "terminationMessagePath": _TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    pod_spec["containers"] = [collector]


async def collect(api: Any, hooks: Any, job: Job, *, pod: dict[str, Any] | None, stopped: bool) -> None:
    """Read the collector's log of ``pod`` into the run's collector; never raises (trouble is a warning)."""
    collector = getattr(hooks, "results", None)
    if not isinstance(collector, Collector) or collector.done:
        return
    collector.started = True
    collector.pool = getattr(api, "pool", None)
    if stopped or pod is None:
        collector.results.warn("results not collected: on Kubernetes a stopped or timed-out job's pod is deleted")
        return
    if _never_collected(pod):
        collector.results.warn(
            "results not collected: the pod ended before its collector ran (a step without a script failed)"
        )
        return
    name = pod["metadata"]["name"]
    try:
        await collector.read_tar(lambda: _open_log(api, name), parent="/shared")
        answer = await api.request("GET", "/api/v1/namespaces/{namespace}/pods/{name}", name=name)
    except HadesError as exc:
        collector.results.warn(f"results not collected: {exc.detail}"[:500])
        return
    except Exception as exc:  # the API's refusal (ApiError) without importing the SDK's door here
        collector.results.warn(f"results not collected: {exc}"[:500])
        return
    for status in (answer.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            message = ((status.get("state") or {}).get("terminated") or {}).get("message") or ""
            collector.skip_oversized([line.removeprefix("./") for line in message.splitlines() if line.strip()])


def _never_collected(pod: dict[str, Any]) -> bool:
    """The pod failed and its collector never started: an unwrapped step (no script) ended it."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return False
    states = [(s.get("state") or {}) for s in status.get("containerStatuses") or [] if s.get("name") == CONTAINER]
    return not any("running" in state or "terminated" in state for state in states)


def _open_log(api: Any, pod: str) -> IO[bytes] | None:
    """The collector's log as a decoded tar stream (blocking); None when it never ran."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            api.wait_token()
            response = api.open(
                "GET",
                "/api/v1/namespaces/{namespace}/pods/{name}/log",
                query=[("container", CONTAINER), ("follow", "true")],
                timeout_s=300,
                name=pod,
            )
            break
        except Exception as exc:  # waiting to start (400), or the API's trouble: ask again until the deadline
            if getattr(exc, "status", None) == 404 or time.monotonic() > deadline:
                raise OSError(f"the collector's log could not be read: {exc}") from None
            time.sleep(0.5)
    chunks = _decoded(response.stream(None, decode_content=False))
    return io.BufferedReader(ChunkReader(chunks, close=response.release_conn))


def _decoded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """base64 text (in lines, as ``base64`` writes it) to bytes, as it arrives."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        text, pending = pending[:cut], pending[cut + 1 :]
        try:
            yield base64.b64decode(b"".join(text.split()), validate=True)
        except binascii.Error as exc:
            raise OSError(f"the collector's stream is not base64: {exc}") from None
    if pending.strip():
        yield base64.b64decode(b"".join(pending.split()))
