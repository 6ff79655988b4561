"""``HttpConnectionManager.tracing`` compiled once per listener version, with its provider.

Accepted (what Istio emits, and a little more): ``random_sampling``, ``client_sampling``,
``overall_sampling``, ``max_path_tag_length``, ``custom_tags`` (``literal``, ``environment``,
``request_header``, ``metadata`` of kind ``request``), and a ``provider`` that is

- ``envoy.tracers.zipkin`` — ``ZipkinConfig{collector_cluster, collector_endpoint,
  collector_endpoint_version: HTTP_JSON, trace_id_128bit, shared_span_context,
  collector_hostname}``;
- ``envoy.tracers.opentelemetry`` — ``OpenTelemetryConfig{grpc_service{envoy_grpc{cluster_name,
  authority}, timeout, initial_metadata} | http_service{http_uri{uri, cluster, timeout},
  request_headers_to_add}, service_name, max_cache_size}``.

Everything else that is set is NACKed with its path (``operation`` and
``upstream_operation`` formatters included); ``verbose`` and ``spawn_upstream_span`` only when
turned on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.tracing.sampler import DENOMINATOR, Sampler, percent_to_numerator

ZIPKIN_TYPE = "type.googleapis.com/" + zipkin_pb2.ZipkinConfig.DESCRIPTOR.full_name
OPENTELEMETRY_TYPE = ("type.googleapis.com/"
                      + opentelemetry_pb2.OpenTelemetryConfig.DESCRIPTOR.full_name)
DEFAULT_MAX_PATH_TAG_LENGTH = 256
DEFAULT_OTEL_MAX_CACHE_SIZE = 1024  # Envoy's OpenTelemetryConfig.max_cache_size default
DEFAULT_EXPORT_TIMEOUT = 5.0

_ALLOWED: dict[str, frozenset[str]] = {
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ".Tracing": frozenset({"client_sampling", "random_sampling", "overall_sampling", "verbose",
                           "max_path_tag_length", "custom_tags", "provider",
                           "spawn_upstream_span"}),
    "envoy.config.trace.v3.Tracing.Http": frozenset({"name", "typed_config"}),
    "envoy.type.tracing.v3.CustomTag": frozenset(
        {"tag", "literal", "environment", "request_header", "metadata", "value"}),
    "envoy.type.tracing.v3.CustomTag.Literal": frozenset({"value"}),
    "envoy.type.tracing.v3.CustomTag.Environment": frozenset({"name", "default_value"}),
    "envoy.type.tracing.v3.CustomTag.Header": frozenset({"name", "default_value"}),
    "envoy.type.tracing.v3.CustomTag.Metadata": frozenset(
        {"kind", "metadata_key", "default_value"}),
    "envoy.type.metadata.v3.MetadataKind": frozenset({"request"}),
    "envoy.type.metadata.v3.MetadataKey": frozenset({"key", "path"}),
    "envoy.type.metadata.v3.MetadataKey.PathSegment": frozenset({"key"}),
    "envoy.config.trace.v3.ZipkinConfig": frozenset(
        {"collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
         "collector_endpoint_version", "collector_hostname"}),
    "envoy.config.trace.v3.OpenTelemetryConfig": frozenset(
        {"grpc_service", "http_service", "service_name", "max_cache_size"}),
    "envoy.config.core.v3.GrpcService": frozenset(
        {"envoy_grpc", "timeout", "initial_metadata"}),
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": frozenset({"cluster_name", "authority"}),
    "envoy.config.core.v3.HttpService": frozenset({"http_uri", "request_headers_to_add"}),
    "envoy.config.core.v3.HttpUri": frozenset({"uri", "cluster", "timeout"}),
    "envoy.config.core.v3.HeaderValueOption": frozenset(
        {"header", "append", "append_action", "keep_empty_value"}),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value"}),
}


@dataclass(frozen=True, slots=True)
class CustomTag:
    """One ``custom_tags`` entry. ``kind``: ``literal`` (``value`` fixed; environment tags are
    read once, at compile time, as Envoy does), ``request_header`` (``source`` = lower-case
    header name), ``metadata`` (``source`` = filter namespace, ``path`` = keys) or
    ``formatter`` (``value``: a substitution format string, Telemetry's ``formatter`` tags,
    compiled in ``formatter``)."""

    tag: str
    kind: str
    value: str = ""
    source: bytes | str = b""
    path: tuple[str, ...] = ()
    default_value: str = ""
    formatter: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ZipkinProvider:
    collector_cluster: str
    collector_endpoint: str
    trace_id_128bit: bool
    shared_span_context: bool
    collector_hostname: str


@dataclass(frozen=True, slots=True)
class OpenTelemetryProvider:
    """``transport``: ``grpc`` (``cluster`` from envoy_grpc) or ``http`` (from http_uri)."""

    transport: str
    cluster: str
    service_name: str
    path: str = ""  # http: the URI's path
    authority: str = ""  # http: the URI's host[:port]; grpc: envoy_grpc.authority
    timeout: float = DEFAULT_EXPORT_TIMEOUT
    headers: tuple[tuple[str, str], ...] = ()  # request_headers_to_add / initial_metadata
    max_cache_size: int = DEFAULT_OTEL_MAX_CACHE_SIZE


Provider = ZipkinProvider | OpenTelemetryProvider


@dataclass(frozen=True, slots=True)
class TracingConfig:
    sampler: Sampler
    max_path_tag_length: int
    custom_tags: tuple[CustomTag, ...]
    provider: Provider | None


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def compile_tracing(
    tracing: hcm_pb2.HttpConnectionManager.Tracing,
    path: str,
    problems: list[str],
    use_request_id_for_sampling: bool = True,
) -> TracingConfig:
    """Compile ``tracing``; every problem is appended to ``problems`` (a NACK)."""
    problems.extend(unsupported_fields(tracing, _ALLOWED, path))
    if tracing.verbose:
        problems.append(f"{path}.verbose: span annotations for stream events are not "
                        "supported by pistio")
    if tracing.spawn_upstream_span.value:
        problems.append(f"{path}.spawn_upstream_span: upstream spans are not supported by "
                        "pistio")

    def pct(field: str) -> int:
        if not tracing.HasField(field):
            return DENOMINATOR
        value = getattr(tracing, field).value
        if not 0.0 <= value <= 100.0:
            problems.append(f"{path}.{field}.value: {value} is not a percentage in [0, 100]")
        return percent_to_numerator(value)

    sampler = Sampler(pct("random_sampling"), pct("client_sampling"), pct("overall_sampling"),
                      use_request_id_for_sampling)
    max_path = (tracing.max_path_tag_length.value if tracing.HasField("max_path_tag_length")
                else DEFAULT_MAX_PATH_TAG_LENGTH)
    tags = tuple(
        t for t in (_custom_tag(ct, f"{path}.custom_tags[{i}]", problems)
                    for i, ct in enumerate(tracing.custom_tags))
        if t is not None
    )
    provider: Provider | None = None
    if tracing.HasField("provider"):
        provider = _provider(tracing.provider, f"{path}.provider", problems)
    return TracingConfig(sampler, max_path, tags, provider)


def _custom_tag(ct: Any, path: str, problems: list[str]) -> CustomTag | None:
    if not ct.tag:
        problems.append(f"{path}.tag: must not be empty")
        return None
    which = ct.WhichOneof("type")
    if which == "literal":
        return CustomTag(ct.tag, "literal", value=ct.literal.value)
    if which == "environment":
        env = ct.environment
        return CustomTag(ct.tag, "literal",
                         value=os.environ.get(env.name, env.default_value))
    if which == "request_header":
        h = ct.request_header
        if not h.name:
            problems.append(f"{path}.request_header.name: must not be empty")
            return None
        return CustomTag(ct.tag, "request_header", source=h.name.lower().encode("latin-1"),
                         default_value=h.default_value)
    if which == "metadata":
        md = ct.metadata
        kind = md.kind.WhichOneof("kind")
        if kind not in (None, "request"):
            problems.append(f"{path}.metadata.kind: {kind} metadata is not supported by "
                            "pistio (request is)")
            return None
        return CustomTag(ct.tag, "metadata", source=md.metadata_key.key,
                         path=tuple(seg.key for seg in md.metadata_key.path),
                         default_value=md.default_value)
    if ct.value:
        from pistio.proxy.access_log.formatter import FormatError, TextFormatter

        try:
            return CustomTag(ct.tag, "formatter", value=ct.value,
                             formatter=TextFormatter(ct.value))
        except FormatError as err:
            problems.append(f"{path}.value: {err}")
            return None
    problems.append(f"{path}: needs literal, environment, request_header, metadata or value")
    return None


def _host_and_path(uri: str) -> tuple[str, str]:
    """Envoy's ``extractHostPathFromUri``: the scheme is optional (Istio emits
    ``<host>/v1/traces``); the path defaults to ``/``."""
    if "://" not in uri:
        uri = "http://" + uri
    parts = urlsplit(uri)
    path = parts.path or "/"
    return parts.netloc, path + (f"?{parts.query}" if parts.query else "")


def _provider(http: Any, path: str, problems: list[str]) -> Provider | None:
    url = http.typed_config.type_url if http.HasField("typed_config") else ""
    here = f"{path}.typed_config"
    if url == ZIPKIN_TYPE:
        z = zipkin_pb2.ZipkinConfig()
        http.typed_config.Unpack(z)
        problems.extend(unsupported_fields(z, _ALLOWED, here))
        if z.collector_endpoint_version != zipkin_pb2.ZipkinConfig.HTTP_JSON:
            name = zipkin_pb2.ZipkinConfig.CollectorEndpointVersion.Name(
                z.collector_endpoint_version)
            problems.append(f"{here}.collector_endpoint_version: {name} is not supported by "
                            "pistio (HTTP_JSON is)")
        if not z.collector_cluster:
            problems.append(f"{here}.collector_cluster: must not be empty")
        if not z.collector_endpoint.startswith("/"):
            problems.append(f"{here}.collector_endpoint: must be a path starting with '/'")
        return ZipkinProvider(
            collector_cluster=z.collector_cluster,
            collector_endpoint=z.collector_endpoint,
            trace_id_128bit=z.trace_id_128bit,
            shared_span_context=(z.shared_span_context.value
                                 if z.HasField("shared_span_context") else True),
            collector_hostname=z.collector_hostname or z.collector_cluster,
        )
    if url == OPENTELEMETRY_TYPE:
        o = opentelemetry_pb2.OpenTelemetryConfig()
        http.typed_config.Unpack(o)
        problems.extend(unsupported_fields(o, _ALLOWED, here))
        service = o.service_name or "unknown_service:envoy"
        cache = o.max_cache_size.value if o.HasField("max_cache_size") else (
            DEFAULT_OTEL_MAX_CACHE_SIZE)
        if o.HasField("grpc_service") and o.HasField("http_service"):
            problems.append(f"{here}: grpc_service and http_service are exclusive")
            return None
        if o.HasField("grpc_service"):
            g = o.grpc_service
            if not g.HasField("envoy_grpc"):
                problems.append(f"{here}.grpc_service: only envoy_grpc is supported by pistio")
                return None
            if not g.envoy_grpc.cluster_name:
                problems.append(f"{here}.grpc_service.envoy_grpc.cluster_name: must not be "
                                "empty")
            return OpenTelemetryProvider(
                "grpc", g.envoy_grpc.cluster_name, service,
                authority=g.envoy_grpc.authority or g.envoy_grpc.cluster_name,
                timeout=_seconds(g.timeout) or DEFAULT_EXPORT_TIMEOUT,
                headers=tuple((h.key.lower(), h.value) for h in g.initial_metadata),
                max_cache_size=cache)
        if o.HasField("http_service"):
            u = o.http_service.http_uri
            authority, uri_path = _host_and_path(u.uri)
            if not authority:
                problems.append(f"{here}.http_service.http_uri.uri: {u.uri!r} has no host")
            if not u.cluster:
                problems.append(f"{here}.http_service.http_uri.cluster: must not be empty")
            return OpenTelemetryProvider(
                "http", u.cluster, service,
                path=uri_path,
                authority=authority,
                timeout=_seconds(u.timeout) or DEFAULT_EXPORT_TIMEOUT,
                headers=tuple((h.header.key, h.header.value)
                              for h in o.http_service.request_headers_to_add),
                max_cache_size=cache)
        problems.append(f"{here}: needs grpc_service or http_service")
        return None
    problems.append(f"{path}: tracer {http.name!r} ({url or 'no typed_config'}) is not "
                    "supported by pistio (envoy.tracers.zipkin and envoy.tracers.opentelemetry "
                    "are)")
    return None
