"""Schemathesis against the OpenAPI documents that submit and logs serve (issue 13, "Beyond fixing").

Both functions run as real processes on their own nats-server; no dispatcher runs, so accepted jobs stay queued
and no Docker engine is needed. Schemathesis reads each ``GET /openapi.json`` and sends generated requests
(examples, coverage and fuzzing phases: valid and invalid bodies, parameters and headers); every answer must be
below 500 and match the document: a documented status code, content type, headers and body schema.

Left out: the two Server-Sent Events routes (``/jobs/{id}/logs/stream``, ``/ui/api/events``), which answer a
known job or the dashboard with a stream that only ends with the job, and the stateful phase (chains of calls
through the documents' links), which finds nothing more here at 3x the time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.natsserver import NatsServer
from tests.processes import running_functions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
EXAMPLES_PER_OPERATION = {"submit": 250, "logs": 250}
"""Fuzzing cases per operation at most (an operation with few possible inputs gets fewer)."""
STREAMS = r"logs/stream$|^/ui/api/events$"


def _schemathesis(url: str, *, examples: int, workdir: Path, exclude: str | None) -> subprocess.Popen[str]:
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(examples),
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--seed",
        "13",  # reproducible: a failure here fails the same way on the next run
        "--no-color",
    ]
    if exclude:
        argv += ["--exclude-path-regex", exclude]
    workdir.mkdir()
    return subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _generated(output: str) -> int:
    found = re.search(r"(\d+) generated", output)
    return int(found.group(1)) if found else 0


def test_generated_requests_get_no_5xx_and_answers_match_the_served_documents(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    with running_functions(own_nats.url, tmp_path, names=("submit", "logs")) as functions:
        runs = {
            name: _schemathesis(
                functions.url(name),
                examples=EXAMPLES_PER_OPERATION[name],
                workdir=tmp_path / f"schemathesis-{name}",
                exclude=STREAMS if name == "logs" else None,
            )
            for name in ("submit", "logs")
        }
        outputs = {name: run.communicate(timeout=280)[0] for name, run in runs.items()}

    for name, run in runs.items():
        output = outputs[name]
        problems = output[output.find("FAILURES") :] if "FAILURES" in output else output[-4000:]
        assert run.returncode == 0, f"schemathesis found problems in {name}'s API:\n{problems}"
    counts = {name: _generated(output) for name, output in outputs.items()}
    print(f"schemathesis cases: {counts}")
    assert sum(counts.values()) >= 2000, counts
