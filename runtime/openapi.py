"""OpenAPI 3.1 documents built from the job schema, so validation, API description and docs never disagree.

A function passes its path items; this module lifts the schema's ``$defs`` into ``components/schemas``, adds the
problem body every error uses, and offers small helpers for the common responses.
"""

from __future__ import annotations

import copy
from typing import Any

from runtime import schemas

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` lists every violation of a 422.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:hades:problem:invalid-job"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {
                    "path": {"type": "string", "description": "JSON Pointer into the request body"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def rewrite_refs(node: Any) -> Any:
    """A JSON Schema's refs into its ``$defs`` as refs into the document's ``components/schemas``."""
    if isinstance(node, dict):
        return {
            key: (value.replace("#/$defs/", "#/components/schemas/") if key == "$ref" else rewrite_refs(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [rewrite_refs(item) for item in node]
    return node


def job_components() -> dict[str, Any]:
    schema = copy.deepcopy(schemas.job_schema())
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    components = {name: rewrite_refs(value) for name, value in defs.items()}
    components["Job"] = rewrite_refs(schema)
    components["Problem"] = PROBLEM_SCHEMA
    return components


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def probe_paths(*, ready_when: str) -> dict[str, Any]:
    """The routes every function gets from ``runtime.app.create_app``."""
    status_ok = json_body("OK", {"type": "object"})
    return {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": status_ok}}},
        "/readyz": {
            "get": {
                "summary": f"Readiness: 503 while {ready_when}",
                "responses": {"200": status_ok, "503": json_body("Not ready", {"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
            }
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": status_ok}}},
    }


def document(
    *, title: str, description: str, paths: dict[str, Any], extra_schemas: dict[str, Any] | None = None
) -> dict[str, Any]:
    components = job_components()
    components.update(extra_schemas or {})
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "user `hades`, password: the API key",
                },
                "bearer": {"type": "http", "scheme": "bearer", "description": "the API key"},
            },
        },
    }
