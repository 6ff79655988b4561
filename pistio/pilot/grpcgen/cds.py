"""Clusters for proxyless gRPC clients (Istio's ``grpcgen/cds.go``).

gRPC's xDS client accepts far less of the Cluster message than Envoy: it NACKs an
``lb_policy`` other than ROUND_ROBIN, RING_HASH (or LEAST_REQUEST behind an experimental
flag), and reads nothing of Istio's sidecar extras (circuit breakers, transport socket
matches, protocol options, metadata). So each client gets minimal EDS clusters over ADS:
``outbound|<port>||<fqdn>`` and one per DestinationRule subset, named by the routes that
the client resolved, with round robin, or ring hash when the rule asks for a consistent
hash. TLS is off (Istio likewise applies only explicit ``ISTIO_MUTUAL``, through gRPC
certificate providers; TODO(security)).
"""

from __future__ import annotations

import logging

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2

from pistio.api import networking as net
from pistio.config.protocol import Protocol
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_traffic_policy import cluster_policy
from pistio.pilot.networking.route_clusters import outbound_cluster, parse_subset_key

Cluster = cluster_pb2.Cluster
log = logging.getLogger("pistio.grpcgen")

# gRPC caps ring sizes at 8M entries (A42); Envoy's default minimum is 1024.
DEFAULT_MIN_RING_SIZE = 1024


def build_grpc_clusters(
    push: PushContext, proxy: Proxy, names: set[str] | None = None
) -> list[Cluster]:
    """The requested outbound clusters (every outbound cluster when ``names`` is None), in
    service order, default cluster before its subsets. Unknown names are left out."""
    wanted = _requested_by_service(names) if names is not None else None
    out: list[Cluster] = []
    for svc in push.services_for(proxy):
        if wanted is not None and svc.hostname not in wanted:
            continue
        if svc.external_name:
            continue  # an alias: routes name the aliased host's clusters
        dr = push.destination_rule(proxy, svc.hostname)
        rule = dr.spec if dr is not None else None
        subsets = [s.name for s in rule.subsets] if rule is not None else []
        for port in svc.ports:
            if port.protocol is Protocol.UDP:
                continue
            for subset in ("", *subsets):
                name = outbound_cluster(svc.hostname, port.port, subset)
                if wanted is None or name in wanted[svc.hostname]:
                    out.append(_eds_cluster(name, cluster_policy(rule, port.port, subset)))
    return out


def _requested_by_service(names: set[str]) -> dict[str, set[str]]:
    """Requested outbound cluster names by host (Istio's ``newClusterFilter``)."""
    out: dict[str, set[str]] = {}
    for name in names:
        key = parse_subset_key(name)
        if key is not None and key[0] == "outbound":
            out.setdefault(key[3], set()).add(name)
    return out


def _eds_cluster(name: str, policy: net.TrafficPolicy | None) -> Cluster:
    """An EDS cluster whose endpoints come over ADS, named as its load assignment."""
    c = Cluster(name=name, type=Cluster.EDS, lb_policy=Cluster.ROUND_ROBIN)
    c.eds_cluster_config.service_name = name
    c.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    )
    _apply_load_balancer(c, policy.load_balancer if policy is not None else None)
    return c


def _apply_load_balancer(c: Cluster, lb: net.LoadBalancerSettings | None) -> None:
    """Round robin, or ring hash for any consistentHash (gRPC has no Maglev). Other simple
    algorithms are not available to gRPC: round robin stays, as in Istio."""
    if lb is None:
        return
    if lb.simple not in (None, "ROUND_ROBIN", "UNSPECIFIED"):
        log.debug("grpc cluster %s: loadBalancer %s not supported; round robin", c.name, lb.simple)
    ch = lb.consistent_hash
    if ch is None:
        return
    c.lb_policy = Cluster.RING_HASH
    size = ch.minimum_ring_size or DEFAULT_MIN_RING_SIZE
    if ch.ring_hash is not None and ch.ring_hash.minimum_ring_size:
        size = ch.ring_hash.minimum_ring_size
    c.ring_hash_lb_config.minimum_ring_size.value = size
