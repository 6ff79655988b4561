from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2
from xds.type.v3 import typed_struct_pb2 as xds_typed_struct_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from pistio.proxy.telemetry.plugin_config import (
    PEER_METADATA_TYPE,
    STATS_TYPE,
    compile_istio_filter,
    compile_metadata_exchange,
    compile_stats_config,
)
from tests.unit.proxy.http_fixtures import pack
from tests.unit.proxy.telemetry.istio_fixtures import (
    INBOUND,
    INBOUND_MX,
    OUTBOUND,
    OUTBOUND_MX,
    istio_listener,
    mx_filter,
    typed_struct,
)


def test_metadata_exchange_configs_as_pilot_sends_them() -> None:
    out = compile_metadata_exchange(OUTBOUND_MX, "v")
    assert (out.upstream_headers, out.upstream_workload, out.propagate_upstream,
            out.downstream_headers, out.propagate_downstream) == (True, True, True, False, False)
    inb = compile_metadata_exchange(INBOUND_MX, "v")
    assert (inb.downstream_headers, inb.propagate_downstream, inb.upstream_headers) == (
        True, True, False)
    camel = compile_metadata_exchange(
        {"upstreamPropagation": [{"istioHeaders": {"skipExternalClusters": True}}]}, "v")
    assert camel.skip_external_clusters and camel.propagate_upstream


@pytest.mark.parametrize("value, message", [
    ({"upstream_discovery": [{"baggage": {}}]}, "v.upstream_discovery[0].baggage: unknown field"),
    ({"downstream_propagation": [{}]}, "v.downstream_propagation[0]: needs istio_headers"),
    ({"bogus": 1}, "v.bogus: unknown field"),
    ({"additional_labels": ["x"]}, "v.additional_labels: not supported"),
])
def test_metadata_exchange_nacks(value: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_metadata_exchange(value, "v")
    assert message in str(err.value)


def test_stats_config_overrides() -> None:
    cfg = compile_stats_config({
        "disable_host_header_fallback": True,
        "tcp_reporting_duration": "5s",
        "metrics": [
            {"name": "request_bytes", "drop": True},
            {"tags_to_remove": ["source_principal"]},
            {"name": "requests_total", "dimensions": {"request_method": "request.method",
                                                      "destination_port": "string(1)"}},
        ],
    }, "v")
    assert cfg.disable_host_header_fallback and cfg.tcp_reporting_duration == 5.0
    assert cfg.overrides["request_bytes"].drop
    assert cfg.overrides["response_bytes"].removed == {"source_principal"}
    assert [n for n, _ in cfg.overrides["requests_total"].dimensions] == [
        "destination_port", "request_method"]
    assert compile_stats_config({}, "v").overrides == {}


@pytest.mark.parametrize("value, message", [
    ({"metrics": [{"name": "my_metric"}]}, "v.metrics[0].name: 'my_metric' is not a standard"),
    ({"metrics": [{"tags_to_remove": ["nope"]}]}, "v.metrics[0].tags_to_remove[0]: 'nope'"),
    ({"metrics": [{"dimensions": {"x": "request.method ==="}}]}, "v.metrics[0].dimensions.x"),
    ({"tcp_reporting_duration": "soon"}, "v.tcp_reporting_duration: expected a positive"),
    ({"reporter": "SERVER_GATEWAY"}, "v.reporter: 'SERVER_GATEWAY' is not supported"),
    ({"disable_host_header_fallback": "yes"}, "expected a boolean"),
    ({"rotation_interval": "1s"}, "v.rotation_interval: unknown field"),
])
def test_stats_config_nacks(value: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_stats_config(value, "v")
    assert message in str(err.value)


def test_both_typed_struct_types_and_unknown_inner_type() -> None:
    packed = any_pb2.Any()
    msg = xds_typed_struct_pb2.TypedStruct(type_url=STATS_TYPE)
    msg.value.update({"disable_host_header_fallback": True})
    packed.Pack(msg)
    assert compile_istio_filter(packed, "istio.stats", "f").disable_host_header_fallback
    assert compile_istio_filter(typed_struct(PEER_METADATA_TYPE, OUTBOUND_MX), "mx", "f")
    with pytest.raises(ConfigError, match="with TypedStruct type type.googleapis.com/x.Y"):
        compile_istio_filter(typed_struct("type.googleapis.com/x.Y", {}), "x", "f")
    with pytest.raises(ConfigError, match="network filter"):
        compile_istio_filter(typed_struct(PEER_METADATA_TYPE, {}), "mx", "f", network=True)


def test_listener_accepts_istio_filters_and_nacks_bad_ones() -> None:
    compiled = compile_listener(istio_listener("in", 15006, INBOUND, "r"))
    names = [f.name for f in compiled.filter_chains[0].http.http_filters]
    assert names[0] == "istio.metadata_exchange" and names[-2] == "istio.stats"
    assert compile_listener(istio_listener("out", 15001, OUTBOUND, "r")).traffic_direction == 2
    bad = istio_listener("in", 15006, INBOUND, "r", stats={"metrics": [{"name": "nope"}]})
    with pytest.raises(ConfigError, match=r"filter_chains\[0\].filters\[0\].typed_config.*"
                                          r"http_filters\[3\].typed_config.value.metrics\[0\]"):
        compile_listener(bad)
    optional = istio_listener("in", 15006, INBOUND, "r")
    f = mx_filter({})
    f.typed_config.CopyFrom(typed_struct("type.googleapis.com/unknown.Thing", {}))
    f.is_optional = True
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )
    hcm = hcm_pb2.HttpConnectionManager()
    optional.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.http_filters.insert(0, f)
    optional.filter_chains[0].filters[0].typed_config.Pack(hcm)
    compile_listener(optional)  # an optional unknown TypedStruct filter is skipped


def test_network_istio_stats_before_tcp_proxy() -> None:
    tcp = listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy",
        typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix="x", cluster="c")))
    stats = listener_components_pb2.Filter(
        name="istio.stats", typed_config=typed_struct(STATS_TYPE, {}))
    listener = listener_pb2.Listener(name="tcp", filter_chains=[
        listener_components_pb2.FilterChain(filters=[stats, tcp])])
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = 9000
    chain = compile_listener(listener).filter_chains[0]
    assert len(chain.istio_stats) == 1 and chain.tcp_proxy is not None
    bad = listener_components_pb2.Filter(
        name="istio.stats", typed_config=typed_struct(STATS_TYPE, {"metrics": [{"drop": 1}]}))
    listener.filter_chains[0].filters[0].CopyFrom(bad)
    with pytest.raises(ConfigError, match=r"filters\[0\].typed_config.value.metrics\[0\].drop"):
        compile_listener(listener)


def test_pilot_generated_stats_configs_compile() -> None:
    """What helper A's Pilot emits (Telemetry overrides on every Istio metric name)."""
    from pistio.pilot.telemetry.metrics import PROMETHEUS_METRIC_NAMES

    entries = [{"name": n, "tags_to_remove": ["source_principal"]}
               for n in PROMETHEUS_METRIC_NAMES.values()]
    cfg = compile_stats_config({"disable_host_header_fallback": True,
                                "tcp_reporting_duration": "0.5s", "metrics": entries}, "v")
    assert cfg.tcp_reporting_duration == 0.5
    assert set(cfg.overrides) == {n for n in PROMETHEUS_METRIC_NAMES.values()
                                  if not n.endswith("messages_total")}
