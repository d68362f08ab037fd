"""The web dashboard under ``/ui/``: static pages plus the few JSON routes only the dashboard needs.

The pages (``static/``: HTML, CSS and vanilla JavaScript, no build step, nothing from another site) read the logs
API itself (``GET /jobs``, ``/jobs/{id}``, ``/jobs/{id}/logs/stream``) from the same origin, so the read key
(``HADES_LOGS_API_KEY``) guards them as it guards the API: every ``/ui`` path needs it too, and its 401 carries the
Basic challenge, so a browser asks once and sends the key with every later request, ``EventSource`` included.

Routes of the dashboard's own: ``/ui/api/config`` (whether cancel is on), ``/ui/api/stats`` (per lane: queued,
running, oldest waiting; finished jobs per interval for the throughput chart), ``/ui/api/events`` (SSE: every job's
status changes, from a plain NATS subscription on ``hades.status.*``) and ``DELETE /ui/api/jobs/{id}``, which
forwards a cancel to submit (``HADES_UI_SUBMIT_URL``) with ``HADES_UI_SUBMIT_API_KEY``. Forwarding keeps the submit
key on the server; the browser never holds it, and submit needs no CORS. A cross-site page cannot send that DELETE:
it is not a simple request, so the browser asks first (preflight) and this server never allows another origin.

What pages show from jobs (names, scripts, log lines) is set as text, never as markup, and a strict
Content-Security-Policy (no inline script, same origin only) stands behind that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from functions.logs import recordstore
from functions.logs.records import JobRecord
from runtime import auth, events, jobs, subjects, tenants
from runtime.app import SETTINGS, Handler, json_response
from runtime.errors import JobNotFound, RequestError, Unavailable
from runtime.messaging import MESSAGING

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREFIX = "/ui"
STATS_TTL_S = 5.0
"""Lane stats are computed at most this often, however many dashboards ask (one scan of the records each time)."""
THROUGHPUT_BUCKET_S = 30
THROUGHPUT_BUCKETS = 20
"""The throughput chart: jobs finished per 30 s over the last 10 minutes."""
CANCEL_TIMEOUT_S = 10.0
EVENTS_PENDING_LIMIT = 4096
"""Status events buffered per dashboard stream; beyond it NATS drops them (the page still refreshes on its own)."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class CancelNotConfigured(RequestError):
    status = 404
    title = "Cancel is not configured"
    kind = "cancel-not-configured"


@dataclass
class _StatsCache:
    body: dict[str, Any] | None = None
    at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


STATS_CACHE = web.AppKey("ui_stats_cache", _StatsCache)
UI_STREAMS = web.AppKey("ui_streams", weakref.WeakSet[EventSourceResponse])


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


LANE_ORDER = {str(lane): index for index, lane in enumerate(subjects.LANES)}
MAX_TENANT_ROWS = 60
"""Lane and tenant rows the dashboard shows at most (the busiest)."""


def lane_stats(found: Iterable[JobRecord], *, now: datetime) -> dict[str, Any]:
    """Per lane: queued, running, the oldest queued job's submit time; the same per lane and tenant; and jobs
    finished per interval."""
    lanes: dict[str, dict[str, Any]] = {
        str(lane): {"lane": str(lane), "queued": 0, "running": 0, "oldest_queued_at": None} for lane in subjects.LANES
    }
    by_tenant: dict[tuple[str, str], dict[str, Any]] = {}
    buckets = [{"succeeded": 0, "failed": 0} for _ in range(THROUGHPUT_BUCKETS)]
    span_s = THROUGHPUT_BUCKET_S * THROUGHPUT_BUCKETS
    end = now.timestamp()
    for record in found:
        status, lane = record.get("status"), lanes.get(str(record.get("lane")))
        if status == jobs.JobStatus.QUEUED and lane is not None:
            lane["queued"] += 1
            submitted = record.get("submitted_at")
            if isinstance(submitted, str) and (
                lane["oldest_queued_at"] is None or submitted < lane["oldest_queued_at"]
            ):
                lane["oldest_queued_at"] = submitted
        elif status == jobs.JobStatus.RUNNING and lane is not None:
            lane["running"] += 1
        if status in (jobs.JobStatus.QUEUED, jobs.JobStatus.RUNNING) and lane is not None:
            key = (lane["lane"], str(record.get("tenant") or tenants.DEFAULT))
            row = by_tenant.setdefault(key, {"lane": key[0], "tenant": key[1], "queued": 0, "running": 0})
            row["queued" if status == jobs.JobStatus.QUEUED else "running"] += 1
        elif isinstance(status, str) and status in {str(s) for s in jobs.JobStatus if s.terminal}:
            finished = _parse_time(record.get("finished_at"))
            if finished is None:
                continue
            age_s = end - finished.timestamp()
            if 0 <= age_s < span_s:
                index = THROUGHPUT_BUCKETS - 1 - int(age_s // THROUGHPUT_BUCKET_S)
                buckets[index]["succeeded" if status == jobs.JobStatus.SUCCEEDED else "failed"] += 1
    return {
        "generated_at": now.isoformat().replace("+00:00", "Z"),
        "lanes": list(lanes.values()),
        # Per lane and tenant with jobs queued or running: lanes in priority order, the most queued first.
        "tenants": sorted(by_tenant.values(), key=lambda r: (LANE_ORDER[r["lane"]], -r["queued"], r["tenant"]))[
            :MAX_TENANT_ROWS
        ],
        "throughput": {"bucket_s": THROUGHPUT_BUCKET_S, "buckets": buckets},
    }


async def get_stats(request: web.Request) -> web.Response:
    cache = request.app[STATS_CACHE]
    async with cache.lock:  # one scan at a time; whoever waited gets its result
        if cache.body is None or time.monotonic() - cache.at > STATS_TTL_S:
            store = request.app[recordstore.RECORDS]
            found = [record async for record in store.scan()]
            cache.body = lane_stats(found, now=datetime.now(UTC))
            cache.at = time.monotonic()
        return json_response(cache.body)


async def get_config(request: web.Request) -> web.Response:
    return json_response({"cancel": bool(request.app[SETTINGS].logs.ui_submit_url)})


def _job_event(data: bytes) -> dict[str, Any] | None:
    try:
        event = events.decode_status(data)
    except (events.EventError, ValueError):
        return None
    if event["kind"] != "job":
        return None
    return {"job_id": event["job_id"], "status": event["status"], "at": event["at"]}


async def stream_events(request: web.Request) -> web.StreamResponse:
    """SSE ``job`` events ``{"job_id", "status", "at"}`` for every job's status change, live only."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=EVENTS_PENDING_LIMIT)

    async def on_message(subject: str, data: bytes) -> None:
        event = _job_event(data)
        if event is not None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    sub = await request.app[MESSAGING].subscribe(
        f"{subjects.STATUS_SUBJECT_PREFIX}.*", on_message, pending_limit=EVENTS_PENDING_LIMIT
    )
    try:
        async with sse_response(request) as sse:
            request.app[UI_STREAMS].add(sse)
            await sse.send(json.dumps({"subscribed": True}), event="ready")

            async def pump() -> None:
                while True:
                    await sse.send(json.dumps(await queue.get()), event="job")

            pumping = asyncio.create_task(pump())
            closed = asyncio.create_task(sse.wait())
            try:
                await asyncio.wait({pumping, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pumping, closed):
                    task.cancel()
                for task in (pumping, closed):
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
    finally:
        await sub.close()
    return sse


async def cancel_job(request: web.Request) -> web.Response:
    """Forward a cancel to submit, with submit's key; its answer (status and body) comes back unchanged."""
    settings = request.app[SETTINGS].logs
    job_id = request.match_info["job_id"]
    if not settings.ui_submit_url:
        raise CancelNotConfigured("this dashboard cannot cancel: HADES_UI_SUBMIT_URL is not set")
    if not jobs.is_job_id(job_id):
        raise JobNotFound(job_id)
    headers = {"Authorization": f"Bearer {settings.ui_submit_api_key}"} if settings.ui_submit_api_key else {}
    url = f"{settings.ui_submit_url.rstrip('/')}/jobs/{job_id}"
    timeout = aiohttp.ClientTimeout(total=CANCEL_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.delete(url, headers=headers, allow_redirects=False) as answer,
        ):
            body = await answer.read()
            content_type = answer.headers.get("Content-Type", "application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"the submit function did not answer the cancel: {exc.__class__.__name__}") from exc
    log.info("job %s: cancel forwarded from the dashboard (submit answered %d)", job_id, answer.status)
    return web.Response(body=body, status=answer.status, headers={"Content-Type": content_type})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")


@web.middleware
async def ui_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/ui`` needs the logs read key like the job routes; its answers carry the CSP and kin."""
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    auth.check(request, request.app[SETTINGS].logs.api_key)
    response = await handler(request)
    if not response.prepared:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


async def _close_streams(app: web.Application) -> None:
    streams = app[UI_STREAMS]
    for sse in list(streams):
        with contextlib.suppress(RuntimeError):
            sse.stop_streaming()


def setup_ui(app: web.Application) -> None:
    """Add the dashboard's routes, its guard and its state to the logs app (before it starts)."""
    app[STATS_CACHE] = _StatsCache()
    app[UI_STREAMS] = weakref.WeakSet()
    app.middlewares.append(ui_guard)
    app.on_shutdown.append(_close_streams)
    app.router.add_get(PREFIX, to_index)
    app.router.add_get(f"{PREFIX}/", index)
    app.router.add_get(f"{PREFIX}/api/config", get_config)
    app.router.add_get(f"{PREFIX}/api/stats", get_stats)
    app.router.add_get(f"{PREFIX}/api/events", stream_events)
    app.router.add_delete(f"{PREFIX}/api/jobs/{{job_id}}", cancel_job)
    app.router.add_static(f"{PREFIX}/static", STATIC_DIR, append_version=False)


__all__ = ["lane_stats", "setup_ui"]
