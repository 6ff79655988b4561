"""A finished span as the exporters see it: ids, name, kind, times and tags.

Ids are lower-case hex strings (trace id 16 or 32 characters, span ids 16), times are
microseconds since the epoch (Zipkin's unit; OTLP multiplies by 1000). Tag values are strings.
A span object is only made for a sampled request; an unsampled one costs ids and headers.
"""

from __future__ import annotations

SERVER = "SERVER"
CLIENT = "CLIENT"


class Span:
    __slots__ = (
        "trace_id", "span_id", "parent_id", "kind", "shared", "name", "start_us",
        "duration_us", "tags", "local_ip", "local_port", "remote_ip", "remote_port", "error",
    )

    def __init__(self, trace_id: str, span_id: str, parent_id: str | None, kind: str,
                 start_us: int, shared: bool = False) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.shared = shared  # a SERVER span sharing its id with the caller's CLIENT span
        self.start_us = start_us
        self.name = ""
        self.duration_us = 0
        self.tags: dict[str, str] = {}
        self.local_ip = ""
        self.local_port = 0
        self.remote_ip = ""
        self.remote_port = 0
        self.error = False

    def __repr__(self) -> str:
        return (f"Span({self.name!r}, {self.kind}, trace={self.trace_id}, id={self.span_id}, "
                f"parent={self.parent_id})")
