"""Cluster compilation: every cluster our CDS generator builds for Bookinfo (with the traffic
policies Istio users write) compiles; Envoy's defaults hold; unsupported fields are NACKed
with their path."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.proxy.config.cluster_config import (
    HTTP_PROTOCOL_OPTIONS_KEY,
    DiscoveryType,
    LbPolicy,
    UpstreamProtocol,
    compile_cluster,
)
from pistio.proxy.config.errors import ConfigError
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, sidecar_proxy, spiffe
from tests.unit.pilot.test_clusters import TRAFFIC_POLICY_YAML, _tls_rule, push_with

Cluster = cluster_pb2.Cluster
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
MAX = 4294967295

CONSISTENT_HASH_YAML = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, minimumRingSize: 2048}
    proxyProtocol: {version: V2}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
"""

LOCALITY_YAML = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
      warmupDurationSecs: 10s
      localityLbSetting:
        enabled: true
        failover: [{from: us-east1, to: us-west1}]
    connectionPool:
      tcp:
        tcpKeepalive: {probes: 3, time: 60s, interval: 10s}
      http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 50}
    outlierDetection: {consecutive5xxErrors: 1, splitExternalLocalOriginErrors: true,
                       consecutiveLocalOriginFailures: 2}
"""

POLICIES = [
    "",
    TRAFFIC_POLICY_YAML,
    CONSISTENT_HASH_YAML,
    LOCALITY_YAML,
    _tls_rule("{mode: DISABLE}"),
    _tls_rule("{mode: ISTIO_MUTUAL}"),
    _tls_rule("{mode: SIMPLE, sni: reviews.example.com, caCertificates: /etc/certs/ca.pem,"
              " subjectAltNames: [reviews.example.com]}"),
    _tls_rule("{mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}"),
]


def compiled(extra_yaml: str = "", with_samples: bool = True):
    push = push_with(extra_yaml, with_samples=with_samples) if extra_yaml else bookinfo_push()
    return {c.name: compile_cluster(c) for c in build_clusters(push, sidecar_proxy())}


@pytest.mark.parametrize("policy", range(len(POLICIES)))
def test_every_generated_cluster_compiles(policy):
    out = compiled(POLICIES[policy], with_samples=policy == 0)
    assert REVIEWS in out and "PassthroughCluster" in out and "inbound|9080||" in out


def test_bookinfo_outbound_cluster():
    c = compiled()[REVIEWS]
    assert c.discovery_type is DiscoveryType.EDS
    assert c.eds_service_name == REVIEWS
    assert c.lb.policy is LbPolicy.LEAST_REQUEST
    assert c.connect_timeout == 10.0
    b = c.circuit_breakers
    assert (b.max_connections, b.max_pending_requests, b.max_requests, b.max_retries) == (
        MAX, MAX, MAX, MAX
    )
    assert b.track_remaining
    assert c.outlier_detection is None
    assert c.stat_name == REVIEWS + ";"
    assert c.metadata["istio"]["services"][0]["name"] == "reviews"
    # Auto mTLS: TLS for tlsMode=istio endpoints, plaintext for the rest.
    istio = c.transport_socket_for({"tlsMode": "istio"})
    assert istio.tls is not None
    assert istio.tls.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    assert istio.tls.alpn_protocols == ("istio-peer-exchange", "istio")
    assert [m.value for m in istio.tls.san_matchers] == [spiffe("reviews")]
    assert istio.tls.san_matchers[0].matches(spiffe("reviews"))
    assert istio.tls.certificate_sds_names == ("default",)
    assert istio.tls.validation_sds_name == "ROOTCA"
    assert c.transport_socket_for({}).tls is None
    assert c.transport_socket_for({"tlsMode": "disabled"}).tls is None


def test_catch_all_and_inbound_clusters():
    out = compiled()
    passthrough = out["PassthroughCluster"]
    assert passthrough.discovery_type is DiscoveryType.ORIGINAL_DST
    assert passthrough.lb.policy is LbPolicy.CLUSTER_PROVIDED
    assert passthrough.http.protocol is UpstreamProtocol.USE_DOWNSTREAM
    assert out["BlackHoleCluster"].discovery_type is DiscoveryType.STATIC
    assert out["BlackHoleCluster"].load_assignment.endpoints == ()
    inbound = out["inbound|9080||"]
    assert inbound.upstream_bind_address == "127.0.0.6"
    assert out["InboundPassthroughCluster"].upstream_bind_address == "127.0.0.6"


def test_traffic_policy_values():
    out = compiled(TRAFFIC_POLICY_YAML, with_samples=False)
    c = out[REVIEWS]
    assert c.connect_timeout == pytest.approx(0.03)
    b = c.circuit_breakers
    assert (b.max_connections, b.max_pending_requests, b.max_requests, b.max_retries) == (
        100, 10, 1000, 3
    )
    assert c.http.protocol is UpstreamProtocol.HTTP1
    assert c.http.idle_timeout == 90
    assert c.http.max_requests_per_connection == 5
    assert c.http.max_connection_duration == 3600
    od = c.outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure) == (7, 4)
    assert (od.interval, od.base_ejection_time, od.max_ejection_percent) == (300, 900, 50)
    assert od.enforcing_success_rate == 0
    assert od.max_ejection_time == 900  # max(base, default 300)
    assert c.lb.policy is LbPolicy.ROUND_ROBIN
    assert c.lb.slow_start is not None and c.lb.slow_start.window == 30
    assert c.lb.healthy_panic_threshold == 30
    assert out["outbound|9080|v2|reviews.default.svc.cluster.local"].lb.policy is LbPolicy.RANDOM


def test_consistent_hash_and_proxy_protocol():
    out = compiled(CONSISTENT_HASH_YAML, with_samples=False)
    assert out[REVIEWS].lb.policy is LbPolicy.RING_HASH
    assert out[REVIEWS].lb.min_ring_size == 2048
    assert out[REVIEWS_V1].lb.policy is LbPolicy.MAGLEV
    assert out[REVIEWS_V1].lb.maglev_table_size == 65537
    sockets = [m.socket for m in out[REVIEWS].transport_socket_matches]
    assert [s.proxy_protocol_version for s in sockets] == [1, 1]  # V2
    assert sockets[0].tls is not None and sockets[1].tls is None


def test_locality_slow_start_keepalive_and_h2():
    c = compiled(LOCALITY_YAML, with_samples=False)[REVIEWS]
    assert c.lb.locality_weighted
    assert c.lb.policy is LbPolicy.LEAST_REQUEST and c.lb.slow_start.window == 10
    assert c.tcp_keepalive.probes == 3 and c.tcp_keepalive.time == 60
    assert c.http.protocol is UpstreamProtocol.HTTP2
    od = c.outlier_detection
    assert od.split_external_local_origin_errors and od.consecutive_local_origin_failure == 2


def test_envoy_defaults():
    c = compile_cluster(Cluster(name="bare", type=Cluster.STATIC))
    assert c.connect_timeout == 5.0
    b = c.circuit_breakers
    assert (b.max_connections, b.max_pending_requests, b.max_requests, b.max_retries) == (
        1024, 1024, 1024, 3
    )
    assert c.lb.policy is LbPolicy.ROUND_ROBIN and c.lb.healthy_panic_threshold == 50
    assert c.lb.choice_count == 2 and c.lb.maglev_table_size == 65537
    assert c.http.idle_timeout == 3600 and c.http.protocol is UpstreamProtocol.HTTP1
    od_cluster = Cluster(name="od", type=Cluster.EDS)
    od_cluster.outlier_detection.SetInParent()
    od = compile_cluster(od_cluster).outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure, od.interval) == (5, 5, 10.0)
    assert (od.base_ejection_time, od.max_ejection_percent, od.max_ejection_time) == (
        30.0, 10, 300.0
    )
    assert (od.enforcing_consecutive_5xx, od.enforcing_consecutive_gateway_failure) == (100, 0)


def test_static_cluster_load_assignment_and_retry_budget():
    c = Cluster(name="local", type=Cluster.STRICT_DNS)
    ep = c.load_assignment.endpoints.add().lb_endpoints.add()
    ep.endpoint.address.socket_address.address = "example.org"
    ep.endpoint.address.socket_address.port_value = 443
    ep.health_status = health_check_pb2.HEALTHY
    t = c.circuit_breakers.thresholds.add()
    t.retry_budget.budget_percent.value = 25.0
    high = c.circuit_breakers.thresholds.add(priority=base_pb2.HIGH)
    high.max_connections.value = 1
    out = compile_cluster(c)
    (e,) = out.load_assignment.endpoints
    assert (e.address, e.port, e.eds_healthy) == ("example.org", 443, True)
    assert out.circuit_breakers.retry_budget_percent == 25.0
    assert out.circuit_breakers.max_connections == 1024  # HIGH thresholds don't apply


def nack(c: Cluster) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_cluster(c)
    return err.value.problems


def test_unsupported_fields_are_nacked_with_their_path():
    c = Cluster(name="x", type=Cluster.EDS)
    hc = c.health_checks.add()
    hc.timeout.seconds = hc.interval.seconds = 1
    hc.unhealthy_threshold.value = hc.healthy_threshold.value = 1
    hc.grpc_health_check.service_name = "svc"
    c.lb_subset_config.fallback_policy = Cluster.LbSubsetConfig.ANY_ENDPOINT
    c.ring_hash_lb_config.hash_function = Cluster.RingHashLbConfig.MURMUR_HASH_2
    c.outlier_detection.failure_percentage_threshold.value = 5
    assert sorted(nack(c)) == [
        "Cluster x: health_checks[0].grpc_health_check: field not supported by pistio",
        "Cluster x: lb_subset_config: field not supported by pistio",
        "Cluster x: outlier_detection.failure_percentage_threshold: field not supported by pistio",
        "Cluster x: ring_hash_lb_config.hash_function: only XX_HASH is supported",
    ]


def test_invalid_combinations_are_nacked():
    c = Cluster(name="y", type=Cluster.ORIGINAL_DST, lb_policy=Cluster.ROUND_ROBIN)
    c.maglev_lb_config.table_size.value = 1000
    problems = nack(c)
    assert "Cluster y: lb_policy: CLUSTER_PROVIDED goes with (and only with) type ORIGINAL_DST" \
        in problems
    assert "Cluster y: maglev_lb_config.table_size: 1000 is not prime" in problems


def test_unknown_protocol_options_and_transport_socket_are_nacked():
    c = Cluster(name="z", type=Cluster.EDS)
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.auto_config.SetInParent()
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Pack(opts)
    c.typed_extension_protocol_options["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"]\
        .Pack(opts)
    c.transport_socket.name = "envoy.transport_sockets.alts"
    c.transport_socket.typed_config.Pack(base_pb2.Metadata())
    problems = nack(c)
    key = HTTP_PROTOCOL_OPTIONS_KEY
    assert f"Cluster z: typed_extension_protocol_options[{key!r}].auto_config: field not " \
        "supported by pistio" in problems
    assert any("TcpProtocolOptions'" in p and "not supported" in p for p in problems)
    assert any(p.startswith("Cluster z: transport_socket.typed_config: transport socket")
               for p in problems)
