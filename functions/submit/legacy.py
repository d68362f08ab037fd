"""The original Hades' ``POST /build``: what its Go API accepts, read with its meaning, as a job document.

The original binds the body into Go structs (``shared/payload/payload.go``) with ``encoding/json``: field names
match case-insensitively, unknown fields are ignored, a field holding its zero value (``0``, ``""``, ``null``)
means "not set", metadata keys are any strings, and what it cannot bind or its checks refuse is a 400. ``read``
does the same in front of our schema: it keeps the fields the original knows (and the few of ours that /build
has always taken), drops Go zero values so operator defaults apply, lists the unknown fields it dropped, and
raises ``InvalidBuild`` (400) for what the original rejects — and for what this server cannot run (an operator
limit, no steps, a step without image). ``POST /jobs`` stays strict; docs/compat.md lists the differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runtime import jobs, schemas
from runtime.errors import InvalidJob, Violation
from runtime.settings import LimitSettings

IGNORED_HEADER = "X-Hades-Ignored-Fields"
"""Names the unknown fields a /build request carried (JSON Pointers, comma-separated): never an error."""
MAX_IGNORED_HEADER_CHARS = 1024
MAX_TIMEOUT_SECONDS = 9223372036
"""The original's bound (``payload.MaxTimeoutSeconds``); our operator maximum is usually far lower."""
MAX_METADATA_KEY_CHARS = 1024

_TOP_FIELDS = {
    "priority": "int",
    "id": "str",
    "name": "str",
    "timestamp": "time",
    "metadata": "map",
    "steps": "steps",
    "callback_url": "str",
    "timeout_seconds": "int",
    # Ours, accepted on /build since it existed: not in the original's payload, harmless to keep.
    "status_callback_url": "str",
    "traceparent": "str",
}
_STEP_FIELDS = {
    "id": "int",
    "name": "str",
    "image": "str",
    "script": "str",
    "continue_on_error": "bool",
    "metadata": "map",
    "cpu_limit": "number",
    "memory_limit": "str",
    "network": "str",
    "memory_swap": "str",
    "pids_limit": "int",
}
_ZERO: dict[str, Any] = {"int": 0, "number": 0, "str": "", "bool": False}


class InvalidBuild(InvalidJob):
    """What the original's ``/build`` answers with 400 (clients check for that status, not 422)."""

    status = 400
    title = "Invalid build request"
    kind = "invalid-build"


@dataclass(frozen=True)
class Build:
    document: dict[str, Any]
    """A job document our schema accepts (metadata keys aside, which /build allows more of)."""
    ignored: tuple[str, ...]
    """JSON Pointers of the unknown fields that were dropped."""
    memory: tuple[schemas.StepMemory, ...]
    """The steps' memory sizes (document order), parsed once here, for ``jobs.job_from_document``."""

    def ignored_header(self) -> str:
        """The header's value: every name printable ASCII (``header_safe``), cut to ``MAX_IGNORED_HEADER_CHARS``."""
        text = ", ".join(map(header_safe, self.ignored))
        return text if len(text) <= MAX_IGNORED_HEADER_CHARS else text[: MAX_IGNORED_HEADER_CHARS - 3] + "..."


def header_safe(pointer: str) -> str:
    """A JSON Pointer as a header (and log) may carry it: ``%``, ``,`` and every byte outside printable ASCII are
    percent-encoded (UTF-8), as in a pointer's URI fragment form (RFC 6901 §6). A field name is the client's text:
    a CR/LF in it must not end the header (or forge a log line), and a comma must not split one name in two."""
    return "".join(c if " " <= c <= "~" and c not in "%," else _percent(c) for c in pointer)


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def read(body: Any, limits: LimitSettings) -> Build:
    """The job document for a /build body, or ``InvalidBuild`` with every problem found."""
    if not isinstance(body, Mapping):
        raise InvalidBuild([{"path": "/", "message": "Invalid JSON body: must be a JSON object"}])
    problems: list[Violation] = []
    ignored: list[str] = []
    document = _fields(body, _TOP_FIELDS, "", problems, ignored)
    steps = document.pop("steps", None) or []
    document["steps"] = [
        _fields(step, _STEP_FIELDS, f"/steps/{i}", problems, ignored) if isinstance(step, Mapping) else step
        for i, step in enumerate(steps)
    ]
    for i, step in enumerate(document["steps"]):
        if not isinstance(step, Mapping):
            problems.append({"path": f"/steps/{i}", "message": "must be an object"})
    if problems:
        raise InvalidBuild(problems)
    memory = tuple(schemas.StepMemory.of(step) for step in document["steps"])  # each size parsed once
    problems.extend(_original_checks(document, memory))
    if problems:
        raise InvalidBuild(problems)
    document.pop("id", None)  # the server assigns the id, as the original does
    problems.extend(_ours(document, limits, memory))
    if problems:
        raise InvalidBuild(problems)
    return Build(document=document, ignored=tuple(ignored), memory=memory)


def _fields(
    data: Mapping[str, Any], known: Mapping[str, str], at: str, problems: list[Violation], ignored: list[str]
) -> dict[str, Any]:
    """Known fields (matched case-insensitively, as Go does) with zero values dropped; the rest noted."""
    by_folded = {name.casefold(): name for name in known}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in known else by_folded.get(key.casefold())
        if name is None:
            ignored.append(f"{at}/{_escape(key)}")
            continue
        if name in out and key != name:
            continue  # the exact spelling wins over a case variant
        kind = known[name]
        path = f"{at}/{name}"
        if value is None:
            continue  # null leaves a Go field at its zero value: not set
        message = _type_problem(kind, value)
        if message:
            problems.append({"path": path, "message": message})
            continue
        if kind == "map":
            if not value:
                continue
            out[name] = {str(k): ("" if v is None else v) for k, v in value.items()}
        elif kind in _ZERO and value == _ZERO[kind] and not (kind == "int" and name == "priority"):
            continue  # Go's zero value: not set (an explicit priority 0 stays: it means the low lane)
        else:
            out[name] = value
    return out


def _type_problem(kind: str, value: Any) -> str | None:
    if kind in ("str", "time"):
        if not isinstance(value, str):
            return "must be a string"
        if kind == "time" and value and not _is_time(value):
            return "must be an RFC 3339 time such as 2026-12-01T10:00:00Z"
        return None
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        return "cannot be negative" if value < 0 else None
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "map":
        if not isinstance(value, Mapping):
            return "must be an object of strings"
        if any(v is not None and not isinstance(v, str) for v in value.values()):
            return "values must be strings"
        return None
    if kind == "steps":
        return None if isinstance(value, list) else "must be an array of steps"
    return None


def _is_time(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return "T" in text.upper() and parsed.tzinfo is not None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _original_checks(document: Mapping[str, Any], memory: tuple[schemas.StepMemory, ...]) -> list[Violation]:
    """The original's own refusals (``addBuildToQueue`` in HadesAPI/router.go), with its wording.

    The swap rule is ours (``StepMemory.swap_too_small``) in the original's words; that ``memory_swap`` needs a
    ``memory_limit`` is the original's alone (``POST /jobs`` compares it with the operator's default instead).
    """
    problems: list[Violation] = []
    if not document.get("name"):
        problems.append({"path": "/name", "message": 'Invalid request payload: "name" is required'})
    timeout = document.get("timeout_seconds", 0)
    if timeout < 0:
        problems.append({"path": "/timeout_seconds", "message": "timeout_seconds cannot be negative"})
    elif timeout > MAX_TIMEOUT_SECONDS:
        message = f"timeout_seconds must not exceed {MAX_TIMEOUT_SECONDS}"
        problems.append({"path": "/timeout_seconds", "message": message})
    callback = document.get("callback_url")
    if callback and schemas.job_violations({"name": "x", "steps": [{"id": 1, "image": "x"}], "callback_url": callback}):
        problems.append({"path": "/callback_url", "message": "Invalid callback_url: must be an absolute http(s) URL"})
    for i, (step, sizes) in enumerate(zip(document["steps"], memory, strict=True)):
        at = f"/steps/{i}"
        if "memory_limit" in step and sizes.limit_bytes is None:
            problems.append({"path": f"{at}/memory_limit", "message": "Failed to parse RAM limit"})
        if "memory_swap" in step:
            if sizes.swap_bytes is None:
                problems.append({"path": f"{at}/memory_swap", "message": "Failed to parse memory_swap limit"})
            elif "memory_limit" not in step:
                problems.append({"path": f"{at}/memory_swap", "message": "memory_swap requires memory_limit to be set"})
            elif sizes.swap_too_small():
                message = "memory_swap must be greater than or equal to memory_limit"
                problems.append({"path": f"{at}/memory_swap", "message": message})
        if step.get("pids_limit", 0) < 0:
            problems.append({"path": f"{at}/pids_limit", "message": "pids_limit cannot be negative"})
        for key, where in _metadata_keys(step.get("metadata"), f"{at}/metadata"):
            problems.extend(_key_problem(key, where))
    for key, where in _metadata_keys(document.get("metadata"), "/metadata"):
        problems.extend(_key_problem(key, where))
    return problems


def _metadata_keys(metadata: Mapping[str, str] | None, at: str) -> list[tuple[str, str]]:
    return [(key, f"{at}/{_escape(key)}") for key in metadata or {}]


def _key_problem(key: str, path: str) -> list[Violation]:
    """Any key Docker can pass as an environment variable (``KEY=value``): not empty, no ``=``, no NUL or newline."""
    if not key or "=" in key or "\0" in key or "\n" in key or len(key) > MAX_METADATA_KEY_CHARS:
        return [{"path": path, "message": "cannot be an environment variable name (empty, or contains = or a newline)"}]
    return []


def _ours(document: dict[str, Any], limits: LimitSettings, memory: tuple[schemas.StepMemory, ...]) -> list[Violation]:
    """Our schema and the operator's limits, with the metadata keys (already checked above) left out."""
    shape = {
        **document,
        "metadata": _values_only(document.get("metadata")),
        "steps": [{**step, "metadata": _values_only(step.get("metadata"))} for step in document["steps"]],
    }
    return schemas.check(shape, memory).violations or jobs.limit_violations(shape, limits, memory)


def _values_only(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The same values under keys our schema takes, so its size rules still apply to them."""
    return {f"K{i}": value for i, value in enumerate((metadata or {}).values())}
