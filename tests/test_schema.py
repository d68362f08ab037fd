"""The job schema: the examples users copy, and the exact errors bad payloads get."""

from __future__ import annotations

import json
import re

import pytest

from runtime import jobs, schemas, units
from runtime.settings import LimitSettings
from tests.examples import INVALID_EXPECTED
from tests.helpers import EXAMPLES


def load(path: str) -> object:
    return json.loads((EXAMPLES / path).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "valid").glob("*.json")))
def test_valid_examples_have_no_violations(name: str) -> None:
    assert schemas.job_violations(load(f"valid/{name}")) == []


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "invalid").glob("*.json")))
def test_invalid_examples_get_their_exact_errors(name: str) -> None:
    assert name in INVALID_EXPECTED, f"add the expected errors of {name} to INVALID_EXPECTED"
    assert schemas.job_violations(load(f"invalid/{name}")) == INVALID_EXPECTED[name]


def test_a_trailing_newline_does_not_slip_through_the_patterns() -> None:
    document = {"name": "n", "metadata": {"FOO\n": "x"}, "steps": [{"id": 1, "image": "alpine\n", "network": "none"}]}
    assert schemas.job_violations(document) == [
        {"path": "/metadata/FOO\n", "message": "is not a valid environment variable name"},
        {"path": "/steps/0/image", "message": "must be a single line"},
    ]


def test_a_non_object_body_is_named_at_the_root() -> None:
    assert schemas.job_violations([1, 2]) == [{"path": "/", "message": "must be of type object"}]


def test_large_values_are_not_echoed_back() -> None:
    violations = schemas.job_violations({"name": "x" * 100_000, "steps": [{"id": 1, "image": "a"}]})
    assert violations == [{"path": "/name", "message": "must be at most 256 characters long"}]


def test_more_than_fifty_steps_are_refused() -> None:
    steps = [{"id": i, "image": "alpine"} for i in range(1, 52)]
    assert schemas.job_violations({"name": "big", "steps": steps}) == [
        {"path": "/steps", "message": "must have at most 50 items"}
    ]


def test_schema_memory_pattern_is_the_parser_rule() -> None:
    pattern = schemas.job_schema()["$defs"]["memory"]["pattern"]
    assert pattern == units.MEMORY_PATTERN
    for text in ("512M", "2G", "2g", "512m", "512Mi", "1Gi", "1048576", "0M", "1.5G", "512MB", "M", "-1G"):
        assert (re.match(pattern, text) is not None) == (units.parse_memory(text) is not None), text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 2**20),
        ("512m", 512 * 2**20),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 2**30),
        ("64k", 65536),
        ("100", 100),
    ],
)
def test_memory_units_are_binary_whatever_the_case(text: str, size: int) -> None:
    assert units.parse_memory(text) == size


def test_kubernetes_quantities_keep_the_exact_size() -> None:
    assert units.to_kubernetes_quantity(512 * 2**20) == "512Mi"
    assert units.to_kubernetes_quantity(2 * 2**30) == "2Gi"
    assert units.to_kubernetes_quantity(1000) == "1000"


def test_operator_maxima_and_networks_are_enforced() -> None:
    limits = LimitSettings(max_cpu=2, max_memory_bytes=2**30, max_pids=100, max_timeout_s=60)
    document = {
        "name": "greedy",
        "timeout_seconds": 61,
        "steps": [
            {
                "id": 1,
                "image": "a",
                "cpu_limit": 3,
                "memory_limit": "2G",
                "pids_limit": 101,
                "network": "host",
            }
        ],
    }
    assert jobs.limit_violations(document, limits) == [
        {"path": "/timeout_seconds", "message": "must be at most 60 (operator maximum)"},
        {"path": "/steps/0/cpu_limit", "message": "must be at most 2 cores"},
        {"path": "/steps/0/memory_limit", "message": "must be at most 1G"},
        {"path": "/steps/0/pids_limit", "message": "must be at most 100"},
        {"path": "/steps/0/network", "message": "is not allowed here; allowed: none"},
    ]


def test_defaults_fill_in_and_steps_sort_by_id() -> None:
    limits = LimitSettings()
    document = {
        "name": "j",
        "metadata": {"A": "job", "B": "job"},
        "timeout_seconds": 0,
        "steps": [
            {"id": 2, "image": "b", "metadata": {"B": "step"}},
            {"id": 1, "image": "a", "memory_limit": "64M"},
        ],
    }
    job = jobs.job_from_document(document, job_id=jobs.new_job_id(), limits=limits, submitted_at=jobs.utc_now())
    assert [s.id for s in job.steps] == [1, 2]
    assert job.timeout_s == limits.default_timeout_s
    assert job.steps[0].memory_bytes == 64 * 2**20 and job.steps[0].memory_swap_bytes == 64 * 2**20
    assert job.steps[1].memory_bytes == limits.default_memory_bytes
    env = job.environment(job.steps[1])
    assert env["A"] == "job" and env["B"] == "step"
    assert env["HADES_JOB_ID"] == env["UUID"] == job.id and env["HADES_STEP_ID"] == "2"
    assert jobs.Job.from_message(json.loads(json.dumps(job.to_message()))) == job


@pytest.mark.parametrize(
    ("priority", "lane"), [(5, "high"), (3, "high"), (2, "normal"), (1, "low"), (0, "low"), (-4, "low")]
)
def test_priority_maps_to_the_original_lanes(priority: int, lane: str) -> None:
    assert jobs.lane_for(priority) == lane


def test_job_ids_are_fresh_every_time() -> None:
    # Never derived from an Idempotency-Key (issue 13, finding 3): functions/submit/idempotency.py maps keys.
    assert jobs.new_job_id() != jobs.new_job_id()
    assert jobs.is_job_id(jobs.new_job_id())
