"""The connection manager's tracer: one per HCM version with ``tracing`` and a provider.

At the start of a stream (:meth:`HttpTracer.start`) it reads the caller's context, decides on
sampling (``sampler``), makes this hop's span ids and writes them into the request headers
that go upstream (``context.inject``): a CLIENT span on an ``OUTBOUND`` listener, a SERVER
span otherwise (Envoy's egress/ingress operation). The span's id is new and its parent is the
caller's span, except for Zipkin's ``shared_span_context`` (Envoy's default, which Istio turns
off) where a SERVER span reuses the caller's ids. Without an incoming context the trace id is
new: 128 bits for OpenTelemetry and for Zipkin's ``trace_id_128bit``, else 64.

At the end (:meth:`HttpTracer.finish`) a sampled span gets its name, duration and tags and goes
to the provider's exporter; an unsampled request has no span object at all.

Name: on a SERVER span, the caller's ``x-envoy-decorator-operation`` when sent (Envoy lets it
override the local name on ingress); else the route's ``decorator.operation`` (Istio:
``<host>:<port>/*``); else the request's host (``:authority``), as Envoy's Zipkin tracer names
a span before a decorator applies.

Tags (Envoy's and Istio's): ``node_id``, ``zone``, ``component: proxy``,
``guid:x-request-id``, ``guid:x-client-trace-id`` (when sent), ``http.url``, ``http.method``,
``http.protocol``, ``downstream_cluster``, ``user_agent``, ``peer.address``,
``request_size``, ``response_size``, ``upstream_cluster``, ``upstream_cluster.name``,
``upstream_address``, ``http.status_code``, ``grpc.status_code`` (gRPC), ``response_flags``,
``error: true`` (no response, or 5xx), and the HCM's ``custom_tags``.
"""

from __future__ import annotations

import time
from random import getrandbits
from typing import TYPE_CHECKING, Any

from pistio.proxy.access_log.response_flags import to_short_string
from pistio.proxy.http.headers import (
    X_CLIENT_TRACE_ID,
    X_ENVOY_DECORATOR_OPERATION,
    X_ENVOY_ORIGINAL_PATH,
    X_FORWARDED_PROTO,
    X_REQUEST_ID,
)
from pistio.proxy.http.http2_grpc import GRPC_CONTENT_TYPE
from pistio.proxy.tracing.config import CustomTag, TracingConfig, ZipkinProvider
from pistio.proxy.tracing.context import extract, inject
from pistio.proxy.tracing.node import LocalNode
from pistio.proxy.tracing.span import CLIENT, SERVER, Span

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.tracing.exporter import SpanExporter

TRAFFIC_DIRECTION_OUTBOUND = 2  # envoy.config.core.v3.TrafficDirection

_X_DOWNSTREAM_CLUSTER = b"x-envoy-downstream-service-cluster"
_USER_AGENT = b"user-agent"
_CONTENT_TYPE = b"content-type"


def new_span_id() -> bytes:
    return b"%016x" % (getrandbits(64) or 1)


def new_trace_id(bits128: bool) -> bytes:
    return b"%032x" % (getrandbits(128) or 1) if bits128 else b"%016x" % (getrandbits(64) or 1)


def _ip_port(address: Any) -> tuple[str, int]:
    if address is None:
        return "", 0
    if isinstance(address, tuple):
        return str(address[0]), int(address[1])
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _latin(raw: bytes | None, default: str = "-") -> str:
    return raw.decode("latin-1") if raw is not None else default


class HttpTracer:
    """Tracing for the streams of one connection manager (its config, compiled)."""

    __slots__ = ("config", "sampler", "outbound", "kind", "shared", "bits128", "exporter",
                 "node", "static_tags", "header_tags", "metadata_tags", "max_path")

    def __init__(self, config: TracingConfig, traffic_direction: int,
                 exporter: SpanExporter, node: LocalNode) -> None:
        self.config = config
        self.sampler = config.sampler
        self.outbound = traffic_direction == TRAFFIC_DIRECTION_OUTBOUND
        self.kind = CLIENT if self.outbound else SERVER
        provider = config.provider
        zipkin = isinstance(provider, ZipkinProvider)
        self.shared = zipkin and provider.shared_span_context and not self.outbound
        self.bits128 = provider.trace_id_128bit if zipkin else True
        self.exporter = exporter
        self.node = node
        static = {"node_id": node.node_id, "zone": node.zone, "component": "proxy"}
        header_tags: list[CustomTag] = []
        metadata_tags: list[CustomTag] = []  # and formatter tags: both read the StreamInfo
        for tag in config.custom_tags:
            if tag.kind == "literal":
                static[tag.tag] = tag.value
            elif tag.kind == "request_header":
                header_tags.append(tag)
            else:
                metadata_tags.append(tag)
        self.static_tags = static
        self.header_tags = tuple(header_tags)
        self.metadata_tags = tuple(metadata_tags)
        self.max_path = config.max_path_tag_length

    # --- stream start: context, sampling, injection ------------------------------------------

    def start(self, s: ActiveStream) -> Span | None:
        head = s.stream.head
        index = head.index
        incoming = extract(index)
        if incoming is None:
            sampled = self.sampler.sampled(index, None)
            trace_id = new_trace_id(self.bits128)
            span_id = new_span_id()
            parent_id = None
        else:
            sampled = self.sampler.sampled(index, incoming.sampled)
            if incoming.trace_id is None:
                trace_id = new_trace_id(self.bits128)
                span_id = new_span_id()
                parent_id = None
            elif self.shared:
                trace_id = incoming.trace_id
                span_id = incoming.span_id  # type: ignore[assignment]
                parent_id = incoming.parent_id
            else:
                trace_id = incoming.trace_id
                span_id = new_span_id()
                parent_id = incoming.span_id
        inject(head, trace_id, span_id, parent_id, sampled)
        info = s.info
        info.trace_id = trace_id.decode()
        if not sampled:
            return None
        shared = self.shared and incoming is not None and incoming.trace_id is not None
        span = Span(trace_id.decode(), span_id.decode(),
                    parent_id.decode() if parent_id is not None else None, self.kind,
                    info.start_time_ns // 1000, shared)
        if not self.outbound:
            # Envoy: the caller's x-envoy-decorator-operation names the server span (read
            # before this hop's router replaces it with its own route's decorator).
            operation = index.get(X_ENVOY_DECORATOR_OPERATION)
            if operation:
                span.name = operation.decode("latin-1")
        return span

    # --- stream end: name, tags, export ------------------------------------------------------

    def finish(self, span: Span, s: ActiveStream) -> None:
        info = s.info
        head = s.stream.head
        index = head.index
        end = info.last_downstream_tx_byte_sent or time.monotonic_ns()
        span.duration_us = max(1, (end - info.start_monotonic_ns) // 1000)
        if not span.name:
            route = s.route()
            if route is not None and route.decorator_operation:
                span.name = route.decorator_operation
            else:
                span.name = head.authority.decode("latin-1")
        tags = dict(self.static_tags)
        tags["guid:x-request-id"] = _latin(index.get(X_REQUEST_ID), "")
        client_trace = index.get(X_CLIENT_TRACE_ID)
        if client_trace is not None:
            tags["guid:x-client-trace-id"] = client_trace.decode("latin-1")
        tags["http.url"] = self._url(head)
        tags["http.method"] = head.method.decode("latin-1")
        tags["http.protocol"] = info.protocol or "-"
        tags["downstream_cluster"] = _latin(index.get(_X_DOWNSTREAM_CLUSTER))
        tags["user_agent"] = _latin(index.get(_USER_AGENT))
        down = info.downstream
        peer_ip, peer_port = _ip_port(down.remote_address)
        tags["peer.address"] = peer_ip
        tags["request_size"] = str(info.bytes_received)
        tags["response_size"] = str(info.bytes_sent)
        if info.upstream_cluster is not None:
            tags["upstream_cluster"] = info.upstream_cluster
            tags["upstream_cluster.name"] = (info.upstream_cluster_observability_name
                                             or info.upstream_cluster)
        up_ip, up_port = _ip_port(info.upstream_host)
        if up_ip:
            tags["upstream_address"] = f"{up_ip}:{up_port}"
        code = info.response_code
        tags["http.status_code"] = str(code)
        content_type = index.get(_CONTENT_TYPE)
        if content_type is not None and content_type.startswith(GRPC_CONTENT_TYPE):
            grpc_status = info.grpc_status()
            if grpc_status is not None:
                tags["grpc.status_code"] = str(grpc_status)
        tags["response_flags"] = to_short_string(info.response_flags)
        if code == 0 or code >= 500:
            tags["error"] = "true"
            span.error = True
        for tag in self.header_tags:
            raw = index.get(tag.source)  # type: ignore[arg-type]
            if raw is not None:
                tags[tag.tag] = raw.decode("latin-1")
            elif tag.default_value:
                tags[tag.tag] = tag.default_value
        for tag in self.metadata_tags:
            if tag.formatter is not None:
                value = tag.formatter.format(info)
            else:
                value = _metadata_value(info.dynamic_metadata, tag)
            if value is not None:
                tags[tag.tag] = value
        span.tags = tags
        local_ip, local_port = _ip_port(down.local_address)
        span.local_ip = self.node.ip or local_ip
        span.local_port = local_port
        if self.outbound:
            span.remote_ip, span.remote_port = up_ip, up_port
        else:
            span.remote_ip, span.remote_port = peer_ip, peer_port
        self.exporter.add(span)

    def _url(self, head: Any) -> str:
        """Envoy's ``http.url``: scheme, host and the original path, the path cut to
        ``max_path_tag_length``."""
        index = head.index
        path = (index.get(X_ENVOY_ORIGINAL_PATH) or head.target).decode("latin-1")
        if path[:1] != "/" and "://" in path[:10]:
            return path[:self.max_path]  # absolute-form request target
        scheme = (index.get(X_FORWARDED_PROTO) or b"http").decode("latin-1")
        return f"{scheme}://{head.authority.decode('latin-1')}{path[:self.max_path]}"


def _metadata_value(metadata: dict[str, dict[str, Any]] | None, tag: CustomTag) -> str | None:
    value: Any = (metadata or {}).get(tag.source)  # type: ignore[call-overload]
    for key in tag.path:
        if not isinstance(value, dict):
            value = None
            break
        value = value.get(key)
    if value is None or isinstance(value, dict | list):
        return tag.default_value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
