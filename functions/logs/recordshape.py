"""The job record's shape, read once from its one description, ``schemas/record.schema.json``.

From it follow the keys a new record, step or callback starts with and their values (``zeros``), the keys
``records.public`` serves and in which order (``IN_EVERY_RECORD``, then ``WHEN_KNOWN``), and the ``JobRecord``,
``StepRecord`` and ``Callback`` schemas of the logs API's OpenAPI document (``openapi_schemas``). The TypedDicts in
``records`` and hades_client's ``Job`` are held to it by tests/test_records_shape.py. A new field is added to the
schema file.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any, Literal

from runtime import openapi

Keeping = Literal["optional", "from-summary", "served-only"]
"""The schema's ``x-record`` of a field (absent: in every stored record).

- ``optional``: in new records, missing from records stored before it existed; served when there;
- ``from-summary``: known from the job's summary (its queued or running event), missing until then;
- ``served-only``: not stored; the logs API adds it when it serves a queued job.
"""
MARK = "x-record"


def _load() -> dict[str, Any]:
    text = resources.files("schemas").joinpath("record.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


SCHEMA = _load()
"""The record's JSON Schema as written (draft 2020-12, its sub-records under ``$defs``); do not change it."""


def keeping(name: str) -> Keeping | None:
    """How the record keeps field ``name``; None: in every stored record."""
    value: Keeping | None = SCHEMA["properties"][name].get(MARK)
    return value


def _fields(*kinds: Keeping | None) -> tuple[str, ...]:
    return tuple(name for name in SCHEMA["properties"] if keeping(name) in kinds)


IN_EVERY_RECORD = _fields(None)
"""Served as stored, in this order."""
WHEN_KNOWN = _fields("optional", "from-summary")
"""Served after those, in this order, when the stored record has them."""
STORED = _fields(None, "optional", "from-summary")
SERVED_ONLY = _fields("served-only")


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A ``#/$defs/`` reference resolved; any other node as it is (a ``#/components/schemas/`` reference names a
    schema the OpenAPI document gets from elsewhere: such a field starts at None)."""
    ref = node.get("$ref", "")
    if not ref.startswith("#/$defs/"):
        return node
    resolved: dict[str, Any] = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
    return resolved


def _zero(node: dict[str, Any]) -> Any:
    """A field's value before anything is known: null when it may be null, else the empty value of its type.

    A field with neither (a record's ``id`` and ``status``, a step's ``id`` and ``status``, a callback's ``url`` and
    ``state``) starts at None here and is set by what builds it in ``records``.
    """
    node = _resolve(node)
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "null" in kinds or None in node.get("enum", []):
        return None
    empty = {"integer": 0, "number": 0.0, "boolean": False, "array": []}
    return next((empty[kind] for kind in kinds if kind in empty), None)


Shape = Literal["JobRecord", "StepRecord", "Callback"]
_ZEROS: dict[Shape, dict[str, Any]] = {
    "JobRecord": {name: _zero(SCHEMA["properties"][name]) for name in _fields(None, "optional")},
    "StepRecord": {name: _zero(field) for name, field in SCHEMA["$defs"]["StepRecord"]["properties"].items()},
    "Callback": {name: _zero(field) for name, field in SCHEMA["$defs"]["Callback"]["properties"].items()},
}


def zeros(shape: Shape = "JobRecord") -> dict[str, Any]:
    """A new record's (or step's, or callback's) fields at their zeros, in the schema's order; for a record, its
    public ones without the ``from-summary`` ones. A fresh copy each time (``[]`` is the only mutable zero)."""
    return {name: [] if isinstance(zero, list) else zero for name, zero in _ZEROS[shape].items()}


def openapi_schemas() -> dict[str, Any]:
    """``JobRecord`` (the record as served), then its ``$defs``, as OpenAPI components: refs rewritten, without
    the schema file's own keywords (``$schema``, ``$id``, ``$comment``) and the ``x-record`` marks."""
    record = copy.deepcopy(SCHEMA)
    defs = record.pop("$defs")
    for keyword in ("$schema", "$id", "$comment"):
        record.pop(keyword, None)
    for field in record["properties"].values():
        field.pop(MARK, None)
    components: dict[str, Any] = openapi.rewrite_refs({"JobRecord": record, **defs})
    return components
