"""The job schema: loaded and compiled once; violations rendered as ``[{path, message}]``.

Paths are JSON Pointers (``/steps/0/memory_limit``). Messages are written for people: they name the rule, never
echo a large value back, and an unknown field is reported at its own path so a typo is easy to spot. Rules that
JSON Schema cannot say (unique step ids, the memory rules) are checked here too.

The memory rules live in one place, ``memory_violations``, over a step's sizes parsed once (``StepMemory.of``):
submit carries those sizes from validation (``check``) to ``jobs.limit_violations`` and ``jobs.job_from_document``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from runtime import references, units
from runtime.errors import Violation

if TYPE_CHECKING:
    from runtime.settings import LimitSettings

MIN_MEMORY_BYTES = 6 * 1024 * 1024
"""Docker refuses less; the same floor applies on every executor."""


@cache
def job_schema() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("job.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    schema = job_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def _accepts() -> Any:
    """A compiled yes/no check of the same schema, ~10x faster than ``jsonschema``: the hot path of submit.

    It only decides; ``jsonschema`` (the reference, draft 2020-12) explains every rejection. The schema uses no
    keyword whose meaning differs between draft 7 and 2020-12, and a test holds the two to the same verdicts.
    """
    schema = copy.deepcopy(job_schema())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


MAX_DEPTH = 16
"""The deepest nesting a job document may have (a valid one has 4 levels): the validators recurse, and a reply
to a thousand ``[`` must be a 422, not a ``RecursionError``."""


def _too_deep(document: Any) -> str | None:
    """The path of the first value nested deeper than ``MAX_DEPTH``, found without recursion."""
    pending: list[tuple[Any, list[Any]]] = [(document, [])]
    while pending:
        value, path = pending.pop()
        if len(path) > MAX_DEPTH:
            return _pointer(path[:MAX_DEPTH])
        if isinstance(value, Mapping):
            pending.extend((item, [*path, key]) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((item, [*path, index]) for index, item in enumerate(value))
    return None


class StepMemory(NamedTuple):
    """A step's ``memory_limit`` and ``memory_swap`` in bytes, as asked (None: not asked, or not a size).

    Each string is parsed once per submission, here; the rules (``memory_violations``) and the job
    (``jobs.job_from_document``) read these numbers, never the strings again.
    """

    limit_bytes: int | None
    swap_bytes: int | None

    @classmethod
    def of(cls, step: Mapping[str, Any]) -> StepMemory:
        memory, swap = step.get("memory_limit"), step.get("memory_swap")
        if memory is None and swap is None:
            return _UNASKED  # most steps: no parse, no new object
        return cls(
            units.parse_memory(memory) if isinstance(memory, str) and memory else None,
            units.parse_memory(swap) if isinstance(swap, str) and swap else None,
        )

    def swap_too_small(self, default_memory_bytes: int | None = None) -> bool:
        """The swap rule: ``memory_swap`` is memory plus swap, so it is at least the step's memory — its
        ``memory_limit``, or the operator's default when it asks none (unknown without it: not checked then)."""
        memory = self.limit_bytes if self.limit_bytes is not None else default_memory_bytes
        return self.swap_bytes is not None and memory is not None and self.swap_bytes < memory


_UNASKED = StepMemory(None, None)


def memory_violations(memory: StepMemory, at: str, limits: LimitSettings | None = None) -> list[Violation]:
    """Every rule about a step's memory sizes, in one place: each at least 6M, at most the operator's maximum, and
    ``memory_swap`` at least the step's memory. Without ``limits`` only what the document alone decides."""
    found: list[Violation] = []
    if memory is _UNASKED:
        return found
    for name, size in (("memory_limit", memory.limit_bytes), ("memory_swap", memory.swap_bytes)):
        if size is None:
            continue
        if size < MIN_MEMORY_BYTES:
            found.append({"path": f"{at}/{name}", "message": "must be at least 6M"})
        elif limits is not None and size > limits.max_memory_bytes:
            found.append(
                {"path": f"{at}/{name}", "message": f"must be at most {units.format_memory(limits.max_memory_bytes)}"}
            )
    default = limits.default_memory_bytes if limits is not None else None
    if memory.swap_too_small(default):
        least = "memory_limit"
        if memory.limit_bytes is None and default is not None:
            least = f"the default memory_limit, {units.format_memory(default)}"
        found.append({"path": f"{at}/memory_swap", "message": f"must be at least {least}"})
    return found


@dataclass(slots=True)
class Checked:
    """What checking a job document found, and its steps' memory sizes (document order; empty when the schema
    refused it), for ``jobs.limit_violations`` and ``jobs.job_from_document`` to use without parsing again."""

    violations: list[Violation]
    memory: Sequence[StepMemory] = ()


def job_violations(document: Any) -> list[Violation]:
    """Every problem with a job document, in document order; empty when it is valid."""
    return check(document).violations


def check(document: Any, memory: Sequence[StepMemory] | None = None) -> Checked:
    """``job_violations`` with the steps' memory sizes; ``memory``: sizes a caller already parsed (POST /build)."""
    deep = _too_deep(document)
    if deep is not None:
        return Checked([{"path": deep, "message": f"is nested too deeply (at most {MAX_DEPTH} levels)"}])
    try:
        _accepts()(document)
    except fastjsonschema.JsonSchemaException:
        violations: list[Violation] = []
        for error in sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
            violations.extend(_render(error))
        if violations:
            return Checked(violations)
    return _semantic(document, memory)


def _pointer(parts: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def _render(error: ValidationError) -> list[Violation]:
    path = list(error.absolute_path)
    keyword = error.validator
    value: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(schema.get("properties", {}))
        known = set(allowed)
        return [
            {
                "path": _pointer([*path, name]),
                "message": f"unknown field; allowed fields: {', '.join(allowed)}" if allowed else "unknown field",
            }
            for name in error.instance
            if name not in known
        ]
    if keyword == "required" and isinstance(error.instance, Mapping):
        return [
            {"path": _pointer([*path, name]), "message": "is required"} for name in value if name not in error.instance
        ]
    if "propertyNames" in error.absolute_schema_path:
        # The error is about a key, not a value: point at the key itself.
        return [{"path": _pointer([*path, error.instance]), "message": _message(keyword, value, schema, error)}]
    return [{"path": _pointer(path), "message": _message(keyword, value, schema, error)}]


def _message(keyword: str | None, value: Any, schema: Mapping[str, Any], error: ValidationError) -> str:
    if keyword == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"must be of type {' or '.join(kinds)}"
    if keyword in ("pattern", "format") and "x-error" in schema:
        return str(schema["x-error"])
    simple = {
        "minLength": f"must be at least {value} characters long",
        "maxLength": f"must be at most {value} characters long",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "exclusiveMinimum": f"must be greater than {value}",
        "exclusiveMaximum": f"must be less than {value}",
        "minItems": f"must have at least {value} item{'s' if value != 1 else ''}",
        "maxItems": f"must have at most {value} items",
        "maxProperties": f"must have at most {value} entries",
        "pattern": f"must match the pattern {value}",
        "enum": f"must be one of {value}",
        "const": f"must be {value!r}",
    }
    if keyword in simple:
        return simple[keyword]
    return str(error.message)[:300]


_SINGLE_LINE_FIELDS = ("image", "network", "traceparent", "callback_url", "status_callback_url")


def _multi_line(document: Mapping[str, Any], at: str) -> list[Violation]:
    """Python's ``$`` also matches before a final newline, so the patterns alone let ``"alpine\n"`` through."""
    found: list[Violation] = []
    for name in _SINGLE_LINE_FIELDS:
        value = document.get(name)
        if isinstance(value, str) and "\n" in value:
            found.append({"path": f"{at}/{name}", "message": "must be a single line"})
    for key in document.get("metadata") or {}:
        if "\n" in key:
            found.append({"path": f"{at}/metadata/{key}", "message": "is not a valid environment variable name"})
    return found


_URL_FIELDS = ("callback_url", "status_callback_url")


def _references(document: Mapping[str, Any], at: str) -> list[Violation]:
    """What the schema's patterns cannot say about an image or a URL: the engine's grammar, a parsable host."""
    found: list[Violation] = []
    image = document.get("image")
    if isinstance(image, str) and "\n" not in image and (problem := references.image_problem(image)) is not None:
        found.append({"path": f"{at}/image", "message": problem})
    for name in _URL_FIELDS if not at else ():
        url = document.get(name)
        if isinstance(url, str) and "\n" not in url and (problem := references.url_problem(url)) is not None:
            found.append({"path": f"{at}/{name}", "message": problem})
    return found


def _results_single_line(document: Mapping[str, Any]) -> list[Violation]:
    """The ``artifacts`` and ``reports`` paths, for the same reason as ``_multi_line``."""
    found: list[Violation] = []
    for index, artifact in enumerate(document.get("artifacts") or ()):
        for name in ("path", "name"):
            if "\n" in str(artifact.get(name) or ""):
                found.append({"path": f"/artifacts/{index}/{name}", "message": "must be a single line"})
    for index, glob in enumerate((document.get("reports") or {}).get("junit") or ()):
        if "\n" in glob:
            found.append({"path": f"/reports/junit/{index}", "message": "must be a single line"})
    return found


def _may_hold_nul(document: Any) -> bool:
    """JSON can carry a NUL only as ``\\u0000``: one search of the C-encoded document instead of a Python walk."""
    try:
        return b"\\u0000" in orjson.dumps(document)
    except TypeError:  # e.g. an integer past 64 bits: let the walk decide
        return True


def _nul_bytes(value: Any, at: str) -> list[Violation]:
    """A NUL cannot reach a container (an environment value, an argument, a label): refused here, not retried."""
    if isinstance(value, str):
        return [{"path": at or "/", "message": "must not contain a NUL character"}] if "\x00" in value else []
    if isinstance(value, Mapping):
        return [v for key, item in value.items() for v in _nul_bytes(item, _pointer([*_split(at), key]))]
    if isinstance(value, list):
        return [v for index, item in enumerate(value) for v in _nul_bytes(item, f"{at}/{index}")]
    return []


def _split(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []


def _semantic(document: Mapping[str, Any], memory: Sequence[StepMemory] | None) -> Checked:
    """The rules JSON Schema cannot say, and the steps' sizes (``memory`` when given, else parsed here)."""
    violations: list[Violation] = _multi_line(document, "")
    violations.extend(_references(document, ""))
    sizes: list[StepMemory] = []
    if _may_hold_nul(document):  # the walk (with paths) only when one is there: most documents have none
        violations.extend(_nul_bytes(document, ""))
    violations.extend(_results_single_line(document))
    seen: dict[int, int] = {}
    for index, step in enumerate(document["steps"]):
        step_id = step["id"]
        if step_id in seen:
            violations.append({"path": f"/steps/{index}/id", "message": f"duplicates the id of /steps/{seen[step_id]}"})
        seen.setdefault(step_id, index)
        violations.extend(_multi_line(step, f"/steps/{index}"))
        violations.extend(_references(step, f"/steps/{index}"))
        size = memory[index] if memory is not None else StepMemory.of(step)
        sizes.append(size)
        if size is not _UNASKED:
            violations.extend(memory_violations(size, f"/steps/{index}"))
    return Checked(violations, sizes)
