"""OpenTelemetry: one tracer provider per process, and trace context carried in NATS headers.

Exporters are chosen by the standard ``OTEL_*`` variables through the SDK; with none set, spans are not recorded,
but trace ids are still made and carried from the POST through NATS to every step and the log collector.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from runtime import subjects

log = logging.getLogger(__name__)
_configured = False
_unrecording: TracerProvider | None = None
"""The provider installed when nothing is exported: it records no span without a sampled parent."""


def setup_tracing(service: str) -> None:
    """Install the SDK tracer provider once per process (tests build many apps in one process)."""
    global _configured, _unrecording
    if _configured:
        return
    _configured = True
    resource = Resource.create({"service.name": f"hades-{service}"})
    exporters = _exporters()
    if exporters:
        provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER, as the SDK reads it
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        # Nothing would be exported: do not record spans (they cost ~10 % of a submit), but still create trace ids
        # and pass them on, so logs and events of one job share a trace id and an upstream sampled trace is kept.
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_OFF))
        if not getattr(provider, "_disabled", False):  # OTEL_SDK_DISABLED, as the SDK read it: no ids at all
            _unrecording = provider
    trace.set_tracer_provider(provider)


def _exporters() -> list[SpanExporter]:
    """The exporters named by ``OTEL_TRACES_EXPORTER`` (read by the SDK's own configuration helpers)."""
    try:
        from opentelemetry.sdk._configuration import _get_exporter_names, _import_exporters
    except ImportError:
        return []
    names = _get_exporter_names("traces")
    if not names:
        return []
    try:
        span_exporters, _, _ = _import_exporters(names, [], [])
    except Exception as exc:  # an exporter named in OTEL_TRACES_EXPORTER that is not installed
        log.warning("trace exporter %s unavailable (%s); spans are not exported", names, exc)
        return []
    return [exporter_class() for exporter_class in span_exporters.values()]


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def request_span(
    tracer: trace.Tracer, name: str, carrier: Mapping[str, str], *, attributes: dict[str, str]
) -> contextlib.AbstractContextManager[Span]:
    """The current span of handling one request: a child of the trace context ``carrier`` brings, else the root
    of a new trace.

    When nothing exports spans and ``carrier`` brings no context, the SDK would make a ``NonRecordingSpan`` with
    fresh ids (``ParentBased(ALWAYS_OFF)``): that span is made here directly, with the provider's id generator and
    the flags the SDK gives it, without the sampler, the SDK's bookkeeping and parsing an empty carrier (+6 % submit
    throughput, docs/benchmarks.md). Otherwise (an exporter, or an incoming ``traceparent`` whose sampled flag
    decides) the SDK decides. ``tracer`` must come from the global provider (``tracing.tracer``), as the check
    that nothing records looks at that one.
    """
    provider = _unrecording
    if provider is None or trace.get_tracer_provider() is not provider or any(carrier.get(f) for f in _FIELDS):
        return tracer.start_as_current_span(name, context=extract(carrier), attributes=attributes)
    ids = provider.id_generator
    flags = TraceFlags.RANDOM_TRACE_ID if ids.is_trace_id_random() else TraceFlags.DEFAULT
    context = SpanContext(
        ids.generate_trace_id(), ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags)
    )
    return trace.use_span(NonRecordingSpan(context))


_FIELDS = tuple(propagate.get_global_textmap().fields)
"""The carrier fields the configured propagators read (W3C: ``traceparent``, ``tracestate``, ``baggage``)."""


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent``/``tracestate`` of the current span to outgoing NATS headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by incoming NATS headers (empty context when there is none)."""
    return propagate.extract(dict(headers or {}))


def trace_id() -> str | None:
    """The current trace id as 32 hex digits (also when spans are not recorded), or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, for carriers other than NATS headers: the Kubernetes
    executor puts it on the Job as the ``hades.io/traceparent`` annotation (``TRACEPARENT_ANNOTATION``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


TRACEPARENT_ANNOTATION = "hades.io/traceparent"
MESSAGING_SYSTEM = "nats"


def destination_template(subject: str) -> str:
    """The subject with a trailing job id replaced by ``{job_id}``: span names stay few (OTel asks span names of
    low cardinality), the full subject is the ``messaging.destination.name`` attribute."""
    prefix, _, last = subject.rpartition(".")
    if prefix.startswith(f"{subjects.JOBS_SUBJECT_PREFIX}.") and prefix.count(".") == 2:
        return f"{prefix}.{{tenant}}"  # hades.jobs.<lane>.<tenant>: a name per tenant would be as many spans
    return f"{prefix}.{{job_id}}" if prefix and len(last) == 36 and last.count("-") == 4 else subject


def _messaging_attributes(subject: str, operation: str, message_id: str | None) -> dict[str, str]:
    attributes = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": subject,
        "messaging.destination.template": destination_template(subject),
    }
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    return attributes


@contextlib.contextmanager
def send_span(subject: str, headers: MutableMapping[str, str], *, message_id: str | None) -> Iterator[Span]:
    """The producer span of one publish (``send <subject>``); its context goes into ``headers``."""
    with _tracer.start_as_current_span(
        f"send {destination_template(subject)}",
        kind=SpanKind.PRODUCER,
        attributes=_messaging_attributes(subject, "send", message_id),
    ) as span:
        inject(headers)
        yield span


@contextlib.contextmanager
def process_span(
    subject: str, headers: Mapping[str, str] | None, *, consumer: str, message_id: str | None
) -> Iterator[Span]:
    """The consumer span of one delivered message (``process <subject>``): a child of the producer's span, so
    the job's trace continues, and linked to it, as the messaging conventions ask of consumers."""
    parent = extract(headers)
    producer = trace.get_current_span(parent).get_span_context()
    attributes = _messaging_attributes(subject, "process", message_id)
    attributes["messaging.consumer.group.name"] = consumer
    with _tracer.start_as_current_span(
        f"process {destination_template(subject)}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=[Link(producer)] if producer.is_valid else None,
        attributes=attributes,
    ) as span:
        yield span


_tracer = trace.get_tracer("runtime.messaging")
