"""What a job's containers and volume are made of on the engine: names, labels, limits, hardening, ``/shared``.

Pure: builds the SDK's keyword arguments, calls nothing. Labels (``hades.job-id``, ``hades.scope`` …) let a
restarted dispatcher find and remove its own deployment's leftovers and follow an earlier attempt's steps.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.jobs import Job, Step
from runtime.settings import DispatchSettings

LABEL_JOB_ID = "hades.job-id"
LABEL_ATTEMPT = "hades.attempt"
LABEL_STEP_ID = "hades.step-id"
LABEL_SCOPE = "hades.scope"
SHARED_PATH = "/shared"
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
"""All capabilities are dropped, then these few added back. Build scripts run as root inside their image and
still need to own, chmod and write files they did not create (CHOWN, DAC_OVERRIDE, FOWNER, FSETID: package
managers, ``cp -p``, fixing permissions on ``/shared``), to drop to another user (SETUID, SETGID: ``su``,
``gosu``, test runners) and to stop their own processes (KILL). Docker's other defaults are left out: NET_RAW
(raw sockets, spoofing), MKNOD (device nodes), AUDIT_WRITE, SETPCAP, SETFCAP, SYS_CHROOT and NET_BIND_SERVICE
serve no build and widen what a hostile script can try."""

TMP_TMPFS_BYTES = 64 * 1024**2
"""With a read-only root (``HADES_STEP_READ_ONLY_ROOT``), a step's /tmp is a tmpfs of this size (its memory)."""

MIN_NANO_CPUS = 10_000_000
"""0.01 cores, the schema's minimum: a smaller (or rounded-down) limit would become 0, which means unlimited."""
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def labels(job_id: str, *, attempt: int, scope: str, step_id: int | None = None) -> dict[str, str]:
    found = {LABEL_JOB_ID: job_id, LABEL_ATTEMPT: str(attempt), LABEL_SCOPE: scope}
    if step_id is not None:
        found[LABEL_STEP_ID] = str(step_id)
    return found


def step_container(
    job: Job, step: Step, *, attempt: int, volume: str, scope: str, cpus: float, settings: DispatchSettings
) -> dict[str, Any]:
    """The step's container: ``sh -c <script>`` in ``/shared`` with the step's limits, hardened."""
    spec: dict[str, Any] = {
        "image": step.image,
        "name": f"hades-{safe(job.id)}-a{attempt}-s{step.id}",
        "labels": labels(job.id, attempt=attempt, scope=scope, step_id=step.id),
        "environment": job.environment(step),
        "working_dir": SHARED_PATH,
        "volumes": {volume: {"bind": SHARED_PATH, "mode": "rw"}},
        "network_mode": step.network,
        "nano_cpus": nano_cpus(cpus),
        "mem_limit": step.memory_bytes,
        "memswap_limit": step.memory_swap_bytes,
        "pids_limit": step.pids_limit,
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "cap_add": list(CAPABILITIES),
        # docker-init (tini) as PID 1: a script that never traps SIGTERM still stops on a cancel (as PID 1 it
        # would ignore it for the whole grace), and zombies of fork-happy job code are reaped.
        "init": True,
        # The engine's own copy of the output (we read it live from the attach stream) is capped too, so a
        # step printing without end cannot fill the host's disk.
        "log_config": {"type": "json-file", "config": {"max-size": engine_log_size(settings), "max-file": "1"}},
        "stdin_open": False,
        "tty": False,  # keeps stdout and stderr apart
    }
    if shared_volume_options(settings.shared_max_bytes, settings.step_user):
        # No copy-up: the engine would give the tmpfs root the owner of the image's (or the working dir's)
        # /shared, i.e. root, and undo its ``uid=``.
        spec["volumes"] = {volume: {"bind": SHARED_PATH, "mode": "rw,nocopy"}}
    if settings.step_user:  # not root: /shared is a tmpfs owned by this user (shared_volume_options)
        spec["user"] = settings.step_user
    if settings.step_read_only_root:
        spec["read_only"] = True
        spec["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={TMP_TMPFS_BYTES}"}
    if step.script.strip():
        # The entrypoint, not just the command: an image's own ENTRYPOINT would otherwise get ``sh -c …`` as
        # its arguments, and Kubernetes' ``command`` (the other executor) replaces the entrypoint too.
        spec["entrypoint"] = ["sh", "-c"]
        spec["command"] = [step.script]
    return spec


def shared_holder(job: Job, *, image: str, attempt: int, volume: str, scope: str, user: str) -> dict[str, Any]:
    """The container that keeps a tmpfs ``/shared`` mounted between steps: it waits on its never-written stdin
    (``read``, built into ``sh``) with no network, capability or writable root."""
    spec: dict[str, Any] = {
        "image": image,
        "name": f"hades-{safe(job.id)}-a{attempt}-shared",
        "labels": labels(job.id, attempt=attempt, scope=scope),
        "entrypoint": ["sh", "-c", "read _"],
        "stdin_open": True,
        "volumes": {volume: {"bind": SHARED_PATH, "mode": "ro,nocopy"}},
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": 16 * 1024**2,
        "pids_limit": 4,
        "nano_cpus": MIN_NANO_CPUS,
        "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
    }
    if user:
        spec["user"] = user
    return spec


def engine_log_size(settings: DispatchSettings) -> str:
    return f"{max(1, -(-settings.job_log_max_bytes // 2**20))}m"


def shared_volume_options(max_bytes: int, user: str) -> dict[str, str]:
    """The local driver's options for a job's /shared: none (a disk volume) unless it has a size limit or the
    steps run as a non-root user; then a tmpfs, of ``max_bytes`` if set, owned by that user if set.

    Docker's local volumes on overlay2/ext4 have no quota of their own, and an empty named volume's root belongs
    to root (no ``chown`` option): a tmpfs is the mechanism that has both. Its pages count against the memory
    limit of the step that writes them (an over-full /shared fails with ENOSPC, or the step is OOM-killed first
    when its memory limit is smaller) and stay in the host's memory until the job's volume is removed."""
    if not max_bytes and not user:
        return {}
    mount = ["nosuid", "nodev"]
    if max_bytes:
        mount.append(f"size={max_bytes}")
    if user:
        uid, _, gid = user.partition(":")
        mount += [f"uid={uid}", f"gid={gid or uid}", "mode=0755"]
    return {"type": "tmpfs", "device": "tmpfs", "o": ",".join(mount)}


def volume_name(job_id: str, attempt: int) -> str:
    """The job volume of one attempt (an adopting attempt finds its predecessor's by this name)."""
    return f"hades-{safe(job_id)}-a{attempt}"


def nano_cpus(cores: float) -> int:
    """The engine's ``NanoCpus`` for a number of cores: never 0, which the engine reads as "no limit at all"."""
    return max(round(cores * 1e9), MIN_NANO_CPUS)


def safe(text: str) -> str:
    return _NAME_UNSAFE.sub("-", text)
