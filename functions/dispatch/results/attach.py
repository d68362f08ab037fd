"""Where a job run meets its results: a collector when the job asked for any, and what the terminal event carries.

``start`` gives the run its ``Collector`` (the executor fills it, see ``docker_volume`` and ``k8s_collect``);
``terminal_fields`` is what the terminal event adds: ``results`` once something was collected, nothing otherwise
(a job that asked for none, or ended before its steps ran), and it counts the metrics once.
"""

from __future__ import annotations

from typing import Any

from functions.dispatch.results.collector import Collector
from runtime import metrics
from runtime.jobs import Job
from runtime.messaging import Messaging
from runtime.settings import Settings


def start(conn: Messaging, job: Job, settings: Settings) -> Collector | None:
    return Collector(conn, job, settings) if job.wants_results else None


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
    return {"results": results}
