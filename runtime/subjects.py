"""Every stream, subject, consumer, bucket and header name of the JetStream topology, declared once.

Pure names, no NATS import: the job model needs ``Lane``, readers need subject prefixes. What the streams and
consumers are made of (retention, acks, limits) is ``runtime.messaging.topology``.
"""

from __future__ import annotations

from enum import StrEnum

from runtime import tenants


class Lane(StrEnum):
    HIGH = "high"  # priority ≥ 3 (the original Hades' high queue)
    NORMAL = "normal"  # priority 2 (its medium queue)
    LOW = "low"  # priority ≤ 1


LANES: tuple[Lane, ...] = (Lane.HIGH, Lane.NORMAL, Lane.LOW)

JOBS_STREAM = "HADES_JOBS"
EVENTS_STREAM = "HADES_EVENTS"
DEAD_STREAM = "HADES_DEAD"

JOBS_SUBJECT_PREFIX = "hades.jobs"
STATUS_SUBJECT_PREFIX = "hades.status"
LOGS_SUBJECT_PREFIX = "hades.logs"
CANCEL_SUBJECT_PREFIX = "hades.cancel"
DEAD_SUBJECT_PREFIX = "hades.dead"

HEADER_MSG_ID = "Nats-Msg-Id"

LOGS_CONSUMER = "collect-logs"
RECORDS_BUCKET = "HADES_RECORDS"
"""KV bucket (stream ``KV_HADES_RECORDS``) with the latest record per job, kept by the log collector."""
RESULTS_BUCKET = "HADES_RESULTS"
"""Object Store bucket (stream ``OBJ_HADES_RESULTS``): a job's artifacts and test reports, one object per file,
named ``<job id>/<name>``."""
IDEMPOTENCY_BUCKET = "HADES_IDEMPOTENCY"
"""KV bucket: per ``Idempotency-Key`` (hashed), the body digest and job id of its first POST, for one window."""
LEASES_BUCKET = "HADES_LEASES"
"""KV bucket: per running job, the attempt (and dispatcher) that owns it, claimed by compare-and-set; dispatch only."""


def jobs_subject(lane: Lane, tenant: str = tenants.DEFAULT) -> str:
    """``hades.jobs.<lane>`` for the default tenant (where every job stored before tenants is), else
    ``hades.jobs.<lane>.<tenant>``: a subject per tenant makes its queued jobs a cheap count (docs/tenants.md)."""
    lane_subject = f"{JOBS_SUBJECT_PREFIX}.{lane}"
    return lane_subject if tenant == tenants.DEFAULT else f"{lane_subject}.{tenant}"


def lane_subjects(lane: Lane) -> tuple[str, str]:
    """The subjects that together hold every job of a lane: the default tenant's, and every named tenant's."""
    lane_subject = f"{JOBS_SUBJECT_PREFIX}.{lane}"
    return lane_subject, f"{lane_subject}.*"


def named_tenants_filter(lane: Lane) -> str:
    """Every named tenant's jobs of a lane (``hades.jobs.<lane>.*``): which tenants have jobs there."""
    return lane_subjects(lane)[1]


def tenant_jobs_filter(tenant: str) -> str:
    """Every lane's subject of one tenant's jobs (for the default tenant: the plain lane subjects)."""
    return f"{JOBS_SUBJECT_PREFIX}.*" if tenant == tenants.DEFAULT else f"{JOBS_SUBJECT_PREFIX}.*.{tenant}"


def lane_of(jobs_subject_name: str) -> Lane:
    """The lane a job subject names."""
    return Lane(jobs_subject_name.split(".")[2])


JOBS_WAKE_SUBJECT = f"{JOBS_SUBJECT_PREFIX}.>"
"""Every job subject of every lane and tenant: what a dispatcher waiting for work should listen to."""


def tenant_of(jobs_subject_name: str) -> str:
    """The tenant a job subject names (``hades.jobs.<lane>`` is the default tenant's)."""
    parts = jobs_subject_name.split(".")
    return parts[3] if len(parts) > 3 else tenants.DEFAULT


def status_subject(job_id: str) -> str:
    return f"{STATUS_SUBJECT_PREFIX}.{job_id}"


def logs_subject(job_id: str) -> str:
    return f"{LOGS_SUBJECT_PREFIX}.{job_id}"


def cancel_subject(job_id: str) -> str:
    return f"{CANCEL_SUBJECT_PREFIX}.{job_id}"


def job_events_subject(job_id: str) -> str:
    """``hades.*.<id>``: one filter for all of a job's status, log and cancel messages."""
    return f"hades.*.{job_id}"


def dead_subject(job_id: str) -> str:
    return f"{DEAD_SUBJECT_PREFIX}.{job_id}"


DISPATCH_CONSUMER_PREFIX = "dispatch-"
_TENANT_SEPARATOR = "--"


def dispatch_consumer(lane: Lane, tenant: str = tenants.DEFAULT) -> str:
    """The consumer dispatchers take one tenant's jobs of a lane from: ``dispatch-<lane>`` for the default tenant
    (and every job stored before tenants; the name KEDA and dashboards always knew), ``dispatch-<lane>--<tenant>``
    for a named one. A consumer per tenant is what lets dispatch choose whose job starts next (docs/tenants.md)."""
    name = f"{DISPATCH_CONSUMER_PREFIX}{lane}"
    return name if tenant == tenants.DEFAULT else f"{name}{_TENANT_SEPARATOR}{tenant}"


def dispatch_scope(consumer: str) -> tuple[Lane, str] | None:
    """The lane and tenant a dispatch consumer serves; None for any other consumer name."""
    if not consumer.startswith(DISPATCH_CONSUMER_PREFIX):
        return None
    lane_name, _, tenant = consumer.removeprefix(DISPATCH_CONSUMER_PREFIX).partition(_TENANT_SEPARATOR)
    if lane_name not in {str(lane) for lane in LANES}:
        return None
    if not tenant:
        return Lane(lane_name), tenants.DEFAULT
    return (Lane(lane_name), tenant) if tenants.is_name(tenant) else None


def job_id_of(subject: str) -> str:
    """The job id that ends a per-job subject (``hades.status.<id>`` and its kin)."""
    return subject.rsplit(".", 1)[-1]


def result_object(job_id: str, name: str) -> str:
    """The Object Store name of one of a job's kept files."""
    return f"{job_id}/{name}"
