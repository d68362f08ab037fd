"""The OpenAPI of a job's results (``artifacts``): the record's ``results`` and the three routes that serve them."""

from __future__ import annotations

from typing import Any

from runtime import openapi

_TESTS = {
    "type": ["object", "null"],
    "description": "Summed over the parsed JUnit reports; null when the job asked for none",
    "properties": {
        "tests": {"type": "integer"},
        "passed": {"type": "integer"},
        "failures": {"type": "integer"},
        "errors": {"type": "integer"},
        "skipped": {"type": "integer"},
        "time_s": {"type": "number"},
    },
}
_FAILED_CASE = {
    "type": "object",
    "properties": {
        "suite": {"type": "string"},
        "name": {"type": "string"},
        "classname": {"type": "string"},
        "kind": {"enum": ["failure", "error"]},
        "message": {"type": "string", "description": "At most 1,000 characters"},
        "output": {"type": "string", "description": "The start of its stack trace and output (≤ 2,000 characters)"},
    },
}
_REPORT = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "parsed": {"type": "boolean"},
        "reason": {"type": "string", "description": "Why it was not parsed (unsafe, malformed, too large...)"},
    },
}
_ARTIFACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Download it from GET /jobs/{id}/artifacts/{name}"},
        "path": {"type": "string", "description": "Where it was, relative to /shared"},
        "size": {"type": "integer"},
        "sha256": {"type": "string"},
        "content_type": {"type": "string"},
        "kind": {"enum": ["artifact", "report"]},
    },
}
_SKIPPED = {"type": "object", "properties": {"path": {"type": "string"}, "reason": {"type": "string"}}}

RESULTS = {
    "type": ["object", "null"],
    "description": "What the job kept (its `artifacts` and `reports`), collected after its last step; null when it "
    "asked for none (or ended before its steps ran). Nothing here changes the job's status.",
    "properties": {
        "tests": {"$ref": "#/components/schemas/TestSummary"},
        "failed_tests": {"type": "array", "items": {"$ref": "#/components/schemas/FailedTest"}},
        "failed_tests_dropped": {"type": "integer", "description": "Failed cases past the 50 listed"},
        "reports": {"type": "array", "items": _REPORT},
        "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}},
        "skipped": {"type": "array", "items": _SKIPPED, "description": "Matched files not kept, with the reason"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "unlisted": {"type": "integer", "description": "Skipped files and warnings past the 50 listed of each"},
    },
}

SCHEMAS = {"JobResults": RESULTS, "TestSummary": _TESTS, "FailedTest": _FAILED_CASE, "Artifact": _ARTIFACT}


def paths(job_id: dict[str, Any], not_found: dict[str, Any], unavailable: dict[str, Any]) -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/jobs/{job_id}/tests": {
            "get": {
                "summary": "A job's test summary and failed cases, from its JUnit reports",
                "parameters": [job_id],
                "responses": {
                    "200": openapi.json_body(
                        "Its tests",
                        {
                            "type": "object",
                            "properties": {
                                "job_id": {"type": "string"},
                                "status": {"type": "string"},
                                "tests": {"$ref": "#/components/schemas/TestSummary"},
                                "failed_tests": {"type": "array", "items": {"$ref": "#/components/schemas/FailedTest"}},
                                "failed_tests_dropped": {"type": "integer"},
                                "reports": {"type": "array", "items": _REPORT},
                            },
                        },
                    ),
                    "404": not_found,
                    "503": unavailable,
                },
            }
        },
        "/jobs/{job_id}/artifacts": {
            "get": {
                "summary": "The files a job kept (and those it could not keep, with the reason)",
                "parameters": [job_id],
                "responses": {
                    "200": openapi.json_body(
                        "Its files",
                        {
                            "type": "object",
                            "properties": {
                                "job_id": {"type": "string"},
                                "status": {"type": "string"},
                                "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}},
                                "skipped": {"type": "array", "items": _SKIPPED},
                                "warnings": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    ),
                    "404": not_found,
                    "503": unavailable,
                },
            }
        },
        "/jobs/{job_id}/artifacts/{name}": {
            "get": {
                "summary": "Download one kept file (streamed; one byte range with Range: bytes=a-b answers 206)",
                "parameters": [
                    job_id,
                    name,
                    {"name": "Range", "in": "header", "schema": {"type": "string", "pattern": r"^bytes=\d*-\d*$"}},
                ],
                "responses": {
                    "200": {
                        "description": "The file, with its Content-Type, Content-Length and ETag (its sha256)",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "206": {
                        "description": "The asked range, with Content-Range",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "404": openapi.problem("No such job, no such file, or the file is no longer stored"),
                    "416": openapi.problem("The range is not within the file (Content-Range: bytes */size)"),
                    "503": unavailable,
                },
            }
        },
    }
