"""Metrics: the metadata exchange and stats filters on HTTP and TCP chains, and Telemetry
metric overrides as Istio's stats PluginConfig."""

from __future__ import annotations

from pistio.api.telemetry import Metrics
from pistio.pilot.telemetry.metrics import merge_metrics
from tests.unit.pilot.telemetry.helpers import (
    inbound_hcm,
    listeners,
    mesh_config,
    outbound_hcm,
    proxy,
    push_with,
    stats_configs,
    tcp_chain_filters,
    telemetry,
    typed_struct_value,
)


def test_default_prometheus_filters_on_http_and_tcp_chains() -> None:
    push = push_with()
    out, inb = outbound_hcm(push), inbound_hcm(push)
    assert [f.name for f in out.http_filters] == [
        "istio.metadata_exchange",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "istio.stats",
        "envoy.filters.http.router",
    ]
    assert stats_configs(out.http_filters) == [{"disable_host_header_fallback": False}]
    assert stats_configs(inb.http_filters) == [{"disable_host_header_fallback": True}]
    tcp = tcp_chain_filters(push)
    assert [f.name for f in tcp] == ["istio.stats", "envoy.filters.network.tcp_proxy"]
    assert stats_configs(tcp) == [{"disable_host_header_fallback": False}]
    # The catch-all chains (passthrough, inbound TCP) count too; blackholes do not.
    lst = listeners(push)
    outbound_catch_all = lst["virtualOutbound"].filter_chains[1]
    assert [f.name for f in outbound_catch_all.filters] == [
        "istio.stats", "envoy.filters.network.tcp_proxy"
    ]
    blackhole = lst["virtualOutbound"].filter_chains[0]
    assert [f.name for f in blackhole.filters] == ["envoy.filters.network.tcp_proxy"]
    inbound_tcp = [c for c in lst["virtualInbound"].filter_chains if c.name == "virtualInbound"]
    assert inbound_tcp and all(
        stats_configs(c.filters) == [{"disable_host_header_fallback": True}] for c in inbound_tcp
    )


def test_metadata_exchange_config_per_side() -> None:
    push = push_with()
    out = outbound_hcm(push).http_filters[0]
    assert typed_struct_value(out.typed_config) == (
        "type.googleapis.com/io.istio.http.peer_metadata.Config",
        {
            "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "upstream_propagation": [{"istio_headers": {}}],
        },
    )
    inb = inbound_hcm(push).http_filters[0]
    assert typed_struct_value(inb.typed_config) == (
        "type.googleapis.com/io.istio.http.peer_metadata.Config",
        {
            "downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "downstream_propagation": [{"istio_headers": {}}],
        },
    )


OVERRIDES = """  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_host: {value: "request.host"}
        grpc_response_status: {operation: REMOVE}
    - match: {metric: REQUEST_DURATION}
      disabled: true
    - match: {metric: TCP_SENT_BYTES, mode: SERVER}
      tagOverrides:
        destination_port: {value: "string(destination.port)"}
"""


def test_overrides_become_plugin_config_metrics() -> None:
    push = push_with(telemetry("mesh", "istio-system", OVERRIDES))
    (client,) = stats_configs(outbound_hcm(push).http_filters)
    assert client == {
        "disable_host_header_fallback": False,
        "metrics": [  # in the order of Istio's metric names (REQUEST_COUNT, REQUEST_DURATION)
            {
                "name": "requests_total",
                "dimensions": {"request_host": "request.host"},
                "tags_to_remove": ["grpc_response_status"],
            },
            {"name": "request_duration_milliseconds", "drop": True},
        ],
    }
    (server,) = stats_configs(inbound_hcm(push).http_filters)
    assert server == {
        "disable_host_header_fallback": True,
        "metrics": [
            {"name": "request_duration_milliseconds", "drop": True},
            {"name": "tcp_sent_bytes_total",
             "dimensions": {"destination_port": "string(destination.port)"}},
        ],
    }


def test_lower_levels_override_per_metric_and_tag() -> None:
    push = push_with(
        telemetry("mesh", "istio-system", OVERRIDES)
        + telemetry("ns", "default", """  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: false
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_host: {operation: REMOVE}
""")
    )
    (client,) = stats_configs(outbound_hcm(push).http_filters)
    assert client["metrics"] == [
        {"name": "requests_total", "tags_to_remove": ["grpc_response_status", "request_host"]},
        {"name": "request_duration_milliseconds"},
    ]


def test_all_metrics_tag_override_expands_to_every_standard_metric() -> None:
    merged = merge_metrics(
        [Metrics.model_validate({"overrides": [{
            "match": {"metric": "ALL_METRICS", "mode": "SERVER"},
            "tagOverrides": {"source_x": {"value": "'x'"}},
        }]})],
        mesh_config(),
    )
    names = [o.name for o in merged["prometheus"].server.overrides]
    assert names == sorted([
        "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES", "REQUEST_COUNT", "REQUEST_DURATION",
        "REQUEST_SIZE", "RESPONSE_SIZE", "TCP_CLOSED_CONNECTIONS", "TCP_OPENED_CONNECTIONS",
        "TCP_RECEIVED_BYTES", "TCP_SENT_BYTES",
    ])
    assert merged["prometheus"].client.overrides == ()


DISABLE_ALL = """  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS%s}
      disabled: true
"""


def test_disabled_metrics_remove_every_stats_filter() -> None:
    push = push_with(telemetry("metrics-off", "default", DISABLE_ALL % ""))
    for hcm in (outbound_hcm(push), inbound_hcm(push)):
        names = [f.name for f in hcm.http_filters]
        assert "istio.stats" not in names
        assert names[0] == "istio.metadata_exchange"  # peers still learn who we are
    assert [f.name for f in tcp_chain_filters(push)] == ["envoy.filters.network.tcp_proxy"]


def test_disabling_one_side_keeps_the_other() -> None:
    push = push_with(telemetry("metrics-off", "default", DISABLE_ALL % ", mode: CLIENT"))
    assert stats_configs(outbound_hcm(push).http_filters) == []
    assert stats_configs(inbound_hcm(push).http_filters) == [
        {"disable_host_header_fallback": True}
    ]


def test_namespace_reenables_what_the_root_disabled() -> None:
    push = push_with(
        telemetry("metrics-off", "istio-system", DISABLE_ALL % "")
        + telemetry("metrics-on", "default", """  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: false
""")
    )
    assert stats_configs(outbound_hcm(push).http_filters) == [
        {"disable_host_header_fallback": False, "metrics": [{"name": "requests_total"}]}
    ]
    other = proxy("x", "other")
    assert stats_configs(outbound_hcm(push, other).http_filters) == []


def test_no_metrics_provider_no_stats_filter() -> None:
    # A mesh whose default providers name no metrics provider (an Istio without telemetry.v2).
    push = push_with(mesh_yaml="defaultProviders: {metrics: [stackdriver]}\n")
    assert stats_configs(outbound_hcm(push).http_filters) == []
    # A Telemetry naming Prometheus turns them on for its scope.
    push = push_with(telemetry("metrics-on", "default", "  metrics:\n  - providers: [{name: prometheus}]\n"),
                     mesh_yaml="defaultProviders: {metrics: [stackdriver]}\n")
    assert stats_configs(outbound_hcm(push).http_filters) == [
        {"disable_host_header_fallback": False}
    ]


def test_reporting_interval_is_passed_on() -> None:
    push = push_with(telemetry("ri", "default",
                               "  metrics:\n  - reportingInterval: 15s\n"))
    (config,) = stats_configs(tcp_chain_filters(push))
    assert config == {"disable_host_header_fallback": False, "tcp_reporting_duration": "15s"}
