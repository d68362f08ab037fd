"""What the sync and async clients share, without I/O: where each call goes, how it is authorised, how an answer
becomes a result or an exception, and when and how long to wait before a retry.

A ``Call`` is one API operation: method, service (submit or logs), path, parameters, and the function that turns
the successful ``httpx.Response`` into a typed result. The clients only send calls and sleep between retries.
"""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from hades_client import errors
from hades_client.models import Cancelling, Job, JobPage, StepLogs, Submitted

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_LOGS_URL = "http://127.0.0.1:8081"
DEFAULT_TIMEOUT_S = 10.0
PROBLEM_JSON = "application/problem+json"
IDEMPOTENCY_KEY = "Idempotency-Key"
RETRYABLE_STATUSES = frozenset({429, 503})
MAX_PAGE_SIZE = 500
"""The most jobs ``GET /jobs`` answers in one page (its ``limit``)."""


class Service(StrEnum):
    SUBMIT = "submit"  # POST /jobs, DELETE /jobs/{id}: the submit key
    LOGS = "logs"  # every read: the logs key


@dataclass(frozen=True)
class Endpoints:
    """Where the two services are and the key each wants (None: send no credentials)."""

    url: str = DEFAULT_URL
    logs_url: str = DEFAULT_LOGS_URL
    api_key: str | None = field(default=None, repr=False)
    logs_api_key: str | None = field(default=None, repr=False)
    """The read key; without one, ``api_key`` is sent to logs too (one key for both is the common case)."""

    def base(self, service: Service) -> str:
        return (self.url if service is Service.SUBMIT else self.logs_url).rstrip("/")

    def key(self, service: Service) -> str | None:
        if service is Service.LOGS:
            return self.logs_api_key or self.api_key
        return self.api_key

    def headers(self, service: Service) -> dict[str, str]:
        key = self.key(service)
        return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 503 and 429 answers (nothing else is retried: a 4xx will not change by asking again).

    The server's ``Retry-After`` is honoured; without one the wait doubles from ``backoff_s``. A server asking
    for longer than ``max_wait_s`` gets no retry: the error is raised at once, carrying its ``retry_after_s``.
    """

    attempts: int = 4
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def delay_s(self, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before asking again after ``attempt`` (1-based) got ``response``; None: do not."""
        if response.status_code not in RETRYABLE_STATUSES or attempt >= self.attempts:
            return None
        wait = retry_after_s(response)
        if wait is None:
            wait = self.backoff_s * 2 ** (attempt - 1)
        return wait if wait <= self.max_wait_s else None


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a live stream comes back after its connection drops: with ``Last-Event-ID``, after a short wait.

    The count is of failures in a row that brought no new event; any new event resets it.
    """

    attempts: int = 8
    backoff_s: float = 0.25
    max_wait_s: float = 5.0
    read_timeout_s: float = 60.0
    """The server pings every 15 s; this much silence means the connection is dead."""

    def delay_s(self, failures: int, *, server_retry_ms: int | None = None) -> float:
        if server_retry_ms is not None:
            return min(server_retry_ms / 1000, self.max_wait_s)
        return float(min(self.backoff_s * 2 ** max(failures - 1, 0), self.max_wait_s))


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, as a number or an HTTP date; None when absent or unreadable."""
    text = response.headers.get("Retry-After")
    if text is None:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    service: Service
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    def request(
        self, client: httpx.Client | httpx.AsyncClient, endpoints: Endpoints, *, timeout: httpx.Timeout | None = None
    ) -> httpx.Request:
        headers = {**endpoints.headers(self.service), **self.headers}
        content = None
        if self.body is not None:
            content = json.dumps(self.body).encode()
            headers["Content-Type"] = "application/json"
        return client.build_request(
            self.method,
            endpoints.base(self.service) + self.path,
            params=dict(self.params),
            headers=headers,
            content=content,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )


def check(response: httpx.Response) -> httpx.Response:
    """The response when it is a success; otherwise the server's problem details as an ``ApiError``."""
    if response.is_success:
        return response
    raise error_from(response)


def error_from(response: httpx.Response) -> errors.ApiError:
    problem: dict[str, Any] | None = None
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type in (PROBLEM_JSON, "application/json"):
        try:
            parsed = json.loads(response.content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            problem = parsed
    if problem is None:
        text = response.text.strip()
        problem = {
            "type": "about:blank",
            "title": response.reason_phrase or "Error",
            "status": response.status_code,
            "detail": errors.truncate(text) if text else "",
        }
    return errors.api_error(response.status_code, problem, retry_after_s=retry_after_s(response))


def parse(call: Call[T], response: httpx.Response) -> T:
    """The call's typed result; an answer of another shape is an ``UnexpectedAnswer``."""
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError) as exc:
        text = errors.truncate(response.text, 200)
        raise errors.UnexpectedAnswer(f"{call.method} {call.path}: unexpected answer ({exc}): {text!r}") from exc


def _json(response: httpx.Response) -> Any:
    return response.json()


def transport_reason(exc: httpx.TransportError) -> str:
    return errors.truncate(str(exc) or type(exc).__name__, 200)


def job_path(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


# One function per route: what to send and what the answer becomes.


def submit(job: Mapping[str, Any], *, idempotency_key: str | None = None) -> Call[Submitted]:
    """Every submit carries an ``Idempotency-Key`` (a fresh one unless given), so a retry never stores two jobs."""
    key = idempotency_key or str(uuid.uuid4())

    def parse(response: httpx.Response) -> Submitted:
        return Submitted.from_json(_json(response), replayed=response.headers.get("Idempotent-Replayed") == "true")

    return Call("POST", Service.SUBMIT, "/jobs", parse, headers={IDEMPOTENCY_KEY: key}, body=dict(job))


def get(job_id: str) -> Call[Job]:
    return Call("GET", Service.LOGS, job_path(job_id), lambda r: Job.from_json(_json(r)))


def list_jobs(
    *,
    status: str | None = None,
    name: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    tenant: str | None = None,
) -> Call[JobPage]:
    """``name``: the job's name contains it (case-insensitive), filtered by the server; ``tenant``: only its jobs."""
    params = {"status": status, "name": name, "limit": str(limit) if limit is not None else None, "cursor": cursor}
    params["tenant"] = tenant
    present = {name: value for name, value in params.items() if value is not None}
    return Call("GET", Service.LOGS, "/jobs", lambda r: JobPage.from_json(_json(r)), params=present)


def logs(job_id: str, *, step: int | None = None) -> Call[list[StepLogs]]:
    params = {"notices": "true", **({"step": str(step)} if step is not None else {})}  # Hades' own lines too

    def parse(response: httpx.Response) -> list[StepLogs]:
        return [StepLogs.from_json(entry) for entry in _json(response)["logs"]]

    return Call("GET", Service.LOGS, job_path(job_id) + "/logs", parse, params=params)


def logs_text(job_id: str, *, step: int | None = None) -> Call[str]:
    params = {"format": "text", **({"step": str(step)} if step is not None else {})}
    return Call("GET", Service.LOGS, job_path(job_id) + "/logs", lambda r: r.text, params=params)


def artifacts(job_id: str) -> Call[dict[str, Any]]:
    """``GET /jobs/{id}/artifacts``: the files the job kept, and those it could not keep."""
    return Call("GET", Service.LOGS, job_path(job_id) + "/artifacts", _json)


def artifact(job_id: str, name: str) -> Call[None]:
    """One kept file; its body is streamed by the client, not parsed here."""
    return Call("GET", Service.LOGS, job_path(job_id) + "/artifacts/" + quote(name, safe="/"), lambda r: None)


def cancel(job_id: str) -> Call[Cancelling]:
    return Call("DELETE", Service.SUBMIT, job_path(job_id), lambda r: Cancelling.from_json(_json(r)))


def stream(job_id: str, *, headers: Mapping[str, str]) -> Call[None]:
    """The live stream's request; its body is read line by line by the client, not parsed here."""
    return Call(
        "GET",
        Service.LOGS,
        job_path(job_id) + "/logs/stream",
        lambda r: None,
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers},
    )
