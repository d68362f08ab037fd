"""The JetStream topology: what every stream and consumer is made of (names: ``runtime.subjects``).

Every function calls ``ensure_topology`` at start-up; it creates what is missing and updates what changed, so
any number of replicas may race on it. Consumers are created by the function that reads them
(``ensure_consumer``), so KEDA can find them by name as soon as that function first runs.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue

from runtime import tenants
from runtime.settings import Settings
from runtime.subjects import (
    CANCEL_SUBJECT_PREFIX,
    DEAD_STREAM,
    DEAD_SUBJECT_PREFIX,
    EVENTS_STREAM,
    IDEMPOTENCY_BUCKET,
    JOBS_STREAM,
    LANES,
    LEASES_BUCKET,
    LOGS_CONSUMER,
    LOGS_SUBJECT_PREFIX,
    RECORDS_BUCKET,
    RESULTS_BUCKET,
    STATUS_SUBJECT_PREFIX,
    Lane,
    dispatch_consumer,
    jobs_subject,
    lane_subjects,
)

log = logging.getLogger(__name__)


def stream_configs(settings: Settings) -> list[js_api.StreamConfig]:
    nats = settings.nats
    return [
        js_api.StreamConfig(
            name=JOBS_STREAM,
            description="Queued jobs, a subject per priority lane and tenant; a message is removed when its job ends.",
            subjects=[subject for lane in LANES for subject in lane_subjects(lane)],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.FILE,
            num_replicas=nats.replicas,
            duplicate_window=nats.duplicate_window_s,
            max_msg_size=settings.http.max_payload_bytes + 64 * 1024,
            allow_direct=True,  # direct gets tell a queued job's place in its lane
        ),
        js_api.StreamConfig(
            name=EVENTS_STREAM,
            description="Status, log and cancel events per job.",
            subjects=[f"{STATUS_SUBJECT_PREFIX}.*", f"{LOGS_SUBJECT_PREFIX}.*", f"{CANCEL_SUBJECT_PREFIX}.*"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            num_replicas=nats.replicas,
            duplicate_window=120.0,
            max_age=nats.events_max_age_s,
            max_bytes=nats.events_max_bytes,
            allow_direct=True,
        ),
        js_api.StreamConfig(
            name=DEAD_STREAM,
            description="Jobs that exhausted their deliveries, kept for inspection and redrive.",
            subjects=[f"{DEAD_SUBJECT_PREFIX}.*"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            num_replicas=nats.replicas,
            max_age=nats.events_max_age_s,
            max_msgs_per_subject=1,
            allow_direct=True,  # GET /dead-letters reads it with batched direct gets
        ),
    ]


def dispatch_consumer_config(settings: Settings, lane: Lane, tenant: str = tenants.DEFAULT) -> js_api.ConsumerConfig:
    """One tenant's jobs of one lane (``subjects.dispatch_consumer``). Filters never overlap, as a work-queue
    stream requires: ``dispatch-<lane>`` holds ``hades.jobs.<lane>`` only (a consumer an older Hades made with the
    tenants' filter too is narrowed in place), each named tenant's its own subject."""
    limit = settings.tenants.running_limit(tenant)
    named = tenant != tenants.DEFAULT
    return js_api.ConsumerConfig(
        durable_name=dispatch_consumer(lane, tenant),
        description=f"Dispatchers pulling the {lane} lane" + (f" for tenant {tenant}" if named else ""),
        filter_subjects=[jobs_subject(lane, tenant)],
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=settings.dispatch.ack_wait_s,
        # One delivery more than the attempts: that last one only fails and dead-letters the job, so a job whose
        # final attempt died with its dispatcher still ends with a terminal status.
        max_deliver=settings.dispatch.max_deliver + 1,
        # The tenant's running cap, held by the server for every dispatcher at once: deliveries not yet acked are
        # the tenant's jobs running in the lane, and past the cap a fetch gets nothing (no delivery is spent).
        max_ack_pending=limit if limit is not None else -1,
        deliver_policy=js_api.DeliverPolicy.ALL,
        # A tenant gone quiet leaves no consumer behind; longer than any job can run, so never under a running one.
        inactive_threshold=_tenant_consumer_idle_s(settings) if named else None,
    )


def _tenant_consumer_idle_s(settings: Settings) -> float:
    return 3600.0 + 2 * (settings.limits.max_timeout_s + settings.dispatch.image_pull_timeout_s)


def logs_consumer_config() -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=LOGS_CONSUMER,
        description="Log collectors building job records",
        filter_subjects=[f"{STATUS_SUBJECT_PREFIX}.*", f"{LOGS_SUBJECT_PREFIX}.*"],
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=30.0,
        max_deliver=-1,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream; safe to call from many processes at once."""
    for config in stream_configs(settings):
        await _ensure_stream(js, config)


async def _ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created stream %s", config.name)
            return
        except APIError as exc:
            # Another replica created it between our look-up and our add: fall through to update.
            if exc.err_code != 10058:
                raise
    await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, stream: str, config: js_api.ConsumerConfig) -> None:
    """Create the durable consumer, or bring an existing one up to date (the server's create-or-update)."""
    await js.add_consumer(stream, config)


def _kv(
    settings: Settings, bucket: str, description: str, *, ttl_s: float, direct: bool | None = None
) -> js_api.KeyValueConfig:
    """Every bucket alike: the latest value per key only, on disk, as replicated as the streams."""
    return js_api.KeyValueConfig(
        bucket=bucket,
        description=description,
        history=1,
        ttl=ttl_s,
        storage=js_api.StorageType.FILE,
        replicas=settings.nats.replicas,
        direct=direct,
    )


def records_bucket_config(settings: Settings) -> js_api.KeyValueConfig:
    description = "Latest record per job, kept by the log collector"
    return _kv(settings, RECORDS_BUCKET, description, ttl_s=settings.nats.events_max_age_s, direct=True)


def idempotency_bucket_config(settings: Settings) -> js_api.KeyValueConfig:
    # The entry lives exactly as long as the jobs stream de-duplicates the id it names: after that a reused key
    # gets a fresh id (a new run that can be read), never the old one.
    description = "Idempotency-Key -> body digest and job id of its first POST, for the duplicate window"
    return _kv(settings, IDEMPOTENCY_BUCKET, description, ttl_s=settings.nats.duplicate_window_s)


def results_bucket_config(settings: Settings) -> js_api.ObjectStoreConfig:
    """Kept as long as the events (and so the records that list the files): the same age, the same replicas."""
    return js_api.ObjectStoreConfig(
        bucket=RESULTS_BUCKET,
        description="Artifacts and test reports of jobs, one object per file (<job id>/<name>)",
        ttl=settings.nats.events_max_age_s,
        storage=js_api.StorageType.FILE,
        replicas=settings.nats.replicas,
    )


def leases_bucket_config(settings: Settings) -> js_api.KeyValueConfig:
    # A lease matters while its job's message is in flight; it lives as long as the job's events do, so a
    # redelivery however late still finds who owned the job before it.
    description = "Running job -> the attempt and dispatcher that own it (compare-and-set)"
    return _kv(settings, LEASES_BUCKET, description, ttl_s=settings.nats.events_max_age_s)


async def ensure_bucket(js: JetStreamContext, config: js_api.KeyValueConfig) -> KeyValue:
    """Create the KV bucket, or adopt it and bring its TTL up to date; safe from many replicas at once."""
    try:
        return await js.create_key_value(config)
    except APIError as exc:
        if exc.err_code != 10058:  # "stream name already in use with a different configuration"
            raise
    info = await js.stream_info(f"KV_{config.bucket}")
    info.config.max_age = config.ttl
    await js.update_stream(info.config)
    return await js.key_value(config.bucket)
