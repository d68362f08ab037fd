"""The Python client at its HTTP boundary (respx): what each call sends, what each answer becomes, every error."""

from __future__ import annotations

import json
import types
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

import hades_client
from hades_client import asyncclient, client, errors
from hades_client.models import Cancelling, EndEvent, JobStatus, LineEvent, StatusEvent, StepStatus
from hades_client.protocol import ReconnectPolicy, RetryPolicy

SUBMIT = "http://submit.test"
LOGS = "http://logs.test"
JOB_ID = "6c0c1f9e-8a55-4d8e-9b49-4f3f2f0d9c11"
JOB = {"name": "hi", "steps": [{"id": 1, "image": "alpine", "script": "echo hi"}]}
ACCEPTED = {
    "id": JOB_ID,
    "status": "queued",
    "name": "hi",
    "priority": 3,
    "lane": "high",
    "submitted_at": "2026-12-01T10:00:00+00:00",
    "links": {"self": f"/jobs/{JOB_ID}", "stream": f"/jobs/{JOB_ID}/logs/stream"},
}
RECORD = {
    "id": JOB_ID,
    "name": "hi",
    "status": "queued",
    "reason": None,
    "priority": 3,
    "lane": "high",
    "submitted_at": "2026-12-01T10:00:00+00:00",
    "started_at": None,
    "finished_at": None,
    "queue_wait_s": None,
    "timeout_seconds": 3600,
    "attempt": 0,
    "steps": [{"id": 1, "name": "Build", "image": "alpine", "status": "pending", "exit_code": None}],
    "log_lines": 0,
    "queue_position": 2,
    "callback": None,
    "some_future_field": True,
}
INVALID = {
    "type": "urn:hades:problem:invalid-job",
    "title": "Invalid job",
    "status": 422,
    "detail": "/steps/0/memory_limit: must be a memory size (and 1 more)",
    "errors": [
        {"path": "/steps/0/memory_limit", "message": "must be a memory size"},
        {"path": "/name", "message": "is required"},
    ],
}


def problem(status: int, kind: str, title: str, detail: str, **headers: str) -> httpx.Response:
    body = {"type": f"urn:hades:problem:{kind}", "title": title, "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json", **headers})


@pytest.fixture
def hades() -> Iterator[hades_client.HadesClient]:
    with hades_client.HadesClient(SUBMIT, LOGS, api_key="submit-key", logs_api_key="read-key") as c:
        yield c


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between retries, recorded instead of slept (sync and async clients)."""
    waits: list[float] = []

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(client, "time", types.SimpleNamespace(sleep=waits.append))
    monkeypatch.setattr(asyncclient, "asyncio", types.SimpleNamespace(sleep=async_sleep))
    return waits


# Requests and answers.


@respx.mock
def test_submit_sends_the_job_with_the_submit_key_and_an_idempotency_key(hades: hades_client.HadesClient) -> None:
    route = respx.post(f"{SUBMIT}/jobs").respond(202, json=ACCEPTED, headers={"Location": f"/jobs/{JOB_ID}"})
    submitted = hades.submit(JOB)
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer submit-key"
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers["Idempotency-Key"]) == 36  # a fresh UUID per submit, so a retry stores one job
    assert json.loads(request.content) == JOB
    assert submitted.id == JOB_ID and submitted.status is JobStatus.QUEUED and submitted.lane == "high"
    assert submitted.links["stream"] == f"/jobs/{JOB_ID}/logs/stream" and not submitted.replayed


@respx.mock
def test_submit_with_a_key_reports_a_replay(hades: hades_client.HadesClient) -> None:
    route = respx.post(f"{SUBMIT}/jobs").respond(202, json=ACCEPTED, headers={"Idempotent-Replayed": "true"})
    submitted = hades.submit(JOB, idempotency_key="build-42")
    assert route.calls.last.request.headers["Idempotency-Key"] == "build-42"
    assert submitted.replayed


@respx.mock
def test_reads_go_to_logs_with_the_read_key_and_give_typed_records(hades: hades_client.HadesClient) -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=RECORD)
    job = hades.get(JOB_ID)
    assert route.calls.last.request.headers["Authorization"] == "Bearer read-key"
    assert job.status is JobStatus.QUEUED and job.queue_position == 2 and job.lane == "high"
    assert job.steps[0].name == "Build" and job.steps[0].status is StepStatus.PENDING
    assert job.raw["some_future_field"] is True
    assert hades.queue_position(JOB_ID) == 2


@respx.mock
def test_one_key_serves_both_services_and_no_key_sends_no_credentials() -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=RECORD)
    with hades_client.HadesClient(SUBMIT, LOGS, api_key="only-key") as c:
        c.get(JOB_ID)
    assert route.calls.last.request.headers["Authorization"] == "Bearer only-key"
    with hades_client.HadesClient(SUBMIT, LOGS) as c:
        c.get(JOB_ID)
    assert "Authorization" not in route.calls.last.request.headers


@respx.mock
def test_list_filters_and_follows_the_cursor_through_every_page(hades: hades_client.HadesClient) -> None:
    first = {**RECORD, "id": "a" * 8}
    second = {**RECORD, "id": "b" * 8}
    route = respx.get(f"{LOGS}/jobs").mock(
        side_effect=[
            httpx.Response(200, json={"jobs": [first], "next": "cursor-1"}),
            httpx.Response(200, json={"jobs": [second], "next": None}),
        ]
    )
    assert [job.id for job in hades.iter_jobs(status="failed,timed_out", page_size=1)] == ["a" * 8, "b" * 8]
    first_params, second_params = (call.request.url.params for call in route.calls)
    assert dict(first_params) == {"status": "failed,timed_out", "limit": "1"}
    assert dict(second_params) == {"status": "failed,timed_out", "limit": "1", "cursor": "cursor-1"}


@respx.mock
def test_list_sends_the_name_filter_and_pages_on_past_an_empty_page(hades: hades_client.HadesClient) -> None:
    route = respx.get(f"{LOGS}/jobs").mock(
        side_effect=[
            httpx.Response(200, json={"jobs": [], "next": "cursor-1"}),  # the server's scan budget ran out
            httpx.Response(200, json={"jobs": [{**RECORD, "name": "Build 42"}], "next": None}),
        ]
    )
    assert [job.name for job in hades.iter_jobs(name="build 4", page_size=5)] == ["Build 42"]
    first_params, second_params = (dict(call.request.url.params) for call in route.calls)
    assert first_params == {"name": "build 4", "limit": "5"}
    assert second_params == {"name": "build 4", "limit": "5", "cursor": "cursor-1"}
    route.side_effect = None
    route.return_value = httpx.Response(200, json={"jobs": [], "next": None})
    assert hades.list_jobs(name="x", status="failed").jobs == ()
    assert dict(route.calls.last.request.url.params) == {"status": "failed", "name": "x"}


@respx.mock
def test_a_cursor_that_does_not_move_ends_the_listing(hades: hades_client.HadesClient) -> None:
    route = respx.get(f"{LOGS}/jobs").respond(200, json={"jobs": [RECORD], "next": "same"})
    assert len(list(hades.iter_jobs())) == 2  # the first page, and the one its cursor names; then it stops
    assert route.call_count == 2


@respx.mock
def test_a_record_tells_when_its_log_lost_lines(hades: hades_client.HadesClient) -> None:
    lossy = {**RECORD, "log_lines": 7, "log_lost_lines": 12, "log_incomplete": True, "log_truncated": False}
    respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=lossy)
    job = hades.get(JOB_ID)
    assert (job.log_lines, job.log_lost_lines, job.log_incomplete, job.log_truncated) == (7, 12, True, False)
    respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=RECORD)  # a server that does not report them
    job = hades.get(JOB_ID)
    assert (job.log_lost_lines, job.log_incomplete, job.log_truncated) == (0, False, False)


@respx.mock
def test_logs_as_entries_and_as_text_for_one_step(hades: hades_client.HadesClient) -> None:
    line = {"timestamp": "2026-12-01T10:00:01+00:00", "message": "hi", "output_stream": "stdout", "seq": 1}
    entries = {"logs": [{"job_id": JOB_ID, "container_id": "c1", "step": 1, "logs": [line]}]}
    json_route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs", params={"step": "1"}).respond(200, json=entries)
    [step] = hades.logs(JOB_ID, step=1)
    assert json_route.called and step.step == 1 and step.lines[0].message == "hi" and step.lines[0].seq == 1
    text_route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs", params={"format": "text"}).respond(200, text="hi\nthere\n")
    assert hades.logs_text(JOB_ID) == "hi\nthere\n"
    assert text_route.calls.last.request.url.params["format"] == "text"


@respx.mock
def test_cancel_uses_the_submit_key(hades: hades_client.HadesClient) -> None:
    route = respx.delete(f"{SUBMIT}/jobs/{JOB_ID}").respond(202, json={"id": JOB_ID, "status": "cancelling"})
    assert hades.cancel(JOB_ID) == Cancelling(JOB_ID, "cancelling")
    assert route.calls.last.request.headers["Authorization"] == "Bearer submit-key"


@respx.mock
def test_a_job_id_cannot_leave_its_path_segment(hades: hades_client.HadesClient) -> None:
    route = respx.get(f"{LOGS}/jobs/..%2Fmetrics").respond(404, json={})
    with pytest.raises(errors.NotFound):
        hades.get("../metrics")
    assert route.called


# Errors: the server's problem details, as exceptions.


@respx.mock
def test_an_invalid_job_carries_every_violation_and_its_field_paths(hades: hades_client.HadesClient) -> None:
    respx.post(f"{SUBMIT}/jobs").respond(422, json=INVALID, headers={"Content-Type": "application/problem+json"})
    with pytest.raises(errors.InvalidJob) as caught:
        hades.submit(JOB)
    error = caught.value
    assert (error.status, error.type, error.title) == (422, "urn:hades:problem:invalid-job", "Invalid job")
    assert error.detail == INVALID["detail"] and error.errors == INVALID["errors"]
    assert error.field_paths == ["/steps/0/memory_limit", "/name"]
    assert error.problem == INVALID
    assert str(error) == f"422 Invalid job: {INVALID['detail']}"


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "malformed-json", errors.BadRequest),
        (401, "unauthorized", errors.Unauthorized),
        (404, "job-not-found", errors.NotFound),
        (409, "conflict", errors.Conflict),
        (413, "payload-too-large", errors.PayloadTooLarge),
        (415, "unsupported-media-type", errors.ApiError),
    ],
)
@respx.mock
def test_each_error_status_has_its_exception(
    hades: hades_client.HadesClient, status: int, kind: str, expected: type[errors.ApiError]
) -> None:
    respx.delete(f"{SUBMIT}/jobs/{JOB_ID}").mock(return_value=problem(status, kind, "Title", "what went wrong"))
    with pytest.raises(expected) as caught:
        hades.cancel(JOB_ID)
    assert type(caught.value) is expected
    assert caught.value.status == status and caught.value.type == f"urn:hades:problem:{kind}"
    assert caught.value.detail == "what went wrong" and caught.value.errors == []


@respx.mock
def test_the_original_not_found_body_still_reads_as_a_problem(hades: hades_client.HadesClient) -> None:
    body = {"type": "urn:hades:problem:job-not-found", "title": "Job not found", "status": 404,
            "detail": f"no job with id '{JOB_ID}'", "error": f"job not found: {JOB_ID}"}  # fmt: skip
    respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(404, json=body, headers={"Content-Type": "application/problem+json"})
    with pytest.raises(errors.NotFound) as caught:
        hades.get(JOB_ID)
    assert caught.value.title == "Job not found" and caught.value.problem["error"] == f"job not found: {JOB_ID}"


@respx.mock
def test_a_foreign_error_page_becomes_a_short_problem(hades: hades_client.HadesClient) -> None:
    respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(502, text="<html>" + "x" * 5000, headers={"Content-Type": "text/html"})
    with pytest.raises(errors.ApiError) as caught:
        hades.get(JOB_ID)
    assert caught.value.status == 502 and caught.value.title == "Bad Gateway"
    assert caught.value.detail.startswith("<html>") and len(caught.value.detail) == errors.MAX_REMOTE_TEXT


@respx.mock
def test_a_success_of_another_shape_is_an_unexpected_answer(hades: hades_client.HadesClient) -> None:
    respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, text="<html>a dashboard</html>")
    with pytest.raises(errors.UnexpectedAnswer, match="a dashboard"):
        hades.get(JOB_ID)
    respx.post(f"{SUBMIT}/jobs").respond(202, json={"status": "queued"})
    with pytest.raises(errors.UnexpectedAnswer, match="'id'"):
        hades.submit(JOB)


@respx.mock
def test_no_server_is_a_connection_failure(hades: hades_client.HadesClient) -> None:
    respx.get(f"{LOGS}/jobs/{JOB_ID}").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(errors.ConnectionFailed) as caught:
        hades.get(JOB_ID)
    assert caught.value.url == f"{LOGS}/jobs/{JOB_ID}" and "refused" in caught.value.reason


# Retries of 503 and 429.


@respx.mock
def test_503_is_retried_after_the_servers_retry_after(hades: hades_client.HadesClient, slept: list[float]) -> None:
    route = respx.post(f"{SUBMIT}/jobs").mock(
        side_effect=[
            problem(503, "unavailable", "Service unavailable", "NATS is down", **{"Retry-After": "2"}),
            httpx.Response(202, json=ACCEPTED),
        ]
    )
    assert hades.submit(JOB).id == JOB_ID
    assert slept == [2.0]
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert len(keys) == 1  # the retry is the same submit: the server stores one job


@respx.mock
def test_429_without_retry_after_backs_off_and_an_http_date_is_honoured(
    hades: hades_client.HadesClient, slept: list[float]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    respx.get(f"{LOGS}/jobs/{JOB_ID}").mock(
        side_effect=[
            httpx.Response(429),
            httpx.Response(429),
            httpx.Response(503, headers={"Retry-After": later}),
            httpx.Response(200, json=RECORD),
        ]
    )
    assert hades.get(JOB_ID).id == JOB_ID
    assert slept[:2] == [0.5, 1.0] and 18 < slept[2] <= 20


@respx.mock
def test_retries_end_with_the_last_problem_and_its_retry_after(
    hades: hades_client.HadesClient, slept: list[float]
) -> None:
    route = respx.post(f"{SUBMIT}/jobs").mock(
        return_value=problem(
            503, "unavailable", "Service unavailable", "JetStream cannot store", **{"Retry-After": "1"}
        )
    )
    with pytest.raises(errors.Unavailable) as caught:
        hades.submit(JOB)
    assert route.call_count == RetryPolicy().attempts and slept == [1.0, 1.0, 1.0]
    assert caught.value.retry_after_s == 1.0 and caught.value.detail == "JetStream cannot store"


@respx.mock
def test_a_retry_after_longer_than_the_limit_is_not_waited_for(slept: list[float]) -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(503, headers={"Retry-After": "3600"})
    with (
        hades_client.HadesClient(SUBMIT, LOGS, retry=RetryPolicy(max_wait_s=10)) as c,
        pytest.raises(errors.Unavailable) as caught,
    ):
        c.get(JOB_ID)
    assert route.call_count == 1 and slept == [] and caught.value.retry_after_s == 3600


@respx.mock
def test_other_errors_are_not_retried(hades: hades_client.HadesClient, slept: list[float]) -> None:
    route = respx.post(f"{SUBMIT}/jobs").respond(500, text="boom")
    with pytest.raises(errors.ApiError):
        hades.submit(JOB)
    assert route.call_count == 1 and slept == []


# Live logs.


def sse(*events: tuple[str | None, str | None, dict[str, Any]]) -> bytes:
    out = [": ping\n\n"]
    for event, event_id, data in events:
        block = "".join(
            [
                f"event: {event}\n" if event else "",
                f"id: {event_id}\n" if event_id else "",
                f"data: {json.dumps(data)}\n",
            ]
        )
        out.append(block + "\n")
    return "".join(out).encode()


def line(seq: int, message: str, step: int = 1) -> tuple[None, str, dict[str, Any]]:
    data = {"timestamp": None, "message": message, "output_stream": "stdout", "seq": seq, "step": step, "attempt": 1}
    return (None, f"1.{seq}", data)


def step_status(seq: int, status: str, step: int = 1, **extra: Any) -> tuple[str, None, dict[str, Any]]:
    data = {"kind": "step", "job_id": JOB_ID, "attempt": 1, "seq": seq, "step_id": step, "step_name": "Build",
            "status": status, **extra}  # fmt: skip
    return ("status", None, data)


END = ("end", None, {"status": "failed", "legacy_status": "Failed", "reason": "step 1 exited 3"})


class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off after its bytes, as a dropped connection does."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def event_stream(body: bytes, *, broken: bool = False) -> httpx.Response:
    headers = {"Content-Type": "text/event-stream"}
    if broken:
        return httpx.Response(200, headers=headers, stream=Broken(body))
    return httpx.Response(200, headers=headers, content=body)


def stream_responses() -> list[httpx.Response]:
    first = sse(line(1, "one"), step_status(1, "running"), line(2, "two"), step_status(2, "running"))
    # The server replays from after 1.2: the status after the last line comes again; the client drops it.
    second = sse(step_status(2, "running"), line(3, "three"), step_status(3, "failed", exit_code=3), END)
    return [event_stream(first, broken=True), event_stream(second)]


def check_resumed(events: list[Any], route: respx.Route) -> None:
    lines = [e.message for e in events if isinstance(e, LineEvent)]
    assert lines == ["one", "two", "three"]
    statuses = [(e.seq, e.status) for e in events if isinstance(e, StatusEvent)]
    assert statuses == [(1, "running"), (2, "running"), (3, "failed")]
    assert [e.exit_code for e in events if isinstance(e, StatusEvent)][-1] == 3
    assert events[-1] == EndEvent(JobStatus.FAILED, "step 1 exited 3")
    first, second = route.calls
    assert "Last-Event-ID" not in first.request.headers
    assert second.request.headers["Last-Event-ID"] == "1.2"
    assert first.request.headers["Accept"] == "text/event-stream"
    assert second.request.headers["Authorization"] == "Bearer read-key"


@respx.mock
def test_a_dropped_stream_resumes_without_a_lost_or_repeated_event(
    hades: hades_client.HadesClient, slept: list[float]
) -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(side_effect=stream_responses())
    events = list(hades.stream(JOB_ID))
    check_resumed(events, route)
    assert slept == [ReconnectPolicy().backoff_s]


@respx.mock
def test_a_stream_closed_early_by_the_server_resumes_after_its_retry_hint(
    hades: hades_client.HadesClient, slept: list[float]
) -> None:
    first = b"retry: 1500\n\n" + sse(line(1, "one"))
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(
        side_effect=[event_stream(first), event_stream(sse(line(2, "two"), END))]
    )
    events = list(hades.stream(JOB_ID, last_event_id="0.9"))
    assert [e.message for e in events if isinstance(e, LineEvent)] == ["one", "two"]
    assert route.calls[0].request.headers["Last-Event-ID"] == "0.9"
    assert route.calls[1].request.headers["Last-Event-ID"] == "1.1"
    assert slept == [1.5]


@respx.mock
def test_a_stream_that_keeps_failing_gives_up(slept: list[float]) -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(side_effect=httpx.ConnectError("refused"))
    with (
        hades_client.HadesClient(SUBMIT, LOGS, reconnect=ReconnectPolicy(attempts=3)) as c,
        pytest.raises(errors.StreamBroken, match="3 times"),
    ):
        list(c.stream(JOB_ID))
    assert route.call_count == 3 and slept == [0.25, 0.5]


@respx.mock
def test_a_stream_of_an_unknown_job_fails_at_once(hades: hades_client.HadesClient, slept: list[float]) -> None:
    route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(
        return_value=problem(404, "job-not-found", "Job not found", "no such job")
    )
    with pytest.raises(errors.NotFound):
        list(hades.stream(JOB_ID))
    assert route.call_count == 1 and slept == []


@respx.mock
def test_a_malformed_event_is_an_unexpected_answer(hades: hades_client.HadesClient) -> None:
    respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(return_value=event_stream(b"data: {not json\n\n"))
    with pytest.raises(errors.UnexpectedAnswer, match="cannot read"):
        list(hades.stream(JOB_ID))


def test_multi_line_data_and_unknown_events() -> None:
    from hades_client import sse as sse_module

    decoder = sse_module.Decoder()
    fed = [decoder.feed(text) for text in ("event: status", "data: {", 'data: "kind": "job", "status": "running"}', "")]
    raw = fed[-1]
    assert raw is not None and raw.data == '{\n"kind": "job", "status": "running"}'
    event = sse_module.parse_event(raw)
    assert isinstance(event, StatusEvent) and event.kind == "job" and event.status == "running"
    assert sse_module.parse_event(sse_module.RawEvent("newfangled", "{}", None)) is None


# The async client: the same calls.


async def test_async_client_submits_retries_and_reads(slept: list[float]) -> None:
    with respx.mock:
        respx.post(f"{SUBMIT}/jobs").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(202, json=ACCEPTED)]
        )
        respx.get(f"{LOGS}/jobs/{JOB_ID}").respond(200, json=RECORD)
        listed = respx.get(f"{LOGS}/jobs").mock(
            side_effect=[
                httpx.Response(200, json={"jobs": [], "next": "cursor-1"}),
                httpx.Response(200, json={"jobs": [RECORD], "next": None}),
            ]
        )
        respx.delete(f"{SUBMIT}/jobs/{JOB_ID}").respond(409, json={"title": "Conflict", "detail": "already ended"})
        async with hades_client.AsyncHadesClient(SUBMIT, LOGS, api_key="k") as c:
            assert (await c.submit(JOB)).id == JOB_ID
            assert (await c.get(JOB_ID)).queue_position == 2
            assert await c.queue_position(JOB_ID) == 2
            assert [job.id async for job in c.iter_jobs(name="Hi", page_size=3)] == [JOB_ID]
            assert [dict(call.request.url.params) for call in listed.calls] == [
                {"name": "Hi", "limit": "3"},
                {"name": "Hi", "limit": "3", "cursor": "cursor-1"},
            ]
            with pytest.raises(errors.Conflict, match="already ended"):
                await c.cancel(JOB_ID)
    assert slept == [0.0]


async def test_async_stream_resumes_without_a_lost_or_repeated_event(slept: list[float]) -> None:
    with respx.mock:
        route = respx.get(f"{LOGS}/jobs/{JOB_ID}/logs/stream").mock(side_effect=stream_responses())
        async with hades_client.AsyncHadesClient(SUBMIT, LOGS, api_key="k", logs_api_key="read-key") as c:
            events = [event async for event in c.stream(JOB_ID)]
    check_resumed(events, route)
    assert slept == [ReconnectPolicy().backoff_s]


async def test_async_errors_carry_the_problem(slept: list[float]) -> None:
    with respx.mock:
        respx.post(f"{SUBMIT}/jobs").respond(422, json=INVALID, headers={"Content-Type": "application/problem+json"})
        respx.get(f"{LOGS}/jobs/{JOB_ID}").mock(side_effect=httpx.ConnectTimeout("timed out"))
        respx.get(f"{LOGS}/jobs").respond(429, headers={"Retry-After": "1"})
        async with hades_client.AsyncHadesClient(SUBMIT, LOGS) as c:
            with pytest.raises(errors.InvalidJob) as caught:
                await c.submit(JOB)
            assert caught.value.field_paths == ["/steps/0/memory_limit", "/name"]
            with pytest.raises(errors.ConnectionFailed):
                await c.get(JOB_ID)
            with pytest.raises(errors.Unavailable):
                await c.list_jobs()
    assert slept == [1.0, 1.0, 1.0]


def test_exported_names() -> None:
    assert sorted(hades_client.__all__) == hades_client.__all__
    for name in hades_client.__all__:
        assert hasattr(hades_client, name)
