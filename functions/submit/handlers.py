"""HTTP handlers of the submit function: accept a job, store it durably, answer at once; accept cancels."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from functions.submit import apidoc
from runtime import auth, jobs, metrics, queue, schemas, tracing
from runtime import web as hades_web
from runtime.errors import InvalidJob, JobNotFound, MalformedJSON, RequestError, UnsupportedMediaType
from runtime.messaging import MESSAGING, messaging_context
from runtime.settings import Settings
from runtime.web import SETTINGS, json_response

log = logging.getLogger(__name__)
tracer = tracing.tracer(__name__)

MAX_IDEMPOTENCY_KEY = 255


class BadHeader(RequestError):
    kind = "bad-header"
    title = "Bad header"


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
    body = await request.read()  # client_max_size enforces the limit for chunked bodies too
    try:
        return hades_web.parse_json(body)
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


async def _accept(request: web.Request) -> queue.Enqueued:
    """Everything POST /jobs and POST /build share: auth, parse, validate, resolve, store."""
    settings = request.app[SETTINGS]
    auth.check(request, settings.http.api_key)
    key = _idempotency_key(request)
    document = await _read_document(request)
    violations = schemas.job_violations(document)
    if not violations:
        violations = jobs.limit_violations(document, settings.limits)
    if violations:
        metrics.JOBS_REJECTED.labels("invalid").inc()
        raise InvalidJob(violations)
    job = jobs.job_from_document(
        document, job_id=jobs.new_job_id(key), limits=settings.limits, submitted_at=jobs.utc_now()
    )
    carrier = request.headers if "traceparent" in request.headers else {"traceparent": document.get("traceparent", "")}
    parent = tracing.extract(carrier)
    with tracer.start_as_current_span("hades.submit", context=parent) as span:
        span.set_attribute("hades.job_id", job.id)
        span.set_attribute("hades.lane", str(job.lane))
        enqueued = await queue.enqueue(request.app[MESSAGING], job)
    if not enqueued.duplicate:
        metrics.JOBS_SUBMITTED.labels(str(job.lane)).inc()
    log.info("job %s queued on %s%s", job.id, job.lane, " (idempotent retry)" if enqueued.duplicate else "")
    return enqueued


async def submit_job(request: web.Request) -> web.Response:
    enqueued = await _accept(request)
    job = enqueued.job
    location = f"/jobs/{job.id}"
    body = {
        "id": job.id,
        "status": "queued",
        "name": job.name,
        "priority": job.priority,
        "lane": str(job.lane),
        "submitted_at": job.submitted_at,
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
    """The original Hades endpoint: same payload, same answer."""
    enqueued = await _accept(request)
    return json_response({"job_id": enqueued.job.id, "message": "Successfully enqueued job"})


async def cancel_job(request: web.Request) -> web.Response:
    auth.check(request, request.app[SETTINGS].http.api_key)
    job_id = request.match_info["job_id"]
    if not jobs.is_job_id(job_id):
        raise JobNotFound(job_id)
    await queue.request_cancel(request.app[MESSAGING], job_id, reason="cancelled by request")
    log.info("job %s: cancel requested", job_id)
    return json_response({"id": job_id, "status": "cancelling"}, status=202)


async def ping(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "timestamp": jobs.utc_now()})


async def openapi(request: web.Request) -> web.Response:
    return json_response(apidoc.openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/jobs", submit_job)
    app.router.add_post("/build", submit_build)
    app.router.add_delete("/jobs/{job_id}", cancel_job)
    app.router.add_get("/ping", ping)
    app.router.add_get("/openapi.json", openapi)


def create_app(settings: Settings) -> web.Application:
    app = hades_web.create_app(settings, service="submit")
    app.cleanup_ctx.append(messaging_context(settings, name="hades-submit"))
    add_routes(app)
    return app
