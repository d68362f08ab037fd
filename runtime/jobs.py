"""The job model: ids, statuses, lanes, and the resolved job that travels from submit to dispatch.

A request document (already valid against the schema) becomes a ``Job`` with every operator default applied,
so a record and an executor see the effective limits, and the JetStream message needs no second validation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import repeat
from typing import Any, NewType

from runtime import netguard, schemas, tenants
from runtime.errors import Violation
from runtime.settings import LimitSettings
from runtime.subjects import Lane

JobId = NewType("JobId", str)

DEFAULT_PRIORITY: int = schemas.job_schema()["properties"]["priority"]["default"]
"""The schema says it once (3: the original's high queue); the model reads it from there."""


class JobStatus(StrEnum):
    QUEUED = "queued"  # stored in HADES_JOBS, waiting for a dispatcher
    RUNNING = "running"  # a dispatcher took it; steps are running
    SUCCEEDED = "succeeded"  # every step exited 0 (or failed with continue_on_error)
    FAILED = "failed"  # a step failed, or infrastructure trouble (see reason)
    TIMED_OUT = "timed_out"  # timeout_seconds ran out; the running step was killed
    CANCELLED = "cancelled"  # a user asked to stop it

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)

    @property
    def legacy(self) -> str:
        """The name the original Hades API uses."""
        return _LEGACY_STATUS[self]


_LEGACY_STATUS = {
    JobStatus.QUEUED: "Queued",
    JobStatus.RUNNING: "Running",
    JobStatus.SUCCEEDED: "Succeeded",
    JobStatus.FAILED: "Failed",
    JobStatus.TIMED_OUT: "Failed",
    JobStatus.CANCELLED: "Stopped",
}


class StepStatus(StrEnum):
    PENDING = "pending"  # not started yet
    RUNNING = "running"  # its container runs
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero, was killed, or could not start
    SKIPPED = "skipped"  # never ran: an earlier step failed, or the job was cancelled or timed out

    @property
    def terminal(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


PRIORITY_KEY = "hades.tum.de/priority"
"""The original's metadata key (and step environment variable) with the job's priority as 1, 2 or 3."""
PRIORITY_NAME_KEY = "hades.tum.de/priorityName"
"""The original's metadata key with the priority's name: ``high``, ``medium`` or ``low``."""
_LEGACY_PRIORITY = {Lane.HIGH: 3, Lane.NORMAL: 2, Lane.LOW: 1}
_LEGACY_LANE = {Lane.HIGH: "high", Lane.NORMAL: "medium", Lane.LOW: "low"}


def lane_for(priority: int) -> Lane:
    """The original Hades' rule: ≥ 3 high, 2 medium, ≤ 1 low."""
    if priority >= 3:
        return Lane.HIGH
    if priority == 2:
        return Lane.NORMAL
    return Lane.LOW


def new_job_id() -> JobId:
    """A fresh random UUID: never derived from a client's key, so a reused key cannot name an old job's id."""
    return JobId(str(uuid.uuid4()))


def is_job_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-22T16:56:11.042Z`` (cheap: it runs several times a job)."""
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Step:
    id: int
    name: str
    image: str
    script: str
    metadata: Mapping[str, str]
    continue_on_error: bool
    cpu_limit: float
    memory_bytes: int
    memory_swap_bytes: int
    pids_limit: int
    network: str

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "script": self.script,
            "metadata": dict(self.metadata),
            "continue_on_error": self.continue_on_error,
            "cpu_limit": self.cpu_limit,
            "memory_bytes": self.memory_bytes,
            "memory_swap_bytes": self.memory_swap_bytes,
            "pids_limit": self.pids_limit,
            "network": self.network,
        }

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            image=str(data["image"]),
            script=str(data["script"]),
            metadata={str(k): str(v) for k, v in dict(data["metadata"]).items()},
            continue_on_error=bool(data["continue_on_error"]),
            cpu_limit=float(data["cpu_limit"]),
            memory_bytes=int(data["memory_bytes"]),
            memory_swap_bytes=int(data["memory_swap_bytes"]),
            pids_limit=int(data["pids_limit"]),
            network=str(data["network"]),
        )


SHARED_PREFIX = "/shared/"


@dataclass(frozen=True)
class Artifact:
    """One ``artifacts`` entry: a path or glob relative to /shared, and the name to keep it under (or None)."""

    path: str
    name: str | None = None

    def to_message(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name}

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> Artifact:
        name = data.get("name")
        return cls(path=str(data["path"]), name=str(name) if name else None)


def shared_relative(path: str) -> str:
    """A document's path or glob relative to /shared (the schema allows both spellings)."""
    return path.removeprefix(SHARED_PREFIX)


@dataclass(frozen=True)
class Job:
    id: JobId
    name: str
    priority: int
    metadata: Mapping[str, str]
    steps: tuple[Step, ...]
    timeout_s: int
    submitted_at: str
    callback_url: str | None = None
    status_callback_url: str | None = None
    origin: str = "jobs"
    """The route that took the job: ``jobs`` (POST /jobs) or ``build`` (the original's POST /build, whose
    callback carries the original's body)."""
    artifacts: tuple[Artifact, ...] = ()
    """Files to keep after the last step (paths or globs relative to /shared)."""
    junit_reports: tuple[str, ...] = ()
    """Globs (relative to /shared) of JUnit XML reports to parse into the record's test summary."""
    tenant: str = tenants.DEFAULT
    """Who the job is charged to (``runtime.tenants``); a message stored before tenants existed has none."""
    lane: Lane = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lane", lane_for(self.priority))

    def environment(self, step: Step) -> dict[str, str]:
        """Job metadata, then step metadata (step wins), then the variables every step sees."""
        env = {**self.metadata, **step.metadata}
        env.update(
            HADES_JOB_ID=self.id,
            HADES_JOB_NAME=self.name,
            HADES_STEP_ID=str(step.id),
            HADES_STEP_NAME=step.name,
            UUID=self.id,
            JOB_NAME=self.name,
        )
        # The original's scheduler writes these into the job metadata (shared/prio.go), so steps see them.
        env[PRIORITY_KEY] = str(_LEGACY_PRIORITY[self.lane])
        env[PRIORITY_NAME_KEY] = _LEGACY_LANE[self.lane]
        return env

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "priority": self.priority,
            "lane": str(self.lane),
            "metadata": dict(self.metadata),
            "timeout_seconds": self.timeout_s,
            "callback_url": self.callback_url,
            "status_callback_url": self.status_callback_url,
            "origin": self.origin,
            "tenant": self.tenant,
            "submitted_at": self.submitted_at,
            "steps": [step.to_message() for step in self.steps],
            **self._results_message(),
        }

    def _results_message(self) -> dict[str, Any]:
        """Only when asked for: a job without results travels exactly as before."""
        found: dict[str, Any] = {}
        if self.artifacts:
            found["artifacts"] = [a.to_message() for a in self.artifacts]
        if self.junit_reports:
            found["reports"] = {"junit": list(self.junit_reports)}
        return found

    @property
    def wants_results(self) -> bool:
        return bool(self.artifacts or self.junit_reports)

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> Job:
        """Rebuild a job from its JetStream message; ``KeyError``/``ValueError``/``TypeError`` if malformed."""
        return cls(
            id=JobId(str(data["id"])),
            name=str(data["name"]),
            priority=int(data["priority"]),
            metadata={str(k): str(v) for k, v in dict(data["metadata"]).items()},
            steps=tuple(Step.from_message(s) for s in data["steps"]),
            timeout_s=int(data["timeout_seconds"]),
            submitted_at=str(data["submitted_at"]),
            callback_url=data.get("callback_url"),
            status_callback_url=data.get("status_callback_url"),
            origin=str(data.get("origin") or "jobs"),
            artifacts=tuple(Artifact.from_message(a) for a in data.get("artifacts") or ()),
            junit_reports=tuple(str(g) for g in (data.get("reports") or {}).get("junit") or ()),
            tenant=str(data.get("tenant") or tenants.DEFAULT),
        )

    def summary(self) -> dict[str, Any]:
        """What a job record shows about the job itself (no scripts or metadata values)."""
        return {
            "name": self.name,
            "priority": self.priority,
            "lane": str(self.lane),
            "submitted_at": self.submitted_at,
            "timeout_seconds": self.timeout_s,
            "callback_url": self.callback_url,
            "status_callback_url": self.status_callback_url,
            "origin": self.origin,
            "tenant": self.tenant,
            "steps": [{"id": s.id, "name": s.name, "image": s.image} for s in self.steps],
        }


def limit_violations(
    document: Mapping[str, Any], limits: LimitSettings, memory: Sequence[schemas.StepMemory] | None = None
) -> list[Violation]:
    """The operator's maxima and network allow-list, checked against a schema-valid document.

    ``memory``: the steps' sizes ``schemas.check`` parsed (document order); parsed here when not given.
    """
    violations: list[Violation] = []
    timeout = document.get("timeout_seconds")
    if timeout is not None and timeout > limits.max_timeout_s:
        violations.append(
            {
                "path": "/timeout_seconds",
                "message": f"must be at most {limits.max_timeout_s} (operator maximum)",
            }
        )
    for index, step in enumerate(document.get("steps", [])):
        at = f"/steps/{index}"
        cpu = step.get("cpu_limit")
        if cpu is not None and cpu > limits.max_cpu:
            violations.append({"path": f"{at}/cpu_limit", "message": f"must be at most {limits.max_cpu:g} cores"})
        sizes = memory[index] if memory is not None else schemas.StepMemory.of(step)
        violations.extend(schemas.memory_violations(sizes, at, limits))
        pids = step.get("pids_limit")
        if pids is not None and pids > limits.max_pids:
            violations.append({"path": f"{at}/pids_limit", "message": f"must be at most {limits.max_pids}"})
        network = step.get("network")
        if network is not None and network not in limits.allowed_networks:
            allowed = ", ".join(limits.allowed_networks)
            violations.append({"path": f"{at}/network", "message": f"is not allowed here; allowed: {allowed}"})
        image = step.get("image")
        refusal = netguard.image_refusal(image, limits.allowed_images) if isinstance(image, str) else None
        if refusal is not None:
            violations.append({"path": f"{at}/image", "message": refusal})
    return violations


async def registry_violations(
    document: Mapping[str, Any], limits: LimitSettings, *, resolve: netguard.Resolve = netguard.resolve_addresses
) -> list[Violation]:
    """The steps' registry names resolved (``netguard.registry_refusal``): each image once, all at the same time
    (at most ``netguard.RESOLVE_TIMEOUT_S`` in all)."""
    steps = document.get("steps", [])
    images = [step.get("image") if isinstance(step, Mapping) else None for step in steps]
    verdicts = await _registry_verdicts([i for i in images if isinstance(i, str)], limits, resolve)
    return [
        {"path": f"/steps/{index}/image", "message": refusal}
        for index, image in enumerate(images)
        if isinstance(image, str) and (refusal := verdicts[image]) is not None
    ]


async def image_refusals(
    job: Job, limits: LimitSettings, *, resolve: netguard.Resolve = netguard.resolve_addresses
) -> str | None:
    """Why dispatch must not pull one of the job's images (the operator's policy, or DNS, may have changed since
    submit): the same check as submit's, the registry names resolved again."""
    verdicts = await _registry_verdicts([step.image for step in job.steps], limits, resolve)
    for step in job.steps:
        if (refusal := verdicts[step.image]) is not None:
            return f"image {step.image!r} of step {step.id} {refusal}"
    return None


async def _registry_verdicts(
    images: Sequence[str], limits: LimitSettings, resolve: netguard.Resolve
) -> dict[str, str | None]:
    distinct = list(dict.fromkeys(images))
    refusals = await asyncio.gather(
        *(netguard.registry_refusal(image, limits.allowed_images, resolve=resolve) for image in distinct)
    )
    return dict(zip(distinct, refusals, strict=True))


def job_from_document(
    document: Mapping[str, Any],
    *,
    job_id: JobId,
    limits: LimitSettings,
    submitted_at: str,
    origin: str = "jobs",
    memory: Sequence[schemas.StepMemory] | None = None,
    tenant: str = tenants.DEFAULT,
) -> Job:
    """Resolve a valid request document into a job, filling in the operator's defaults.

    ``memory``: the steps' sizes its validation parsed (document order); parsed here when not given.
    """
    sizes = memory if memory is not None else [schemas.StepMemory.of(s) for s in document["steps"]]
    if len(sizes) != len(document["steps"]):
        raise ValueError(f"{len(sizes)} memory sizes for {len(document['steps'])} steps")
    steps = sorted(map(_step, document["steps"], sizes, repeat(limits)), key=lambda s: s.id)
    return Job(
        id=job_id,
        name=document["name"],
        # JSON Schema's "integer" also takes 2.0: stored, served and compared as the integer it means.
        priority=int(document.get("priority", DEFAULT_PRIORITY)),
        metadata=dict(document.get("metadata") or {}),
        steps=tuple(steps),
        timeout_s=int(document.get("timeout_seconds") or limits.default_timeout_s),
        submitted_at=submitted_at,
        callback_url=document.get("callback_url"),
        status_callback_url=document.get("status_callback_url"),
        origin=origin,
        artifacts=tuple(
            Artifact(path=shared_relative(a["path"]), name=a.get("name")) for a in document.get("artifacts") or ()
        ),
        junit_reports=tuple(shared_relative(g) for g in (document.get("reports") or {}).get("junit") or ()),
        tenant=tenant,
    )


def _step(document: Mapping[str, Any], sizes: schemas.StepMemory, limits: LimitSettings) -> Step:
    memory = sizes.limit_bytes or limits.default_memory_bytes
    swap = sizes.swap_bytes or memory  # no memory_swap: no swap (the rules made sure it is at least memory)
    step_id = int(document["id"])
    return Step(
        id=step_id,
        name=document.get("name") or f"step-{step_id}",
        image=document["image"],
        script=document.get("script", ""),
        metadata=dict(document.get("metadata") or {}),
        continue_on_error=bool(document.get("continue_on_error", False)),
        cpu_limit=float(document.get("cpu_limit", limits.default_cpu)),
        memory_bytes=memory,
        memory_swap_bytes=swap,
        pids_limit=int(document.get("pids_limit", limits.default_pids)),
        network=document.get("network", "none"),
    )
