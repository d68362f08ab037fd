"""A job's ``artifacts`` and ``reports``: accepted, refused with the field named, carried to dispatch, limited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.submit.handlers import create_app
from runtime import jobs, schemas
from runtime.settings import Settings, SettingsError
from tests.helpers import make_settings

MAVEN = {
    "name": "maven",
    "steps": [{"id": 1, "image": "maven:3"}],
    "artifacts": [{"path": "target/app.jar", "name": "app.jar"}, {"path": "/shared/target/site/**"}],
    "reports": {"junit": ["target/surefire-reports/TEST-*.xml"]},
}


def test_a_job_with_artifacts_and_reports_is_valid_and_reaches_dispatch_relative_to_shared() -> None:
    assert schemas.job_violations(MAVEN) == []
    job = jobs.job_from_document(MAVEN, job_id=jobs.new_job_id(), limits=Settings().limits, submitted_at=jobs.utc_now())
    carried = jobs.Job.from_message(json.loads(json.dumps(job.to_message())))
    assert carried.artifacts == (jobs.Artifact("target/app.jar", "app.jar"), jobs.Artifact("target/site/**"))
    assert carried.junit_reports == ("target/surefire-reports/TEST-*.xml",)
    assert carried.wants_results


def test_a_job_without_results_travels_as_before() -> None:
    document = {"name": "n", "steps": [{"id": 1, "image": "alpine"}]}
    job = jobs.job_from_document(document, job_id=jobs.new_job_id(), limits=Settings().limits, submitted_at="t")
    message = job.to_message()
    assert "artifacts" not in message and "reports" not in message
    assert not jobs.Job.from_message(message).wants_results


@pytest.mark.parametrize(
    ("results", "violation"),
    [
        (
            {"artifacts": [{"path": "../etc/passwd"}]},
            {"path": "/artifacts/0/path", "message": schemas.job_schema()["$defs"]["shared_glob"]["x-error"]},
        ),
        (
            {"artifacts": [{"path": "/etc/passwd"}]},
            {"path": "/artifacts/0/path", "message": schemas.job_schema()["$defs"]["shared_glob"]["x-error"]},
        ),
        (
            {"artifacts": [{"path": "a/../../b"}]},
            {"path": "/artifacts/0/path", "message": schemas.job_schema()["$defs"]["shared_glob"]["x-error"]},
        ),
        ({"artifacts": [{"name": "x"}]}, {"path": "/artifacts/0/path", "message": "is required"}),
        (
            {"artifacts": [{"path": "x", "name": "../x"}]},
            {
                "path": "/artifacts/0/name",
                "message": "must be a file name such as app.jar (letters, digits, '.', '_' and '-')",
            },
        ),
        ({"artifacts": [{"path": "x\n"}]}, {"path": "/artifacts/0/path", "message": "must be a single line"}),
        ({"reports": {"junit": ["x.xml\n"]}}, {"path": "/reports/junit/0", "message": "must be a single line"}),
        ({"reports": {"xunit": ["x"]}}, {"path": "/reports/xunit", "message": "unknown field; allowed fields: junit"}),
        ({"artifacts": [{"path": "x"}] * 51}, {"path": "/artifacts", "message": "must have at most 50 items"}),
    ],
)
def test_bad_results_fields_are_refused_naming_the_field(results: dict[str, Any], violation: dict[str, str]) -> None:
    document = {"name": "n", "steps": [{"id": 1, "image": "alpine"}], **results}
    assert schemas.job_violations(document) == [violation]


async def test_submit_answers_422_naming_the_artifact_field(aiohttp_client: Any, settings: Settings) -> None:
    client: TestClient = await aiohttp_client(create_app(settings))
    response = await client.post("/jobs", json={**MAVEN, "artifacts": [{"path": "../../etc/shadow"}]})
    assert response.status == 422
    body = await response.json()
    assert [v["path"] for v in body["errors"]] == ["/artifacts/0/path"]


def test_the_limits_are_operator_settings_stated_in_the_schema() -> None:
    settings = Settings.from_env(
        {
            "HADES_RESULTS_MAX_FILES": "7",
            "HADES_RESULTS_MAX_FILE_BYTES": "1000",
            "HADES_RESULTS_MAX_BYTES": "5000",
            "HADES_RESULTS_REPORT_MAX_BYTES": "2048",
        }
    )
    assert (settings.results.max_files, settings.results.max_file_bytes) == (7, 1000)
    assert (settings.results.max_bytes, settings.results.report_max_bytes) == (5000, 2048)
    described = schemas.job_schema()["properties"]["artifacts"]["description"]
    for name in ("HADES_RESULTS_MAX_FILES", "HADES_RESULTS_MAX_FILE_BYTES", "HADES_RESULTS_MAX_BYTES"):
        assert name in described
    with pytest.raises(SettingsError, match="HADES_RESULTS_MAX_FILE_BYTES must not exceed HADES_RESULTS_MAX_BYTES"):
        Settings.from_env({"HADES_RESULTS_MAX_FILE_BYTES": "10", "HADES_RESULTS_MAX_BYTES": "5"})
    with pytest.raises(SettingsError, match="HADES_RESULTS_MAX_FILES must be an integer ≥ 1"):
        Settings.from_env({"HADES_RESULTS_MAX_FILES": "0"})

    assert make_settings("nats://x").results.max_files == 100
