"""Prometheus metrics, all prefixed ``hades_``, in base units, never labelled by job id.

One registry per process, shared by whichever function runs in it; each function exposes it on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

HTTP_REQUEST_DURATION = Histogram(
    "hades_http_request_duration_seconds",
    "HTTP request duration by function, route, method and status code.",
    ["function", "route", "method", "code"],
    buckets=_LATENCY_BUCKETS,
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
    "Jobs that reached a terminal status, by result.",
    ["result"],
    registry=REGISTRY,
)
JOB_QUEUE_WAIT = Histogram(
    "hades_job_queue_wait_seconds",
    "Submitted → taken by a dispatcher.",
    ["lane"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
JOB_START_LATENCY = Histogram(
    "hades_job_start_latency_seconds",
    "Taken by a dispatcher → first step running.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "hades_job_duration_seconds",
    "Job run time, by result.",
    ["result"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "hades_step_duration_seconds",
    "Step run time, by result.",
    ["result"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge("hades_jobs_running", "Jobs running in this dispatcher.", registry=REGISTRY)
DISPATCH_FREE_SLOTS = Gauge("hades_dispatch_free_slots", "Jobs this dispatcher could still take.", registry=REGISTRY)
REDELIVERIES = Counter("hades_job_redeliveries_total", "Job messages delivered more than once.", registry=REGISTRY)
DEAD_LETTERED = Counter(
    "hades_jobs_dead_lettered_total", "Jobs failed after exhausting their deliveries.", registry=REGISTRY
)
LOG_LINES = Counter("hades_log_lines_total", "Log lines published by dispatchers.", registry=REGISTRY)
EVENTS_APPLIED = Counter(
    "hades_events_applied_total",
    "Events the log collector applied, by kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
CALLBACKS = Counter("hades_callbacks_total", "Result callbacks, by outcome.", ["outcome"], registry=REGISTRY)
CALLBACK_FAILURES = Counter(
    "hades_callback_failures_total", "Callback attempts that failed (each retry counts).", registry=REGISTRY
)
