"""The OTLP trace messages the OpenTelemetry exporter sends, built at import time from a
``FileDescriptorProto`` in a private descriptor pool (no protoc step).

Why not the ``opentelemetry-proto`` package: ``xds-protos`` ships its own, older copy of the
same ``opentelemetry/proto/...`` modules (``InstrumentationLibrarySpans``, before OTLP 1.0), and
whichever of the two packages pip installs last owns those files. The subset here follows
OTLP 1.x (``opentelemetry/proto/trace/v1/trace.proto`` and friends) field for field, so the
bytes are what any OTLP collector decodes:

    ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
    ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2;
                    string schema_url = 3; }
    ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
    Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3;
           bytes parent_span_id = 4; string name = 5; SpanKind kind = 6;
           fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
           repeated KeyValue attributes = 9; Status status = 15; fixed32 flags = 16; }
    Status { string message = 2; StatusCode code = 3; }
    Resource { repeated KeyValue attributes = 1; }
    InstrumentationScope { string name = 1; string version = 2; }
    KeyValue { string key = 1; AnyValue value = 2; }
    AnyValue { oneof value { string string_value = 1; bool bool_value = 2;
                             int64 int_value = 3; double double_value = 4; } }

The pool is private, so these never clash with either package's registrations.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "opentelemetry.proto.collector.trace.v1"
EXPORT_METHOD = f"/{PACKAGE}.TraceService/Export"

# SpanKind and StatusCode values (OTLP's enums).
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_CODE_ERROR = 2

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL,
    "int64": _F.TYPE_INT64, "double": _F.TYPE_DOUBLE, "uint32": _F.TYPE_UINT32,
    "fixed64": _F.TYPE_FIXED64, "fixed32": _F.TYPE_FIXED32, "int32": _F.TYPE_INT32,
}

# message -> [(field, number, type, repeated, oneof index or None)]; a type starting with
# "." names a message (or "enum:" an enum) of this file.
_MESSAGES: dict[str, list[tuple[str, int, str, bool, int | None]]] = {
    "AnyValue": [("string_value", 1, "string", False, 0), ("bool_value", 2, "bool", False, 0),
                 ("int_value", 3, "int64", False, 0), ("double_value", 4, "double", False, 0)],
    "KeyValue": [("key", 1, "string", False, None), ("value", 2, ".AnyValue", False, None)],
    "Resource": [("attributes", 1, ".KeyValue", True, None),
                 ("dropped_attributes_count", 2, "uint32", False, None)],
    "InstrumentationScope": [("name", 1, "string", False, None),
                             ("version", 2, "string", False, None)],
    "Status": [("message", 2, "string", False, None), ("code", 3, "enum:StatusCode", False, None)],
    "Span": [("trace_id", 1, "bytes", False, None), ("span_id", 2, "bytes", False, None),
             ("trace_state", 3, "string", False, None),
             ("parent_span_id", 4, "bytes", False, None), ("name", 5, "string", False, None),
             ("kind", 6, "enum:SpanKind", False, None),
             ("start_time_unix_nano", 7, "fixed64", False, None),
             ("end_time_unix_nano", 8, "fixed64", False, None),
             ("attributes", 9, ".KeyValue", True, None),
             ("dropped_attributes_count", 10, "uint32", False, None),
             ("status", 15, ".Status", False, None), ("flags", 16, "fixed32", False, None)],
    "ScopeSpans": [("scope", 1, ".InstrumentationScope", False, None),
                   ("spans", 2, ".Span", True, None), ("schema_url", 3, "string", False, None)],
    "ResourceSpans": [("resource", 1, ".Resource", False, None),
                      ("scope_spans", 2, ".ScopeSpans", True, None),
                      ("schema_url", 3, "string", False, None)],
    "ExportTraceServiceRequest": [("resource_spans", 1, ".ResourceSpans", True, None)],
    "ExportTracePartialSuccess": [("rejected_spans", 1, "int64", False, None),
                                  ("error_message", 2, "string", False, None)],
    "ExportTraceServiceResponse": [("partial_success", 1, ".ExportTracePartialSuccess", False,
                                    None)],
}
_ENUMS = {
    "SpanKind": ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                 "SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"],
    "StatusCode": ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"],
}


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="pistio/otlp_trace.proto", package=PACKAGE,
                                            syntax="proto3")
    for name, values in _ENUMS.items():
        enum = fd.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=name)
        if any(oneof is not None for *_, oneof in fields):
            msg.oneof_decl.add(name="value")
        for field, number, kind, repeated, oneof in fields:
            f = msg.field.add(name=field, number=number, json_name=_json_name(field),
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if kind.startswith("."):
                f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}{kind}"
            elif kind.startswith("enum:"):
                f.type, f.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{kind[5:]}"
            else:
                f.type = _TYPES[kind]
            if oneof is not None:
                f.oneof_index = oneof
    return fd


def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES}


_C = _classes()
AnyValue = _C["AnyValue"]
KeyValue = _C["KeyValue"]
Resource = _C["Resource"]
InstrumentationScope = _C["InstrumentationScope"]
Span = _C["Span"]
ScopeSpans = _C["ScopeSpans"]
ResourceSpans = _C["ResourceSpans"]
ExportTraceServiceRequest = _C["ExportTraceServiceRequest"]
ExportTraceServiceResponse = _C["ExportTraceServiceResponse"]
