"""EDS for a Bookinfo sidecar: locality groups, health, weights, metadata, subsets and
locality load balancing relative to the calling proxy."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pistio.pilot.generators.eds import EndpointGenerator
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import HealthStatus
from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment
from pistio.xds.generator import ConnectionInfo, PushRequest
from tests.unit.pilot.bookinfo_fixture import (
    DESTINATION_RULES_YAML,
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
ZONE_A = ("us-east1", "us-east1-a", "")
ZONE_B = ("us-east1", "us-east1-b", "")


def cla(
    name: str, push: PushContext | None = None, proxy=None
) -> endpoint_pb2.ClusterLoadAssignment:
    return build_cluster_load_assignment(push or bookinfo_push(), proxy or sidecar_proxy(), name)


def locality(group) -> tuple[str, str, str]:
    return group.locality.region, group.locality.zone, group.locality.sub_zone


def addresses(group) -> list[str]:
    return [e.endpoint.address.socket_address.address for e in group.lb_endpoints]


def proxy_in(zone: str):
    proxy = sidecar_proxy()
    proxy.locality = f"us-east1/{zone}"
    return proxy


def test_reviews_endpoints_grouped_by_locality():
    out = cla(REVIEWS)
    assert out.cluster_name == REVIEWS
    a, b = out.endpoints
    assert locality(a) == ZONE_A and locality(b) == ZONE_B
    assert addresses(a) == ["10.244.0.12", "10.244.0.13"]
    assert addresses(b) == ["10.244.0.14"]
    assert a.load_balancing_weight.value == 2
    assert b.load_balancing_weight.value == 1
    # Without outlier detection there is no failover: every locality at priority 0.
    assert (a.priority, b.priority) == (0, 0)


def test_lb_endpoint_fields():
    ep = cla(REVIEWS).endpoints[0].lb_endpoints[0]
    addr = ep.endpoint.address.socket_address
    assert (addr.address, addr.port_value) == ("10.244.0.12", 9080)
    assert ep.health_status == health_check_pb2.HEALTHY
    assert ep.load_balancing_weight.value == 1
    meta = ep.metadata.filter_metadata
    assert dict(meta["envoy.transport_socket_match"]) == {"tlsMode": "istio"}
    assert meta["istio"]["workload"] == "reviews-v1;default;reviews;v1;Kubernetes"


def test_subset_cluster_gets_only_matching_endpoints():
    out = cla(REVIEWS_V2)
    (group,) = out.endpoints
    assert addresses(group) == ["10.244.0.13"]
    assert group.load_balancing_weight.value == 1


def test_unknown_names_get_empty_assignments():
    for name in (
        "outbound|9080|v9|reviews.default.svc.cluster.local",  # subset not in the rule
        "outbound|9999||reviews.default.svc.cluster.local",  # no such port
        "outbound|9080||nope.default.svc.cluster.local",
        "inbound|9080||",
        "PassthroughCluster",
    ):
        out = cla(name)
        assert out.cluster_name == name and not out.endpoints, name


def test_unhealthy_and_draining_endpoints_are_left_out_and_weights_sum():
    eps = bookinfo_endpoints()
    for ep in eps:
        if ep.address == "10.244.0.12":
            ep.health = HealthStatus.UNHEALTHY
        if ep.address == "10.244.0.14":
            ep.health = HealthStatus.DRAINING
        if ep.address == "10.244.0.13":
            ep.weight = 5
    push = PushContext(parse_configs(DESTINATION_RULES_YAML), bookinfo_services(), eps)
    (group,) = cla(REVIEWS, push).endpoints
    assert addresses(group) == ["10.244.0.13"]
    assert group.lb_endpoints[0].load_balancing_weight.value == 5
    assert group.load_balancing_weight.value == 5


def test_dr_tls_other_than_istio_mutual_drops_tls_mode_metadata():
    configs = parse_configs(
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: DISABLE}}
"""
    )
    push = PushContext(configs, bookinfo_services(), bookinfo_endpoints())
    ep = cla(REVIEWS, push).endpoints[0].lb_endpoints[0]
    assert "envoy.transport_socket_match" not in ep.metadata.filter_metadata
    assert "istio" in ep.metadata.filter_metadata


def test_peer_authentication_disable_drops_tls_mode_metadata():
    push = bookinfo_push(
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-plain, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v3}}
  mtls: {mode: DISABLE}
"""
    )
    a, b = cla(REVIEWS, push).endpoints
    assert "envoy.transport_socket_match" in a.lb_endpoints[0].metadata.filter_metadata
    assert "envoy.transport_socket_match" not in b.lb_endpoints[0].metadata.filter_metadata


FAILOVER_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s}
"""


def test_default_locality_failover_needs_outlier_detection():
    push = PushContext(parse_configs(FAILOVER_RULE), bookinfo_services(), bookinfo_endpoints())
    a, b = cla(REVIEWS, push, proxy_in("us-east1-b")).endpoints
    # Same zone first, then the rest of the region.
    assert (locality(a), a.priority) == (ZONE_A, 1)
    assert (locality(b), b.priority) == (ZONE_B, 0)
    a, b = cla(REVIEWS, push, proxy_in("us-east1-a")).endpoints
    assert (a.priority, b.priority) == (0, 1)


def test_explicit_failover_demotes_other_regions():
    rule = (
        FAILOVER_RULE
        + """    loadBalancer:
      localityLbSetting:
        failover: [{from: us-east1, to: eu-west1}]
"""
    )
    eps = bookinfo_endpoints()
    for ep in eps:
        if ep.address == "10.244.0.13":
            ep.locality = "eu-west1/eu-west1-a"
        if ep.address == "10.244.0.14":
            ep.locality = "ap-south1/ap-south1-a"
    push = PushContext(parse_configs(rule), bookinfo_services(), eps)
    groups = {
        locality(g)[0]: g.priority for g in cla(REVIEWS, push, proxy_in("us-east1-a")).endpoints
    }
    # Own zone 0; the failover region next; a region not named by failover last.
    assert groups == {"us-east1": 0, "eu-west1": 1, "ap-south1": 2}


def test_distribute_rewrites_locality_weights():
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-east1/us-east1-a/*
          to: {"us-east1/us-east1-a/*": 80, "us-east1/us-east1-b/*": 20}
"""
    push = PushContext(parse_configs(rule), bookinfo_services(), bookinfo_endpoints())
    a, b = cla(REVIEWS, push, proxy_in("us-east1-a")).endpoints
    assert (a.load_balancing_weight.value, b.load_balancing_weight.value) == (80, 20)
    assert (a.priority, b.priority) == (0, 0)
    # A proxy the rule does not mention keeps the natural weights.
    a, b = cla(REVIEWS, push, proxy_in("us-east1-c")).endpoints
    assert (a.load_balancing_weight.value, b.load_balancing_weight.value) == (2, 1)


def test_failover_priority_splits_by_labels():
    rule = (
        FAILOVER_RULE
        + """    loadBalancer:
      localityLbSetting:
        failoverPriority: [version]
"""
    )
    push = PushContext(parse_configs(rule), bookinfo_services(), bookinfo_endpoints())
    proxy = sidecar_proxy()
    proxy.labels["version"] = "v2"
    groups = cla(REVIEWS, push, proxy).endpoints
    by_priority = {}
    for g in groups:
        by_priority.setdefault(g.priority, []).extend(addresses(g))
    assert by_priority == {0: ["10.244.0.13"], 1: ["10.244.0.12", "10.244.0.14"]}


def test_endpoint_generator_uses_node_locality_and_watched_names():
    conn = ConnectionInfo(
        conn_id="c1",
        node_id="sidecar~10.244.0.10~productpage-v1-0.default~default.svc.cluster.local",
        metadata={"LABELS": {"app": "productpage", "version": "v1"}},
        node=base_pb2.Node(locality=base_pb2.Locality(region="us-east1", zone="us-east1-b")),
    )
    push = PushContext(parse_configs(FAILOVER_RULE), bookinfo_services(), bookinfo_endpoints())
    gen = EndpointGenerator()
    resources = gen.generate(conn, {REVIEWS, REVIEWS_V2}, PushRequest(context=push))
    by_name = {r.name: r.message for r in resources}
    assert sorted(by_name) == sorted([REVIEWS, REVIEWS_V2])
    a, b = by_name[REVIEWS].endpoints
    assert (a.priority, b.priority) == (1, 0)  # the node is in us-east1-b
    assert gen.generate(conn, set(), PushRequest(context=push)) == []
    assert gen.generate(conn, {REVIEWS}, PushRequest()) is None
