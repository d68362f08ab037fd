"""The trace id a POST answers with: the one the job message's ``traceparent`` carries and its queued event (so the
job record) names; an incoming ``traceparent`` (header, or the /build body's field) continues its trace with its
sampled flag; and the cheap span made when nothing records has the ids and flags the SDK would give it."""

from __future__ import annotations

import json
import re
from typing import Any

import nats.js.errors
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext
from opentelemetry import trace

from functions.submit import handlers as submit_handlers
from runtime import subjects, tracing
from runtime.settings import Settings
from tests.helpers import EXAMPLES, poll

Client = TestClient[web.Request, web.Application]

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def submit(aiohttp_client: Any, settings: Settings) -> Client:
    client: Client = await aiohttp_client(submit_handlers.create_app(settings))
    return client


async def job_traceparent(js: JetStreamContext, job_id: str) -> re.Match[str]:
    msg = await js.get_last_msg(subjects.JOBS_STREAM, "hades.jobs.>")
    assert msg.headers is not None and msg.headers[subjects.HEADER_MSG_ID] == job_id
    match = TRACEPARENT.match(msg.headers["traceparent"])
    assert match, msg.headers["traceparent"]
    return match


async def queued_trace_id(js: JetStreamContext, job_id: str) -> Any:
    async def stored() -> Any:
        try:
            return await js.get_last_msg(subjects.EVENTS_STREAM, subjects.status_subject(job_id))
        except nats.js.errors.NotFoundError:
            return None

    return json.loads((await poll(stored)).data).get("trace_id")


def root_flags() -> str:
    """The flags the SDK gives a new trace's root span in this process (as submit's provider is set up)."""
    with trace.get_tracer("test").start_as_current_span("root") as span:
        return format(span.get_span_context().trace_flags, "02x")


async def test_the_answer_names_the_trace_the_job_message_and_its_queued_event_carry(
    submit: Client, js: JetStreamContext
) -> None:
    response = await submit.post("/jobs", json=HELLO)
    assert response.status == 202, await response.text()
    answer = await response.json()
    carried = await job_traceparent(js, answer["id"])
    assert carried.group(1) == answer["trace_id"] and int(answer["trace_id"], 16) != 0
    assert int(carried.group(2), 16) != 0 and carried.group(3) == root_flags()
    assert await queued_trace_id(js, answer["id"]) == answer["trace_id"]

    again = await (await submit.post("/jobs", json=HELLO)).json()
    assert again["trace_id"] != answer["trace_id"]  # a new trace per POST


@pytest.mark.parametrize("flags", ["01", "00"])
async def test_an_incoming_traceparent_header_continues_its_trace_with_its_sampled_flag(
    submit: Client, js: JetStreamContext, flags: str
) -> None:
    headers = {"traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-{flags}"}
    response = await submit.post("/jobs", json=HELLO, headers=headers)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["trace_id"] == UPSTREAM_TRACE
    carried = await job_traceparent(js, answer["id"])
    assert carried.group(1) == UPSTREAM_TRACE and carried.group(2) != UPSTREAM_SPAN  # a child of the caller's span
    assert carried.group(3) == flags
    assert await queued_trace_id(js, answer["id"]) == UPSTREAM_TRACE


async def test_a_traceparent_in_the_body_continues_its_trace(submit: Client, js: JetStreamContext) -> None:
    body = {**HELLO, "traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"}
    response = await submit.post("/jobs", json=body)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["trace_id"] == UPSTREAM_TRACE
    assert (await job_traceparent(js, answer["id"])).group(1) == UPSTREAM_TRACE


def test_a_request_span_without_context_or_exporter_is_the_sdks_unrecorded_root() -> None:
    tracing.setup_tracing("test")
    tracer = trace.get_tracer("test")
    with tracing.request_span(tracer, "root", {"traceparent": ""}, attributes={}) as span:
        made = span.get_span_context()
        assert trace.get_current_span() is span and tracing.trace_id() == format(made.trace_id, "032x")
    with tracer.start_as_current_span("root") as sdk_span:
        expected = sdk_span.get_span_context()
    assert made.is_valid and not made.is_remote and made.trace_flags == expected.trace_flags
    assert span.is_recording() == sdk_span.is_recording()
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again
    parent = {"traceparent": f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"}
    with tracing.request_span(tracer, "child", parent, attributes={}) as child:
        assert tracing.trace_id() == UPSTREAM_TRACE and child.get_span_context().trace_flags.sampled
