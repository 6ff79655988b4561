"""Endpoints of a cluster as Envoy sees them: ClusterLoadAssignments for EDS, and the static
load assignments of DNS clusters.

Istio's ``pilot/pkg/xds/endpoints/endpoint_builder.go`` and
``pilot/pkg/networking/core/loadbalancer/loadbalancer.go``:

- endpoints are grouped by locality (``region/zone/subzone``), groups sorted by locality,
  each group weighted by the sum of its endpoints' weights;
- unhealthy and draining endpoints are left out (Istio's default, SendUnhealthyEndpoints off);
- a subset cluster only gets endpoints whose labels include the subset's labels;
- each endpoint carries metadata: ``envoy.transport_socket_match: {tlsMode: istio}`` for
  endpoints with a sidecar (this selects the mTLS socket of auto mTLS) and
  ``istio: {workload: "<name>;<ns>;<canonical name>;<canonical revision>;<cluster>"}`` for
  telemetry;
- locality load balancing relative to the calling proxy: ``distribute`` rewrites locality
  weights; failover (only with outlier detection, or Envoy would never fail over) assigns
  priorities by region/zone/subzone proximity, ``failover`` targets and
  ``failoverPriority`` labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from pistio.api import networking as net
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext, labels_match
from pistio.pilot.model.service import Endpoint, HealthStatus, Service, ServicePort
from pistio.pilot.networking.cluster_traffic_policy import (
    ISTIO_TLS_MODE,
    TLS_MODE_KEY,
    TRANSPORT_SOCKET_MATCH_KEY,
    cluster_policy,
    locality_lb_setting,
    subset_of,
)
from pistio.pilot.networking.route_clusters import parse_subset_key
from pistio.pilot.registry.workload import REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL, locality_of
from pistio.pilot.security.peer_authn import MtlsMode, peer_authentication_for

ISTIO_METADATA_KEY = "istio"
DEFAULT_CLUSTER_ID = "Kubernetes"

LABEL_NETWORK = "topology.istio.io/network"
LABEL_CANONICAL_NAME = "service.istio.io/canonical-name"
LABEL_CANONICAL_REVISION = "service.istio.io/canonical-revision"

_HEALTH = {
    HealthStatus.HEALTHY: health_check_pb2.HEALTHY,
    HealthStatus.UNHEALTHY: health_check_pb2.UNHEALTHY,
    HealthStatus.DRAINING: health_check_pb2.DRAINING,
}


# --- localities ----------------------------------------------------------------------------


def split_locality(label: str) -> tuple[str, str, str]:
    parts = (label.split("/") + ["", "", ""])[:3]
    return parts[0], parts[1], parts[2]


def locality_proto(label: str) -> base_pb2.Locality:
    region, zone, subzone = split_locality(label)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


def proxy_locality(proxy: Proxy) -> str:
    """The proxy's ``region/zone/subzone``: the node's locality, else its pod's topology labels."""
    return proxy.locality or locality_of(proxy.labels)


def locality_match(locality: base_pb2.Locality, pattern: str) -> bool:
    """Istio's LocalityMatch: ``region/zone/subzone`` where ``*`` (or a missing part below
    the region) matches anything."""
    region, zone, subzone = split_locality(pattern)
    return (
        (region == "*" or locality.region == region)
        and (zone in ("*", "") or locality.zone == zone)
        and (subzone in ("*", "") or locality.sub_zone == subzone)
    )


def lb_priority(proxy: base_pb2.Locality, ep: base_pb2.Locality) -> int:
    """0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
    if proxy.region != ep.region:
        return 3
    if proxy.zone != ep.zone:
        return 2
    return 0 if proxy.sub_zone == ep.sub_zone else 1


# --- one endpoint --------------------------------------------------------------------------


def canonical_service(labels: dict[str, str], workload_name: str) -> tuple[str, str]:
    """Istio's canonical service name and revision, from labels with the usual fallbacks."""
    name = (
        labels.get(LABEL_CANONICAL_NAME)
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload_name
    )
    revision = (
        labels.get(LABEL_CANONICAL_REVISION)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )
    return name, revision


def workload_metadata(ep: Endpoint, cluster_id: str = DEFAULT_CLUSTER_ID) -> str:
    """``workload;namespace;canonical name;canonical revision;cluster``; Istio leaves the
    default revision ``latest`` out."""
    name, revision = canonical_service(ep.labels, ep.workload_name)
    if revision == "latest":
        revision = ""
    return ";".join((ep.workload_name, ep.namespace, name, revision, cluster_id))


def lb_endpoint(ep: Endpoint, mtls_ready: bool) -> endpoint_components_pb2.LbEndpoint:
    """An Envoy LbEndpoint: address, health, weight and Istio's metadata."""
    out = endpoint_components_pb2.LbEndpoint(health_status=_HEALTH[ep.health])
    out.load_balancing_weight.value = max(ep.weight, 1)
    out.endpoint.address.CopyFrom(socket_address(ep.address, ep.port))
    meta = out.metadata.filter_metadata
    if mtls_ready and ep.tls_mode == ISTIO_TLS_MODE:
        meta[TRANSPORT_SOCKET_MATCH_KEY].CopyFrom(
            struct_pb2.Struct(fields={TLS_MODE_KEY: struct_pb2.Value(string_value=ep.tls_mode)})
        )
    meta[ISTIO_METADATA_KEY].CopyFrom(
        struct_pb2.Struct(fields={"workload": struct_pb2.Value(string_value=workload_metadata(ep))})
    )
    return out


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


# --- groups by locality --------------------------------------------------------------------


@dataclass(slots=True)
class LocalityGroup:
    """One LocalityLbEndpoints with the registry endpoints it was built from (failover
    priority compares their labels with the proxy's)."""

    label: str
    proto: endpoint_components_pb2.LocalityLbEndpoints
    endpoints: list[Endpoint] = field(default_factory=list)


def workload_mtls_disabled(push: PushContext, ep: Endpoint) -> bool:
    """PeerAuthentication says this endpoint's port does not accept mTLS (the effective mode
    the server side gets, :func:`pistio.pilot.security.peer_authn.peer_authentication_for`),
    so the client must not pick the mTLS socket for it (Istio's mtlsChecker)."""
    merged = peer_authentication_for(push, ep.namespace, ep.labels)
    return merged.mode_for_port(ep.port) is MtlsMode.DISABLE


def subset_labels(rule: net.DestinationRule | None, subset: str) -> dict[str, str] | None:
    """Labels a subset selects; {} for no subset; None for a subset the rule lacks."""
    if not subset:
        return {}
    found = subset_of(rule, subset)
    return dict(found.labels) if found is not None else None


def locality_groups(
    push: PushContext,
    service: Service,
    port: ServicePort,
    labels: dict[str, str],
    policy: net.TrafficPolicy | None,
    send_unhealthy: bool = False,
) -> list[LocalityGroup]:
    """The service port's endpoints matching ``labels``, grouped and sorted by locality."""
    # A rule that sets TLS other than ISTIO_MUTUAL means "not Istio mTLS" for every endpoint.
    dr_allows_mtls = policy is None or policy.tls is None or policy.tls.mode == "ISTIO_MUTUAL"
    groups: dict[str, LocalityGroup] = {}
    for ep in push.endpoints(service.hostname, port.name):
        if ep.health is HealthStatus.DRAINING:
            continue
        if ep.health is HealthStatus.UNHEALTHY and not send_unhealthy:
            continue
        if not ep.address or not labels_match(labels, ep.labels):
            continue
        mtls_ready = dr_allows_mtls and not workload_mtls_disabled(push, ep)
        group = groups.get(ep.locality)
        if group is None:
            proto = endpoint_components_pb2.LocalityLbEndpoints(
                locality=locality_proto(ep.locality)
            )
            group = groups[ep.locality] = LocalityGroup(ep.locality, proto)
        group.proto.lb_endpoints.append(lb_endpoint(ep, mtls_ready))
        group.endpoints.append(ep)
    out = [groups[k] for k in sorted(groups)]
    for g in out:
        g.proto.load_balancing_weight.value = min(
            sum(e.load_balancing_weight.value for e in g.proto.lb_endpoints), 2**32 - 1
        )
    return out


# --- locality load balancing ---------------------------------------------------------------


def apply_locality_lb(
    groups: list[LocalityGroup],
    proxy: Proxy,
    setting: net.LocalityLoadBalancerSetting | None,
    enable_failover: bool,
) -> list[endpoint_components_pb2.LocalityLbEndpoints]:
    """Istio's ApplyLocalityLoadBalancer relative to the calling proxy; returns the
    (possibly re-split) locality groups for the load assignment."""
    protos = [g.proto for g in groups]
    if setting is None or not groups:
        return protos
    locality = locality_proto(proxy_locality(proxy))
    if setting.distribute:
        _apply_locality_weights(locality, protos, setting.distribute)
    elif enable_failover:
        if setting.failover_priority:
            protos = _apply_failover_priorities(groups, proxy, setting.failover_priority)
            if setting.failover:
                _apply_locality_failover(locality, protos, setting.failover)
        else:
            _apply_locality_failover(locality, protos, setting.failover)
    return protos


def _apply_locality_weights(
    locality: base_pb2.Locality,
    protos: list[endpoint_components_pb2.LocalityLbEndpoints],
    distribute: list[net.LocalityDistribute],
) -> None:
    for rule in distribute:
        if not locality_match(locality, rule.from_):
            continue
        unmatched = set(range(len(protos)))
        for target, weight in rule.to.items():
            original = {}
            for i in sorted(unmatched):
                if locality_match(protos[i].locality, target):
                    original[i] = (
                        protos[i].load_balancing_weight.value
                        if protos[i].HasField("load_balancing_weight")
                        else 1
                    )
            unmatched -= set(original)
            total = sum(original.values())
            for i, w in original.items():
                share = w * weight / total if total else 0
                if share > 0:
                    protos[i].load_balancing_weight.value = math.ceil(share)
        # Localities the rule gives no weight receive no traffic.
        for i in unmatched:
            del protos[i].lb_endpoints[:]
        return


def _apply_locality_failover(
    locality: base_pb2.Locality,
    protos: list[endpoint_components_pb2.LocalityLbEndpoints],
    failover: list[net.LocalityFailover],
) -> None:
    by_priority: dict[int, list[int]] = {}
    for i, group in enumerate(protos):
        priority = lb_priority(locality, group.locality)
        if priority == 3:
            for rule in failover:
                if rule.from_ == locality.region:
                    if group.locality.region != rule.to:
                        priority = 4
                    break
        # Keep priorities already set by failoverPriority as the major key.
        combined = group.priority * 5 + priority
        group.priority = combined
        by_priority.setdefault(combined, []).append(i)
    _compact_priorities(protos, by_priority)


def _apply_failover_priorities(
    groups: list[LocalityGroup], proxy: Proxy, failover_priority: list[str]
) -> list[endpoint_components_pb2.LocalityLbEndpoints]:
    """Split each locality by how many of the ``failoverPriority`` labels an endpoint shares
    with the proxy (in order); ``label=value`` compares against a fixed value."""
    proxy_labels = _with_topology(dict(proxy.labels), proxy_locality(proxy), "")
    if not proxy_labels:
        return [g.proto for g in groups]
    names: list[str] = []
    overrides: dict[str, str] = {}
    for entry in failover_priority:
        name, sep, value = entry.partition("=")
        names.append(name)
        if sep:
            overrides[name] = value
    lowest = len(names)
    out: list[endpoint_components_pb2.LocalityLbEndpoints] = []
    for group in groups:
        split: dict[int, list[int]] = {}
        for i, ep in enumerate(group.endpoints):
            ep_labels = _with_topology(dict(ep.labels), ep.locality, ep.network)
            priority = 0
            for j, name in enumerate(names):
                wanted = overrides.get(name, proxy_labels.get(name))
                if wanted != ep_labels.get(name):
                    priority = lowest - j
                    break
            split.setdefault(priority, []).append(i)
        for priority in sorted(split):
            part = endpoint_components_pb2.LocalityLbEndpoints()
            part.CopyFrom(group.proto)
            del part.lb_endpoints[:]
            part.priority = priority
            for i in split[priority]:
                part.lb_endpoints.append(group.proto.lb_endpoints[i])
            part.load_balancing_weight.value = sum(
                e.load_balancing_weight.value for e in part.lb_endpoints
            )
            out.append(part)
    by_priority: dict[int, list[int]] = {}
    for i, part in enumerate(out):
        by_priority.setdefault(part.priority, []).append(i)
    _compact_priorities(out, by_priority)
    return out


def _compact_priorities(
    protos: list[endpoint_components_pb2.LocalityLbEndpoints], by_priority: dict[int, list[int]]
) -> None:
    """Envoy needs priorities 0..N without gaps."""
    for rank, priority in enumerate(sorted(by_priority)):
        for i in by_priority[priority]:
            protos[i].priority = rank


def _with_topology(labels: dict[str, str], locality: str, network: str) -> dict[str, str]:
    """Istio adds topology labels from the locality/network to workload labels."""
    region, zone, subzone = split_locality(locality)
    for key, value in (
        (REGION_LABEL, region),
        (ZONE_LABEL, zone),
        (SUBZONE_LABEL, subzone),
        (LABEL_NETWORK, network),
    ):
        if value:
            labels.setdefault(key, value)
    return labels


# --- whole assignments ---------------------------------------------------------------------


def visible_service(push: PushContext, proxy: Proxy, hostname: str) -> Service | None:
    svc = push.service(hostname, proxy.namespace)
    if svc is None or not svc.visible_to(proxy.namespace):
        return None
    return svc


def build_cluster_load_assignment(
    push: PushContext, proxy: Proxy, cluster_name: str
) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS for ``outbound|port|subset|host``, relative to ``proxy`` (locality priorities).

    An empty assignment when the service, port or subset is unknown: the proxy asked, so it
    gets an answer, and a cluster without endpoints fails fast instead of waiting."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    key = parse_subset_key(cluster_name)
    if key is None or key[0] != "outbound":
        return cla
    _, port_number, subset, host = key
    svc = visible_service(push, proxy, host)
    port = svc.port_by_number(port_number) if svc is not None else None
    if svc is None or port is None:
        return cla
    dr = push.destination_rule(proxy, host)
    rule = dr.spec if dr is not None else None
    labels = subset_labels(rule, subset)
    if labels is None:
        return cla
    policy = cluster_policy(rule, port_number, subset)
    groups = locality_groups(push, svc, port, labels, policy)
    if not groups:
        return cla
    setting = locality_lb_setting(push.mesh, policy.load_balancer if policy else None)
    enable_failover = policy is not None and policy.outlier_detection is not None
    cla.endpoints.extend(apply_locality_lb(groups, proxy, setting, enable_failover))
    return cla
