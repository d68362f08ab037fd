"""HTTP handlers of the submit function: accept a job, store it durably, answer at once; accept cancels."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import http_exceptions, web

from functions.submit import admission, apidoc, deadletters, enqueue, idempotency, legacy
from runtime import app as hades_app
from runtime import auth, jobs, logconfig, metrics, netguard, schemas, startup, tenants, tracing
from runtime.app import SETTINGS, json_response
from runtime.errors import (
    HadesError,
    InvalidJob,
    JobNotFound,
    MalformedJSON,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from runtime.messaging import MESSAGING, messaging_context
from runtime.settings import Settings

log = logging.getLogger(__name__)
tracer = tracing.tracer(__name__)

MAX_IDEMPOTENCY_KEY = 255
RESOLVE: web.AppKey[netguard.Resolve] = web.AppKey("resolve")
"""How submit looks a registry name up (``netguard.resolve_addresses``; tests set their own)."""


class BadHeader(RequestError):
    kind = "bad-header"
    title = "Bad header"


class BadEncoding(RequestError):
    kind = "bad-content-encoding"
    title = "Body does not match its Content-Encoding"


class BodyTimeout(RequestError):
    status = 408
    kind = "body-timeout"
    title = "Request Timeout"


async def _read_document(request: web.Request) -> Any:
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        metrics.JOBS_REJECTED.labels("media-type").inc()
        raise UnsupportedMediaType(
            f"the body must be JSON sent as Content-Type: application/json, got {content_type or 'none'!r}"
        )
    limit = request.app[SETTINGS].http.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.JOBS_REJECTED.labels("too-large").inc()
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        if request.content.is_eof():  # all of it arrived with the headers (the usual small job): nothing to wait for
            body = await request.read()
        else:
            # client_max_size enforces the limit for chunked bodies too; the timeout, a body that never ends.
            async with asyncio.timeout(request.app[SETTINGS].http.body_read_timeout_s):
                body = await request.read()
    except TimeoutError:
        metrics.JOBS_REJECTED.labels("body-timeout").inc()
        raise BodyTimeout("the request body did not arrive in time") from None
    except (web.RequestPayloadError, http_exceptions.PayloadEncodingError):  # "Content-Encoding: gzip", not gzip
        metrics.JOBS_REJECTED.labels("malformed").inc()
        encoding = request.headers.get("Content-Encoding", "")[:32]
        raise BadEncoding(f"the body could not be read as its Content-Encoding ({encoding!a}) says") from None
    try:
        return hades_app.parse_json(body)
    except ValueError as exc:
        metrics.JOBS_REJECTED.labels("malformed").inc()
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise BadHeader(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return key


async def _accept(request: web.Request, *, build: legacy.Build | None = None) -> tuple[enqueue.Enqueued, str | None]:
    """Everything POST /jobs and POST /build share: auth, parse, validate, resolve, store; and the trace id.

    ``build``: the document /build already read and checked with the original's rules (see ``legacy``).
    """
    settings = request.app[SETTINGS]
    keyed = auth.submitter(request, settings.http.api_key, settings.tenants.submit_keys)
    key = _idempotency_key(request)
    if build is None:
        document = await _read_document(request)
        checked = schemas.check(document)  # each memory size parsed once, then carried to the job
        memory = checked.memory
        violations = checked.violations or jobs.limit_violations(document, settings.limits, memory)
        if violations:
            metrics.JOBS_REJECTED.labels("invalid").inc()
            raise InvalidJob(violations)
    else:
        document, memory = build.document, build.memory
    resolved = await jobs.registry_violations(document, settings.limits, resolve=request.app[RESOLVE])
    if resolved:
        metrics.JOBS_REJECTED.labels("invalid").inc()
        raise InvalidJob(resolved) if build is None else legacy.InvalidBuild(resolved)
    tenant = tenants.resolve(
        keyed=keyed,
        named=document.get("tenant") if build is None else None,
        metadata=document.get("metadata") if build is not None else None,
        metadata_key=settings.tenants.build_metadata_key,
        allowed=settings.tenants.known() if settings.tenants.names else (),
    )
    # A tenant key's Idempotency-Keys are its own: two courses using the same key never share a job.
    scoped = key if key is None or keyed is None else f"{keyed}\n{key}"
    if scoped is None:
        job_id = jobs.new_job_id()
    else:
        job_id = await idempotency.job_id_for(request.app[idempotency.IDEMPOTENCY], scoped, document)
    job = jobs.job_from_document(
        document,
        job_id=job_id,
        limits=settings.limits,
        submitted_at=jobs.utc_now(),
        origin="jobs" if build is None else "build",
        memory=memory,
        tenant=tenant,
    )
    carrier = request.headers if "traceparent" in request.headers else {"traceparent": document.get("traceparent", "")}
    with (
        logconfig.job_scope(job.id),
        tracing.request_span(
            tracer, "submit job", carrier, attributes={"hades.job_id": job.id, "hades.lane": str(job.lane)}
        ),
    ):
        trace_id = tracing.trace_id()
        try:
            async with request.app[admission.ADMISSION].admitted(request.app[MESSAGING], job.tenant):
                enqueued = await enqueue.enqueue(request.app[MESSAGING], job)
        except (PayloadTooLarge, admission.QueueFull):
            # Certainly not stored: the key must stay free for the retry (a smaller body, a later or changed one).
            if scoped is not None:
                await _release(request, scoped, job_id)
            raise
        log.info("job %s queued on %s%s", job.id, job.lane, " (idempotent retry)" if enqueued.duplicate else "")
    if not enqueued.duplicate:
        metrics.JOBS_SUBMITTED.labels(str(job.lane)).inc()
    return enqueued, trace_id


async def _release(request: web.Request, key: str, job_id: jobs.JobId) -> None:
    try:
        await idempotency.release(request.app[idempotency.IDEMPOTENCY], key, job_id)
    except HadesError as exc:  # the refusal stands; the key stays taken until the window ends
        log.warning("job %s: could not free its Idempotency-Key after a refusal: %s", job_id, exc.detail)


async def submit_job(request: web.Request) -> web.Response:
    try:
        enqueued, trace_id = await _accept(request)
    except admission.QueueFull as exc:
        return admission.refusal(exc)
    job = enqueued.job
    location = f"/jobs/{job.id}"
    body = {
        "id": job.id,
        "status": "queued",
        "name": job.name,
        "priority": job.priority,
        "lane": str(job.lane),
        "tenant": job.tenant,
        "submitted_at": job.submitted_at,
        "trace_id": trace_id,
        "links": {
            "self": location,
            "status": f"{location}/status",
            "logs": f"{location}/logs",
            "stream": f"{location}/logs/stream",
        },
    }
    headers = {"Location": location}
    if enqueued.duplicate:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status=202, headers=headers)


async def submit_build(request: web.Request) -> web.Response:
    """The original Hades endpoint: its payload read with its rules (``legacy``), its answers, 400 for invalid."""
    settings = request.app[SETTINGS]
    # before the body, as the original: 401 wins over 400
    auth.submitter(request, settings.http.api_key, settings.tenants.submit_keys)
    try:
        document = await _read_document(request)
    except (UnsupportedMediaType, BadEncoding) as exc:  # the original binds a non-JSON body as a form: a 400
        raise legacy.InvalidBuild([{"path": "/", "message": exc.detail}]) from None
    try:
        build = legacy.read(document, settings.limits)
    except legacy.InvalidBuild:
        metrics.JOBS_REJECTED.labels("invalid").inc()
        raise
    try:
        enqueued, _ = await _accept(request, build=build)
    except admission.QueueFull as exc:
        return admission.refusal(exc)
    headers = {}
    if build.ignored:
        headers[legacy.IGNORED_HEADER] = build.ignored_header()
        log.info("job %s: /build ignored unknown fields %s", enqueued.job.id, build.ignored_header())
    body = {"job_id": enqueued.job.id, "message": "Successfully enqueued job"}
    return json_response(body, headers=headers)


async def cancel_job(request: web.Request) -> web.Response:
    auth.check(request, request.app[SETTINGS].http.api_key)
    job_id = request.match_info["job_id"]
    if not jobs.is_job_id(job_id):
        raise JobNotFound(job_id)
    await enqueue.request_cancel(request.app[MESSAGING], job_id, reason="cancelled by request")
    log.info("job %s: cancel requested", job_id)
    return json_response({"id": job_id, "status": "cancelling"}, status=202)


async def list_dead_letters(request: web.Request) -> web.Response:
    auth.check(request, request.app[SETTINGS].http.api_key)
    limit = deadletters.limit_of(request.query.get("limit"))
    after = deadletters.after_of(request.query.get("after"))
    found = await deadletters.list_dead(request.app[MESSAGING], limit=limit, after=after)
    following = found[-1]["seq"] if len(found) == limit else None
    return json_response({"dead_letters": found, "count": len(found), "next_after": following})


async def redrive_dead_letter(request: web.Request) -> web.Response:
    auth.check(request, request.app[SETTINGS].http.api_key)
    job_id = request.match_info["job_id"]
    if not jobs.is_job_id(job_id):
        raise deadletters.DeadLetterNotFound(f"no dead letter for job {job_id[:64]!r}")
    job, repeat = await deadletters.redrive(request.app[MESSAGING], job_id)
    location = f"/jobs/{job.id}"
    body = {
        "id": job.id,
        "status": "queued",
        "redrive_of": job_id,
        "name": job.name,
        "lane": str(job.lane),
        "submitted_at": job.submitted_at,
        "links": {"self": location, "status": f"{location}/status", "logs": f"{location}/logs"},
    }
    headers = {"Location": location, **({"Idempotent-Replayed": "true"} if repeat else {})}
    return json_response(body, status=202, headers=headers)


async def ping(request: web.Request) -> web.Response:
    # "message": "pong" is what Artemis' health check of Hades reads.
    return json_response({"message": "pong", "status": "ok", "timestamp": jobs.utc_now()})


async def openapi(request: web.Request) -> web.Response:
    return json_response(apidoc.openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/jobs", submit_job)
    app.router.add_post("/build", submit_build)
    app.router.add_delete("/jobs/{job_id}", cancel_job)
    app.router.add_get("/dead-letters", list_dead_letters)
    app.router.add_post("/dead-letters/{job_id}/redrive", redrive_dead_letter)
    app.router.add_get("/ping", ping)
    app.router.add_get("/openapi.json", openapi)


def create_app(settings: Settings) -> web.Application:
    app = hades_app.create_app(settings, service="submit")
    app.cleanup_ctx.append(
        startup.retrying(messaging_context(settings, name="hades-submit"), idempotency.idempotency_context(settings))
    )
    app[RESOLVE] = netguard.resolve_addresses
    app[admission.ADMISSION] = admission.Admission(settings.tenants)
    add_routes(app)
    return app
