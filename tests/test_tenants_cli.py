"""``hades list --tenant`` asks the server for one tenant's jobs and shows the column; ``status`` names it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from tests.test_cli_commands import JOB_ID, LOGS, RECORD, SUBMIT, hades


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_list_sends_the_tenant_and_shows_it(api: respx.MockRouter) -> None:
    route = api.get(f"{LOGS}/jobs").respond(200, json={"jobs": [{**RECORD, "tenant": "cs101"}], "next": None})
    result = hades("list", "--tenant", "cs101", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert dict(route.calls.last.request.url.params) == {"tenant": "cs101", "limit": "5"}
    header, row = result.stdout.splitlines()[:2]
    assert "tenant" in header.split() and "cs101" in row.split()


def test_status_names_the_tenant(api: respx.MockRouter) -> None:
    api.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json={**RECORD, "tenant": "cs102"})
    result = hades("status", JOB_ID)
    assert result.exit_code == 0, result.output
    assert "tenant cs102" in result.stdout


def test_submit_sends_the_tenant_given(api: respx.MockRouter, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"name": "n", "steps": [{"id": 1, "image": "alpine"}]}))
    answer = {"id": JOB_ID, "status": "queued", "lane": "high", "tenant": "cs101", "links": {}}
    route = api.post(f"{SUBMIT}/jobs").respond(202, json=answer)
    result = hades("submit", str(job_file), "--tenant", "cs101")
    assert result.exit_code == 0, result.output
    assert json.loads(route.calls.last.request.content)["tenant"] == "cs101"
    assert result.stdout.strip() == JOB_ID
