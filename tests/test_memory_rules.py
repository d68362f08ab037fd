"""The memory rules, said once (``schemas.memory_violations`` over ``schemas.StepMemory``), as /jobs and /build answer.

The operator here defaults to 512M and allows at most 1G. Each memory string is parsed once per submission: the
sizes travel from validation to the job that is queued.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.submit import enqueue
from functions.submit.handlers import create_app
from runtime import jobs, schemas, units
from runtime.settings import LimitSettings
from tests.helpers import make_settings

M = 1024**2
LIMITS = {"HADES_DEFAULT_MEMORY_LIMIT": "512M", "HADES_MAX_MEMORY_LIMIT": "1G"}


@pytest.fixture
async def submit(clean_nats: str, aiohttp_client: Any) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(make_settings(clean_nats, **LIMITS)))
    return client


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[jobs.Job]:
    """The jobs submit hands to ``enqueue``, as they were resolved."""
    seen: list[jobs.Job] = []
    real = enqueue.enqueue

    async def recording(messaging: Any, job: jobs.Job) -> enqueue.Enqueued:
        seen.append(job)
        return await real(messaging, job)

    monkeypatch.setattr(enqueue, "enqueue", recording)
    return seen


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every memory string parsed, in order."""
    seen: list[str] = []
    real = units.parse_memory

    def counting(text: str) -> int | None:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(units, "parse_memory", counting)
    return seen


def job_document(**step: Any) -> dict[str, Any]:
    return {"name": "memory", "steps": [{"id": 1, "image": "alpine", **step}]}


def build_body(**step: Any) -> dict[str, Any]:
    return {"name": "memory", "priority": 1, "steps": [{"id": 1, "name": "s", "image": "alpine", **step}]}


# (step fields, /jobs 422 errors, /build 400 errors): one table for both routes.
REFUSED = {
    "swap below memory": (
        {"memory_limit": "512M", "memory_swap": "256M"},
        [{"path": "/steps/0/memory_swap", "message": "must be at least memory_limit"}],
        [{"path": "/steps/0/memory_swap", "message": "memory_swap must be greater than or equal to memory_limit"}],
    ),
    "swap without memory, below the default": (
        {"memory_swap": "256M"},
        [{"path": "/steps/0/memory_swap", "message": "must be at least the default memory_limit, 512M"}],
        # The original's rule, stricter: /build wants a memory_limit with any memory_swap (docs/compat.md).
        [{"path": "/steps/0/memory_swap", "message": "memory_swap requires memory_limit to be set"}],
    ),
    "both over the maximum": (
        {"memory_limit": "2G", "memory_swap": "4G"},
        [
            {"path": "/steps/0/memory_limit", "message": "must be at most 1G"},
            {"path": "/steps/0/memory_swap", "message": "must be at most 1G"},
        ],
        [
            {"path": "/steps/0/memory_limit", "message": "must be at most 1G"},
            {"path": "/steps/0/memory_swap", "message": "must be at most 1G"},
        ],
    ),
    "below the floor": (
        {"memory_limit": "4M", "memory_swap": "5M"},
        [
            {"path": "/steps/0/memory_limit", "message": "must be at least 6M"},
            {"path": "/steps/0/memory_swap", "message": "must be at least 6M"},
        ],
        [
            {"path": "/steps/0/memory_limit", "message": "must be at least 6M"},
            {"path": "/steps/0/memory_swap", "message": "must be at least 6M"},
        ],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_jobs_refuses_with_one_rule_and_one_wording(submit: TestClient, case: str) -> None:
    step, expected, _ = REFUSED[case]
    response = await submit.post("/jobs", json=job_document(**step))
    assert response.status == 422, await response.text()
    assert (await response.json())["errors"] == expected


@pytest.mark.parametrize("case", list(REFUSED))
async def test_build_refuses_the_same_steps_in_the_originals_words(submit: TestClient, case: str) -> None:
    step, _, expected = REFUSED[case]
    response = await submit.post("/build", json=build_body(**step))
    assert response.status == 400, await response.text()
    assert (await response.json())["errors"] == expected


@pytest.mark.parametrize(
    ("step", "memory_bytes", "swap_bytes"),
    [
        ({}, 512 * M, 512 * M),  # the default, and no swap
        ({"memory_swap": "768M"}, 512 * M, 768 * M),  # /jobs only: at least the default is enough
        ({"memory_limit": "256M"}, 256 * M, 256 * M),
        ({"memory_limit": "256M", "memory_swap": "1G"}, 256 * M, 1024 * M),
    ],
)
async def test_jobs_resolves_each_size_from_one_parse(
    submit: TestClient,
    queued: list[jobs.Job],
    parses: list[str],
    step: dict[str, str],
    memory_bytes: int,
    swap_bytes: int,
) -> None:
    response = await submit.post("/jobs", json=job_document(**step))
    assert response.status == 202, await response.text()
    [job] = queued
    assert (job.steps[0].memory_bytes, job.steps[0].memory_swap_bytes) == (memory_bytes, swap_bytes)
    assert sorted(parses) == sorted(step.values())  # each string once: validation's sizes built the job


async def test_build_resolves_each_size_from_one_parse(
    submit: TestClient, queued: list[jobs.Job], parses: list[str]
) -> None:
    response = await submit.post("/build", json=build_body(memory_limit="256M", memory_swap="1G"))
    assert response.status == 200, await response.text()
    [job] = queued
    assert (job.steps[0].memory_bytes, job.steps[0].memory_swap_bytes) == (256 * M, 1024 * M)
    assert sorted(parses) == ["1G", "256M"]


def test_the_document_alone_decides_what_it_can_the_operator_the_rest() -> None:
    """Without the operator's limits only an asked memory_limit counts; with them, its default does."""
    limits = LimitSettings(default_memory_bytes=512 * M, max_memory_bytes=1024 * M)
    swap_only = schemas.StepMemory.of({"memory_swap": "256M"})
    assert schemas.memory_violations(swap_only, "/steps/0") == []
    assert schemas.memory_violations(swap_only, "/steps/0", limits) == [
        {"path": "/steps/0/memory_swap", "message": "must be at least the default memory_limit, 512M"}
    ]
    both = schemas.StepMemory.of({"memory_limit": "512M", "memory_swap": "256M"})
    expected = [{"path": "/steps/0/memory_swap", "message": "must be at least memory_limit"}]
    assert (
        schemas.memory_violations(both, "/steps/0") == schemas.memory_violations(both, "/steps/0", limits) == expected
    )
