"""Listeners for proxyless gRPC clients (Istio's ``grpcgen/lds.go``).

gRPC's xDS client asks for listeners by target name: ``reviews:9080`` or
``reviews.default.svc.cluster.local:9080`` for the channels it dials, and
``xds.istio.io/grpc/lds/inbound/<ip>:<port>`` for the servers it runs. Client listeners are
API listeners (no socket): an HTTP connection manager whose routes come from RDS route
config ``outbound|<port>||<fqdn>``. gRPC supports only a few HTTP filters: fault and router.
Each requested spelling of a host gets its own listener, named as requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.http_filters import fault_filter, router_filter
from pistio.pilot.networking.listener_filters import socket_address
from pistio.pilot.networking.route_clusters import outbound_cluster
from pistio.pilot.networking.virtual_host import domain_name
from pistio.xds.any_codec import pack

SERVER_LISTENER_PREFIX = "xds.istio.io/grpc/lds/inbound/"


@dataclass
class _Requested:
    """Istio's ``listenerName``: the spellings a host was asked by, and the ports (empty =
    every port of the service)."""

    names: set[str] = field(default_factory=set)
    ports: set[int] | None = field(default_factory=set)

    def includes_port(self, port: int) -> bool:
        return not self.ports or port in self.ports


def split_host_port(name: str) -> tuple[str, int | None]:
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), int(port)
    return name, None


def _name_filter(names: set[str], proxy: Proxy) -> dict[str, _Requested]:
    """Requested outbound names by FQDN (and as written), as Istio's ``newListenerNameFilter``."""
    out: dict[str, _Requested] = {}
    for name in sorted(names):
        if name.startswith(SERVER_LISTENER_PREFIX):
            continue
        host, port = split_host_port(name)
        all_names = [host]
        fqdn = _try_find_fqdn(host, proxy)
        if fqdn:
            all_names.append(fqdn)
        for key in all_names:
            existing = out.get(key)
            entry = existing or _Requested()
            entry.names.add(host)
            if port is not None and (existing is None or entry.ports):
                assert entry.ports is not None
                entry.ports.add(port)
            elif port is None:
                entry.ports = set()
            out[key] = entry
    return out


def _try_find_fqdn(name: str, proxy: Proxy) -> str:
    """``foo`` → ``foo.<ns>.svc.cluster.local``; ``foo.ns`` / ``foo.ns.svc`` likewise."""
    if "." not in name:
        return f"{name}.{proxy.dns_domain}"
    for suffix in (proxy.namespace, f"{proxy.namespace}.svc"):
        if name.endswith("." + suffix) and proxy.dns_domain.startswith(suffix):
            return f"{name[: -len(suffix) - 1]}.{proxy.dns_domain}"
    return ""


def build_grpc_listeners(
    push: PushContext, proxy: Proxy, names: set[str] | None
) -> list[listener_pb2.Listener]:
    """Client API listeners for the requested names (every service when ``names`` is None),
    then server listeners for requested inbound names."""
    wanted = _name_filter(names, proxy) if names else None
    out: list[listener_pb2.Listener] = []
    for svc in push.services_for(proxy):
        if wanted is None:
            requested = _Requested(names={svc.hostname})
        elif svc.hostname in wanted:
            requested = wanted[svc.hostname]
        else:
            continue
        for host in sorted(requested.names):
            for port in svc.ports:
                if requested.includes_port(port.port):
                    out.append(_client_listener(host, svc.vip, port.port, svc.hostname))
    for name in sorted(n for n in names or () if n.startswith(SERVER_LISTENER_PREFIX)):
        listener = _server_listener(push, proxy, name)
        if listener is not None:
            out.append(listener)
    return out


def _client_listener(requested: str, vip: str, port: int, hostname: str) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(http_filters=[fault_filter(), router_filter()])
    hcm.rds.config_source.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    )
    hcm.rds.route_config_name = outbound_cluster(hostname, port)
    out = listener_pb2.Listener(
        name=domain_name(requested, port), address=socket_address(vip, port)
    )
    out.api_listener.api_listener.CopyFrom(pack(hcm))
    return out


def _server_listener(push: PushContext, proxy: Proxy, name: str) -> listener_pb2.Listener | None:
    """A gRPC server's listener: plaintext for now (TODO(security): mTLS via certificate
    provider instances, RBAC filters from AuthorizationPolicy)."""
    host, port = split_host_port(name[len(SERVER_LISTENER_PREFIX) :])
    if port is None:
        return None
    if not any(si.endpoint.port == port for si in push.service_instances(proxy)):
        return None  # the workload serves no service on this port
    route = route_pb2.RouteConfiguration(name="inbound")
    vhost = route.virtual_hosts.add(domains=["*"])
    vhost.routes.append(
        rc.Route(match=rc.RouteMatch(prefix="/"), non_forwarding_action=rc.NonForwardingAction())
    )
    hcm = hcm_pb2.HttpConnectionManager(route_config=route, http_filters=[router_filter()])
    chain = lc.FilterChain(
        name="inbound-plaintext",
        filters=[lc.Filter(name="inbound-hcmplaintext", typed_config=pack(hcm))],
    )
    return listener_pb2.Listener(
        name=name, address=socket_address(host, port), filter_chains=[chain]
    )
