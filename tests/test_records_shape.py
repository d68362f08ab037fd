"""The record's one description, ``schemas/record.schema.json``, and everything that must agree with it.

``recordshape`` reads the schema: ``new_record`` and ``public`` build what is stored and served from it, and the
logs API documents it as ``JobRecord``. What cannot be derived is held to it here: the TypedDicts mypy checks the
reducer and its callers against (``records``, ``handlers.ServedRecord``, ``positions.QueueBody``) and the Python
client's ``Job`` and ``Step``. A field added to the schema and forgotten in one of them fails here.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import types
import typing
from typing import Any, Literal, NotRequired

import jsonschema
import pytest

from functions.logs import apidoc, handlers, positions, records, recordshape, recordstore
from hades_client import models
from runtime import events, messaging
from runtime.jobs import JobStatus, Lane, StepStatus
from runtime.messaging import encode
from runtime.settings import Settings

JOB_ID = "8d7f3a52-5f0e-4a57-9a43-0c1d5f7e2b11"
NOW = "2025-01-01T00:00:00.000Z"
SUMMARY = {
    "name": "Build",
    "priority": 2,
    "lane": "normal",
    "submitted_at": NOW,
    "timeout_seconds": 60,
    "callback_url": "https://lms.example/results",
    "status_callback_url": None,
    "origin": "jobs",
    "tenant": "cs101",
    "steps": [{"id": 1, "name": "compile", "image": "alpine"}],
}
SCHEMA = recordshape.SCHEMA
CLIENT_LEAVES_IN_RAW = {
    "log_bytes",
    "last_log_seq",
    "callback",
    "origin",
    "queue",
    "trace_id",
    "redrive_of",
    "redriven_as",
    "updated_at",
}
"""Record fields ``hades_client.models.Job`` does not model (``Job.raw`` has them): a deliberate, short list."""


def keys(typed_dict: type) -> set[str]:
    return set(typing.get_type_hints(typed_dict))


def optional_keys(typed_dict: type) -> set[str]:
    # ``__optional_keys__`` is wrong on 3.11 under ``from __future__ import annotations``: read the hints instead.
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    return {key for key, hint in hints.items() if typing.get_origin(hint) is NotRequired}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A reference into the schema's ``$defs``, or into the components the OpenAPI document has from elsewhere."""
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return SCHEMA["$defs"][ref.removeprefix("#/$defs/")]  # type: ignore[no-any-return]
    if ref.startswith("#/components/schemas/"):
        return documented_schemas()[ref.removeprefix("#/components/schemas/")]  # type: ignore[no-any-return]
    return node


def schema_kinds(node: dict[str, Any]) -> set[str]:
    """What a schema node allows, as tokens: ``string``, ``null``, ``enum(a,b)``, ``array<...>``, ``map<...>``."""
    node = resolve(node)
    if "enum" in node:
        values = [value for value in node["enum"] if value is not None]
        return {f"enum({','.join(values)})"} | ({"null"} if None in node["enum"] else set())
    found = set()
    for kind in [node["type"]] if isinstance(node["type"], str) else node["type"]:
        if kind == "array":
            found.add(f"array<{'|'.join(sorted(schema_kinds(node['items'])))}>")
        elif kind == "object" and "additionalProperties" in node:
            found.add(f"map<{'|'.join(sorted(schema_kinds(node['additionalProperties'])))}>")
        else:
            found.add(kind)
    return found


PYTHON_KINDS = {str: "string", int: "integer", float: "number", bool: "boolean", types.NoneType: "null"}


def hint_kinds(hint: Any) -> set[str]:
    """The same tokens for a Python type hint; a TypedDict or a dataclass is an ``object``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is NotRequired:
        return hint_kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(hint_kinds(arg) for arg in args))
    if origin is Literal:
        return {f"enum({','.join(args)})"}
    if origin in (list, tuple):
        return {f"array<{'|'.join(sorted(hint_kinds(args[0])))}>"}
    if origin is dict:  # dict[str, Any]: an object not typed further here
        return {"object"} if args[1] is Any else {f"map<{'|'.join(sorted(hint_kinds(args[1])))}>"}
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return {f"enum({','.join(member.value for member in hint)})"}
    if typing.is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return {"object"}
    return {PYTHON_KINDS[hint]}


def disagreements(model: type, node: dict[str, Any], *, client: bool = False) -> list[str]:
    """Where ``model``'s fields (a TypedDict's or a dataclass's) disagree with the object schema ``node``, nested
    objects included. A TypedDict may say ``str`` for an enum; the client may add ``None`` (absent: None)."""
    node, found = resolve(node), []
    hints = typing.get_type_hints(model, include_extras=True)
    for name, hint in hints.items():
        if name == "raw" and client:
            continue
        field = node["properties"].get(name)
        if field is None:
            found.append(f"{model.__name__}.{name}: not in the schema")
            continue
        expected, declared = schema_kinds(field), hint_kinds(hint)
        loose = {"string" if kind.startswith("enum(") and "string" in declared else kind for kind in expected}
        if declared not in (expected, loose) and not (client and declared - {"null"} in (expected, loose)):
            found.append(f"{model.__name__}.{name}: {sorted(declared)} but the schema says {sorted(expected)}")
        for inner in models_in(hint):
            target = resolve(field)
            target = resolve(target["items"]) if "items" in target else target
            found.extend(disagreements(inner, target, client=client))
    return found


def models_in(hint: Any) -> list[type]:
    """The TypedDicts and dataclasses inside a hint (``list[StepRecord]``, ``CallbackRecord | None``)."""
    if typing.is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return [hint]
    return [model for arg in typing.get_args(hint) for model in models_in(arg)]


def whole_record() -> records.JobRecord:
    """A record with every key: summary, callback, trace id, redrive links, lost lines, two steps."""
    record = None
    for event in [
        events.job_event(
            JOB_ID,
            attempt=0,
            seq=0,
            status=JobStatus.QUEUED,
            job=SUMMARY,
            stream_seq=3,
            trace_id="0af7651916cd43dd8448eb211c80319c",
            redrive_of="1b2c3d4e-5f60-4a57-9a43-0c1d5f7e2b11",
        ),
        events.job_event(JOB_ID, attempt=1, seq=1, status=JobStatus.RUNNING, job=SUMMARY, queue_wait_s=0.5),
        events.step_event(JOB_ID, attempt=1, seq=2, step_id=1, step_name="compile", status=StepStatus.RUNNING),
        events.step_event(
            JOB_ID, attempt=1, seq=3, step_id=1, step_name="compile", status=StepStatus.FAILED, exit_code=2
        ),
        events.job_event(
            JOB_ID,
            attempt=1,
            seq=4,
            status=JobStatus.FAILED,
            reason="step 1 failed",
            log_lost_lines=3,
            redriven_as="2c3d4e5f-6071-4a57-9a43-0c1d5f7e2b11",
        ),
    ]:
        record = records.apply_status(record, event, now=NOW) or record
    batch: events.LogBatch = {
        "job_id": JOB_ID,
        "attempt": 1,
        "lines": [{"seq": 1, "step_id": 1, "stream": "stdout", "at": NOW, "message": "hello"}],
    }
    record = records.apply_logs(record, batch, max_bytes=1000, now=NOW) or record
    assert record is not None
    return record


def test_the_schema_is_valid_and_its_statuses_are_the_core_ones() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    properties, defs = SCHEMA["properties"], SCHEMA["$defs"]
    assert properties["status"]["enum"] == [str(status) for status in JobStatus]
    assert defs["StepRecord"]["properties"]["status"]["enum"] == [str(status) for status in StepStatus]
    assert properties["lane"]["enum"] == [*(str(lane) for lane in Lane), None]
    assert {recordshape.keeping(name) for name in properties} == {None, *typing.get_args(recordshape.Keeping)}


def test_the_typed_dicts_declare_the_schema() -> None:
    assert keys(records.PublicRecord) == set(recordshape.STORED)
    assert optional_keys(records.PublicRecord) == set(recordshape.WHEN_KNOWN)
    assert keys(handlers.ServedRecord) - keys(records.PublicRecord) == set(recordshape.SERVED_ONLY)
    assert optional_keys(handlers.ServedRecord) >= set(recordshape.SERVED_ONLY)
    assert keys(handlers.ServedRecord) == set(SCHEMA["properties"])
    assert keys(records.StepRecord) == set(SCHEMA["$defs"]["StepRecord"]["properties"])
    assert keys(records.CallbackRecord) == set(SCHEMA["$defs"]["Callback"]["properties"])
    assert keys(positions.QueueBody) == set(SCHEMA["properties"]["queue"]["required"])
    assert disagreements(handlers.ServedRecord, SCHEMA) == []


def test_the_client_models_what_the_schema_says() -> None:
    modelled = {field.name for field in dataclasses.fields(models.Job)} - {"raw"}
    assert modelled | CLIENT_LEAVES_IN_RAW == set(SCHEMA["properties"])
    assert not modelled & CLIENT_LEAVES_IN_RAW
    assert {field.name for field in dataclasses.fields(models.Step)} == set(SCHEMA["$defs"]["StepRecord"]["properties"])
    assert disagreements(models.Job, SCHEMA, client=True) == []


class Drifted(records.StepRecord):
    exit_code: str  # type: ignore[misc]
    extra: int


@dataclasses.dataclass
class DriftedJob:
    id: str
    status: models.StepStatus
    log_lines: float


def test_a_drifted_model_is_caught() -> None:
    """The check itself can fail: a changed type, an unknown field, a changed enum, a changed number."""
    step = SCHEMA["$defs"]["StepRecord"]
    assert disagreements(Drifted, step) == [
        "Drifted.exit_code: ['string'] but the schema says ['integer', 'null']",
        "Drifted.extra: not in the schema",
    ]
    assert len(disagreements(DriftedJob, SCHEMA, client=True)) == 2


def test_the_documented_record_is_the_schema_without_its_marks() -> None:
    document = apidoc.openapi_document()["components"]["schemas"]
    assert list(document["JobRecord"]["properties"]) == list(SCHEMA["properties"])
    assert not any(recordshape.MARK in field for field in document["JobRecord"]["properties"].values())
    assert document["StepRecord"]["properties"] == SCHEMA["$defs"]["StepRecord"]["properties"]
    assert document["JobRecord"]["properties"]["callback"] == {"$ref": "#/components/schemas/Callback"}
    assert "$comment" not in document["JobRecord"] and "$schema" not in document["JobRecord"]


def served_schema() -> dict[str, Any]:
    """The documented record closed (no key beyond its properties), with its references."""
    closed = {name: {**schema, "additionalProperties": False} for name, schema in documented_schemas().items()}
    return {"components": {"schemas": closed}, **closed["JobRecord"]}


def documented_schemas() -> dict[str, Any]:
    return copy.deepcopy(apidoc.openapi_document()["components"]["schemas"])  # type: ignore[no-any-return]


@pytest.mark.parametrize("built", ["new", "whole"])
def test_new_and_whole_records_are_served_as_the_schema_says(built: str) -> None:
    record = records.new_record(JOB_ID) if built == "new" else whole_record()
    jsonschema.validate(records.public(record), served_schema())
    if built == "new":
        assert set(record) == keys(records.JobRecord) - {"origin", "tenant"}  # from the job's summary
        assert record["status"] == "queued" and record["id"] == JOB_ID and record["steps"] == []
        assert records.new_record(JOB_ID)["steps"] is not record["steps"]  # a fresh list each time


def test_public_serves_every_record_field_in_the_schema_order() -> None:
    served = records.public(whole_record())
    assert list(served) == [*recordshape.IN_EVERY_RECORD, *recordshape.WHEN_KNOWN]
    assert set(records.new_callback("https://lms.example/results")) == keys(records.CallbackRecord)


def test_the_bookkeeping_keys_are_the_private_ones() -> None:
    public, stored = keys(records.PublicRecord), keys(records.JobRecord)
    assert public < stored
    assert all(key.startswith("_") for key in stored - public)
    assert not any(key.startswith("_") for key in public)


def test_a_whole_record_has_every_key_and_public_drops_exactly_the_bookkeeping() -> None:
    record = whole_record()
    assert set(record) == keys(records.JobRecord)
    assert set(record["steps"][0]) == keys(records.StepRecord)
    for each in (record, records.new_record(JOB_ID)):
        # What ``public`` returned before it was typed: every key but the ``_`` ones.
        assert records.public(each) == {key: value for key, value in each.items() if not key.startswith("_")}
    assert set(records.public(record)) == keys(records.PublicRecord)


def test_a_record_stored_before_the_later_keys_existed_is_served_as_stored() -> None:
    stored: dict[str, Any] = dict(records.new_record(JOB_ID))
    for key in optional_keys(records.JobRecord):
        stored.pop(key, None)
    old: records.JobRecord = stored  # type: ignore[assignment]
    assert records.public(old) == {key: value for key, value in stored.items() if not key.startswith("_")}
    event = events.job_event(JOB_ID, attempt=1, seq=1, status=JobStatus.RUNNING, job=SUMMARY)
    running = records.apply_status(old, event, now=NOW)
    assert running is not None and running["status"] == "running" and running["origin"] == "jobs"


def test_stored_json_becomes_a_record_at_one_place() -> None:
    record = whole_record()
    assert recordstore.decode(encode(record)) == record
    for stored in [b"not json", b"[1, 2]", b'"text"', b'{"status": "queued"}']:
        assert recordstore.decode(stored) is None


async def test_an_unreadable_stored_record_is_overwritten_by_the_next_event(
    conn: messaging.Messaging, settings: Settings
) -> None:
    store = await recordstore.RecordStore.open(conn, settings)
    job_id = "b3a4f3c2-0d7e-4b8e-9c1a-2f6d5e4c3b2a"
    await store.bucket.put(job_id, b"not json", revision=0)
    event = events.job_event(job_id, attempt=1, seq=1, status=JobStatus.RUNNING)

    now = "2026-12-02T00:00:00Z"
    written = await store.update(job_id, lambda current: records.apply_status(current, event, now=now))

    assert written is not None and written["status"] == "running"
    assert (await store.get(job_id)) == written
