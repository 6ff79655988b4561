"""ClusterLoadAssignment compilation and Envoy's priority / locality arithmetic, checked
against the tables of Envoy's "Priority levels" documentation."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment
from pistio.proxy.config.endpoints import (
    Locality,
    availability,
    choose_priority,
    compile_load_assignment,
    effective_locality_weights,
    priority_load,
    total_panic_load,
)
from pistio.proxy.config.errors import ConfigError
from tests.unit.pilot.bookinfo_fixture import (
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)
from tests.unit.pilot.test_endpoints import FAILOVER_RULE, proxy_in

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def test_every_bookinfo_cla_compiles():
    push = bookinfo_push()
    proxy = sidecar_proxy()
    names = [c.name for c in build_clusters(push, proxy) if c.HasField("eds_cluster_config")]
    assert len(names) > 10
    for name in names:
        out = compile_load_assignment(build_cluster_load_assignment(push, proxy, name))
        assert out.cluster_name == name


def test_reviews_assignment():
    out = compile_load_assignment(
        build_cluster_load_assignment(bookinfo_push(), sidecar_proxy(), REVIEWS)
    )
    (p0,) = out.priorities
    a, b = p0.localities
    assert a.locality == Locality("us-east1", "us-east1-a") and a.weight == 2
    assert b.locality == Locality("us-east1", "us-east1-b") and b.weight == 1
    assert [e.address for e in p0.endpoints] == ["10.244.0.12", "10.244.0.13", "10.244.0.14"]
    e = p0.endpoints[0]
    assert (e.port, e.weight, e.eds_healthy, e.tls_mode) == (9080, 1, True, "istio")
    assert e.metadata["istio"]["workload"] == "reviews-v1;default;reviews;v1;Kubernetes"
    assert e.address_key == "10.244.0.12:9080"
    assert out.overprovisioning_factor == 140


def test_failover_priorities_compile_densely():
    push = PushContext(parse_configs(FAILOVER_RULE), bookinfo_services(), bookinfo_endpoints())
    out = compile_load_assignment(
        build_cluster_load_assignment(push, proxy_in("us-east1-b"), REVIEWS)
    )
    assert [[e.address for e in hs.endpoints] for hs in out.priorities] == [
        ["10.244.0.14"], ["10.244.0.12", "10.244.0.13"]
    ]
    assert [e.priority for e in out.endpoints] == [0, 1, 1]


def test_gaps_in_priorities_become_empty_sets_and_policy_is_read():
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    group = cla.endpoints.add(priority=2)
    ep = group.lb_endpoints.add(health_status=health_check_pb2.DEGRADED)
    ep.endpoint.address.socket_address.address = "10.0.0.1"
    ep.endpoint.address.socket_address.port_value = 80
    ep.load_balancing_weight.value = 7
    cla.policy.overprovisioning_factor.value = 100
    out = compile_load_assignment(cla)
    assert [len(p.endpoints) for p in out.priorities] == [0, 0, 1]
    e = out.priorities[2].endpoints[0]
    assert (e.weight, e.eds_degraded, e.eds_healthy) == (7, True, False)
    assert out.overprovisioning_factor == 100


def test_unsupported_cla_fields_are_nacked():
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    cla.policy.drop_overloads.add(category="x")
    ep = cla.endpoints.add().lb_endpoints.add()
    ep.endpoint.address.pipe.path = "/tmp/sock"
    with pytest.raises(ConfigError) as err:
        compile_load_assignment(cla)
    assert sorted(err.value.problems) == [
        "ClusterLoadAssignment c: endpoints[0].lb_endpoints[0].endpoint.address.pipe: "
        "field not supported by pistio",
        "ClusterLoadAssignment c: endpoints[0].lb_endpoints[0].endpoint.address: only "
        "socket_address is supported",
        "ClusterLoadAssignment c: policy.drop_overloads: field not supported by pistio",
    ]


# --- Envoy's priority level tables -----------------------------------------------------------


def health(percent_healthy: int) -> int:
    return availability(percent_healthy, 100, 140)


@pytest.mark.parametrize(
    ("p0", "expected"),
    [(100, (100, 0)), (72, (100, 0)), (71, (99, 1)), (50, (70, 30)), (25, (35, 65)),
     (0, (0, 100))],
)
def test_two_levels_p1_fully_healthy(p0, expected):
    assert priority_load([health(p0), health(100)]).healthy == expected


@pytest.mark.parametrize(
    ("p0", "p1", "expected"),
    [(100, 100, (100, 0)), (72, 72, (100, 0)), (71, 71, (99, 1)), (50, 50, (70, 30)),
     (25, 100, (35, 65)), (25, 25, (50, 50))],
)
def test_two_levels(p0, p1, expected):
    assert priority_load([health(p0), health(p1)]).healthy == expected


@pytest.mark.parametrize(
    ("healths", "expected"),
    [((100, 100, 100), (100, 0, 0)), ((72, 72, 100), (100, 0, 0)), ((71, 71, 100), (99, 1, 0)),
     ((50, 50, 100), (70, 30, 0)), ((25, 100, 100), (35, 65, 0)),
     ((25, 25, 100), (35, 35, 30)),
     # The docs' table rounds this row to 36/36/28; Envoy's integer arithmetic gives each
     # level 35/35/28 and hands the 2% residue to the first healthy level.
     ((25, 25, 20), (37, 35, 28))],
)
def test_three_levels(healths, expected):
    assert priority_load([health(h) for h in healths]).healthy == expected


def test_degraded_tier_takes_what_healthy_cannot():
    # Envoy's comment example: health 10/20/10, degraded 20/10/0 → healthy 16/28/14 (with the
    # 2% residue on the first) and degraded 28/14/0.
    load = priority_load([10, 20, 10], [20, 10, 0])
    assert load.healthy == (16, 28, 14)
    assert load.degraded == (28, 14, 0)


def test_total_panic_and_choose_priority():
    assert total_panic_load([2, 1]).healthy == (67, 33)
    load = priority_load([health(50), health(100)])  # 70 / 30
    assert choose_priority(load, 0) == (0, False)
    assert choose_priority(load, 69) == (0, False)
    assert choose_priority(load, 70) == (1, False)
    assert choose_priority(priority_load([0, 0]), 99) == (0, False)


def test_effective_locality_weights_follow_availability():
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    for zone, weight, n in (("a", 2, 4), ("b", 1, 2)):
        group = cla.endpoints.add()
        group.locality.zone = zone
        group.load_balancing_weight.value = weight
        for i in range(n):
            ep = group.lb_endpoints.add()
            ep.endpoint.address.socket_address.address = f"10.0.{zone == 'b'}.{i}"
    groups = compile_load_assignment(cla).priorities[0].localities
    assert effective_locality_weights(groups, [4, 2], 140) == (2.0, 1.0)
    # Zone a at 50% health: 2 × min(1, 1.4 × 0.5) = 1.4.
    assert effective_locality_weights(groups, [2, 2], 140) == pytest.approx((1.4, 1.0))
    assert effective_locality_weights(groups, [0, 2], 140) == (0.0, 1.0)
