"""Where a job run meets its results: a collector when the job asked for any, and what the terminal event carries.

``start`` gives the run its ``Collector`` (the executor fills it, see ``docker_volume`` and ``k8s_collect``);
``terminal_fields`` is what the terminal event adds: ``results`` once something was collected, nothing otherwise
(a job that asked for none, or ended before its steps ran), and it counts the metrics once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from functions.dispatch.results.collector import Collector
from runtime import metrics
from runtime.jobs import Job
from runtime.messaging import Messaging
from runtime.settings import Settings


def start(conn: Messaging, job: Job, settings: Settings, *, mask: Callable[[str], str] = str) -> Collector | None:
    return Collector(conn, job, settings, mask=mask) if job.wants_results else None


def terminal_fields(collector: Collector | None) -> dict[str, Any]:
    if collector is None or not collector.started:
        return {}
    counted = collector.done
    results = collector.finish()
    if not counted:
        tests = collector.results.tests
        if collector.results.wants_tests:
            metrics.TESTS.labels("passed").inc(tests.passed)
            metrics.TESTS.labels("failed").inc(tests.failures)
            metrics.TESTS.labels("error").inc(tests.errors)
            metrics.TESTS.labels("skipped").inc(tests.skipped)
        metrics.ARTIFACT_FILES.inc(len(collector.results.artifacts))
        metrics.ARTIFACT_BYTES.inc(collector.results.kept_bytes)
        metrics.ARTIFACTS_SKIPPED.inc(len(collector.results.skipped))
    return {"results": _within(results)}


MAX_RESULTS_BYTES = 512 * 1024
"""The results travel in the terminal event (NATS takes 1 MiB by default) and live on the record: past this, the
failed cases' output excerpts are shortened, then dropped (their names and messages stay)."""


def _within(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` made to fit ``MAX_RESULTS_BYTES``: shorter outputs first, then fewer listed items (counted)."""
    for limit in (500, 0):
        if len(json.dumps(results)) <= MAX_RESULTS_BYTES:
            return results
        results["failed_tests"] = [{**case, "output": case["output"][:limit]} for case in results["failed_tests"]]
    while len(json.dumps(results)) > MAX_RESULTS_BYTES:
        longest = max(("skipped", "warnings", "failed_tests", "artifacts"), key=lambda k: len(json.dumps(results[k])))
        if not results[longest]:
            break
        dropped = results[longest][len(results[longest]) // 2 :]
        results[longest] = results[longest][: len(results[longest]) // 2]
        results["unlisted"] += len(dropped)
    return results
