"""Cluster names routes and listeners point at, as Istio spells them.

``outbound|<port>|<subset>|<host>`` (Istio's ``model.BuildSubsetKey``), ``inbound|<port>||``,
and the static clusters every sidecar has: ``PassthroughCluster``, ``BlackHoleCluster``,
``InboundPassthroughCluster``. Also where unknown outbound traffic goes (the outbound
traffic policy: ``ALLOW_ANY`` → PassthroughCluster or the egress proxy, ``REGISTRY_ONLY`` →
BlackHoleCluster), read from the proxy's Sidecar first, then the mesh config.
"""

from __future__ import annotations

from pistio.api import networking as net
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Service

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"
UNKNOWN_SERVICE = "UnknownService"


def subset_key(direction: str, subset: str, host: str, port: int) -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local``."""
    return f"{direction}|{port}|{subset}|{host}"


def outbound_cluster(host: str, port: int, subset: str = "") -> str:
    return subset_key("outbound", subset, host, port)


def inbound_cluster(port: int) -> str:
    """``inbound|9080||``: Istio's inbound cluster names carry only the target port."""
    return subset_key("inbound", "", "", port)


def parse_subset_key(name: str) -> tuple[str, int, str, str] | None:
    """(direction, port, subset, host) of a cluster name, None when it is not one."""
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def destination_cluster(
    destination: net.Destination | None, service: Service | None, listener_port: int, host: str
) -> str:
    """Istio's ``GetDestinationCluster``: the destination's port, else the service's only
    port, else the listener port. ``host`` is the destination host resolved to an FQDN."""
    if destination is None or not host:
        return UNKNOWN_SERVICE
    if service is not None and service.external_name:
        host = service.external_name
    port = listener_port
    if destination.port is not None and destination.port.number:
        port = destination.port.number
    elif service is not None and len(service.ports) == 1:
        port = service.ports[0].port
    return outbound_cluster(host, port, destination.subset)


def is_allow_any(push: PushContext, proxy: Proxy) -> bool:
    """True when the proxy may reach destinations outside the registry (``ALLOW_ANY``)."""
    return _outbound_policy(push, proxy).mode == "ALLOW_ANY"


def egress_cluster(push: PushContext, proxy: Proxy) -> str:
    """Where traffic to unknown destinations goes: PassthroughCluster (or the Sidecar's
    egress proxy) under ALLOW_ANY, BlackHoleCluster under REGISTRY_ONLY."""
    policy = _outbound_policy(push, proxy)
    if policy.mode != "ALLOW_ANY":
        return BLACKHOLE_CLUSTER
    egress = policy.egress_proxy
    if egress is not None and egress.host:
        return destination_cluster(egress, None, 0, egress.host)
    return PASSTHROUGH_CLUSTER


def _outbound_policy(push: PushContext, proxy: Proxy) -> net.OutboundTrafficPolicy:
    sidecar = push.sidecar_for(proxy)
    if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
        return sidecar.spec.outbound_traffic_policy
    mesh_policy = push.mesh.outbound_traffic_policy
    # The mesh config's OutboundTrafficPolicy has the same fields (mode; no egress proxy).
    mode = mesh_policy.mode if mesh_policy is not None else "ALLOW_ANY"
    return net.OutboundTrafficPolicy(mode=mode)
