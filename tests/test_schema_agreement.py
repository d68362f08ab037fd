"""The fast validator (submit's hot path) and jsonschema (the reference) must give the same verdict on every job.

Each valid example is mutated field by field with awkward values — booleans where integers go, 1.0, boundaries,
wrong types, odd keys — and both validators must agree on every variant.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import pytest

from runtime import schemas
from tests.helpers import EXAMPLES

AWKWARD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    1.5,
    2**63,
    -(2**63),
    "",
    "x",
    "x" * 257,
    "512M",
    "0M",
    "1.5G",
    "512Mi",
    "http://a",
    "https://lms.example/r?x=1",
    "ftp://a",
    "http://",
    "none",
    "a b",
    "_OK",
    "1BAD",
    [],
    [1],
    {},
    {"A": "b"},
    {"a-b": "c"},
    {"A": 1},
    3,
    50,
    51,
    1000,
    1001,
    604800,
    604801,
    16,
    15,
]


def variants(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The document with each field (also inside the first step) set to each awkward value, or removed."""
    for key in list(document):
        for value in AWKWARD:
            changed = copy.deepcopy(document)
            changed[key] = value
            yield changed
        removed = copy.deepcopy(document)
        del removed[key]
        yield removed
    step = document["steps"][0]
    for key in [*step, "cpu_limit", "memory_limit", "memory_swap", "pids_limit", "network", "continue_on_error"]:
        for value in AWKWARD:
            changed = copy.deepcopy(document)
            changed["steps"][0][key] = value
            yield changed
    for extra in ("nmae", "Steps", ""):
        changed = copy.deepcopy(document)
        changed[extra] = 1
        yield changed


def fast_accepts(document: Any) -> bool:
    try:
        schemas._accepts()(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def reference_accepts(document: Any) -> bool:
    return not list(schemas._validator().iter_errors(document))


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "valid").glob("*.json")))
def test_both_validators_agree_on_every_variant(name: str) -> None:
    document = json.loads((EXAMPLES / "valid" / name).read_text())
    disagreements = [
        (json.dumps(variant)[:200], fast)
        for variant in variants(document)
        if (fast := fast_accepts(variant)) != reference_accepts(variant)
    ]
    assert disagreements == []
