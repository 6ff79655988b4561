"""Load balancer policies: exact weighted round robin, least request's preference for idle
hosts, ring hash stability, maglev balance, exclusion for retries, ejection, panic, priority
spillover and locality weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment
from pistio.proxy.config.cluster_config import LbPolicy, LbSettings, SlowStartConfig
from pistio.proxy.config.endpoints import LoadAssignment, compile_load_assignment
from pistio.proxy.upstream.host import Host
from pistio.proxy.upstream.load_balancer import EdfScheduler, LoadBalancer
from pistio.proxy.upstream.maglev import MaglevTable
from pistio.proxy.upstream.ring_hash import RingHash
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, sidecar_proxy


def assignment(
    *priorities: list[tuple[str, int]],
    locality_weights: tuple[int, ...] = (),
) -> LoadAssignment:
    """Hosts as ``(ip, weight)`` per priority; with ``locality_weights`` each host of P0 is its
    own locality of that weight."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    for p, hosts in enumerate(priorities):
        groups = []
        if locality_weights and p == 0:
            for i, lw in enumerate(locality_weights):
                g = cla.endpoints.add(priority=p)
                g.locality.zone = f"z{i}"
                g.load_balancing_weight.value = lw
                groups.append(g)
        else:
            groups = [cla.endpoints.add(priority=p)]
        for i, (ip, weight) in enumerate(hosts):
            g = groups[i] if len(groups) > 1 else groups[0]
            ep = g.lb_endpoints.add()
            ep.endpoint.address.socket_address.address = ip
            ep.endpoint.address.socket_address.port_value = 80
            ep.load_balancing_weight.value = weight
    return compile_load_assignment(cla)


def hosts(n: int, weight: int = 1) -> list[tuple[str, int]]:
    return [(f"10.0.0.{i}", weight) for i in range(1, n + 1)]


def lb_for(policy: LbPolicy, a: LoadAssignment, seed: int = 7, **kw) -> LoadBalancer:
    return LoadBalancer(LbSettings(policy=policy, **kw), a, random.Random(seed))


def ips(picks) -> Counter:
    return Counter(h.address for h in picks)


# --- round robin ---------------------------------------------------------------------------


def test_edf_schedule_is_envoys_weighted_round_robin():
    weights = {"a": 1, "b": 2, "c": 3}
    edf = EdfScheduler(list(weights), weights.__getitem__)
    # Deadlines 1/w: c(1/3) b(1/2) c(2/3) then a, b, c all at 1 — ties in insertion order.
    assert [edf.pick() for _ in range(12)] == list("cbcabc") * 2


def test_weighted_round_robin_exact_shares():
    lb = lb_for(LbPolicy.ROUND_ROBIN, assignment([("10.0.0.1", 1), ("10.0.0.2", 2),
                                                  ("10.0.0.3", 3)]))
    picks = [lb.choose_host() for _ in range(600)]
    assert ips(picks) == {"10.0.0.1": 100, "10.0.0.2": 200, "10.0.0.3": 300}
    # Periodic with period 6: every window of 6 holds exactly 1, 2 and 3 picks.
    for start in range(0, 600, 6):
        assert sorted(ips(picks[start:start + 6]).values()) == [1, 2, 3]


def test_unweighted_round_robin_cycles_in_order():
    lb = lb_for(LbPolicy.ROUND_ROBIN, assignment(hosts(4)))
    seq = [lb.choose_host().address for _ in range(8)]
    assert seq[:4] == seq[4:] and len(set(seq[:4])) == 4
    first = int(seq[0].rsplit(".", 1)[1])
    assert seq[:4] == [f"10.0.0.{(first - 1 + i) % 4 + 1}" for i in range(4)]


# --- least request -------------------------------------------------------------------------


def test_least_request_prefers_idle_hosts():
    lb = lb_for(LbPolicy.LEAST_REQUEST, assignment(hosts(2)))
    busy = next(h for h in lb.hosts if h.address == "10.0.0.1")
    busy.active_requests = 10
    share = ips(lb.choose_host() for _ in range(4000))["10.0.0.2"] / 4000
    # Power of two choices: the busy host wins only when both samples are it (1/4).
    assert share == pytest.approx(0.75, abs=0.03)
    lb3 = lb_for(LbPolicy.LEAST_REQUEST, assignment(hosts(4)), choice_count=4)
    for h in lb3.hosts:
        h.active_requests = 0 if h.address == "10.0.0.4" else 5
    share = ips(lb3.choose_host() for _ in range(4000))["10.0.0.4"] / 4000
    assert share == pytest.approx(1 - (3 / 4) ** 4, abs=0.03)


def test_weighted_least_request_divides_weight_by_active_requests():
    lb = lb_for(LbPolicy.LEAST_REQUEST, assignment([("10.0.0.1", 2), ("10.0.0.2", 1)]))
    heavy = next(h for h in lb.hosts if h.address == "10.0.0.1")
    assert ips(lb.choose_host() for _ in range(300)) == pytest.approx(
        {"10.0.0.1": 200, "10.0.0.2": 100}, abs=2
    )
    heavy.active_requests = 3  # effective weight 2 / 4 = 0.5 against 1
    counts = ips(lb.choose_host() for _ in range(300))
    assert counts["10.0.0.2"] == pytest.approx(200, abs=3)


def test_random_is_uniform():
    lb = lb_for(LbPolicy.RANDOM, assignment(hosts(4)))
    counts = ips(lb.choose_host() for _ in range(8000))
    assert all(c == pytest.approx(2000, rel=0.08) for c in counts.values())


# --- ring hash and maglev ------------------------------------------------------------------


def host_objects(n: int, weight: int = 1) -> list[Host]:
    a = assignment(hosts(n, weight))
    return [Host(e) for e in a.endpoints]


def test_ring_size_follows_minimum_and_weights():
    ring = RingHash(host_objects(3), min_ring_size=1024)
    assert len(ring) == 1026  # ceil(1024 / 3) × 3
    weighted = [Host(e) for e in assignment([("10.0.0.1", 1), ("10.0.0.2", 3)]).endpoints]
    ring = RingHash(weighted, min_ring_size=100)
    assert len(ring) == 100  # the lightest host (1/4) gets 25 entries, the other 75
    keys = range(0, 2**64, 2**64 // 4000)
    assert ips(ring.pick(k) for k in keys)["10.0.0.2"] / 4000 == pytest.approx(0.75, abs=0.08)
    assert len(RingHash(host_objects(3), min_ring_size=1024, max_ring_size=500)) == 500


def test_ring_hash_removal_moves_about_one_nth_of_keys():
    all_hosts = host_objects(10)
    before = RingHash(all_hosts)
    after = RingHash([h for h in all_hosts if h.address != "10.0.0.4"])
    keys = [random.Random(i).getrandbits(64) for i in range(5000)]
    on_removed = [k for k in keys if before.pick(k).address == "10.0.0.4"]
    survivors = [k for k in keys if before.pick(k).address != "10.0.0.4"]
    assert len(on_removed) / len(keys) == pytest.approx(0.1, abs=0.04)
    # The ring is rescaled for 9 hosts (114 entries each instead of 103), so the survivors'
    # new entries take a few more keys, as in Envoy; the rest stay where they were.
    stayed = sum(1 for k in survivors if after.pick(k) is before.pick(k))
    assert stayed / len(survivors) > 0.9
    moved = len(on_removed) + len(survivors) - stayed
    assert moved / len(keys) < 2 / 10


def test_ring_hash_lb_is_sticky_per_hash_key():
    lb = lb_for(LbPolicy.RING_HASH, assignment(hosts(5)))
    for key in (1, 2**40, 2**63 + 5):
        first = lb.choose_host(hash_key=key)
        assert all(lb.choose_host(hash_key=key) is first for _ in range(20))


def test_maglev_balance_and_weights():
    table = MaglevTable(host_objects(5), 65537)
    counts = table.counts()
    assert sum(counts.values()) == 65537
    assert all(c == pytest.approx(65537 / 5, rel=0.02) for c in counts.values())
    weighted = [Host(e) for e in assignment([("10.0.0.1", 2), ("10.0.0.2", 1)]).endpoints]
    counts = MaglevTable(weighted, 65537).counts()
    assert counts["10.0.0.1:80"] / counts["10.0.0.2:80"] == pytest.approx(2.0, rel=0.02)


def test_maglev_disruption_is_small():
    all_hosts = host_objects(10)
    before = MaglevTable(all_hosts, 65537)
    after = MaglevTable([h for h in all_hosts if h.address != "10.0.0.4"], 65537)
    keys = range(0, 65537 * 50, 50)
    moved = sum(1 for k in keys if before.pick(k).address != "10.0.0.4"
                and after.pick(k) is not before.pick(k))
    assert moved / len(keys) < 0.05


# --- retries, ejection, panic, priorities, localities ----------------------------------------


@pytest.mark.parametrize("policy", [LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST,
                                    LbPolicy.RANDOM, LbPolicy.RING_HASH, LbPolicy.MAGLEV])
def test_exclude_previous_hosts(policy):
    lb = lb_for(policy, assignment(hosts(3)))
    for key in (None, 12345):
        first = lb.choose_host(hash_key=key)
        for _ in range(20):
            assert lb.choose_host(hash_key=key, exclude={first}) is not first
    everything = set(lb.hosts)
    assert lb.choose_host(exclude=everything) in everything


def test_ejected_hosts_are_skipped_and_panic_uses_all():
    lb = lb_for(LbPolicy.ROUND_ROBIN, assignment(hosts(4)))
    lb.hosts[0].ejected = True
    lb.refresh()
    assert "10.0.0.1" not in ips(lb.choose_host() for _ in range(40))
    # 2 of 4 healthy = 50%: not below the 50% threshold, still no panic.
    lb.hosts[1].ejected = True
    lb.refresh()
    assert set(ips(lb.choose_host() for _ in range(40))) == {"10.0.0.3", "10.0.0.4"}
    # 1 of 4 = 25% < 50%: panic, every host takes traffic again.
    lb.hosts[2].ejected = True
    lb.refresh()
    assert lb.priority_states[0].panic
    assert len(ips(lb.choose_host() for _ in range(40))) == 4


def test_panic_threshold_zero_disables_panic():
    lb = lb_for(LbPolicy.ROUND_ROBIN, assignment(hosts(4)), healthy_panic_threshold=0)
    for h in lb.hosts:
        h.ejected = True
    lb.refresh()
    assert lb.choose_host() is None


def test_priority_spillover_follows_health():
    lb = lb_for(LbPolicy.ROUND_ROBIN, assignment(hosts(4), [("10.0.1.1", 1), ("10.0.1.2", 1)]))
    assert {h.address[:7] for h in (lb.choose_host() for _ in range(100))} == {"10.0.0."}
    lb.hosts[0].ejected = lb.hosts[1].ejected = True  # P0 50% healthy → 70% of traffic
    lb.refresh()
    assert lb.load.healthy == (70, 30)
    picks = [lb.choose_host() for _ in range(5000)]
    share_p1 = sum(1 for h in picks if h.priority == 1) / len(picks)
    assert share_p1 == pytest.approx(0.30, abs=0.03)
    assert not any(h.ejected for h in picks)


def test_locality_weighted_balancing():
    a = assignment([("10.0.0.1", 1), ("10.0.0.2", 1)], locality_weights=(3, 1))
    lb = lb_for(LbPolicy.ROUND_ROBIN, a, locality_weighted=True)
    assert ips(lb.choose_host() for _ in range(400)) == {"10.0.0.1": 300, "10.0.0.2": 100}
    plain = lb_for(LbPolicy.ROUND_ROBIN, a)
    assert ips(plain.choose_host() for _ in range(400)) == {"10.0.0.1": 200, "10.0.0.2": 200}


def test_bookinfo_reviews_locality_weights():
    cla = compile_load_assignment(build_cluster_load_assignment(
        bookinfo_push(), sidecar_proxy(), "outbound|9080||reviews.default.svc.cluster.local"
    ))
    lb = lb_for(LbPolicy.ROUND_ROBIN, cla, locality_weighted=True)
    # Zone a (weight 2, two pods) and zone b (weight 1, one pod): each pod gets a third.
    counts = ips(lb.choose_host() for _ in range(300))
    assert counts == {"10.244.0.12": 100, "10.244.0.13": 100, "10.244.0.14": 100}


def test_original_dst_uses_the_connection_destination():
    t = [100.0]
    lb = LoadBalancer(LbSettings(policy=LbPolicy.CLUSTER_PROVIDED), assignment([]),
                      random.Random(1), now=lambda: t[0])
    host = lb.choose_host(original_dst=("10.1.2.3", 8080))
    assert (host.address, host.port) == ("10.1.2.3", 8080)
    assert lb.choose_host(original_dst=("10.1.2.3", 8080)) is host
    assert lb.choose_host() is None
    t[0] += 10
    assert lb.cleanup_original_dst_hosts(5.0) == 1


def test_eds_update_keeps_ejection_and_slow_starts_new_hosts():
    t = [0.0]
    settings = LbSettings(policy=LbPolicy.ROUND_ROBIN, slow_start=SlowStartConfig(10.0))
    lb = LoadBalancer(settings, assignment(hosts(2)), random.Random(3), now=lambda: t[0])
    lb.hosts[0].ejected = True
    lb.update(assignment(hosts(3)))
    assert lb.hosts[0].ejected and not lb.hosts[2].ejected
    # The new host is at 10% weight when just added, full weight after the window.
    t[0] = 0.0
    counts = ips(lb.choose_host() for _ in range(110))
    assert counts["10.0.0.3"] == pytest.approx(10, abs=2)
    # After the window both healthy hosts share equally (the EDF queue catches up within a
    # few picks, as Envoy's does).
    t[0] = 20.0
    counts = ips(lb.choose_host() for _ in range(400))
    assert counts["10.0.0.3"] == pytest.approx(200, abs=8)


def test_empty_cluster_has_no_host():
    lb = lb_for(LbPolicy.LEAST_REQUEST, assignment([]))
    assert lb.choose_host() is None
