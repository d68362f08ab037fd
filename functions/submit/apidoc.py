"""The submit function's OpenAPI document: every route and every error it answers."""

from __future__ import annotations

from functools import cache
from typing import Any

from runtime import openapi

_JOB_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
}
_SECURITY: list[dict[str, list[str]]] = [{}, {"basic": []}, {"bearer": []}]
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying a POST with the same key and the same body (within the duplicate window, 10 minutes "
    "by default) returns the same job id and stores one job; the same key with another body is a 409. After the "
    "window the key names a new job with a new id.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_SUBMIT_ERRORS = {
    "400": openapi.problem("Malformed JSON, or a malformed Idempotency-Key header"),
    "401": openapi.problem("HADES_API_KEY is set and the request has no or wrong credentials"),
    "413": openapi.problem("The body is larger than HADES_MAX_PAYLOAD_BYTES"),
    "409": openapi.problem(
        "The Idempotency-Key was used with a different body within the duplicate window "
        "(type urn:hades:problem:idempotency-conflict)"
    ),
    "415": openapi.problem("The body is not sent as application/json"),
    "422": openapi.problem("The job violates the schema or an operator limit; `errors` lists every violation"),
    "429": openapi.problem(
        "The job's tenant has HADES_TENANT_MAX_QUEUED jobs waiting already (type urn:hades:problem:tenant-queue-full, "
        "with `tenant` and `max_queued`); nothing was stored: retry after Retry-After seconds"
    ),
    "503": openapi.problem("JetStream could not store the job; retry after Retry-After seconds"),
}
_ACCEPTED = {
    "type": "object",
    "required": ["id", "status", "lane", "submitted_at", "links"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"const": "queued"},
        "name": {"type": "string"},
        "priority": {"type": "integer"},
        "lane": {"enum": ["high", "normal", "low"]},
        "tenant": {"type": "string", "description": "who the job is charged to: its key's, its field's, or default"},
        "submitted_at": {"type": "string", "format": "date-time"},
        "trace_id": {"type": ["string", "null"], "description": "the job's OpenTelemetry trace id (32 hex digits)"},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_DEAD_LETTER = {
    "type": "object",
    "required": ["id", "name", "reason", "dead_at", "seq", "redriven_as"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The dead job's id"},
        "name": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"], "description": "Why dispatch gave it up (its Hades-Reason header)"},
        "dead_at": {"type": ["string", "null"], "format": "date-time", "description": "When it was dead-lettered"},
        "seq": {"type": "integer", "description": "Its sequence in HADES_DEAD"},
        "redriven_as": {"type": ["string", "null"], "description": "The job that re-submitted it, if any"},
    },
}
_DEAD_LETTERS = {
    "type": "object",
    "required": ["dead_letters", "count"],
    "properties": {
        "dead_letters": {"type": "array", "items": _DEAD_LETTER},
        "count": {"type": "integer"},
        "next_after": {"type": ["integer", "null"], "description": "`after` for the next page; null at the end"},
    },
}
_REDRIVEN = {
    "type": "object",
    "required": ["id", "status", "redrive_of", "lane", "submitted_at", "links"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The new job's id"},
        "status": {"const": "queued"},
        "redrive_of": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "lane": {"enum": ["high", "normal", "low"]},
        "submitted_at": {"type": "string", "format": "date-time"},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    status_ok = openapi.json_body("OK", {"type": "object"})
    paths = {
        "/jobs": {
            "post": {
                "summary": "Submit a job",
                "security": _SECURITY,
                "parameters": [_IDEMPOTENCY],
                "requestBody": _JOB_BODY,
                "responses": {
                    "202": {
                        **openapi.json_body("Stored durably and queued", _ACCEPTED),
                        "headers": {"Location": {"schema": {"type": "string"}, "description": "/jobs/{id}"}},
                    },
                    **_SUBMIT_ERRORS,
                },
            }
        },
        "/build": {
            "post": {
                "summary": "Submit a job (the original Hades endpoint and answer)",
                "description": "Read as the original Hades reads it: unknown fields are ignored (named in "
                'X-Hades-Ignored-Fields), Go zero values (0, "", null) mean unset, metadata keys may be any '
                "environment variable name Docker takes; every invalid request is a 400. See docs/compat.md.",
                "security": _SECURITY,
                "parameters": [_IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object", "required": ["name", "steps"]}}},
                },
                "responses": {
                    "200": openapi.json_body(
                        "Stored durably and queued",
                        {
                            "type": "object",
                            "required": ["job_id"],
                            "properties": {
                                "job_id": {"type": "string", "format": "uuid"},
                                "message": {"type": "string"},
                            },
                        },
                    ),
                    **{code: answer for code, answer in _SUBMIT_ERRORS.items() if code not in ("415", "422")},
                    "400": openapi.problem("Malformed JSON, not JSON, or a payload the original Hades refuses"),
                },
            }
        },
        "/jobs/{job_id}": {
            "delete": {
                "summary": "Cancel a job: a queued job is dropped, a running one stopped; it ends `cancelled`",
                "security": _SECURITY,
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "202": openapi.json_body(
                        "Cancel requested",
                        {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "status": {"const": "cancelling"}},
                        },
                    ),
                    "401": _SUBMIT_ERRORS["401"],
                    "404": openapi.problem("No such job"),
                    "409": openapi.problem("The job already ended"),
                    "503": _SUBMIT_ERRORS["503"],
                },
            }
        },
        "/dead-letters": {
            "get": {
                "summary": "List the dead letters: jobs dispatch gave up on after HADES_MAX_DELIVER attempts",
                "description": "Oldest first, from stream HADES_DEAD; `redriven_as` names the job that re-submitted "
                "one, if any.",
                "security": _SECURITY,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The next page: `next_after` of the previous answer (a dead letter's `seq`)",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": openapi.json_body("The dead letters", _DEAD_LETTERS),
                    "400": openapi.problem("limit is not an integer from 1 to 1000, or after is not a seq"),
                    "401": _SUBMIT_ERRORS["401"],
                    "503": openapi.problem("NATS is unreachable; retry after Retry-After seconds"),
                },
            }
        },
        "/dead-letters/{job_id}/redrive": {
            "post": {
                "summary": "Re-submit a dead job under a new job id",
                "description": "The job is stored again as it was (a new id, a new submitted_at, attempts from 1). "
                "The records link both: `redrive_of` on the new job, `redriven_as` on the dead one. A retried "
                "redrive (within the duplicate window) answers the same id with Idempotent-Replayed; once the link "
                "is stored, another redrive of the same job is a 409.",
                "security": _SECURITY,
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "202": {
                        **openapi.json_body("The new job, stored durably and queued", _REDRIVEN),
                        "headers": {"Location": {"schema": {"type": "string"}, "description": "/jobs/{new id}"}},
                    },
                    "401": _SUBMIT_ERRORS["401"],
                    "404": openapi.problem("No dead letter for this job id"),
                    "409": openapi.problem("Already redriven (the detail names the new job), or not ended yet"),
                    "503": _SUBMIT_ERRORS["503"],
                },
            }
        },
        "/ping": {"get": {"summary": "Liveness, as the original Hades answers", "responses": {"200": status_ok}}},
        **openapi.probe_paths(ready_when="NATS is unreachable"),
    }
    return openapi.document(
        title="Hades submit API",
        description="Submit container jobs to Hades; follow them on the logs API.",
        paths=paths,
    )
