"""The dashboard's tenant column, filter and job page, in a real headless chromium against the real functions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import Stack, chrome, stack  # noqa: F401 (fixtures)
from tests.test_dashboard import open_dashboard, row_status, shown_job_ids, wait_for


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_the_tenant_column_filter_and_job_page(chrome: Any, stack: Stack) -> None:  # noqa: F811
    open_dashboard(chrome, f"{stack.logs_url}/ui/")
    mine = stack.submit("echo one", name="t22 tenant a", tenant="cs101")
    theirs = stack.submit("echo two", name="t22 tenant b", tenant="cs102")
    wait_for(chrome, lambda d: (row_status(d, mine), row_status(d, theirs)) == ("succeeded", "succeeded"))
    cell = chrome.find_element("css selector", f'tr[data-job-id="{mine}"] td.tenant')
    assert cell.text == "cs101"

    from selenium.webdriver.common.keys import Keys

    chrome.find_element("id", "filter-tenant").send_keys("cs102", Keys.ENTER)
    wait_for(chrome, lambda d: shown_job_ids(d) == [theirs])

    chrome.get(f"{stack.logs_url}/ui/#/job/{mine}")
    wait_for(chrome, lambda d: d.find_element("id", "job-tenant").text == "cs101")
