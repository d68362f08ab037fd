"""HTTP handlers of the logs function: job records, their logs (JSON, plain text, live over SSE), health.

The original Hades Log Manager's answers are kept where clients rely on them: ``GET /jobs/{id}/status`` gives its
status names, an unknown job's 404 also carries ``"error": "job not found: <id>"``, and ``/health`` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import weakref
from collections.abc import AsyncGenerator
from typing import Any, NotRequired

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from functions.logs import (
    apidoc,
    artifacts,
    callbacks,
    collector,
    jobindex,
    legacy,
    listing,
    livefeed,
    logstore,
    positions,
    records,
    recordstore,
    scaling,
    ssebatch,
)
from functions.logs.records import JobRecord, PublicRecord
from functions.logs.ui import setup_ui
from runtime import app as hades_app
from runtime import auth, jobs, startup, subjects, tenants
from runtime.app import SETTINGS, json_response
from runtime.errors import HadesError, JobNotFound, RequestError, to_problem
from runtime.messaging import MESSAGING, messaging_context
from runtime.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TEXT_CHUNK_BYTES = 64 * 1024
"""Plain-text logs leave in chunks of about this size."""
_EVENT_ID = re.compile(r"^(\d{1,9})\.(\d{1,12})$")

SSE_STREAMS = web.AppKey("sse_streams", weakref.WeakSet[EventSourceResponse])


class ServedRecord(PublicRecord):
    """``GET /jobs/{id}``: the public record, and where it stands while queued (``apidoc``'s ``JobRecord``)."""

    queue_position: NotRequired[int]  # jobs ahead in its lane
    queue: NotRequired[positions.QueueBody]


class BadParameter(RequestError):
    kind = "bad-parameter"
    title = "Bad parameter"


def job_not_found(job_id: str) -> web.Response:
    """The problem body, plus the original Hades Log Manager's ``error`` field."""
    body = {**to_problem(JobNotFound(job_id)), "error": f"job not found: {job_id}"}
    response = json_response(body, status=404)
    response.content_type = hades_app.PROBLEM_JSON
    return response


async def _record(request: web.Request) -> JobRecord | None:
    job_id = request.match_info["job_id"]
    if not jobs.is_job_id(job_id):
        return None  # also keeps anything but a UUID out of NATS subjects
    return await request.app[recordstore.RECORDS].load(job_id)


def _statuses(text: str | None) -> set[str] | None:
    if text is None:
        return None
    found: set[str] = set()
    for name in (n.strip() for n in text.split(",")):
        named = records.statuses_named(name)
        if not named:
            valid = ", ".join(
                [str(s) for s in jobs.JobStatus] + ["Queued", "Running", "Succeeded", "Failed", "Stopped"]
            )
            raise BadParameter(f"status {name!r} is not one of: {valid}")
        found.update(str(s) for s in named)
    return found


def _int_parameter(request: web.Request, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
        raise BadParameter(f"{name} must be an integer {bounds}, got {text!r}")
    return value


def _time_parameter(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None:
        return None
    moment = jobindex.parse_time(text)
    if moment is None:
        raise BadParameter(f"{name} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {text[:40]!r}")
    return moment


async def list_jobs(request: web.Request) -> web.Response:
    statuses = _statuses(request.query.get("status"))
    limit = _int_parameter(request, "limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    cursor = request.query.get("cursor")
    if cursor is not None:
        try:
            listing.decode_cursor(cursor)
        except ValueError:
            raise BadParameter("cursor is not one this API gave out (take it from a previous answer's next)") from None
    tenant = request.query.get("tenant") or None
    if tenant is not None and not tenants.is_name(tenant):
        raise BadParameter(f"tenant {tenants.NAME_RULE}, got {tenant[:64]!r}")
    flt = jobindex.Filter(
        statuses=frozenset(statuses) if statuses is not None else None,
        name=request.query.get("name") or None,
        submitted_after_s=_time_parameter(request, "submitted_after"),
        submitted_before_s=_time_parameter(request, "submitted_before"),
        tenant=tenant,
    )
    store = request.app[recordstore.RECORDS]
    page = await listing.list_records(
        store.conn, store.bucket, flt=flt, limit=limit, cursor=cursor, index=request.app.get(jobindex.JOB_INDEX)
    )
    return json_response({"jobs": [records.public(r) for r in page.records], "next": page.next})


async def get_job(request: web.Request) -> web.Response:
    record = await _record(request)
    if record is None:
        return job_not_found(request.match_info["job_id"])
    body = records.public(record)
    stream_seq, lane = record.get("_stream_seq"), record.get("lane")
    if (
        record["status"] == jobs.JobStatus.QUEUED
        and isinstance(stream_seq, int)
        and lane in {str(each) for each in subjects.LANES}
    ):
        settings = request.app[SETTINGS]
        weights = positions.lane_weights(settings.dispatch.lane_weights)
        try:
            place = await positions.queue_place(
                request.app[MESSAGING],
                lane=lane,
                stream_seq=stream_seq,
                weights=weights,
                throughput=request.app.get(positions.THROUGHPUT),
                tenant=record.get("tenant") or tenants.DEFAULT,
                tenant_weight=settings.tenants.weight,
                running_cap=settings.tenants.running_limit,
            )
        except HadesError as exc:
            log.warning("job %s: queue position unknown: %s", record["id"], exc.detail)
            place = None
        if place is not None:
            served: ServedRecord = {**body, "queue_position": place.lane_position, "queue": place.public()}
            return json_response(served)
    return json_response(body)


async def get_status(request: web.Request) -> web.Response:
    """The original Hades answer: ``{"status": "Queued|Running|Succeeded|Failed|Stopped"}``."""
    record = await _record(request)
    if record is None:
        return job_not_found(request.match_info["job_id"])
    return json_response({"status": records.legacy_status(record)})


async def get_logs(request: web.Request) -> web.StreamResponse:
    step = _int_parameter(request, "step", minimum=0)
    output = request.query.get("format", "json")
    if output not in ("json", "text"):
        raise BadParameter(f"format must be json or text, got {output!r}")
    record = await _record(request)
    if record is None:
        return job_not_found(request.match_info["job_id"])
    conn = request.app[MESSAGING]
    max_bytes = request.app[SETTINGS].logs.job_log_max_bytes
    if output == "json":
        entries = await logstore.job_logs(conn, record, max_bytes=max_bytes, step=step)
        if request.query.get("notices") != "true":  # the original's shape: containers that ran, stdout/stderr
            entries = legacy.log_manager_entries(record, entries)
        return json_response({"logs": entries})
    lines = logstore.iter_lines(conn, record["id"], attempt=record["attempt"], max_bytes=max_bytes, step=step)
    async with contextlib.aclosing(lines):
        first = await anext(lines, None)  # a broker failure is still a 503 here, before the 200 goes out
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        chunk: list[str] = []
        size = 0
        if first is not None:
            chunk.append(first["message"] + "\n")
            size = len(first["message"]) + 1
        try:
            async for line in lines:
                chunk.append(line["message"] + "\n")
                size += len(line["message"]) + 1
                if size >= TEXT_CHUNK_BYTES:
                    await response.write("".join(chunk).encode())
                    chunk, size = [], 0
            if chunk:
                await response.write("".join(chunk).encode())
            await response.write_eof()
        except HadesError as exc:  # too late for a status code: cut the connection so the client sees it
            log.warning("job %s: text logs cut short: %s", record["id"], exc.detail)
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            log.info("job %s: the client left during its text logs", record["id"])
    return response


def _last_event_id(request: web.Request) -> tuple[int, int] | None:
    text = request.headers.get("Last-Event-ID")
    if not text:
        return None
    match = _EVENT_ID.match(text.strip())
    if match is None:
        raise BadParameter(f"Last-Event-ID must be <attempt>.<seq> as this stream sends it, got {text[:40]!r}")
    return int(match[1]), int(match[2])


def _line_data(item: logstore.LiveLine) -> str:
    data = {**logstore.wire_line(item.line), "step": item.line.get("step_id"), "attempt": item.attempt}
    try:
        return orjson.dumps(data).decode()  # a sixth of json.dumps's time: 1,000 followers' every line
    except TypeError:  # not plain JSON after all (an integer beyond 64 bits)
        return json.dumps(data, ensure_ascii=False)


def _status_data(event: dict[str, Any]) -> str:
    data = {k: v for k, v in event.items() if k != "job"}
    if event["kind"] == "job":
        data["legacy_status"] = jobs.JobStatus(event["status"]).legacy
    return json.dumps(data, ensure_ascii=False)


async def _pump(sse: EventSourceResponse, request: web.Request, items: AsyncGenerator[logstore.LiveItem, None]) -> None:
    out = ssebatch.BatchedEvents(sse, request)  # the events ready at once leave in one write
    try:
        async with contextlib.aclosing(items):
            async for item in items:
                if isinstance(item, logstore.LiveLine):
                    await out.send(_line_data(item), id=item.event_id)
                elif isinstance(item, logstore.LiveStatus):
                    await out.send(_status_data(dict(item.event)), event="status")
                else:
                    legacy = jobs.JobStatus(item.status).legacy
                    body = {"status": item.status, "legacy_status": legacy, "reason": item.reason}
                    await out.send(json.dumps(body), event="end")
                    await out.flush()
                    return
    finally:
        await out.close()


async def stream_logs(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: every line from the start (or after ``Last-Event-ID``), live ones, status, ``end``."""
    after = _last_event_id(request)
    record = await _record(request)
    if record is None:
        return job_not_found(request.match_info["job_id"])
    known_end = logstore.LiveEnd(record["status"], record.get("reason")) if records.is_terminal(record) else None
    items = logstore.follow(
        request.app[MESSAGING],
        record["id"],
        after=after,
        known_end=known_end,
        feeds=request.app[livefeed.LIVE_FEEDS],
    )
    async with sse_response(request) as sse:
        request.app[SSE_STREAMS].add(sse)
        pump = asyncio.create_task(_pump(sse, request, items))
        closed = asyncio.create_task(sse.wait())  # the client went away, or the server shuts down
        try:
            await asyncio.wait({pump, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, closed):
                task.cancel()
            for task in (pump, closed):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except (HadesError, ConnectionError, TimeoutError) as exc:  # a send that timed out: a stalled client
                    log.info("job %s: live log stream ended early: %s", record["id"], exc)
    return sse


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every open live stream so the server can stop (clients reconnect elsewhere)."""
    streams = app[SSE_STREAMS]
    for sse in list(streams):
        with contextlib.suppress(RuntimeError):
            sse.stop_streaming()


async def health(request: web.Request) -> web.Response:
    """Liveness on the original Hades Log Manager's path."""
    return json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(apidoc.openapi_document())


@web.middleware
async def require_key(request: web.Request, handler: hades_app.Handler) -> web.StreamResponse:
    """Job routes need the logs key when one is set; probes, metrics and the API document stay open."""
    if request.path == "/jobs" or request.path.startswith("/jobs/"):
        auth.check(request, request.app[SETTINGS].logs.api_key)
    return await handler(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{job_id}", get_job)
    app.router.add_get("/jobs/{job_id}/status", get_status)
    app.router.add_get("/jobs/{job_id}/logs", get_logs)
    app.router.add_get("/jobs/{job_id}/logs/stream", stream_logs)
    artifacts.add_routes(app)  # results: /jobs/{id}/tests, /jobs/{id}/artifacts[/{name}]
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
    scaling.add_routes(app)  # GET /scaling: the jobs KEDA scales dispatch on


def create_app(settings: Settings) -> web.Application:
    app = hades_app.create_app(settings, service="logs")
    app.middlewares.append(require_key)
    app[SSE_STREAMS] = weakref.WeakSet()
    # Clients first, the loop last: cleanup runs in reverse, so the loop stops before its clients close.
    app.cleanup_ctx.append(
        startup.retrying(
            messaging_context(settings, name="hades-logs"),
            recordstore.records_context,
            artifacts.objects_context,
            jobindex.job_index_context,
            livefeed.live_feeds_context,
            positions.throughput_context,
            callbacks.callbacks_context,
            collector.collector_context,
        )
    )
    app.on_shutdown.append(close_streams)
    add_routes(app)
    setup_ui(app)  # the dashboard under /ui/
    return app
