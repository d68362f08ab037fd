"""One trace per job, across the processes: the three functions run as separate processes exporting OTLP over
HTTP to a receiver in the test, which decodes the real protobuf payload; one trace id covers the submit span,
the NATS send and process spans, the job span, one span per step and the logs function's span."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.helpers import poll
from tests.natsserver import NatsServer
from tests.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.processes import running_functions

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


async def test_one_trace_covers_a_job_from_the_post_to_the_log_collector(
    own_nats: NatsServer, busybox_image: str, tmp_path: Path
) -> None:
    async with otlp_receiver() as receiver:
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with running_functions(own_nats.url, tmp_path, **otel) as functions:
            body = {
                "name": "traced",
                "steps": [
                    {"id": 1, "name": "build", "image": "hades-test-busybox:1", "script": "echo built"},
                    {"id": 2, "name": "test", "image": "hades-test-busybox:1", "script": "exit 4"},
                ],
            }
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{functions.url('submit')}/jobs", json=body) as response:
                    assert response.status == 202, await response.text()
                    answer = await response.json()
                job_id, trace_id = answer["id"], answer["trace_id"]
                assert len(trace_id) == 32

                def named(name: str) -> list[ReceivedSpan]:
                    return [s for s in receiver.trace(trace_id) if s.name == name]

                async def collected() -> bool:
                    # the job span ends last in dispatch; the collector applies the job's events after it
                    return bool(named("run job")) and any(
                        s.attributes.get("messaging.batch.message_count")
                        for s in receiver.trace(trace_id)
                        if s.service == "hades-logs"
                    )

                await poll(collected, timeout_s=90, interval_s=0.2)

                async def record_trace_id() -> str | None:
                    async with session.get(f"{functions.url('logs')}/jobs/{job_id}") as reply:
                        return (await reply.json()).get("trace_id") if reply.status == 200 else None

                assert await poll(record_trace_id, timeout_s=30) == trace_id  # the record leads to the trace

    spans = receiver.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    (submit,) = named("submit job")
    assert submit.service == "hades-submit" and submit.attributes["hades.job_id"] == job_id
    # submit → send hades.jobs.high (producer) → process hades.jobs.high (consumer, child and link) → run job
    (send_job,) = [s for s in named("send hades.jobs.high")]
    assert send_job.kind == "SPAN_KIND_PRODUCER" and send_job.parent_span_id == submit.span_id
    assert send_job.attributes["messaging.system"] == "nats"
    assert send_job.attributes["messaging.destination.name"] == "hades.jobs.high"
    assert send_job.attributes["messaging.message.id"] == job_id
    (process_job,) = named("process hades.jobs.high")
    assert process_job.service == "hades-dispatch" and process_job.kind == "SPAN_KIND_CONSUMER"
    assert process_job.parent_span_id == send_job.span_id
    assert process_job.links == ((trace_id, send_job.span_id),)
    assert process_job.attributes["messaging.consumer.group.name"] == "dispatch-high"
    assert process_job.attributes["messaging.message.id"] == job_id
    (job,) = named("run job")
    assert job.parent_span_id == process_job.span_id
    assert job.attributes["hades.result"] == "failed" and job.attributes["hades.failure_reason"] == "failed"
    # one span per step, children of the job span, with image, exit code and result
    steps = sorted((s for s in spans if s.name.startswith("step ")), key=lambda s: s.name)
    assert [s.name for s in steps] == ["step 1", "step 2"]
    assert all(s.parent_span_id == job.span_id for s in steps)
    assert [s.attributes["container.image.name"] for s in steps] == ["hades-test-busybox:1"] * 2
    assert [(s.attributes["process.exit.code"], s.attributes["hades.step.result"]) for s in steps] == [
        (0, "succeeded"),
        (4, "failed"),
    ]
    # status events are sent inside the job (and its steps); the log collector's spans continue them
    sends = [s for s in spans if s.kind == "SPAN_KIND_PRODUCER" and s.service == "hades-dispatch"]
    assert sends and all(s.name in ("send hades.status.{job_id}", "send hades.logs.{job_id}") for s in sends)
    collector = [s for s in spans if s.service == "hades-logs" and s.kind == "SPAN_KIND_CONSUMER"]
    assert collector
    for span in collector:
        parent = by_id[span.parent_span_id]
        assert parent.kind == "SPAN_KIND_PRODUCER" and span.links == ((trace_id, parent.span_id),)
        assert span.attributes["messaging.consumer.group.name"] == "collect-logs"
        assert span.attributes["hades.job_id"] == job_id
    # every span of the trace hangs off the submit span
    for span in spans:
        while span.parent_span_id:
            span = by_id[span.parent_span_id]
        assert span is submit
