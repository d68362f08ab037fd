"""Prometheus metrics, all prefixed ``hades_``, in base units, never labelled by job id or any user value.

One registry per process, shared by whichever function runs in it; each function exposes it on ``/metrics``.
Every label has a bounded set of values (lanes, results, failure reasons, outcomes); ``prime`` creates the
children a function will use, so a fresh process already exports them at zero and ``rate()`` sees the first
increase. docs/observability.md lists every metric; the dashboard and alerts in manifests/ use them.
"""

from __future__ import annotations

import platform
from enum import StrEnum
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from runtime import subjects

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


class Reason(StrEnum):
    """Why a job ended: the bounded ``reason`` label of ``hades_jobs_finished_total``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a step exited non-zero (the job's own fault)
    TIMED_OUT = "timed_out"
    OOM = "oom"  # a step was killed at its memory limit
    IMAGE_PULL = "image_pull"  # an image could not be pulled
    UNSCHEDULABLE = "unschedulable"  # the cluster found no node for it
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"  # Hades gave up: dead-lettered, engine or cluster trouble


RESULT_OF_REASON: dict[Reason, str] = {
    Reason.SUCCEEDED: "succeeded",
    Reason.FAILED: "failed",
    Reason.TIMED_OUT: "timed_out",
    Reason.OOM: "failed",
    Reason.IMAGE_PULL: "failed",
    Reason.UNSCHEDULABLE: "failed",
    Reason.CANCELLED: "cancelled",
    Reason.INFRASTRUCTURE: "failed",
}
"""The terminal status each reason comes with (the ``result`` label beside it)."""

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
"""Seconds to hours: jobs of an exam wait and run from seconds (a quick test) to hours (a queue at the deadline)."""
_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""Taken → first step running: container start (sub-second) up to image pulls and pod scheduling (minutes)."""
_CALLBACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

BUILD_INFO = Gauge(
    "hades_build_info", "Always 1; the labels name the running version.", ["version", "python"], registry=REGISTRY
)
HTTP_REQUEST_DURATION = Histogram(
    "hades_http_request_duration_seconds",
    "HTTP request duration by function, route, method and status code.",
    ["function", "route", "method", "code"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)
JOBS_SUBMITTED = Counter(
    "hades_jobs_submitted_total", "Jobs accepted and durably queued, by lane.", ["lane"], registry=REGISTRY
)
JOBS_REJECTED = Counter(
    "hades_jobs_rejected_total", "Job submissions refused, by reason.", ["reason"], registry=REGISTRY
)
JOBS_STARTED = Counter("hades_jobs_started_total", "Jobs a dispatcher started, by lane.", ["lane"], registry=REGISTRY)
JOBS_FINISHED = Counter(
    "hades_jobs_finished_total",
    "Jobs that reached a terminal status, by result and failure reason.",
    ["result", "reason"],
    registry=REGISTRY,
)
JOB_QUEUE_WAIT = Histogram(
    "hades_job_queue_wait_seconds",
    "Submitted → taken by a dispatcher, by lane.",
    ["lane"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
JOB_START_LATENCY = Histogram(
    "hades_job_start_latency_seconds",
    "Taken by a dispatcher → first step running, by lane.",
    ["lane"],
    buckets=_START_BUCKETS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "hades_job_duration_seconds",
    "Job run time (taken → ended), by lane and result.",
    ["lane", "result"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "hades_step_duration_seconds",
    "Step run time, by result.",
    ["result"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge("hades_jobs_running", "Jobs running in this dispatcher.", registry=REGISTRY)
DISPATCH_FREE_SLOTS = Gauge("hades_dispatch_free_slots", "Jobs this dispatcher could still take.", registry=REGISTRY)
JOBS_QUEUED = Gauge(
    "hades_jobs_queued",
    "Jobs waiting on a lane, every tenant's, read from its JetStream consumers (every logs replica reports the "
    "same: use max).",
    ["lane"],
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "hades_queue_oldest_age_seconds",
    "Age of the oldest job waiting on a lane (0 when none waits), read from JetStream.",
    ["lane"],
    registry=REGISTRY,
)
TENANT_JOBS_QUEUED = Gauge(
    "hades_tenant_jobs_queued",
    "Jobs waiting, by tenant (those the operator named; the rest as other) and lane, read from JetStream "
    "(every logs replica reports the same: use max).",
    ["tenant", "lane"],
    registry=REGISTRY,
)
TENANT_JOBS_RUNNING = Gauge(
    "hades_tenant_jobs_running",
    "Jobs a dispatcher took and that have not ended, by tenant and lane, read from JetStream (use max).",
    ["tenant", "lane"],
    registry=REGISTRY,
)
TENANT_JOBS_FINISHED = Counter(
    "hades_tenant_jobs_finished_total",
    "Jobs that reached a terminal status, by tenant and result, counted by the log collector (sum the replicas).",
    ["tenant", "result"],
    registry=REGISTRY,
)
REDELIVERIES = Counter("hades_job_redeliveries_total", "Job messages delivered more than once.", registry=REGISTRY)
DEAD_LETTERED = Counter(
    "hades_jobs_dead_lettered_total", "Jobs failed after exhausting their deliveries.", registry=REGISTRY
)
EXECUTOR_ERRORS = Counter(
    "hades_executor_errors_total",
    "Errors of the executor's API (Docker engine, Kubernetes API), by executor and kind.",
    ["executor", "kind"],
    registry=REGISTRY,
)
K8S_API_REQUESTS = Counter(
    "hades_k8s_api_requests_total",
    "Requests a dispatcher sent to the Kubernetes API server (retries included), by HTTP method.",
    ["method"],
    registry=REGISTRY,
)
LOG_LINES = Counter("hades_log_lines_total", "Log lines published by dispatchers.", registry=REGISTRY)
LOG_BYTES = Counter("hades_log_bytes_total", "Log bytes published by dispatchers.", registry=REGISTRY)
LOG_TRUNCATIONS = Counter(
    "hades_log_truncations_total", "Jobs whose log reached the per-job cap and was cut.", registry=REGISTRY
)
EVENTS_APPLIED = Counter(
    "hades_events_applied_total",
    "Events the log collector applied, by kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
LOGS_LAG_MESSAGES = Gauge(
    "hades_logs_lag_messages", "Events stored but not yet taken by the log collector.", registry=REGISTRY
)
LOGS_LAG_SECONDS = Gauge(
    "hades_logs_lag_seconds",
    "Age of the oldest event the log collector has not taken (0 when none).",
    registry=REGISTRY,
)
CALLBACKS = Counter("hades_callbacks_total", "Result callbacks, by outcome.", ["outcome"], registry=REGISTRY)
CALLBACK_FAILURES = Counter(
    "hades_callback_failures_total", "Callback attempts that failed (each retry counts).", registry=REGISTRY
)
CALLBACK_DURATION = Histogram(
    "hades_callback_duration_seconds",
    "One callback request, by outcome (ok, or failed: an error answer, a timeout, no connection).",
    ["outcome"],
    buckets=_CALLBACK_BUCKETS,
    registry=REGISTRY,
)

# results: what jobs kept (functions/dispatch/results)
TESTS = Counter(
    "hades_tests_total",
    "Test cases read from jobs' JUnit reports, by outcome (passed, failed, error, skipped).",
    ["outcome"],
    registry=REGISTRY,
)
ARTIFACT_BYTES = Counter(
    "hades_artifact_bytes_total", "Bytes of job files kept in the results store.", registry=REGISTRY
)
ARTIFACT_FILES = Counter("hades_artifact_files_total", "Job files kept in the results store.", registry=REGISTRY)
ARTIFACTS_SKIPPED = Counter(
    "hades_artifacts_skipped_total", "Job files matched but not kept (over a limit).", registry=REGISTRY
)


def _version() -> str:
    try:
        return metadata.version("hades")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)


def prime(service: str) -> None:
    """Create the labelled children ``service`` uses, at zero, so its series exist before the first event."""
    for lane in subjects.LANES:
        if service == "submit":
            JOBS_SUBMITTED.labels(lane)
        elif service == "dispatch":
            JOBS_STARTED.labels(lane)
            JOB_QUEUE_WAIT.labels(lane)
            JOB_START_LATENCY.labels(lane)
        elif service == "logs":
            JOBS_QUEUED.labels(lane)
            QUEUE_OLDEST_AGE.labels(lane)
    if service == "submit":
        for rejected in ("invalid", "malformed", "media-type", "too-large", "tenant-quota"):
            JOBS_REJECTED.labels(rejected)
    elif service == "dispatch":
        for reason, result in RESULT_OF_REASON.items():
            JOBS_FINISHED.labels(result, reason)
        for outcome in ("passed", "failed", "error", "skipped"):
            TESTS.labels(outcome)
    elif service == "logs":
        for outcome in ("delivered", "failed", "refused"):
            CALLBACKS.labels(outcome)
        for outcome in ("ok", "failed"):
            CALLBACK_DURATION.labels(outcome)
