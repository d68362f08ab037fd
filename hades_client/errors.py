"""What the client raises: the server's problem details as exceptions, and transport failures.

::

    * HadesClientError
      x ApiError                 the server answered with an error (its problem+json body, or one made up)
        + BadRequest             400 (malformed JSON or header, bad parameter)
        + Unauthorized           401 (no key, or the wrong one)
        + NotFound               404 (unknown job)
        + Conflict               409 (cancel of a job that already ended)
        + PayloadTooLarge        413
        + InvalidJob             422 (every violation, with its JSON Pointer)
        + Unavailable            429, 503 (still so after the retries; carries Retry-After)
      x ConnectionFailed         no answer at all: refused, reset, timed out
      x UnexpectedAnswer         a success answer that is not what this API sends (another server on the port?)
      x StreamBroken             a live log stream kept breaking off without progress

Only the server's own texts are shown; a foreign error page (a proxy's HTML) is cut short.
"""

from __future__ import annotations

from typing import Any, TypedDict

MAX_REMOTE_TEXT = 500
"""A body that is not problem+json is cut to this many characters before it becomes the detail."""


class Violation(TypedDict):
    path: str
    message: str


class HadesClientError(Exception):
    """Base of every error the client raises."""


class ApiError(HadesClientError):
    """An error answer; ``problem`` is the server's problem+json body (RFC 9457), or one made up from the status."""

    def __init__(self, status: int, problem: dict[str, Any], *, retry_after_s: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type") or "about:blank")
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        self.errors: list[Violation] = [
            {"path": str(item.get("path", "")), "message": str(item.get("message", ""))}
            for item in problem.get("errors") or []
            if isinstance(item, dict)
        ]
        self.retry_after_s = retry_after_s
        super().__init__(self._text())

    @property
    def field_paths(self) -> list[str]:
        """The JSON Pointers of the fields the server refused (``/steps/0/memory_limit``)."""
        return [violation["path"] for violation in self.errors]

    def _text(self) -> str:
        head = f"{self.status} {self.title}".strip()
        return f"{head}: {self.detail}" if self.detail else head


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class InvalidJob(ApiError):
    pass


class Unavailable(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidJob,
    429: Unavailable,
    503: Unavailable,
}


def api_error(status: int, problem: dict[str, Any], *, retry_after_s: float | None = None) -> ApiError:
    """The most specific error class for ``status``."""
    return _BY_STATUS.get(status, ApiError)(status, problem, retry_after_s=retry_after_s)


class ConnectionFailed(HadesClientError):
    """No answer: the server is not running, the connection broke, or it did not answer in time."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class UnexpectedAnswer(HadesClientError):
    """A success answer this client cannot read: not JSON, or without a field every answer of the route has."""


class StreamBroken(HadesClientError):
    """A live log stream broke off too many times in a row without bringing anything new."""


def truncate(text: str, limit: int = MAX_REMOTE_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
