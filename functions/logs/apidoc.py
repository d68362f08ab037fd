"""The logs function's OpenAPI document: every route and every error it answers."""

from __future__ import annotations

from functools import cache
from typing import Any

from functions.logs import recordshape, resultsdoc, scaling
from runtime import openapi, tenants

_LEGACY = ["Queued", "Running", "Succeeded", "Failed", "Stopped"]
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_NOT_FOUND = {
    "description": "No such job (the body also carries the original Hades Log Manager's `error` field)",
    "content": {
        "application/problem+json": {
            "schema": {
                "allOf": [
                    {"$ref": "#/components/schemas/Problem"},
                    {"type": "object", "properties": {"error": {"type": "string", "examples": ["job not found: …"]}}},
                ]
            }
        }
    },
}
_UNAVAILABLE = openapi.problem("NATS is not reachable; retry after Retry-After seconds")
_BAD = openapi.problem("A query parameter or header is malformed; `detail` says which")
_LOG_LINE = {
    "type": "object",
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "message": {"type": "string"},
        "output_stream": {"enum": ["stdout", "stderr", "system"]},
        "seq": {"type": "integer"},
    },
}
_LOGS = {
    "type": "object",
    "required": ["logs"],
    "properties": {
        "logs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "container_id": {"type": "string"},
                    "step": {"type": "integer"},
                    "step_name": {"type": "string"},
                    "logs": {"type": "array", "items": {"$ref": "#/components/schemas/LogLine"}},
                },
            },
        }
    },
}


_DASHBOARD_PATHS: dict[str, Any] = {
    "/ui/": {
        "get": {
            "summary": "The web dashboard (HTML; its scripts and styles under /ui/static/)",
            "responses": {"200": {"description": "The dashboard page", "content": {"text/html": {}}}},
        }
    },
    "/ui/api/config": {
        "get": {
            "summary": "What the dashboard may do: cancel is on when HADES_UI_SUBMIT_URL is set",
            "responses": {
                "200": openapi.json_body(
                    "Its settings",
                    {"type": "object", "required": ["cancel"], "properties": {"cancel": {"type": "boolean"}}},
                )
            },
        }
    },
    "/ui/api/stats": {
        "get": {
            "summary": "Per lane: queued, running, the oldest queued job's submit time; jobs finished per 30 s "
            "over the last 10 minutes (computed from the job records at most every 5 s)",
            "responses": {
                "200": openapi.json_body(
                    "Lane stats",
                    {
                        "type": "object",
                        "required": ["generated_at", "lanes", "throughput"],
                        "properties": {
                            "generated_at": {"type": "string", "format": "date-time"},
                            "lanes": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "lane": {"type": "string", "enum": ["high", "normal", "low"]},
                                        "queued": {"type": "integer"},
                                        "running": {"type": "integer"},
                                        "oldest_queued_at": {"type": ["string", "null"], "format": "date-time"},
                                    },
                                },
                            },
                            "throughput": {
                                "type": "object",
                                "properties": {
                                    "bucket_s": {"type": "integer"},
                                    "buckets": {
                                        "type": "array",
                                        "description": "Oldest first; the last ends now",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "succeeded": {"type": "integer"},
                                                "failed": {
                                                    "type": "integer",
                                                    "description": "failed, timed out or cancelled",
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                ),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/ui/api/events": {
        "get": {
            "summary": "Server-Sent Events: `ready` once subscribed, then a `job` event "
            '`{"job_id", "status", "at"}` for every job status change (live only, no replay)',
            "responses": {"200": {"description": "The event stream", "content": {"text/event-stream": {}}}},
        }
    },
    "/ui/api/jobs/{job_id}": {
        "delete": {
            "summary": "Cancel a job through submit (DELETE {HADES_UI_SUBMIT_URL}/jobs/{id} with "
            "HADES_UI_SUBMIT_API_KEY); submit's answer is passed on",
            "parameters": [_JOB_ID],
            "responses": {
                "202": openapi.json_body("Cancelling", {"type": "object"}),
                "404": openapi.problem("Unknown job, or cancel is not configured (HADES_UI_SUBMIT_URL unset)"),
                "409": openapi.problem("The job already ended"),
                "503": _UNAVAILABLE,
            },
        }
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    status_ok = openapi.json_body("OK", {"type": "object"})
    record = openapi.json_body("The job's record", {"$ref": "#/components/schemas/JobRecord"})
    paths = {
        "/jobs": {
            "get": {
                "summary": "List job records, the most recently changed first",
                "description": (
                    "Newest written first: a job moves to the front whenever its record changes (queued, "
                    "running, finished...). A page reads the store from the cursor on and stops once it holds "
                    "`limit` jobs, so paging stays fast with any number of records; a job that changes while "
                    "you page moves to a new first page. A page is full whenever that many jobs match; only "
                    "while a replica's listing index is still catching up may a page that found too few matches "
                    "within 5,000 records answer with what it has (possibly none) and a `next` to go on from: "
                    "keep paging until `next` is null."
                ),
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Only jobs in these statuses (comma-separated; the original's names too)",
                        "schema": {"type": "string", "examples": ["running", "failed,Stopped"]},
                    },
                    {
                        "name": "name",
                        "in": "query",
                        "description": "Only jobs whose name contains this text (case-insensitive)",
                        "schema": {"type": "string", "examples": ["nightly"]},
                    },
                    {
                        "name": "submitted_after",
                        "in": "query",
                        "description": "Only jobs submitted at or after this time (ISO 8601; UTC without a zone)",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    {
                        "name": "submitted_before",
                        "in": "query",
                        "description": "Only jobs submitted before this time (ISO 8601; UTC without a zone)",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The `next` of the previous page",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "tenant",
                        "in": "query",
                        "description": "Only this tenant's jobs (`default`: also those stored before tenants existed)",
                        "schema": {"type": "string", "pattern": tenants.NAME_PATTERN, "examples": ["cs101"]},
                    },
                ],
                "responses": {
                    "200": openapi.json_body(
                        "One page",
                        {
                            "type": "object",
                            "required": ["jobs", "next"],
                            "properties": {
                                "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobRecord"}},
                                "next": {"type": ["string", "null"]},
                            },
                        },
                    ),
                    "400": _BAD,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/jobs/{job_id}": {
            "get": {
                "summary": "A job's record (with its place in the lane while queued)",
                "parameters": [_JOB_ID],
                "responses": {"200": record, "404": _NOT_FOUND, "503": _UNAVAILABLE},
            }
        },
        "/jobs/{job_id}/status": {
            "get": {
                "summary": "A job's status as the original Hades answers it",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": openapi.json_body(
                        "Its status", {"type": "object", "properties": {"status": {"enum": _LEGACY}}}
                    ),
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/jobs/{job_id}/logs": {
            "get": {
                "summary": "A job's logs (its current attempt): all of them once it ended, so far while it runs",
                "parameters": [
                    _JOB_ID,
                    {"name": "step", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "format", "in": "query", "schema": {"enum": ["json", "text"], "default": "json"}},
                    {
                        "name": "notices",
                        "in": "query",
                        "description": "true: every step (also skipped ones) and Hades' own lines (`system`, step 0)",
                        "schema": {"type": "boolean", "default": False},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "JSON: as the original Log Manager, one entry per container that ran, in step "
                        "order, with its stdout/stderr lines (`notices=true`: everything); `format=text`: the lines "
                        "only, streamed",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Logs"}},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/jobs/{job_id}/logs/stream": {
            "get": {
                "summary": "Live logs as Server-Sent Events",
                "description": "Every line from the start, then live ones; each line's `id` is `<attempt>.<seq>` "
                "and its data a JSON line. Status changes come as `event: status`; the last event is "
                "`event: end` with the terminal status. Reconnecting with `Last-Event-ID` resumes after "
                "that line, without a gap or a repeat.",
                "parameters": [
                    _JOB_ID,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": r"^\d+\.\d+$"}},
                ],
                "responses": {
                    "200": {"description": "The event stream", "content": {"text/event-stream": {}}},
                    "400": _BAD,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        **resultsdoc.paths(_JOB_ID, _NOT_FOUND, _UNAVAILABLE),
        "/health": {"get": {"summary": "Liveness, as the original Hades answers", "responses": {"200": status_ok}}},
        **scaling.openapi_paths(_UNAVAILABLE),
        **_DASHBOARD_PATHS,
        **openapi.probe_paths(ready_when="NATS is unreachable or the collector stopped"),
    }
    for path, item in paths.items():
        if path.startswith(("/jobs", "/ui")):  # open unless HADES_LOGS_API_KEY is set
            for operation in item.values():
                operation["security"] = [{}, {"basic": []}, {"bearer": []}]
                operation["responses"]["401"] = openapi.problem("HADES_LOGS_API_KEY is set and the request lacks it")
    return openapi.document(
        title="Hades logs API",
        description="Job records, logs and live logs of Hades jobs; result callbacks.",
        paths=paths,
        extra_schemas={
            **recordshape.openapi_schemas(),
            "LogLine": _LOG_LINE,
            "Logs": _LOGS,
            **resultsdoc.SCHEMAS,
        },
    )
