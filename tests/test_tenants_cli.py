"""``hades list --tenant`` asks the server for one tenant's jobs and shows the column; ``status`` names it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from tests.test_cli_commands import JOB_ID, LOGS, RECORD, hades


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
