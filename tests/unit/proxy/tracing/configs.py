"""Tracing configs as Istio emits them, for the tracing tests."""

from __future__ import annotations

from envoy.config.core.v3 import grpc_service_pb2, http_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2

from tests.unit.proxy.http_fixtures import http_listener, pack

INBOUND, OUTBOUND = 1, 2


def zipkin(cluster: str = "zipkin", **fields: object) -> http_tracer_pb2.Tracing.Http:
    cfg = zipkin_pb2.ZipkinConfig(
        collector_cluster=cluster, collector_endpoint="/api/v2/spans",
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON, trace_id_128bit=True,
        shared_span_context={"value": False}, collector_hostname="zipkin.istio-system:9411")
    for k, v in fields.items():
        if isinstance(v, dict):
            getattr(cfg, k).CopyFrom(type(getattr(cfg, k))(**v))
        else:
            setattr(cfg, k, v)
    return http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=pack(cfg))


def otel_http(cluster: str = "otel", uri: str = "http://otel.istio-system:4318/v1/traces"
              ) -> http_tracer_pb2.Tracing.Http:
    cfg = opentelemetry_pb2.OpenTelemetryConfig(
        service_name="reviews.default",
        http_service=http_service_pb2.HttpService(http_uri=http_uri_pb2.HttpUri(
            uri=uri, cluster=cluster, timeout={"seconds": 2})))
    return http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry",
                                        typed_config=pack(cfg))


def otel_grpc(cluster: str = "otel") -> http_tracer_pb2.Tracing.Http:
    cfg = opentelemetry_pb2.OpenTelemetryConfig(
        service_name="reviews.default",
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                cluster_name=cluster, authority="otel.istio-system:4317")))
    return http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry",
                                        typed_config=pack(cfg))


def tracing(provider: http_tracer_pb2.Tracing.Http | None, sampling: float = 100.0
            ) -> hcm_pb2.HttpConnectionManager.Tracing:
    t = hcm_pb2.HttpConnectionManager.Tracing(
        client_sampling=percent_pb2.Percent(value=100), overall_sampling=percent_pb2.Percent(
            value=100), random_sampling=percent_pb2.Percent(value=sampling))
    t.custom_tags.add(tag="istio.canonical_service", literal={"value": "reviews"})
    t.custom_tags.add(tag="istio.mesh_id", literal={"value": "cluster.local"})
    t.custom_tags.add(tag="end-user", request_header=custom_tag_pb2.CustomTag.Header(
        name="End-User", default_value="anonymous"))
    if provider is not None:
        t.provider.CopyFrom(provider)
    return t


def traced_listener(name: str, port: int, trace: hcm_pb2.HttpConnectionManager.Tracing,
                    direction: int = OUTBOUND, **kw: object) -> listener_pb2.Listener:
    listener = http_listener(name, port, **kw)  # type: ignore[arg-type]
    listener.traffic_direction = direction
    f = listener.filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(hcm)
    hcm.tracing.CopyFrom(trace)
    f.typed_config.Pack(hcm)
    return listener
