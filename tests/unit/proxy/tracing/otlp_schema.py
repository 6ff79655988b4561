"""OTLP decoding for the tests, with a schema that is not pistio's own: the
``opentelemetry/proto`` modules installed in the environment. ``xds-protos`` ships OTLP from
before 1.0 there and ``opentelemetry-proto`` (when installed) OTLP 1.x; whichever pip wrote last
is what imports. Field 2 of ``ResourceSpans`` is ``instrumentation_library_spans`` in the first
and ``scope_spans`` in the second: the same wire field, so both decode what the proxy sends.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse
Span = trace_pb2.Span
SPAN_KIND_CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
SPAN_KIND_SERVER = trace_pb2.Span.SPAN_KIND_SERVER


def scope_spans(resource_spans: Any) -> Any:
    """``ResourceSpans`` field 2, whichever name this schema gives it."""
    field = trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_number[2]
    return getattr(resource_spans, field.name)
