"""HCM ``tracing`` acceptance: what compiles, and precise NACKs for the rest."""

from __future__ import annotations

import pytest
from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.type.tracing.v3 import custom_tag_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from tests.unit.proxy.http_fixtures import pack
from tests.unit.proxy.tracing.configs import otel_grpc, otel_http, traced_listener, tracing, zipkin

PATH = ("Listener gw: filter_chains[0].filters[0].typed_config.tracing")


def problems(trace) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        compile_listener(traced_listener("gw", 1, trace))
    return err.value.problems


def test_istio_zipkin_tracing_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NS", "bookinfo")
    t = tracing(zipkin(), sampling=1.0)
    t.custom_tags.add(tag="ns", environment=custom_tag_pb2.CustomTag.Environment(name="POD_NS"))
    t.custom_tags.add(tag="missing", environment=custom_tag_pb2.CustomTag.Environment(
        name="PISTIO_NOT_SET_ANYWHERE", default_value="dflt"))
    cfg = compile_listener(traced_listener("gw", 1, t)).filter_chains[0].http.tracing
    assert cfg.sampler.random_sampling == 100
    assert cfg.provider.collector_cluster == "zipkin"
    assert cfg.provider.shared_span_context is False
    tags = {c.tag: c for c in cfg.custom_tags}
    assert tags["ns"].value == "bookinfo" and tags["missing"].value == "dflt"
    assert tags["end-user"].source == b"end-user"


def test_zipkin_shared_span_context_defaults_to_true() -> None:
    prov = http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=pack(
        zipkin_pb2.ZipkinConfig(collector_cluster="z", collector_endpoint="/api/v2/spans",
                                collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON)))
    cfg = compile_listener(traced_listener("gw", 1, tracing(prov))).filter_chains[0].http
    assert cfg.tracing.provider.shared_span_context is True
    assert cfg.tracing.provider.collector_hostname == "z"


def test_otel_providers_compile() -> None:
    http = compile_listener(traced_listener("gw", 1, tracing(otel_http()))).filter_chains[0]
    assert http.http.tracing.provider.path == "/v1/traces"
    grpc = compile_listener(traced_listener("gw", 1, tracing(otel_grpc()))).filter_chains[0]
    assert grpc.http.tracing.provider.transport == "grpc"


def test_no_tracing_means_none() -> None:
    from tests.unit.proxy.http_fixtures import http_listener

    assert compile_listener(http_listener("gw", 1)).filter_chains[0].http.tracing is None


def test_unsupported_zipkin_fields_are_nacked() -> None:
    got = problems(tracing(zipkin(collector_endpoint_version=zipkin_pb2.ZipkinConfig.GRPC,
                                  split_spans_for_request=True)))
    assert f"{PATH}.provider.typed_config.split_spans_for_request: field not supported by " \
           "pistio" in got
    assert f"{PATH}.provider.typed_config.collector_endpoint_version: GRPC is not supported " \
           "by pistio (HTTP_JSON is)" in got


def test_unknown_tracer_and_tracing_fields_are_nacked() -> None:
    t = tracing(http_tracer_pb2.Tracing.Http(
        name="envoy.tracers.datadog",
        typed_config=pack(zipkin_pb2.ZipkinConfig.__new__(zipkin_pb2.ZipkinConfig))))
    t.provider.typed_config.type_url = "type.googleapis.com/envoy.config.trace.v3.DatadogConfig"
    t.verbose = True
    t.spawn_upstream_span.value = True
    t.custom_tags.add(tag="h", metadata=custom_tag_pb2.CustomTag.Metadata(
        kind={"host": {}}, metadata_key={"key": "istio"}))
    t.random_sampling.value = 150
    got = problems(t)
    assert f"{PATH}.provider: tracer 'envoy.tracers.datadog' (type.googleapis.com/envoy.config" \
           ".trace.v3.DatadogConfig) is not supported by pistio (envoy.tracers.zipkin and " \
           "envoy.tracers.opentelemetry are)" in got
    assert f"{PATH}.verbose: span annotations for stream events are not supported by pistio" \
        in got
    assert f"{PATH}.spawn_upstream_span: upstream spans are not supported by pistio" in got
    assert f"{PATH}.custom_tags[3].metadata.kind.host: field not supported by pistio" in got
    assert f"{PATH}.random_sampling.value: 150.0 is not a percentage in [0, 100]" in got


def test_otel_google_grpc_and_sampler_are_nacked() -> None:
    from envoy.config.trace.v3 import opentelemetry_pb2

    cfg = opentelemetry_pb2.OpenTelemetryConfig(service_name="x")
    cfg.grpc_service.google_grpc.target_uri = "localhost:4317"
    cfg.sampler.name = "always_on"
    got = problems(tracing(http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry",
                                                        typed_config=pack(cfg))))
    assert f"{PATH}.provider.typed_config.grpc_service.google_grpc: field not supported by " \
           "pistio" in got
    assert f"{PATH}.provider.typed_config.sampler: field not supported by pistio" in got


def test_what_istio_emits_compiles() -> None:
    """Istio's OTLP/HTTP URI has no scheme; its headers say OVERWRITE_IF_EXISTS_OR_ADD; its
    dry-run tags read request metadata; Telemetry formatter tags are format strings."""
    from envoy.config.core.v3 import base_pb2, http_service_pb2, http_uri_pb2
    from envoy.config.trace.v3 import opentelemetry_pb2
    from envoy.type.metadata.v3 import metadata_pb2

    cfg = opentelemetry_pb2.OpenTelemetryConfig(
        service_name="reviews.default",
        http_service=http_service_pb2.HttpService(
            http_uri=http_uri_pb2.HttpUri(
                uri="otel-collector.observability.svc.cluster.local/v1/traces",
                cluster="outbound|4318||otel-collector.observability.svc.cluster.local"),
            request_headers_to_add=[base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="authorization", value="Bearer x"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)]))
    t = tracing(http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry",
                                             typed_config=pack(cfg)))
    dry = t.custom_tags.add(tag="istio.authorization.dry_run.allow_policy.name")
    dry.metadata.kind.request.CopyFrom(metadata_pb2.MetadataKind.Request())
    dry.metadata.metadata_key.key = "envoy.filters.http.rbac"
    dry.metadata.metadata_key.path.add(key="istio_dry_run_allow_shadow_effective_policy_id")
    t.custom_tags.add(tag="route", value="%ROUTE_NAME%")
    http = compile_listener(traced_listener("gw", 1, t)).filter_chains[0].http.tracing
    p = http.provider
    assert (p.authority, p.path) == ("otel-collector.observability.svc.cluster.local",
                                     "/v1/traces")
    assert p.headers == (("authorization", "Bearer x"),)
    kinds = {c.tag: c.kind for c in http.custom_tags}
    assert kinds["istio.authorization.dry_run.allow_policy.name"] == "metadata"
    assert kinds["route"] == "formatter"


def test_bad_formatter_tag_is_nacked() -> None:
    t = tracing(zipkin())
    t.custom_tags.add(tag="bad", value="%DYNAMIC_METADATA%")
    assert f"{PATH}.custom_tags[3].value: DYNAMIC_METADATA requires parameters" in problems(t)
