"""The original Hades' log shapes: its Log Manager's ``GET /jobs/{id}/logs`` and the callback body of /build jobs.

The original posts a bare JSON array of ``{job_id, container_id, logs: [{timestamp, message, output_stream}]}``,
one entry per container that ran, in step order (``shared/buildlogs/buildlogs.go``); the Artemis adapter reads the
Execute step's entry by its index. So these shapes leave out what the original never had: steps that never ran
(skipped, or no container started), Hades' own notices (``output_stream: "system"``, step 0), which stay in the
job record, the text and live routes, and ``GET /jobs/{id}/logs?notices=true``. A container that ran without
output keeps its (empty) entry, as in the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from functions.logs.records import PublicRecord, StepRecord

STREAMS = ("stdout", "stderr")
ORIGIN_BUILD = "build"
"""``origin`` of a job submitted through the original's ``POST /build`` (set by submit, kept on the record)."""


def ran(step: StepRecord) -> bool:
    """A step whose container started: it has a start time or an exit code."""
    return step.get("started_at") is not None or step.get("exit_code") is not None


def is_build(record: PublicRecord) -> bool:
    return record.get("origin") == ORIGIN_BUILD


def log_manager_entries(record: PublicRecord, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our per-step entries cut to the original's: containers that ran, stdout/stderr lines; extra fields kept.

    A step whose output is there ran, even when the event saying it started is not on the record yet.
    """
    started = {step["id"] for step in record.get("steps") or [] if ran(step)}
    kept = []
    for entry in entries:
        lines = [line for line in entry["logs"] if line.get("output_stream") in STREAMS]
        step = entry.get("step")
        if step and (step in started or lines):
            kept.append({**entry, "logs": lines})
    return kept


def callback_body(record: PublicRecord, entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Exactly the original's callback body: the bare array, with only the fields its types have."""
    return [
        {
            "job_id": entry["job_id"],
            "container_id": entry["container_id"],
            "logs": [
                {"timestamp": line["timestamp"], "message": line["message"], "output_stream": line["output_stream"]}
                for line in entry["logs"]
            ],
        }
        for entry in log_manager_entries(record, entries)
    ]
