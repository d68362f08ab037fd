"""The Hades error tree and its HTTP form.

::

    * HadesError
      x RequestError            4xx: the caller can fix the request
        + MalformedJSON         400
        + Unauthorized          401
        + JobNotFound           404
        + PayloadTooLarge       413
        + UnsupportedMediaType  415
        + InvalidJob            422, with every violation
      x Unavailable             503 + Retry-After: a dependency is down; temporary (dispatch naks and retries)
      x JobError                this job cannot run as given; permanent (terminal ``failed`` with the reason)

A step's non-zero exit is a result, not an exception. Errors carry structured attributes; ``to_problem`` renders
one as an RFC 9457 ``application/problem+json`` body.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

MAX_REMOTE_TEXT = 500
"""Remote error text (engine, API server) is cut to this many characters before it is logged or shown."""


class Violation(TypedDict):
    path: str
    message: str


class Problem(TypedDict):
    type: str
    title: str
    status: int
    detail: str
    errors: NotRequired[list[Violation]]


def truncate(text: str, limit: int = MAX_REMOTE_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HadesError(Exception):
    status: int = 500
    title: str = "Internal error"
    kind: str = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RequestError(HadesError):
    status = 400
    title = "Bad request"
    kind = "bad-request"


class MalformedJSON(RequestError):
    status = 400
    title = "Malformed JSON"
    kind = "malformed-json"


class Unauthorized(RequestError):
    status = 401
    title = "Unauthorized"
    kind = "unauthorized"


class JobNotFound(RequestError):
    status = 404
    title = "Job not found"
    kind = "job-not-found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class NotFound(RequestError):
    status = 404
    title = "Not found"
    kind = "not-found"


class Conflict(RequestError):
    status = 409
    title = "Conflict"
    kind = "conflict"


class PayloadTooLarge(RequestError):
    status = 413
    title = "Payload too large"
    kind = "payload-too-large"


class UnsupportedMediaType(RequestError):
    status = 415
    title = "Unsupported media type"
    kind = "unsupported-media-type"


class InvalidJob(RequestError):
    status = 422
    title = "Invalid job"
    kind = "invalid-job"

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first['path']}: {first['message']}{more}")
        self.violations = violations


class Unavailable(HadesError):
    """A dependency (NATS, the container engine, the API server) cannot be reached now; try again later."""

    status = 503
    title = "Service unavailable"
    kind = "unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 2) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class JobError(HadesError):
    """This job cannot run as given (image cannot be pulled, a spec the engine rejects): fail it, do not retry."""

    status = 422
    title = "Job cannot run"
    kind = "job-error"


def to_problem(error: HadesError) -> Problem:
    problem: Problem = {
        "type": f"urn:hades:problem:{error.kind}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if isinstance(error, InvalidJob):
        problem["errors"] = error.violations
    return problem
