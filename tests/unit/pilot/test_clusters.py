"""CDS for a Bookinfo sidecar, checked field by field against Istio's documented behaviour."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pistio.api.mesh import MeshConfig, default_mesh_config
from pistio.config.protocol import Protocol
from pistio.pilot.generators.cds import ClusterGenerator
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Endpoint, Resolution, Service, ServicePort, Source
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.cluster_traffic_policy import (
    HTTP_PROTOCOL_OPTIONS_KEY,
    hash_policy_for,
)
from pistio.xds.generator import ConnectionInfo, PushRequest
from tests.unit.pilot.bookinfo_fixture import (
    DESTINATION_RULES_YAML,
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    fqdn,
    parse_configs,
    sidecar_proxy,
    spiffe,
)

Cluster = cluster_pb2.Cluster
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
MAX = 4294967295


def clusters_by_name(push: PushContext | None = None, proxy=None) -> dict[str, Cluster]:
    push = push or bookinfo_push()
    return {c.name: c for c in build_clusters(push, proxy or sidecar_proxy())}


def tls_context(socket) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(ctx)
    return ctx


def http_options(c: Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(opts)
    return opts


def push_with(
    extra_yaml: str = "",
    services: list[Service] = (),
    endpoints: list[Endpoint] = (),
    mesh: MeshConfig | None = None,
    with_samples: bool = True,
) -> PushContext:
    configs = parse_configs(DESTINATION_RULES_YAML) if with_samples else []
    if extra_yaml:
        configs += parse_configs(extra_yaml)
    return PushContext(
        configs,
        bookinfo_services() + list(services),
        bookinfo_endpoints() + list(endpoints),
        mesh,
    )


# --- the Bookinfo golden -------------------------------------------------------------------


def test_sidecar_gets_istio_cluster_names_in_istio_order():
    names = [c.name for c in build_clusters(bookinfo_push(), sidecar_proxy())]
    assert names == [
        "outbound|9080||details.default.svc.cluster.local",
        "outbound|9080|v1|details.default.svc.cluster.local",
        "outbound|9080|v2|details.default.svc.cluster.local",
        "outbound|9080||productpage.default.svc.cluster.local",
        "outbound|9080|v1|productpage.default.svc.cluster.local",
        "outbound|9080||ratings.default.svc.cluster.local",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
        "outbound|9080|v2|ratings.default.svc.cluster.local",
        "outbound|9080|v2-mysql|ratings.default.svc.cluster.local",
        "outbound|9080|v2-mysql-vm|ratings.default.svc.cluster.local",
        REVIEWS,
        REVIEWS_V1,
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "BlackHoleCluster",
        "PassthroughCluster",
        "inbound|9080||",
        "InboundPassthroughCluster",
    ]


def test_outbound_eds_cluster_defaults():
    c = clusters_by_name()[REVIEWS]
    assert c.type == Cluster.EDS
    assert c.eds_cluster_config.service_name == REVIEWS
    eds = c.eds_cluster_config.eds_config
    assert eds.WhichOneof("config_source_specifier") == "ads"
    assert eds.HasField("initial_fetch_timeout") and eds.initial_fetch_timeout.seconds == 0
    assert eds.resource_api_version == config_source_pb2.V3
    assert c.connect_timeout.seconds == 10
    assert c.lb_policy == Cluster.LEAST_REQUEST  # Istio's default algorithm
    assert c.alt_stat_name == REVIEWS + ";"
    assert c.HasField("common_lb_config")
    assert not c.HasField("outlier_detection")
    assert not c.HasField("load_assignment")
    (t,) = c.circuit_breakers.thresholds
    assert (t.max_connections.value, t.max_pending_requests.value) == (MAX, MAX)
    assert (t.max_requests.value, t.max_retries.value) == (MAX, MAX)
    assert t.track_remaining
    # HTTP/1.1 port: no protocol options at all.
    assert HTTP_PROTOCOL_OPTIONS_KEY not in c.typed_extension_protocol_options
    istio = c.metadata.filter_metadata["istio"]
    assert (
        istio["config"]
        == "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"
    )
    (svc,) = istio["services"]
    assert dict(svc) == {
        "host": "reviews.default.svc.cluster.local",
        "name": "reviews",
        "namespace": "default",
    }


def test_auto_mtls_uses_transport_socket_matches_on_tls_mode():
    c = clusters_by_name()[REVIEWS]
    assert not c.HasField("transport_socket")
    mtls, plain = c.transport_socket_matches
    assert mtls.name == "tlsMode-istio"
    assert dict(mtls.match) == {"tlsMode": "istio"}
    assert mtls.transport_socket.name == "envoy.transport_sockets.tls"
    assert plain.name == "tlsMode-disabled"
    assert dict(plain.match) == {}
    assert plain.transport_socket.name == "envoy.transport_sockets.raw_buffer"

    ctx = tls_context(mtls.transport_socket)
    assert ctx.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["istio-peer-exchange", "istio"]
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    (cert,) = common.tls_certificate_sds_secret_configs
    assert cert.name == "default"
    api = cert.sds_config.api_config_source
    assert api.api_type == config_source_pb2.ApiConfigSource.GRPC
    assert api.grpc_services[0].envoy_grpc.cluster_name == "sds-grpc"
    assert api.set_node_on_first_message_only
    assert api.transport_api_version == config_source_pb2.V3
    assert cert.sds_config.resource_api_version == config_source_pb2.V3
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "ROOTCA"
    sans = [m.exact for m in combined.default_validation_context.match_subject_alt_names]
    assert sans == [spiffe("reviews")]


def test_subset_cluster_has_subset_sni_and_metadata():
    c = clusters_by_name()[REVIEWS_V1]
    assert c.type == Cluster.EDS
    assert c.eds_cluster_config.service_name == REVIEWS_V1
    assert c.metadata.filter_metadata["istio"]["subset"] == "v1"
    ctx = tls_context(c.transport_socket_matches[0].transport_socket)
    assert ctx.sni == "outbound_.9080_.v1_.reviews.default.svc.cluster.local"


def test_catch_all_clusters():
    cs = clusters_by_name()
    black = cs["BlackHoleCluster"]
    assert black.type == Cluster.STATIC
    assert black.lb_policy == Cluster.ROUND_ROBIN
    assert not black.HasField("load_assignment")
    assert black.connect_timeout.seconds == 10

    passthrough = cs["PassthroughCluster"]
    assert passthrough.type == Cluster.ORIGINAL_DST
    assert passthrough.lb_policy == Cluster.CLUSTER_PROVIDED
    assert passthrough.circuit_breakers.thresholds[0].max_connections.value == MAX
    opts = http_options(passthrough)
    assert opts.common_http_protocol_options.idle_timeout.seconds == 300
    assert opts.use_downstream_protocol_config.HasField("http2_protocol_options")
    assert opts.use_downstream_protocol_config.HasField("http_protocol_options")

    inbound_pt = cs["InboundPassthroughCluster"]
    assert inbound_pt.type == Cluster.ORIGINAL_DST
    assert inbound_pt.upstream_bind_config.source_address.address == "127.0.0.6"
    assert inbound_pt.upstream_bind_config.source_address.port_value == 0


def test_inbound_cluster_passthrough_mode_binds_127_0_0_6():
    c = clusters_by_name()["inbound|9080||"]
    assert c.type == Cluster.ORIGINAL_DST
    assert c.lb_policy == Cluster.CLUSTER_PROVIDED
    assert c.cleanup_interval.seconds == 9223372035
    assert c.upstream_bind_config.source_address.address == "127.0.0.6"
    assert not c.HasField("transport_socket") and not c.transport_socket_matches
    assert c.circuit_breakers.thresholds[0].max_requests.value == MAX
    (svc,) = c.metadata.filter_metadata["istio"]["services"]
    assert svc["host"] == fqdn("productpage")


def test_inbound_cluster_localhost_mode_is_static_to_127_0_0_1():
    mesh = MeshConfig.model_validate(
        {**default_mesh_config().to_dict(), "inboundTrafficPolicy": {"mode": "LOCALHOST"}}
    )
    c = clusters_by_name(push_with(mesh=mesh))["inbound|9080||"]
    assert c.type == Cluster.STATIC
    (group,) = c.load_assignment.endpoints
    (ep,) = group.lb_endpoints
    addr = ep.endpoint.address.socket_address
    assert (addr.address, addr.port_value) == ("127.0.0.1", 9080)
    assert c.load_assignment.cluster_name == "inbound|9080||"
    assert not c.HasField("upstream_bind_config")


def test_inbound_cluster_takes_destination_rule_connection_pool():
    yaml = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: productpage-pool, namespace: default}
spec:
  host: productpage
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7}
"""
    c = clusters_by_name(push_with(yaml, with_samples=False))["inbound|9080||"]
    assert c.circuit_breakers.thresholds[0].max_connections.value == 7


def test_gateway_gets_no_passthrough_clusters():
    from pistio.pilot.model.proxy import parse_node_id

    gw = parse_node_id("router~10.244.0.50~ingress-0.istio-system~istio-system.svc.cluster.local")
    names = set(clusters_by_name(proxy=gw))
    assert "BlackHoleCluster" in names
    assert not names & {"PassthroughCluster", "InboundPassthroughCluster", "inbound|9080||"}
    assert REVIEWS in names


# --- DestinationRule traffic policy --------------------------------------------------------

TRAFFIC_POLICY_YAML = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, maxConnectionDuration: 1h}
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 5
        maxRetries: 3
        idleTimeout: 90s
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 4
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 30
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
"""


def test_connection_pool_maps_to_circuit_breakers_and_http_options():
    c = clusters_by_name(push_with(TRAFFIC_POLICY_YAML, with_samples=False))[REVIEWS]
    assert (c.connect_timeout.seconds, c.connect_timeout.nanos) == (0, 30_000_000)
    (t,) = c.circuit_breakers.thresholds
    assert t.max_connections.value == 100
    assert t.max_pending_requests.value == 10
    assert t.max_requests.value == 1000
    assert t.max_retries.value == 3
    common = http_options(c).common_http_protocol_options
    assert common.idle_timeout.seconds == 90
    assert common.max_requests_per_connection.value == 5
    assert common.max_connection_duration.seconds == 3600
    # Options exist, so Envoy needs an upstream protocol: explicit HTTP/1.1.
    assert http_options(c).explicit_http_config.HasField("http_protocol_options")


def test_outlier_detection_mapping():
    c = clusters_by_name(push_with(TRAFFIC_POLICY_YAML, with_samples=False))[REVIEWS]
    od = c.outlier_detection
    assert od.consecutive_5xx.value == 7
    assert od.enforcing_consecutive_5xx.value == 100
    assert od.consecutive_gateway_failure.value == 4
    assert od.enforcing_consecutive_gateway_failure.value == 100
    assert od.HasField("enforcing_success_rate") and od.enforcing_success_rate.value == 0
    assert od.interval.seconds == 300
    assert od.base_ejection_time.seconds == 900
    assert od.max_ejection_percent.value == 50
    assert c.common_lb_config.healthy_panic_threshold.value == 30


def test_load_balancer_and_subset_override():
    cs = clusters_by_name(push_with(TRAFFIC_POLICY_YAML, with_samples=False))
    assert cs[REVIEWS].lb_policy == Cluster.ROUND_ROBIN
    assert cs[REVIEWS].round_robin_lb_config.slow_start_config.slow_start_window.seconds == 30
    # v1 inherits the rule's policy, v2 overrides only the load balancer.
    assert cs[REVIEWS_V1].lb_policy == Cluster.ROUND_ROBIN
    v2 = cs["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert v2.lb_policy == Cluster.RANDOM
    assert v2.outlier_detection.consecutive_5xx.value == 7
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 100


def test_port_level_settings_replace_the_rule_policy():
    yaml = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 5}}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
"""
    c = clusters_by_name(push_with(yaml, with_samples=False))[REVIEWS]
    assert c.lb_policy == Cluster.ROUND_ROBIN
    # Fields the port-level entry omits take defaults, not the rule's values.
    assert c.circuit_breakers.thresholds[0].max_connections.value == MAX


def test_consistent_hash_ring_hash_and_maglev():
    yaml = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
"""
    cs = clusters_by_name(push_with(yaml, with_samples=False))
    assert cs[REVIEWS].lb_policy == Cluster.RING_HASH
    assert cs[REVIEWS].ring_hash_lb_config.minimum_ring_size.value == 1024
    assert cs[REVIEWS_V1].lb_policy == Cluster.MAGLEV
    assert cs[REVIEWS_V1].maglev_lb_config.table_size.value == 65537


def test_locality_settings_switch_on_locality_weighted_lb():
    yaml = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      localityLbSetting:
        failover: [{from: us-east1, to: us-west1}]
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: null
      loadBalancer:
        localityLbSetting:
          distribute:
          - from: us-east1/*
            to: {"us-east1/us-east1-a/*": 80, "us-east1/us-east1-b/*": 20}
"""
    cs = clusters_by_name(push_with(yaml, with_samples=False))
    assert cs[REVIEWS].common_lb_config.HasField("locality_weighted_lb_config")
    assert cs[REVIEWS_V1].common_lb_config.HasField("locality_weighted_lb_config")
    # Without localityLbSetting, the mesh default (enabled, no failover) sets nothing.
    plain = clusters_by_name()[REVIEWS]
    assert not plain.common_lb_config.HasField("locality_weighted_lb_config")


# --- TLS ------------------------------------------------------------------------------------


def _tls_rule(tls_yaml: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls_yaml}
"""


def test_tls_disable_sends_plaintext():
    c = clusters_by_name(push_with(_tls_rule("{mode: DISABLE}"), with_samples=False))[REVIEWS]
    assert not c.HasField("transport_socket")
    assert not c.transport_socket_matches


def test_explicit_istio_mutual_is_a_plain_transport_socket():
    c = clusters_by_name(push_with(_tls_rule("{mode: ISTIO_MUTUAL}"), with_samples=False))[REVIEWS]
    assert not c.transport_socket_matches
    ctx = tls_context(c.transport_socket)
    assert ctx.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    sans = ctx.common_tls_context.combined_validation_context.default_validation_context
    assert [m.exact for m in sans.match_subject_alt_names] == [spiffe("reviews")]


def test_simple_tls_with_files_and_sni():
    rule = _tls_rule(
        "{mode: SIMPLE, sni: reviews.example.com, caCertificates: /etc/certs/ca.pem,"
        " subjectAltNames: [reviews.example.com]}"
    )
    c = clusters_by_name(push_with(rule, with_samples=False))[REVIEWS]
    ctx = tls_context(c.transport_socket)
    assert ctx.sni == "reviews.example.com"
    common = ctx.common_tls_context
    assert not common.tls_certificate_sds_secret_configs
    assert not common.alpn_protocols
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "file-root:/etc/certs/ca.pem"
    assert [m.exact for m in combined.default_validation_context.match_subject_alt_names] == [
        "reviews.example.com"
    ]
    # Explicit SNI and SANs: no auto_sni / auto_san_validation.
    assert HTTP_PROTOCOL_OPTIONS_KEY not in c.typed_extension_protocol_options


def test_mutual_tls_with_files_and_auto_sni():
    rule = _tls_rule("{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}")
    c = clusters_by_name(push_with(rule, with_samples=False))[REVIEWS]
    ctx = tls_context(c.transport_socket)
    common = ctx.common_tls_context
    assert common.tls_certificate_sds_secret_configs[0].name == "file-cert:/c.pem~/k.pem"
    assert common.combined_validation_context.validation_context_sds_secret_config.name == (
        "file-root:system"
    )
    upstream = http_options(c).upstream_http_protocol_options
    assert upstream.auto_sni and upstream.auto_san_validation


def test_credential_name_is_ignored_for_sidecars_without_selector():
    rule = _tls_rule("{mode: SIMPLE, credentialName: reviews-secret}")
    c = clusters_by_name(push_with(rule, with_samples=False))[REVIEWS]
    assert not c.HasField("transport_socket")


def test_peer_authentication_disable_turns_auto_mtls_off():
    yaml = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: DISABLE}
"""
    c = clusters_by_name(push_with(yaml))[REVIEWS]
    assert not c.transport_socket_matches and not c.HasField("transport_socket")


def test_auto_mtls_can_be_switched_off_in_mesh_config():
    mesh = MeshConfig.model_validate({**default_mesh_config().to_dict(), "enableAutoMtls": False})
    c = clusters_by_name(push_with(mesh=mesh))[REVIEWS]
    assert not c.transport_socket_matches


# --- protocols and resolutions --------------------------------------------------------------


def _service(name, ports, resolution=Resolution.CLIENT_SIDE_LB, **kw) -> Service:
    return Service(
        hostname=kw.pop("hostname", fqdn(name)),
        namespace=kw.pop("namespace", "default"),
        name=name,
        ports=tuple(ports),
        resolution=resolution,
        **kw,
    )


def _endpoint(host, ip, port, port_name, tls_mode="istio", **kw) -> Endpoint:
    return Endpoint(
        address=ip,
        port=port,
        service_port_name=port_name,
        hostname=host,
        namespace="default",
        tls_mode=tls_mode,
        **kw,
    )


def test_grpc_port_gets_http2_options_and_h2_alpn():
    svc = _service("greeter", [ServicePort("grpc", 50051, Protocol.GRPC, 50051)])
    ep = _endpoint(svc.hostname, "10.244.0.30", 50051, "grpc")
    c = clusters_by_name(push_with(services=[svc], endpoints=[ep]))[
        "outbound|50051||greeter.default.svc.cluster.local"
    ]
    assert http_options(c).explicit_http_config.HasField("http2_protocol_options")
    ctx = tls_context(c.transport_socket_matches[0].transport_socket)
    assert list(ctx.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "istio", "h2"]


def test_unnamed_port_uses_downstream_protocol():
    svc = _service("legacy", [ServicePort("8080", 8080, Protocol.UNSUPPORTED, 8080)])
    c = clusters_by_name(push_with(services=[svc]))[
        "outbound|8080||legacy.default.svc.cluster.local"
    ]
    cfg = http_options(c).use_downstream_protocol_config
    assert cfg.HasField("http_protocol_options") and cfg.HasField("http2_protocol_options")


def test_dns_service_entry_is_strict_dns_with_load_assignment():
    svc = _service(
        "httpbin",
        [ServicePort("http", 80, Protocol.HTTP, 80)],
        Resolution.DNS_LB,
        hostname="httpbin.org",
        mesh_external=True,
        source=Source.SERVICE_ENTRY,
    )
    ep = _endpoint("httpbin.org", "httpbin.org", 80, "http", tls_mode="disabled")
    name = "outbound|80||httpbin.org"
    c = clusters_by_name(push_with(services=[svc], endpoints=[ep]))[name]
    assert c.type == Cluster.STRICT_DNS
    assert c.dns_lookup_family == Cluster.V4_ONLY
    assert c.respect_dns_ttl
    assert c.dns_refresh_rate.seconds == 60
    assert not c.HasField("eds_cluster_config")
    assert c.load_assignment.cluster_name == name
    addr = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (addr.address, addr.port_value) == ("httpbin.org", 80)
    assert c.metadata.filter_metadata["istio"]["external"] is True
    # Mesh-external: no auto mTLS.
    assert not c.transport_socket_matches and not c.HasField("transport_socket")


def test_dns_service_without_endpoints_gets_no_cluster():
    svc = _service(
        "nowhere", [ServicePort("http", 80, Protocol.HTTP, 80)], Resolution.DNS_LB,
        hostname="nowhere.example",
    )  # fmt: skip
    assert "outbound|80||nowhere.example" not in clusters_by_name(push_with(services=[svc]))


def test_headless_service_is_original_dst_with_direct_mtls():
    svc = _service("db", [ServicePort("tcp", 5432, Protocol.TCP, 5432)], Resolution.PASSTHROUGH)
    ep = _endpoint(svc.hostname, "10.244.0.40", 5432, "tcp")
    c = clusters_by_name(push_with(services=[svc], endpoints=[ep]))[
        "outbound|5432||db.default.svc.cluster.local"
    ]
    assert c.type == Cluster.ORIGINAL_DST
    assert c.lb_policy == Cluster.CLUSTER_PROVIDED
    # ORIGINAL_DST has no per-endpoint socket choice: Istio sets the mTLS socket directly.
    assert not c.transport_socket_matches
    assert c.transport_socket.name == "envoy.transport_sockets.tls"


def test_headless_service_with_a_plaintext_endpoint_gets_no_tls():
    svc = _service("db", [ServicePort("tcp", 5432, Protocol.TCP, 5432)], Resolution.PASSTHROUGH)
    eps = [
        _endpoint(svc.hostname, "10.244.0.40", 5432, "tcp"),
        _endpoint(svc.hostname, "10.244.0.41", 5432, "tcp", tls_mode="disabled"),
    ]
    c = clusters_by_name(push_with(services=[svc], endpoints=eps))[
        "outbound|5432||db.default.svc.cluster.local"
    ]
    assert not c.HasField("transport_socket")


def test_subset_passthrough_lb_makes_original_dst():
    yaml = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - name: direct
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
"""
    c = clusters_by_name(push_with(yaml, with_samples=False))[
        "outbound|9080|direct|reviews.default.svc.cluster.local"
    ]
    assert c.type == Cluster.ORIGINAL_DST
    assert c.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not c.HasField("eds_cluster_config")


def test_mesh_connect_timeout_applies_everywhere():
    mesh = MeshConfig.model_validate({**default_mesh_config().to_dict(), "connectTimeout": "3s"})
    cs = clusters_by_name(push_with(mesh=mesh))
    for name in (REVIEWS, "BlackHoleCluster", "PassthroughCluster", "inbound|9080||"):
        assert cs[name].connect_timeout.seconds == 3, name


# --- generator ------------------------------------------------------------------------------


def test_cluster_generator_builds_from_push_context():
    conn = ConnectionInfo(
        conn_id="c1",
        node_id="sidecar~10.244.0.10~productpage-v1-0.default~default.svc.cluster.local",
        metadata={"LABELS": {"app": "productpage", "version": "v1"}},
    )
    gen = ClusterGenerator()
    push = bookinfo_push()
    resources = gen.generate(conn, None, PushRequest(context=push))
    assert resources is not None
    assert [r.name for r in resources][-2:] == ["inbound|9080||", "InboundPassthroughCluster"]
    assert all(isinstance(r.message, Cluster) for r in resources)
    named = gen.generate(conn, {REVIEWS}, PushRequest(context=push))
    assert [r.name for r in named] == [REVIEWS]
    assert gen.generate(conn, None, PushRequest()) is None


# --- route-side hash policy -----------------------------------------------------------------

HASH_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpCookie: {name: session, path: /, ttl: 60s}}
  - name: v3
    labels: {version: v3}
"""


def test_hash_policy_for_routes_follows_subset_then_rule():
    push = push_with(HASH_RULE, with_samples=False)
    proxy = sidecar_proxy()
    host = fqdn("reviews")
    (rule_hash,) = hash_policy_for(push, proxy, host, "", 9080)
    assert rule_hash.header.header_name == "x-user"
    (v1,) = hash_policy_for(push, proxy, host, "v1", 9080)
    assert v1.connection_properties.source_ip
    (v2,) = hash_policy_for(push, proxy, host, "v2", 9080)
    assert (v2.cookie.name, v2.cookie.path, v2.cookie.ttl.seconds) == ("session", "/", 60)
    # A subset without its own policy inherits the rule's hash.
    (v3,) = hash_policy_for(push, proxy, host, "v3", 9080)
    assert v3.header.header_name == "x-user"
    assert hash_policy_for(push, proxy, fqdn("ratings"), "", 9080) == []


def test_service_entry_simple_tls_verifies_entry_subject_alt_names():
    svc = _service(
        "api",
        [ServicePort("https", 443, Protocol.HTTPS, 443)],
        Resolution.DNS_LB,
        hostname="api.example.com",
        mesh_external=True,
        source=Source.SERVICE_ENTRY,
        service_accounts=("api.example.com",),
    )
    ep = _endpoint("api.example.com", "api.example.com", 443, "https", tls_mode="disabled")
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {tls: {mode: SIMPLE}}
"""
    c = clusters_by_name(push_with(rule, services=[svc], endpoints=[ep]))[
        "outbound|443||api.example.com"
    ]
    ctx = tls_context(c.transport_socket)
    vc = ctx.common_tls_context.combined_validation_context
    assert [m.exact for m in vc.default_validation_context.match_subject_alt_names] == [
        "api.example.com"
    ]
    assert vc.validation_context_sds_secret_config.name == "file-root:system"


def test_proxy_protocol_wraps_each_transport_socket():
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {proxyProtocol: {version: V2}}
"""
    c = clusters_by_name(push_with(rule, with_samples=False))[
        "outbound|9080||ratings.default.svc.cluster.local"
    ]
    names = [m.transport_socket.name for m in c.transport_socket_matches]
    assert names == ["envoy.transport_sockets.upstream_proxy_protocol"] * 2
