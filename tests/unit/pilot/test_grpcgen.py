"""Proxyless gRPC flavour (Istio's ``grpcgen``) and the LDS/RDS generators' dispatch."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.pilot.generators.cds import ClusterGenerator
from pistio.pilot.generators.lds import ListenerGenerator
from pistio.pilot.generators.rds import RouteGenerator
from pistio.pilot.grpcgen.cds import build_grpc_clusters
from pistio.pilot.grpcgen.lds import SERVER_LISTENER_PREFIX, build_grpc_listeners
from pistio.pilot.grpcgen.rds import build_grpc_route_config
from pistio.pilot.model.proxy import parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.xds.any_codec import unpack
from pistio.xds.connection import ConnectionInfo
from pistio.xds.push_request import PushRequest
from tests.unit.pilot.bookinfo_fixture import (
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    fqdn,
    parse_configs,
)

GRPC_NODE = "sidecar~10.244.0.10~productpage-v1-0.default~default.svc.cluster.local"
GRPC_META = {
    "GENERATOR": "grpc",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}


def grpc_proxy():
    return parse_node_id(GRPC_NODE, GRPC_META)


def test_client_api_listener_for_requested_short_name():
    (lst,) = build_grpc_listeners(bookinfo_push(), grpc_proxy(), {"reviews:9080"})
    assert lst.name == "reviews:9080"
    assert lst.address.socket_address.address == "10.96.0.12"
    assert lst.address.socket_address.port_value == 9080
    assert not lst.filter_chains and not lst.listener_filters
    hcm = unpack(lst.api_listener.api_listener)
    assert isinstance(hcm, hcm_pb2.HttpConnectionManager)
    assert hcm.rds.route_config_name == "outbound|9080||reviews.default.svc.cluster.local"
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_each_spelling_gets_its_own_listener():
    names = {"reviews:9080", f"{fqdn('reviews')}:9080", "reviews.default:9080"}
    got = sorted(lst.name for lst in build_grpc_listeners(bookinfo_push(), grpc_proxy(), names))
    assert got == sorted(names)


def test_wildcard_lists_every_service_by_fqdn():
    got = [lst.name for lst in build_grpc_listeners(bookinfo_push(), grpc_proxy(), None)]
    assert got == [f"{fqdn(a)}:9080" for a in ("details", "productpage", "ratings", "reviews")]


def test_server_listener():
    name = f"{SERVER_LISTENER_PREFIX}0.0.0.0:9080"
    (lst,) = build_grpc_listeners(bookinfo_push(), grpc_proxy(), {name})
    assert lst.name == name
    assert lst.address.socket_address.port_value == 9080
    (chain,) = lst.filter_chains
    assert chain.name == "inbound-plaintext"
    hcm = unpack(chain.filters[0].typed_config)
    (route,) = hcm.route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    # No service on this port: no listener.
    assert not build_grpc_listeners(
        bookinfo_push(), grpc_proxy(), {f"{SERVER_LISTENER_PREFIX}0.0.0.0:7000"}
    )


def test_grpc_route_config():
    name = "outbound|9080||reviews.default.svc.cluster.local"
    cfg = build_grpc_route_config(bookinfo_push(), grpc_proxy(), name)
    assert cfg is not None and cfg.name == name
    assert not cfg.ignore_port_in_host_matching
    names = [v.name for v in cfg.virtual_hosts]
    assert "allow_any" not in names
    reviews = next(v for v in cfg.virtual_hosts if v.name == f"{fqdn('reviews')}:9080")
    # gRPC matches the authority as dialled: every domain also with its port.
    assert list(reviews.domains) == [
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "reviews",
        "reviews:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
        "10.96.0.12",
        "10.96.0.12:9080",
    ]
    jason = reviews.routes[0]
    assert jason.route.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local"
    # gRPC reads max_stream_duration, not max_grpc_timeout.
    assert jason.route.HasField("max_stream_duration")
    assert not jason.route.HasField("max_grpc_timeout")
    assert build_grpc_route_config(bookinfo_push(), grpc_proxy(), "9080") is None


def _conn(node_id: str, meta: dict) -> ConnectionInfo:
    return ConnectionInfo(conn_id="c1", node_id=node_id, metadata=meta)


def test_generators_dispatch_on_generator_metadata():
    push = PushRequest(context=bookinfo_push())
    sidecar_meta = {"NAMESPACE": "default", "LABELS": {"app": "productpage"}}
    lds = ListenerGenerator()
    sidecar = lds.generate(_conn(GRPC_NODE, sidecar_meta), None, push)
    assert [r.name for r in sidecar] == ["0.0.0.0_9080", "virtualOutbound", "virtualInbound"]
    grpc = lds.generate(_conn(GRPC_NODE, GRPC_META), {"ratings:9080"}, push)
    assert [r.name for r in grpc] == ["ratings:9080"]
    rds = RouteGenerator()
    (route,) = rds.generate(_conn(GRPC_NODE, sidecar_meta), {"9080"}, push)
    assert route.name == "9080" and route.message.virtual_hosts[-1].name == "allow_any"
    name = "outbound|9080||ratings.default.svc.cluster.local"
    (grpc_route,) = rds.generate(_conn(GRPC_NODE, GRPC_META), {name}, push)
    assert grpc_route.name == name
    assert rds.generate(_conn(GRPC_NODE, sidecar_meta), None, push) == []
    assert lds.generate(_conn(GRPC_NODE, sidecar_meta), None, PushRequest()) is None


# --- clusters (Istio's grpcgen/cds.go) ---------------------------------------------------

REVIEWS = "reviews.default.svc.cluster.local"


def _grpc_eds_cluster(name: str, lb_policy: int = cluster_pb2.Cluster.ROUND_ROBIN):
    """What gRPC is given: an EDS cluster over ADS and its LB policy, nothing else."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, lb_policy=lb_policy)
    c.eds_cluster_config.service_name = name
    c.eds_cluster_config.eds_config.ads.SetInParent()
    return c


def test_grpc_clusters_are_minimal_eds_clusters():
    # gRPC NACKs the sidecar's LEAST_REQUEST ("LB policy is not supported") and reads none
    # of circuit breakers, transport socket matches, protocol options or metadata.
    names = {f"outbound|9080||{REVIEWS}", f"outbound|9080|v2|{REVIEWS}"}
    got = build_grpc_clusters(bookinfo_push(), grpc_proxy(), names)
    assert got == [
        _grpc_eds_cluster(f"outbound|9080||{REVIEWS}"),
        _grpc_eds_cluster(f"outbound|9080|v2|{REVIEWS}"),
    ]


def test_grpc_clusters_only_known_outbound_names():
    names = {
        f"outbound|9080|v3|{REVIEWS}",
        f"outbound|9080|v9|{REVIEWS}",  # no such subset
        f"outbound|9999||{REVIEWS}",  # no such port
        "outbound|9080||unknown.default.svc.cluster.local",
        "inbound|9080||",
        "BlackHoleCluster",
    }
    got = build_grpc_clusters(bookinfo_push(), grpc_proxy(), names)
    assert [c.name for c in got] == [f"outbound|9080|v3|{REVIEWS}"]


def test_grpc_clusters_without_names_cover_every_service_and_subset():
    got = [c.name for c in build_grpc_clusters(bookinfo_push(), grpc_proxy())]
    assert got == [
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
        f"outbound|9080||{REVIEWS}",
        f"outbound|9080|v1|{REVIEWS}",
        f"outbound|9080|v2|{REVIEWS}",
        f"outbound|9080|v3|{REVIEWS}",
    ]


POLICY_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
    tls: {mode: ISTIO_MUTUAL}
    connectionPool:
      http: {http2MaxRequests: 10}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
          ringHash: {minimumRingSize: 2048}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
          maglev: {tableSize: 65537}
"""


def test_grpc_cluster_load_balancing_from_destination_rule():
    push = PushContext(parse_configs(POLICY_RULE), bookinfo_services(), bookinfo_endpoints())
    got = {c.name: c for c in build_grpc_clusters(push, grpc_proxy())}
    ring = cluster_pb2.Cluster.RING_HASH
    default = _grpc_eds_cluster(f"outbound|9080||{REVIEWS}", ring)
    default.ring_hash_lb_config.minimum_ring_size.value = 1024
    # Connection pool and ISTIO_MUTUAL are not applied: gRPC has no use for the first,
    # and mTLS needs certificate providers in the client's bootstrap (Istio: explicit only).
    assert got[f"outbound|9080||{REVIEWS}"] == default
    # A subset's simple algorithm replaces the consistent hash; gRPC has no least request.
    assert got[f"outbound|9080|v1|{REVIEWS}"] == _grpc_eds_cluster(f"outbound|9080|v1|{REVIEWS}")
    v2 = got[f"outbound|9080|v2|{REVIEWS}"]
    assert v2.lb_policy == ring and v2.ring_hash_lb_config.minimum_ring_size.value == 2048
    # No Maglev in gRPC: ring hash instead.
    v3 = got[f"outbound|9080|v3|{REVIEWS}"]
    assert v3.lb_policy == ring and not v3.HasField("maglev_lb_config")
    # A service without a DestinationRule: its default cluster only, round robin.
    details = "outbound|9080||details.default.svc.cluster.local"
    assert got[details] == _grpc_eds_cluster(details)
    assert not [n for n in got if n.endswith("|details.default.svc.cluster.local") and n != details]


def test_cds_dispatches_on_generator_metadata():
    push = bookinfo_push()
    assert build_clusters(push, grpc_proxy()) == build_grpc_clusters(push, grpc_proxy())
    cds = ClusterGenerator()
    wanted = {f"outbound|9080|v1|{REVIEWS}", "PassthroughCluster"}
    grpc = cds.generate(_conn(GRPC_NODE, GRPC_META), wanted, PushRequest(context=push))
    assert [r.name for r in grpc] == [f"outbound|9080|v1|{REVIEWS}"]
    assert grpc[0].message.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    sidecar_meta = {"NAMESPACE": "default", "LABELS": {"app": "productpage"}}
    sidecar = cds.generate(_conn(GRPC_NODE, sidecar_meta), wanted, PushRequest(context=push))
    assert sorted(r.name for r in sidecar) == sorted(wanted)
    by_name = {r.name: r.message for r in sidecar}
    assert by_name[f"outbound|9080|v1|{REVIEWS}"].lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
