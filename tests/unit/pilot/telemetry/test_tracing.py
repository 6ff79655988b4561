"""Connection manager tracing: providers from the mesh config and Telemetry, sampling,
custom and Istio tags, collector clusters, and the legacy ``enableTracing`` settings."""

from __future__ import annotations

from google.protobuf import json_format

from pistio.pilot import xds_cache
from pistio.pilot.telemetry import resolver
from pistio.xds.any_codec import unpack
from tests.unit.pilot.telemetry.helpers import (
    collector,
    inbound_hcm,
    outbound_hcm,
    proxy,
    push_with,
    telemetry,
)

ZIPKIN = collector("zipkin", "observability", 9411, "10.96.5.1")
OTEL = collector("otel-collector", "observability", 4317, "10.96.5.2")
PROVIDERS = """extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.observability.svc.cluster.local, port: 9411, maxTagLength: 256}
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
- name: otel-http
  opentelemetry:
    service: observability/otel-collector.observability.svc.cluster.local
    port: 4318
    http: {path: /v1/traces, timeout: 5s, headers: [{name: x-token, value: abc}]}
- name: nowhere
  zipkin: {service: zipkin.missing.svc.cluster.local, port: 9411}
"""


def tags(tracing) -> dict[str, str]:
    """Custom tags as ``name → literal value`` (or ``kind:detail`` for the others)."""
    out = {}
    for tag in tracing.custom_tags:
        kind = tag.WhichOneof("type")
        if kind == "literal":
            out[tag.tag] = tag.literal.value
        elif kind == "request_header":
            out[tag.tag] = f"header:{tag.request_header.name}:{tag.request_header.default_value}"
        elif kind == "environment":
            out[tag.tag] = f"env:{tag.environment.name}"
        elif kind == "metadata":
            out[tag.tag] = f"metadata:{tag.metadata.metadata_key.path[0].key}"
        else:
            out[tag.tag] = f"{kind}:{tag.value}"
    return out


def test_zipkin_default_provider() -> None:
    push = push_with(mesh_yaml=PROVIDERS + "defaultProviders: {tracing: [zipkin]}\n",
                     services=(ZIPKIN,))
    p = proxy("reviews", labels={"app": "reviews",
                                 "service.istio.io/canonical-name": "reviews",
                                 "service.istio.io/canonical-revision": "v2"})
    hcm = outbound_hcm(push, p)
    tracing = hcm.tracing
    assert tracing.provider.name == "envoy.tracers.zipkin"
    zipkin = unpack(tracing.provider.typed_config)
    assert json_format.MessageToDict(zipkin) == {
        "collectorCluster": "outbound|9411||zipkin.observability.svc.cluster.local",
        "collectorEndpoint": "/api/v2/spans",
        "collectorEndpointVersion": "HTTP_JSON",
        "collectorHostname": "zipkin.observability.svc.cluster.local",
        "traceId128bit": True,
        "sharedSpanContext": False,
    }
    assert (tracing.client_sampling.value, tracing.overall_sampling.value) == (100, 100)
    assert tracing.random_sampling.value == 1.0  # Istio's default sampling
    assert tracing.max_path_tag_length.value == 256
    assert tags(tracing) == {
        "istio.authorization.dry_run.allow_policy.name":
            "metadata:istio_dry_run_allow_shadow_effective_policy_id",
        "istio.authorization.dry_run.allow_policy.result":
            "metadata:istio_dry_run_allow_shadow_engine_result",
        "istio.authorization.dry_run.deny_policy.name":
            "metadata:istio_dry_run_deny_shadow_effective_policy_id",
        "istio.authorization.dry_run.deny_policy.result":
            "metadata:istio_dry_run_deny_shadow_engine_result",
        "istio.canonical_revision": "v2",
        "istio.canonical_service": "reviews",
        "istio.cluster_id": "Kubernetes",
        "istio.mesh_id": "cluster.local",
        "istio.namespace": "default",
    }
    assert [t.tag for t in tracing.custom_tags] == sorted(t.tag for t in tracing.custom_tags)
    assert inbound_hcm(push, p).tracing == tracing  # both sides use the default provider
    uuid = unpack(hcm.request_id_extension.typed_config)
    assert uuid.use_request_id_for_trace_sampling.value is True


def test_telemetry_sampling_custom_tags_and_mode() -> None:
    push = push_with(
        telemetry("mesh", "istio-system", """  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 100
""") + telemetry("ns", "default", """  tracing:
  - match: {mode: SERVER}
    randomSamplingPercentage: 25
    useRequestIdForTraceSampling: false
    customTags:
      user: {header: {name: x-user, defaultValue: anonymous}}
      team: {literal: {value: bookinfo}}
      pod: {environment: {name: POD_NAME}}
"""),
        mesh_yaml=PROVIDERS, services=(ZIPKIN,),
    )
    out, inb = outbound_hcm(push), inbound_hcm(push)
    assert out.tracing.random_sampling.value == 100
    assert inb.tracing.random_sampling.value == 25
    server_tags = tags(inb.tracing)
    assert (server_tags["user"], server_tags["team"], server_tags["pod"]) == (
        "header:x-user:anonymous", "bookinfo", "env:POD_NAME",
    )
    assert "user" not in tags(out.tracing)
    assert server_tags["istio.canonical_service"] == "unknown"  # no canonical-name label
    assert unpack(inb.request_id_extension.typed_config).use_request_id_for_trace_sampling.value is False
    assert unpack(out.request_id_extension.typed_config).use_request_id_for_trace_sampling.value is True


def test_opentelemetry_grpc_and_http() -> None:
    push = push_with(telemetry("t", "default", "  tracing:\n  - providers: [{name: otel}]\n"),
                     mesh_yaml=PROVIDERS, services=(OTEL,))
    tracing = outbound_hcm(push).tracing
    assert tracing.provider.name == "envoy.tracers.opentelemetry"
    assert json_format.MessageToDict(unpack(tracing.provider.typed_config)) == {
        "grpcService": {"envoyGrpc": {
            "clusterName": "outbound|4317||otel-collector.observability.svc.cluster.local",
            "authority": "otel-collector.observability.svc.cluster.local",
        }},
        "serviceName": "productpage.default",
    }
    push = push_with(telemetry("t", "default", "  tracing:\n  - providers: [{name: otel-http}]\n"),
                     mesh_yaml=PROVIDERS, services=(OTEL,))
    config = unpack(outbound_hcm(push).tracing.provider.typed_config)
    assert json_format.MessageToDict(config.http_service) == {
        "httpUri": {
            "uri": "otel-collector.observability.svc.cluster.local/v1/traces",
            "cluster": "outbound|4318||otel-collector.observability.svc.cluster.local",
            "timeout": "5s",
        },
        "requestHeadersToAdd": [{"header": {"key": "x-token", "value": "abc"},
                                 "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}],
    }


def test_provider_service_not_in_registry_means_no_tracing(caplog) -> None:
    resolver._warned.clear()
    push = push_with(telemetry("t", "default", "  tracing:\n  - providers: [{name: nowhere}]\n"),
                     mesh_yaml=PROVIDERS)
    assert not outbound_hcm(push).HasField("tracing")
    assert not inbound_hcm(push).HasField("tracing")
    warnings = [r.message for r in caplog.records if "nowhere" in r.message]
    assert len(warnings) == 1  # once, not per connection manager
    assert "could not find service zipkin.missing.svc.cluster.local" in warnings[0]


def test_disable_span_reporting_and_no_provider() -> None:
    push = push_with(
        telemetry("t", "default", "  tracing:\n  - disableSpanReporting: true\n"),
        mesh_yaml=PROVIDERS + "defaultProviders: {tracing: [zipkin]}\n", services=(ZIPKIN,),
    )
    assert not outbound_hcm(push).HasField("tracing")
    # A Telemetry without any provider (and no default one): tracing is off, not legacy.
    push = push_with(telemetry("t", "default", "  tracing:\n  - randomSamplingPercentage: 5\n"),
                     mesh_yaml="defaultConfig: {tracing: {zipkin: {address: zipkin.observability:9411}}}\n",
                     services=(ZIPKIN,))
    assert not outbound_hcm(push).HasField("tracing")


def test_legacy_enable_tracing_with_the_zipkin_address() -> None:
    mesh = ("defaultConfig:\n  tracing:\n    sampling: 50\n"
            "    zipkin: {address: zipkin.observability:9411}\n"
            "    customTags: {env: {literal: {value: prod}}}\n")
    push = push_with(mesh_yaml=mesh, services=(ZIPKIN,))
    tracing = outbound_hcm(push).tracing
    zipkin = unpack(tracing.provider.typed_config)
    assert zipkin.collector_cluster == "outbound|9411||zipkin.observability.svc.cluster.local"
    assert tracing.random_sampling.value == 50
    assert tags(tracing)["env"] == "prod"
    assert tags(tracing)["istio.namespace"] == "default"
    off = push_with(mesh_yaml=mesh + "enableTracing: false\n", services=(ZIPKIN,))
    assert not outbound_hcm(off).HasField("tracing")
    # Istio's default address (zipkin.istio-system:9411) with no such service: no tracing.
    assert not outbound_hcm(push_with()).HasField("tracing")


def test_outbound_listeners_are_not_shared_across_traced_workloads() -> None:
    """Span tags name the workload, so the listener cache keys on it when tracing is on."""
    def proxies():
        return (proxy("a", labels={"app": "a", "service.istio.io/canonical-name": "a"}),
                proxy("b", labels={"app": "b", "service.istio.io/canonical-name": "b"}))

    plain = push_with()
    a, b = proxies()
    assert xds_cache.proxy_scope(plain, a) == xds_cache.proxy_scope(plain, b)
    traced = push_with(mesh_yaml=PROVIDERS + "defaultProviders: {tracing: [zipkin]}\n",
                       services=(ZIPKIN,))
    a, b = proxies()
    assert xds_cache.proxy_scope(traced, a) != xds_cache.proxy_scope(traced, b)
