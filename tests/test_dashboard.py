"""The dashboard at /ui/, driven in a real headless chromium against the real functions on Docker.

Also here, without a browser: the dashboard's own routes (auth, security headers, cancel off, lane stats).
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs.handlers import create_app as create_logs
from functions.logs.ui import lane_stats
from runtime.settings import Settings
from tests.browser import Stack, chrome, stack  # noqa: F401 (fixtures)
from tests.conftest import make_settings

IMAGES = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "hades-dashboard")
"""Where the pages' screenshots go; ``SCREENSHOT_DIR=docs/img`` refreshes the README's (the tests never write
into the checkout unless asked)."""
WAIT_S = 60


def wait_for(driver: Any, condition: Any, *, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition(driver)`` until it is truthy (Selenium's own deadline-bound poll). A live page re-renders
    parts of itself (the chart, the rows): an element replaced between finding and reading it is looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)


def open_dashboard(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(
        driver,
        lambda d: (
            d.execute_script(
                "return document.body.dataset.ready === 'true' && document.getElementById('live').dataset.state"
            )
            == "live"
        ),
    )
    driver.execute_script("window.hadesNoReload = true")


def log_lines(driver: Any) -> list[str]:
    return list(
        driver.execute_script("return Array.from(document.querySelectorAll('#logs .line')).map(l => l.textContent)")
    )


def job_status(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('job-view').dataset.status || ''"))


def row_status(driver: Any, job_id: str) -> str | None:
    status = driver.execute_script(
        "const row = document.querySelector(`#jobs tr[data-job-id='${arguments[0]}']`);"
        "return row ? row.dataset.status : null",
        job_id,
    )
    return None if status is None else str(status)


def shown_job_ids(driver: Any) -> list[str]:
    return list(
        driver.execute_script("return Array.from(document.querySelectorAll('#jobs tr')).map(r => r.dataset.jobId)")
    )


def screenshot(driver: Any, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(IMAGES / name))


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_a_submitted_job_appears_live_and_its_page_streams_lines_in_order(chrome: Any, stack: Stack) -> None:  # noqa: F811
    open_dashboard(chrome, f"{stack.logs_url}/ui/")
    job_id = stack.submit("for i in 1 2 3; do echo line-$i; sleep 1; done; echo done", name="live job")

    wait_for(chrome, lambda d: row_status(d, job_id) is not None)
    assert chrome.execute_script("return window.hadesNoReload") is True  # it came without a reload
    chrome.find_element("css selector", f"#jobs tr[data-job-id='{job_id}'] a").click()

    # The first line shows while the job still runs, before the rest is printed.
    wait_for(chrome, lambda d: job_status(d) == "running" and "line-1" in log_lines(d))
    assert "done" not in log_lines(chrome)

    wait_for(
        chrome,
        lambda d: (
            job_status(d) == "succeeded" and d.execute_script("return !!document.getElementById('logs').dataset.ended")
        ),
    )
    assert log_lines(chrome) == ["line-1", "line-2", "line-3", "done"]
    seqs = chrome.execute_script("return Array.from(document.querySelectorAll('#logs .line')).map(l => +l.dataset.seq)")
    assert seqs == sorted(seqs)
    step = chrome.find_element("css selector", "#steps tr[data-step='1']")
    assert step.get_attribute("data-status") == "succeeded"
    assert step.find_element("css selector", ".exit").text == "0"
    assert "hades-test-busybox:1" in step.text
    assert chrome.find_element("id", "job-finished").text != "—"
    assert chrome.execute_script("return window.hadesNoReload") is True

    chrome.find_element("link text", "← All jobs").click()
    wait_for(chrome, lambda d: row_status(d, job_id) == "succeeded")


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_the_filters_show_only_matching_jobs(chrome: Any, stack: Stack) -> None:  # noqa: F811
    open_dashboard(chrome, f"{stack.logs_url}/ui/")
    passed = stack.submit("echo compiling; echo 'tests: 12 passed'", name="exercise-1 alice")
    failed = stack.submit("echo 'tests: 3 failed' >&2; exit 3", name="exercise-1 bob")
    other = stack.submit("echo hello", name="exercise-2 carol", priority=1)
    wait_for(
        chrome,
        lambda d: (
            (row_status(d, passed), row_status(d, failed), row_status(d, other)) == ("succeeded", "failed", "succeeded")
        ),
    )
    # Lane stats are cached for a few seconds: the chart catches up with the three finished jobs.
    wait_for(chrome, lambda d: "3 finished" in d.find_element("css selector", "#throughput svg").text)
    screenshot(chrome, "dashboard-jobs.png")

    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(chrome.find_element("id", "filter-status")).select_by_value("failed")
    wait_for(chrome, lambda d: shown_job_ids(d) == [failed])

    Select(chrome.find_element("id", "filter-status")).select_by_value("")
    name = chrome.find_element("id", "filter-name")
    name.send_keys("exercise-1", Keys.ENTER)
    wait_for(chrome, lambda d: sorted(shown_job_ids(d)) == sorted([failed, passed]))  # same-second: either order

    # A new job that does not match stays out; one that does comes in live.
    later = stack.submit("echo again", name="exercise-1 dave")
    stack.submit("echo again", name="exercise-3 erin")
    wait_for(chrome, lambda d: row_status(d, later) == "succeeded")
    shown = shown_job_ids(chrome)
    assert shown[0] == later and sorted(shown[1:]) == sorted([failed, passed])

    # Search by id opens the job's page.
    chrome.find_element("id", "find-id").send_keys(other, Keys.ENTER)
    wait_for(chrome, lambda d: d.find_element("id", "job-id").text == other)
    assert chrome.execute_script("return window.hadesNoReload") is True


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_html_and_ansi_escapes_in_a_log_are_shown_as_text(chrome: Any, stack: Stack) -> None:  # noqa: F811
    script = "\n".join(
        [
            "echo '<script>window.pwned = 1</script>'",
            "echo '<b>bold</b> <img src=x onerror=\"window.pwned = 2\">'",
            r"printf '\033[31mred\033[0m plain \033[1;32mgreen\033[0m\n'",
            r"printf 'title \033]0;owned\007 clear \033[2J end\n'",
            "echo 'step two done' >&2",
        ]
    )
    job_id = stack.submit(script, name="<i>name</i> & co")
    open_dashboard(chrome, f"{stack.logs_url}/ui/#/job/{job_id}")
    wait_for(chrome, lambda d: job_status(d) == "succeeded" and len(log_lines(d)) == 5)

    lines = [line for line in log_lines(chrome) if line != "step two done"]  # stderr may come anywhere
    assert lines[0] == "<script>window.pwned = 1</script>"
    assert lines[1] == '<b>bold</b> <img src=x onerror="window.pwned = 2">'
    assert lines[2] == "red plain green"
    assert lines[3] == "title ^[]0;owned^G clear ^[[2J end"  # caret notation, as cat -v shows them
    assert chrome.execute_script("return window.pwned") is None
    assert (
        chrome.execute_script(
            "return document.querySelectorAll('#logs script, #logs b, #logs img, #job-view i').length"
        )
        == 0
    )
    red = chrome.find_element("css selector", "#logs .ansi-fg-1")
    green = chrome.find_element("css selector", "#logs .ansi-fg-2.ansi-bold")
    assert (red.text, green.text) == ("red", "green")
    assert red.value_of_css_property("color") != green.value_of_css_property("color")
    assert chrome.find_element("id", "job-name").text == "<i>name</i> & co"
    assert chrome.find_element("css selector", "#logs .line.stderr").text == "step two done"
    href = chrome.find_element("id", "job-download").get_attribute("href")
    assert href == f"{stack.logs_url}/jobs/{job_id}/logs?format=text"
    screenshot(chrome, "dashboard-job.png")


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_the_cancel_button_cancels_a_running_job(chrome: Any, stack: Stack) -> None:  # noqa: F811
    job_id = stack.submit("echo started; sleep 60; echo never", name="long job")
    open_dashboard(chrome, f"{stack.logs_url}/ui/#/job/{job_id}")
    wait_for(chrome, lambda d: job_status(d) == "running" and "started" in log_lines(d))
    button = chrome.find_element("id", "job-cancel")
    assert button.is_displayed()
    button.click()
    wait_for(chrome, lambda d: d.switch_to.alert).accept()
    wait_for(chrome, lambda d: job_status(d) == "cancelled")
    assert not chrome.find_element("id", "job-cancel").is_displayed()
    assert "never" not in log_lines(chrome)
    assert stack.record(job_id)["status"] == "cancelled"


# ---------- without a browser ----------


@pytest.fixture
async def logs_client(aiohttp_client: Any, settings: Settings) -> TestClient:
    client: TestClient = await aiohttp_client(create_logs(settings))
    return client


async def test_the_dashboard_is_served_with_a_strict_content_security_policy(logs_client: TestClient) -> None:
    response = await logs_client.get("/ui/")
    assert response.status == 200 and "text/html" in response.content_type
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    script = await logs_client.get("/ui/static/app.js")
    assert script.status == 200 and "Content-Security-Policy" in script.headers
    redirect = await logs_client.get("/ui", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == "/ui/"


async def test_the_read_key_guards_the_dashboard(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_logs(make_settings(clean_nats, HADES_LOGS_API_KEY="k3y")))
    for path in ("/ui/", "/ui/static/app.js", "/ui/api/stats", "/ui/api/config"):
        response = await client.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Basic")  # the browser asks, then sends it along
    response = await client.get("/ui/api/config", headers={"Authorization": "Bearer k3y"})
    assert response.status == 200 and await response.json() == {"cancel": False}


async def test_cancel_is_off_without_a_submit_url(logs_client: TestClient) -> None:
    assert await (await logs_client.get("/ui/api/config")).json() == {"cancel": False}
    response = await logs_client.delete("/ui/api/jobs/6c0c9e0e-1b1b-4c1c-8d8d-0e0e0e0e0e0e")
    assert response.status == 404
    assert "HADES_UI_SUBMIT_URL" in (await response.json())["detail"]


def test_lane_stats_count_queued_and_running_and_bucket_finished_jobs() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)

    def at(seconds_ago: float) -> str:
        return (now - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")

    found = [
        {"id": "a", "status": "queued", "lane": "high", "submitted_at": at(50)},
        {"id": "b", "status": "queued", "lane": "high", "submitted_at": at(90)},
        {"id": "c", "status": "running", "lane": "low", "submitted_at": at(100)},
        {"id": "d", "status": "succeeded", "lane": "high", "finished_at": at(5)},
        {"id": "e", "status": "failed", "lane": "normal", "finished_at": at(40)},
        {"id": "f", "status": "succeeded", "lane": "normal", "finished_at": at(3600)},  # too old for the chart
    ]
    stats = lane_stats(found, now=now)
    lanes = {lane["lane"]: lane for lane in stats["lanes"]}
    assert (lanes["high"]["queued"], lanes["high"]["running"], lanes["high"]["oldest_queued_at"]) == (2, 0, at(90))
    assert (lanes["low"]["queued"], lanes["low"]["running"]) == (0, 1)
    buckets = stats["throughput"]["buckets"]
    assert buckets[-1] == {"succeeded": 1, "failed": 0}
    assert buckets[-2] == {"succeeded": 0, "failed": 1}
    assert sum(b["succeeded"] + b["failed"] for b in buckets) == 2


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_a_malformed_or_unknown_job_link_shows_an_error_and_nothing_of_another_job(chrome: Any, stack: Stack) -> None:  # noqa: F811
    # Issue 20, finding 7: "#/job/%E0%A4%A" threw; an unknown id's error stood under the previous job's details.
    job_id = stack.submit("echo shown before", name="the previous job")
    open_dashboard(chrome, f"{stack.logs_url}/ui/#/job/{job_id}")
    wait_for(chrome, lambda d: job_status(d) == "succeeded" and log_lines(d) == ["shown before"])
    chrome.execute_script(
        "window.pageErrors = [];"
        "window.addEventListener('error', (e) => window.pageErrors.push(String(e.message)));"
        "window.addEventListener('unhandledrejection', (e) => window.pageErrors.push(String(e.reason)));"
    )
    error_text = "return document.getElementById('error').hidden ? '' : document.getElementById('error').textContent"
    for link, said in (
        ("#/job/%E0%A4%A", "not a valid job link"),
        ("#/job/00000000-0000-4000-8000-000000000000", "No job"),
    ):
        chrome.execute_script("location.hash = arguments[0]", link)
        wait_for(chrome, lambda d, said=said: said in d.execute_script(error_text))
        assert chrome.execute_script("return window.pageErrors") == []
        assert chrome.find_element("id", "job-name").text == "—"
        assert job_status(chrome) == "" and log_lines(chrome) == []
        assert chrome.execute_script("return document.querySelectorAll('#steps tr').length") == 0


@pytest.mark.docker
@pytest.mark.timeout(180)
def test_bidi_overrides_in_names_and_lines_are_shown_not_applied(chrome: Any, stack: Stack) -> None:  # noqa: F811
    job_id = stack.submit(r"printf 'access \342\200\256nimda\342\201\246 x\n'", name="name \u202eevil")
    open_dashboard(chrome, f"{stack.logs_url}/ui/#/job/{job_id}")
    wait_for(chrome, lambda d: job_status(d) == "succeeded" and len(log_lines(d)) == 1)
    assert log_lines(chrome) == ["access <U+202E>nimda<U+2066> x"]
    assert chrome.find_element("id", "job-name").text == "name <U+202E>evil"
