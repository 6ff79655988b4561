"""LDS for sidecars: Bookinfo listeners plus TCP, TLS, sniffed and headless services, checked
field by field against Istio's documented behaviour (``listener.go``,
``listener_inbound.go``, ``listener_builder.go``)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pistio.config.protocol import Protocol
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Endpoint, Resolution, Service, ServicePort
from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import (
    DESTINATION_RULES_YAML,
    REVIEWS_VIRTUAL_SERVICE_YAML,
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)


def extended_push(extra_yaml: str = "") -> PushContext:
    """Bookinfo plus a MySQL (TCP), an undeclared-protocol, a TLS and a headless service."""
    services = bookinfo_services() + [
        Service(
            "mysqldb.default.svc.cluster.local",
            "default",
            "mysqldb",
            (ServicePort("tcp", 3306, Protocol.TCP, 3306),),
            ("10.96.0.20",),
        ),
        Service(
            "legacy.default.svc.cluster.local",
            "default",
            "legacy",
            (ServicePort("web", 8000, Protocol.UNSUPPORTED, 8000),),
            ("10.96.0.21",),
        ),
        Service(
            "secure.default.svc.cluster.local",
            "default",
            "secure",
            (ServicePort("https", 443, Protocol.HTTPS, 8443),),
            ("10.96.0.22",),
        ),
        Service(
            "db.default.svc.cluster.local",
            "default",
            "db",
            (ServicePort("tcp", 5432, Protocol.TCP, 5432),),
            (),
            resolution=Resolution.PASSTHROUGH,
        ),
    ]
    endpoints = bookinfo_endpoints() + [
        Endpoint("10.244.1.1", 5432, "tcp", "db.default.svc.cluster.local", "default"),
        Endpoint("10.244.1.2", 5432, "tcp", "db.default.svc.cluster.local", "default"),
    ]
    configs = parse_configs(DESTINATION_RULES_YAML + "---\n" + REVIEWS_VIRTUAL_SERVICE_YAML)
    if extra_yaml.strip():
        configs += parse_configs(extra_yaml, "extra.yaml")
    return PushContext(configs, services, endpoints)


def listeners(push: PushContext | None = None):
    return {
        lst.name: lst for lst in build_sidecar_listeners(push or bookinfo_push(), sidecar_proxy())
    }


def hcm_of(chain) -> hcm_pb2.HttpConnectionManager:
    (f,) = chain.filters
    assert f.name == "envoy.filters.network.http_connection_manager"
    return unpack(f.typed_config)


def tcp_of(chain) -> tcp_proxy_pb2.TcpProxy:
    f = chain.filters[-1]
    assert f.name == "envoy.filters.network.tcp_proxy"
    return unpack(f.typed_config)


def test_bookinfo_listener_names_and_order():
    names = [lst.name for lst in build_sidecar_listeners(bookinfo_push(), sidecar_proxy())]
    assert names == ["0.0.0.0_9080", "virtualOutbound", "virtualInbound"]


def test_http_outbound_listener():
    lst = listeners()["0.0.0.0_9080"]
    assert lst.address.socket_address.address == "0.0.0.0"
    assert lst.address.socket_address.port_value == 9080
    assert lst.HasField("bind_to_port") and lst.bind_to_port.value is False
    assert lst.traffic_direction == base_pb2.OUTBOUND
    assert lst.continue_on_listener_filters_timeout is True
    assert [f.name for f in lst.listener_filters] == [
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    assert unpack(lst.listener_filters[0].typed_config).initial_read_buffer_size.value == 512
    assert lst.listener_filters_timeout.ToSeconds() == 0
    (chain,) = lst.filter_chains
    assert list(chain.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert chain.filter_chain_match.transport_protocol == "raw_buffer"
    hcm = hcm_of(chain)
    assert hcm.stat_prefix == "outbound_0.0.0.0_9080;"
    assert hcm.rds.route_config_name == "9080"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.rds.config_source.initial_fetch_timeout.ToSeconds() == 0
    assert hcm.rds.config_source.resource_api_version == 2  # V3
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.use_remote_address.value is False and hcm.HasField("use_remote_address")
    assert hcm.normalize_path.value is True
    assert hcm.path_with_escaped_slashes_action == hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED
    assert [u.upgrade_type for u in hcm.upgrade_configs] == ["websocket"]
    assert hcm.HasField("stream_idle_timeout") and hcm.stream_idle_timeout.ToSeconds() == 0
    assert hcm.server_name == ""
    assert [f.name for f in hcm.http_filters] == [
        "istio.metadata_exchange",
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "istio.stats",
        "envoy.filters.http.router",
    ]
    assert not hcm.access_log  # accessLogFile is empty by default
    assert not hcm.HasField("tracing")  # the default Zipkin collector is not deployed
    uuid = unpack(hcm.request_id_extension.typed_config)
    assert uuid.use_request_id_for_trace_sampling.value is True
    default = lst.default_filter_chain
    assert default.name == "PassthroughFilterChain"
    assert default.HasField("filter_chain_match")
    assert tcp_of(default).cluster == "PassthroughCluster"
    assert tcp_of(default).stat_prefix == "PassthroughCluster"


def test_virtual_outbound():
    lst = listeners()["virtualOutbound"]
    assert lst.address.socket_address.port_value == 15001
    assert lst.use_original_dst.value is True
    assert not lst.HasField("bind_to_port")  # it binds: iptables redirects to it
    assert lst.traffic_direction == base_pb2.OUTBOUND
    blackhole, catch_all = lst.filter_chains
    assert blackhole.name == "virtualOutbound-blackhole"
    assert blackhole.filter_chain_match.destination_port.value == 15001
    assert tcp_of(blackhole).cluster == "BlackHoleCluster"
    assert catch_all.name == "virtualOutbound-catchall-tcp"
    assert not catch_all.HasField("filter_chain_match")
    assert tcp_of(catch_all).cluster == "PassthroughCluster"


def test_registry_only_sends_unknown_traffic_to_blackhole():
    sidecar = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    by_name = listeners(bookinfo_push(sidecar))
    assert tcp_of(by_name["virtualOutbound"].filter_chains[1]).cluster == "BlackHoleCluster"
    assert tcp_of(by_name["0.0.0.0_9080"].default_filter_chain).cluster == "BlackHoleCluster"


def test_virtual_inbound():
    # Plaintext chains: mTLS disabled mesh-wide (the PERMISSIVE default adds TLS chains,
    # covered in tests/unit/pilot/security/).
    disable = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: DISABLE}
"""
    lst = listeners(bookinfo_push(disable))["virtualInbound"]
    assert lst.address.socket_address.address == "0.0.0.0"
    assert lst.address.socket_address.port_value == 15006
    assert lst.traffic_direction == base_pb2.INBOUND
    assert lst.continue_on_listener_filters_timeout is True
    names = [c.name for c in lst.filter_chains]
    assert names == [
        "virtualInbound-blackhole",
        "virtualInbound-catchall-http",
        "virtualInbound",
        "0.0.0.0_9080",
    ]
    blackhole, pt_http, pt_tcp, app = lst.filter_chains
    assert blackhole.filter_chain_match.destination_port.value == 15006
    assert tcp_of(blackhole).cluster == "BlackHoleCluster"
    assert list(pt_http.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert hcm_of(pt_http).stat_prefix == "InboundPassthroughCluster;"
    assert tcp_of(pt_tcp).cluster == "InboundPassthroughCluster"
    assert pt_tcp.filter_chain_match.transport_protocol == "raw_buffer"
    # productpage serves 9080 (HTTP): one HTTP chain matched by port.
    assert app.filter_chain_match.destination_port.value == 9080
    assert app.filter_chain_match.transport_protocol == "raw_buffer"
    assert not app.filter_chain_match.application_protocols
    hcm = hcm_of(app)
    assert hcm.stat_prefix == "inbound_0.0.0.0_9080;"
    assert hcm.server_name == "istio-envoy"
    assert hcm.forward_client_cert_details == hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    assert hcm.set_current_client_cert_details.subject.value is True
    route = hcm.route_config
    assert route.name == "inbound|9080||"
    (vhost,) = route.virtual_hosts
    assert vhost.name == "inbound|http|9080" and list(vhost.domains) == ["*"]
    (r,) = vhost.routes
    assert r.name == "default"
    assert r.route.cluster == "inbound|9080||"
    assert r.route.max_stream_duration.max_stream_duration.ToSeconds() == 0
    assert r.decorator.operation == "productpage.default.svc.cluster.local:9080/*"
    filters = [f.name for f in lst.listener_filters]
    assert filters == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.http_inspector",
    ]
    disabled = lst.listener_filters[1].filter_disabled.or_match.rules
    assert [(r.destination_port_range.start, r.destination_port_range.end) for r in disabled] == [
        (9080, 9081),
        (15006, 15007),
    ]


def test_tcp_service_listener_on_vip():
    lst = listeners(extended_push())["10.96.0.20_3306"]
    assert lst.bind_to_port.value is False
    (chain,) = lst.filter_chains
    assert not chain.HasField("filter_chain_match")
    assert tcp_of(chain).cluster == "outbound|3306||mysqldb.default.svc.cluster.local"
    assert tcp_of(chain).stat_prefix == "outbound|3306||mysqldb.default.svc.cluster.local"
    assert not lst.listener_filters
    assert not lst.HasField("default_filter_chain")


def test_tcp_route_weighted_clusters():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysqldb]
  tcp:
  - route:
    - destination: {host: mysqldb, subset: v1}
      weight: 80
    - destination: {host: mysqldb, subset: v2}
      weight: 20
"""
    (chain,) = listeners(extended_push(vs))["10.96.0.20_3306"].filter_chains
    proxy = tcp_of(chain)
    assert proxy.stat_prefix == "mysql.default"
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        ("outbound|3306|v1|mysqldb.default.svc.cluster.local", 80),
        ("outbound|3306|v2|mysqldb.default.svc.cluster.local", 20),
    ]


def test_tls_route_by_sni():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.default.svc.cluster.local]
  tls:
  - match: [{sniHosts: [secure.default.svc.cluster.local]}]
    route: [{destination: {host: secure, port: {number: 443}}}]
"""
    lst = listeners(extended_push(vs))["10.96.0.22_443"]
    (chain,) = lst.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["secure.default.svc.cluster.local"]
    assert tcp_of(chain).cluster == "outbound|443||secure.default.svc.cluster.local"
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert lst.default_filter_chain.name == "PassthroughFilterChain"


def test_tls_service_without_route_matches_everything_on_its_vip():
    (chain,) = listeners(extended_push())["10.96.0.22_443"].filter_chains
    assert not chain.filter_chain_match.server_names
    assert tcp_of(chain).cluster == "outbound|443||secure.default.svc.cluster.local"


def test_sniffed_port_has_http_and_tcp_chains():
    lst = listeners(extended_push())["10.96.0.21_8000"]
    assert [f.name for f in lst.listener_filters] == [
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    (http,) = lst.filter_chains
    assert list(http.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert hcm_of(http).rds.route_config_name == "legacy.default.svc.cluster.local:8000"
    assert hcm_of(http).stat_prefix == "outbound_10.96.0.21_8000;"
    assert (
        tcp_of(lst.default_filter_chain).cluster
        == "outbound|8000||legacy.default.svc.cluster.local"
    )


def test_headless_tcp_service_gets_a_listener_per_endpoint():
    by_name = listeners(extended_push())
    assert "10.244.1.1_5432" in by_name and "10.244.1.2_5432" in by_name
    (chain,) = by_name["10.244.1.1_5432"].filter_chains
    assert tcp_of(chain).cluster == "outbound|5432||db.default.svc.cluster.local"


def test_extended_listener_names_sorted():
    names = [lst.name for lst in build_sidecar_listeners(extended_push(), sidecar_proxy())]
    assert names == [
        "0.0.0.0_9080",
        "10.244.1.1_5432",
        "10.244.1.2_5432",
        "10.96.0.20_3306",
        "10.96.0.21_8000",
        "10.96.0.22_443",
        "virtualOutbound",
        "virtualInbound",
    ]
