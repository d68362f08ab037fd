"""OpenTelemetry: one tracer provider per process, and trace context carried in NATS headers.

Exporters are chosen by the standard ``OTEL_*`` variables through the SDK; with none set, spans are not recorded,
but trace ids are still made and carried from the POST through NATS to every step and the log collector.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

log = logging.getLogger(__name__)
_configured = False


def setup_tracing(service: str) -> None:
    """Install the SDK tracer provider once per process (tests build many apps in one process)."""
    global _configured
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


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent``/``tracestate`` of the current span to outgoing NATS headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by incoming NATS headers (empty context when there is none)."""
    return propagate.extract(dict(headers or {}))
