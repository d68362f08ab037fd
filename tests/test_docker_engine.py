"""The Docker engine door's error translation, without an engine: what a failed pull may say about itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.errors
import pytest
import requests

from functions.dispatch.executors.docker import engine

INTERNAL_BODY = "<html><title>internal admin</title>db_password=hunter22</html>"


class _Api:
    def __init__(self, *, events: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
        self.events, self.error = events or [], error

    def pull(self, image: str, *, stream: bool, decode: bool) -> Any:
        if self.error is not None:
            raise self.error
        return iter(self.events)


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


async def pull_failure(api: _Api) -> str:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        door = engine.Engine(_Client(api), pool=pool, host_cpus=None)
        with pytest.raises(engine.PullFailed) as caught:
            await door.pull("vm:15002/internal/app:1", timeout_s=5)
    finally:
        pool.shutdown(wait=True)
    return str(caught.value)


async def test_a_registry_answer_body_never_reaches_the_reason() -> None:
    """Issue 20, item 2: the job's reason showed an internal service's answer body to the submitter."""
    said = await pull_failure(_Api(events=[{"error": f"unexpected answer from the registry: {INTERNAL_BODY}"}]))
    assert said == "the registry refused it or could not be reached"
    assert "hunter22" not in said and "<html>" not in said


async def test_a_refused_pull_says_its_status_and_a_fixed_text() -> None:
    response = requests.Response()
    response.status_code = 404
    error = docker.errors.APIError(
        "404 Client Error", response=response, explanation=f"manifest unknown {INTERNAL_BODY}"
    )
    said = await pull_failure(_Api(error=error))
    assert said == "HTTP 404: not found in the registry"


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("manifest for x:1 not found: manifest unknown", "not found in the registry"),
        ("pull access denied for x, repository does not exist", "not found in the registry"),
        ("unauthorized: authentication required", "access denied by the registry"),
        (
            "Get https://r/v2/: net/http: request canceled (Client.Timeout exceeded)",
            "the registry did not answer in time",
        ),
        (INTERNAL_BODY, "the registry refused it or could not be reached"),
    ],
)
def test_pull_errors_become_one_of_a_few_fixed_texts(text: str, fixed: str) -> None:
    assert engine.pull_error(text) == fixed
