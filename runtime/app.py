"""The aiohttp app every function is built on: ``/healthz``, ``/readyz``, ``/metrics`` and JSON errors.

``create_app`` gives a function its base application; the function adds its routes and cleanup contexts.
Every error leaves as ``application/problem+json``: ``HadesError`` with its own status, aiohttp's HTTP errors
(unknown route, wrong method, body too large) with theirs, anything else as a logged traceback and a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime import auth, headerguard, metrics, tracing
from runtime.errors import HadesError, Problem, Unauthorized, Unavailable, to_problem
from runtime.settings import Settings

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
CLIENT_CLOSED = 499
"""The status an aborted request is counted as (nginx's "client closed request"): never a 500."""

ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
"""Returns None when ready, else a short reason."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Routes served while a function is still starting (``runtime.startup``); every other one answers 503 then."""


@dataclass
class Starting:
    """How far a function's start-up (``runtime.startup.retrying``) got: its readiness reason and the steps up."""

    reason: str | None = None
    """None once started; else why not yet."""
    entered: list[AsyncIterator[None]] = field(default_factory=list)


SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", str)
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])
STARTING = web.AppKey("starting", Starting)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_json(body: bytes) -> Any:
    """Parse a request body; ``ValueError`` (with line and column) when it is not JSON."""
    return orjson.loads(body)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def problem_response(problem: Problem, *, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response(problem, status=problem["status"], headers=headers)
    response.content_type = PROBLEM_JSON
    return response


def error_response(error: HadesError) -> web.Response:
    headers: dict[str, str] = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = auth.CHALLENGE
    return problem_response(to_problem(error), headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HadesError as exc:
        return error_response(exc)
    except ConnectionResetError:
        # The client went away mid-request (aiohttp's ClientConnectionResetError too): not our error, no traceback.
        log.info("client of %s %s went away", request.method, request.raw_path)
        return problem_response(
            {"type": "about:blank", "title": "Client Closed Request", "status": CLIENT_CLOSED, "detail": "aborted"}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
        return problem_response(
            {
                "type": "about:blank",
                "title": exc.reason,
                "status": exc.status,
                "detail": _http_error_detail(exc, request),
            },
            headers=headers,
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.raw_path)
        return problem_response(
            {
                "type": "about:blank",
                "title": "Internal Server Error",
                "status": 500,
                "detail": "internal error",
            }
        )


def _http_error_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no route for {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the body is larger than {request.app[SETTINGS].http.max_payload_bytes} bytes"
    return exc.text or exc.reason


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        code = CLIENT_CLOSED
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.HTTP_REQUEST_DURATION.labels(request.app[SERVICE], route, request.method, str(code)).observe(
            time.perf_counter() - start
        )


@web.middleware
async def starting_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Until start-up is done, only the probes are served: the rest would need what is not set up yet."""
    reason = request.app[STARTING].reason
    if reason is not None and request.path not in PROBE_PATHS:
        raise Unavailable(reason, retry_after_s=5)
    return await handler(request)


async def starting_check(app: web.Application) -> str | None:
    return app[STARTING].reason


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons = [r for check in request.app[READINESS_CHECKS] if (r := await check(request.app)) is not None]
    if reasons:
        return json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return json_response({"status": "ready"})


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _framing_error(
    self: RequestHandler, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
) -> web.StreamResponse:
    """aiohttp's own answer to what never reaches the app (a negative Content-Length, an 8 KiB+ request line, a
    handler's crash past the middlewares), as a problem body instead of its plain text."""
    if status >= 500:
        log.error("error handling a request from %s", request.remote, exc_info=exc)
    else:
        log.info("malformed request from %s: %r", request.remote, message or str(exc))  # %r: the client's bytes
    if request.writer.output_size > 0:
        raise ConnectionError("the response is sent already, cannot send another one with the error")
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = "internal error" if status >= 500 else (message or phrase)
    response = problem_response({"type": "about:blank", "title": phrase, "status": status, "detail": detail[:300]})
    response.force_close()
    return response


RequestHandler.handle_error = _framing_error  # type: ignore[method-assign]


def create_app(settings: Settings, *, service: str) -> web.Application:
    """The base application of one function; add routes, readiness checks and cleanup contexts to it."""
    tracing.setup_tracing(service)
    metrics.prime(service)
    headerguard.install(settings.http.header_read_timeout_s)
    app = web.Application(
        middlewares=[metrics_middleware, problem_middleware, starting_middleware],
        client_max_size=settings.http.max_payload_bytes,
    )
    app[SETTINGS] = settings
    app[SERVICE] = service
    app[STARTING] = Starting()
    checks: list[ReadinessCheck] = [starting_check]
    app[READINESS_CHECKS] = checks
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app


def run(app: web.Application, *, port: int) -> None:
    """Serve until SIGTERM/SIGINT; aiohttp stops listening, finishes requests, then runs the cleanup contexts."""
    settings = app[SETTINGS]
    web.run_app(
        app,
        host=settings.http.host,
        port=port,
        shutdown_timeout=settings.http.shutdown_timeout_s,
        access_log=None,
        print=lambda *_: None,
    )
