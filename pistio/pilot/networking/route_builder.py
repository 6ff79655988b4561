"""Outbound and inbound HTTP route configurations of a sidecar (Istio's ``httproute.go``,
``BuildSidecarOutboundVirtualHosts`` and ``route.BuildSidecarVirtualHostWrapper``).

An outbound route configuration is named after the listener port (``9080``) and holds one
virtual host per service reachable on that port (``reviews.default.svc.cluster.local:9080``),
plus a catch-all: ``allow_any`` (``*`` → PassthroughCluster) under ALLOW_ANY, ``block_all``
(502) under REGISTRY_ONLY. A service with a VirtualService gets the VirtualService's
routes; others get one default route to ``outbound|<port>||<host>``. A sniffed listener's
route configuration is named ``<host>:<port>`` and holds only that service's virtual host,
matching any authority.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import (
    MESH_GATEWAY,
    PushContext,
    VirtualServiceConfig,
    host_matches,
)
from pistio.pilot.model.service import Service, ServicePort
from pistio.pilot.networking.cluster_traffic_policy import hash_policy_for
from pistio.pilot.networking.route_clusters import (
    egress_cluster,
    is_allow_any,
    outbound_cluster,
)
from pistio.pilot.networking.route_delegate import merged_http_routes
from pistio.pilot.networking.route_translation import (
    NO_TIMEOUT,
    RouteContext,
    build_default_inbound_route,
    build_default_outbound_route,
    is_catch_all_route,
    trace_operation,
    translate_route,
)
from pistio.pilot.networking.virtual_host import (
    NO_PORT,
    append_domain_port,
    domain_name,
    ignores_port,
    virtual_host_domains,
)

# Istio's DefaultMaxDirectResponseBodySizeBytes: 1 MiB, the limit validation enforces.
MAX_DIRECT_RESPONSE_BODY_BYTES = 1024 * 1024
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"
INBOUND_VHOST_PREFIX = "inbound|http|"


@dataclass
class VirtualHostWrapper:
    """Routes for one port, and the hosts they serve (Istio's ``VirtualHostWrapper``)."""

    port: int
    services: list[Service] = field(default_factory=list)
    virtual_service_hosts: list[str] = field(default_factory=list)
    routes: list[rc.Route] = field(default_factory=list)


def is_http_or_sniffed(port: ServicePort) -> bool:
    return port.protocol.is_http or port.protocol.is_unsupported


def parse_route_name(name: str) -> tuple[int, bool] | None:
    """(listener port, sniffed) of an outbound route name: ``9080`` or ``host:9080``."""
    host, sep, port = name.rpartition(":")
    text = port if sep else name
    if not text.isdigit():
        return None
    return int(text), bool(sep and host)


def build_sidecar_outbound_route_config(
    push: PushContext, proxy: Proxy, route_name: str
) -> route_pb2.RouteConfiguration:
    """The route configuration ``route_name`` for a sidecar; empty for names it does not know
    (Istio answers every requested name)."""
    parsed = parse_route_name(route_name)
    if parsed is None:
        return route_pb2.RouteConfiguration(
            name=route_name, validate_clusters=wrappers_pb2.BoolValue(value=False)
        )
    listener_port, sniffed = parsed
    vhosts = build_sidecar_outbound_virtual_hosts(push, proxy, listener_port)
    if sniffed:
        vhosts = virtual_hosts_for_sniffed_port(vhosts, route_name)
    vhosts.sort(key=lambda v: v.name)
    if not sniffed:
        vhosts.append(catch_all_virtual_host(push, proxy))
    out = route_pb2.RouteConfiguration(
        name=route_name,
        virtual_hosts=vhosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        ignore_port_in_host_matching=True,
    )
    out.max_direct_response_body_size_bytes.value = MAX_DIRECT_RESPONSE_BODY_BYTES
    return out


def build_sidecar_outbound_virtual_hosts(
    push: PushContext, proxy: Proxy, listener_port: int
) -> list[rc.VirtualHost]:
    """Virtual hosts of every service (and VirtualService host) on ``listener_port``."""
    services_by_name: dict[str, Service] = {}
    for svc in push.services_for(proxy):
        if listener_port == 0:
            services_by_name[svc.hostname] = svc
            continue
        port = svc.port_by_number(listener_port)
        if port is not None:
            # Only the listener's port: a destination without a port then resolves to it.
            services_by_name[svc.hostname] = replace(svc, ports=(port,))
    virtual_services = push.virtual_services(proxy, MESH_GATEWAY)
    if listener_port != 80:
        # Istio keeps VirtualServices for non-registry hosts on port 80 only.
        virtual_services = [
            vs for vs in virtual_services if _selects_any(vs.hosts, services_by_name)
        ]
    wrappers = build_virtual_host_wrappers(
        push, proxy, services_by_name, virtual_services, listener_port
    )
    return _virtual_hosts_from_wrappers(proxy, wrappers, listener_port)


def _selects_any(hosts: tuple[str, ...], services: dict[str, Service]) -> bool:
    return any(h in services or any(host_matches(h, s) for s in services) for h in hosts)


def build_virtual_host_wrappers(
    push: PushContext,
    proxy: Proxy,
    services_by_name: dict[str, Service],
    virtual_services: list[VirtualServiceConfig],
    listener_port: int,
) -> list[VirtualHostWrapper]:
    """Istio's ``BuildSidecarVirtualHostWrapper``: VirtualService hosts first, then a default
    wrapper per HTTP (or sniffed) port of every service no VirtualService covers."""
    out: list[VirtualHostWrapper] = []
    for vs in virtual_services:
        out.extend(_wrappers_for_virtual_service(push, proxy, vs, services_by_name, listener_port))
    remaining = dict(services_by_name)
    for wrapper in out:
        for svc in wrapper.services:
            remaining.pop(svc.hostname, None)
    for svc in remaining.values():
        for port in svc.ports:
            if not is_http_or_sniffed(port):
                continue
            cluster = outbound_cluster(svc.hostname, port.port)
            # Istio's hashForService: the rule's (port-level) consistent hash, no subset.
            policies = hash_policy_for(push, proxy, svc.hostname, "", port.port)
            route = build_default_outbound_route(
                cluster,
                trace_operation(svc.hostname, port.port),
                push.mesh.default_http_retry_policy,
                policies[0] if policies else None,
            )
            out.append(VirtualHostWrapper(port=port.port, services=[svc], routes=[route]))
    return out


def build_http_routes_for_virtual_service(
    push: PushContext,
    proxy: Proxy,
    vs: VirtualServiceConfig,
    services_by_name: dict[str, Service],
    listener_port: int,
) -> list[rc.Route]:
    """Istio's ``BuildHTTPRoutesForVirtualService``: routes in order, one per match, up to
    and including the first catch-all."""
    ctx = RouteContext(
        proxy=proxy,
        vs=vs,
        listener_port=listener_port,
        resolve=push.resolve,
        service=services_by_name.get,
        hash_for=lambda d, host: _first(
            hash_policy_for(push, proxy, host, d.subset, d.port.number if d.port else 0)
        ),
        default_retries=push.mesh.default_http_retry_policy,
    )
    out: list[rc.Route] = []
    for scoped in merged_http_routes(push, vs):
        http = scoped.route
        catch_all = False
        if not http.match:
            route = translate_route(ctx, http, None, scoped.namespace)
            if route is not None:
                out.append(route)
            catch_all = True
        else:
            for match in http.match:
                route = translate_route(ctx, http, match, scoped.namespace)
                if route is None:
                    continue
                out.append(route)
                if is_catch_all_route(route):
                    catch_all = True
                    break
        if catch_all:
            break
    return out


def _first(policies: list[rc.RouteAction.HashPolicy]) -> rc.RouteAction.HashPolicy | None:
    return policies[0] if policies else None


def _wrappers_for_virtual_service(
    push: PushContext,
    proxy: Proxy,
    vs: VirtualServiceConfig,
    services_by_name: dict[str, Service],
    listener_port: int,
) -> list[VirtualHostWrapper]:
    routes = build_http_routes_for_virtual_service(push, proxy, vs, services_by_name, listener_port)
    if not routes:
        return []
    hosts, services = _separate_hosts_and_services(push, proxy, vs, services_by_name)
    by_port: dict[int, list[Service]] = {}
    for svc in services:
        for port in svc.ports:
            if is_http_or_sniffed(port):
                by_port.setdefault(port.port, []).append(svc)
    if not by_port and listener_port == 80:
        by_port[80] = []  # Istio's hack: non-registry hosts are served on port 80
    return [
        VirtualHostWrapper(port=p, services=s, virtual_service_hosts=hosts, routes=routes)
        for p, s in by_port.items()
    ]


def _separate_hosts_and_services(
    push: PushContext, proxy: Proxy, vs: VirtualServiceConfig, services: dict[str, Service]
) -> tuple[list[str], list[Service]]:
    """VirtualService hosts that are registry services, and the others. A wildcard host
    takes a service only if this is the VirtualService that routes it (the most specific)."""
    others: list[str] = []
    matched: list[Service] = []
    for host in vs.hosts:
        if not host.startswith("*"):
            if host in services:
                matched.append(services[host])
            else:
                others.append(host)
            continue
        found = False
        for name, svc in services.items():
            if not host_matches(host, name):
                continue
            found = True
            if push.virtual_service_for_host(proxy, name) is vs:
                matched.append(svc)
        if not found:
            others.append(host)
    return others, matched


def _virtual_hosts_from_wrappers(
    proxy: Proxy, wrappers: list[VirtualHostWrapper], listener_port: int
) -> list[rc.VirtualHost]:
    names: set[str] = set()
    seen_domains: set[str] = set()
    known_fqdn: set[str] = set()
    for w in wrappers:
        for svc in w.services:
            known_fqdn.update((domain_name(svc.hostname, w.port), svc.hostname))
    by_port: dict[int, list[rc.VirtualHost]] = {}
    for w in wrappers:
        if not w.routes:
            continue
        for host in w.virtual_service_hosts:
            vh = _virtual_host(proxy, host, None, w, listener_port, names, seen_domains, known_fqdn)
            if vh is not None:
                by_port.setdefault(w.port, []).append(vh)
        for svc in w.services:
            vh = _virtual_host(
                proxy, svc.hostname, svc, w, listener_port, names, seen_domains, known_fqdn
            )
            if vh is not None:
                by_port.setdefault(w.port, []).append(vh)
    if listener_port != 0:
        return by_port.get(listener_port, [])
    # HTTP proxy routes serve every port: off port 80 only ``host:port`` domains are kept.
    out: list[rc.VirtualHost] = []
    for port, vhosts in by_port.items():
        for vh in vhosts:
            if port != 80:
                kept = [d for d in vh.domains if ":" in d]
                del vh.domains[:]
                vh.domains.extend(kept)
            if vh.domains:
                out.append(vh)
    return out


def _virtual_host(
    proxy: Proxy,
    hostname: str,
    svc: Service | None,
    wrapper: VirtualHostWrapper,
    listener_port: int,
    names: set[str],
    seen_domains: set[str],
    known_fqdn: set[str],
) -> rc.VirtualHost | None:
    name = domain_name(hostname, wrapper.port)
    if name in names:
        return None  # a duplicate virtual host: the first one wins
    names.add(name)
    alt_hosts: list[str] = []
    if svc is None:
        domains = []
        port = NO_PORT if ignores_port(proxy) else wrapper.port
        append_domain_port(domains, hostname, port)
    else:
        domains, alt_hosts = virtual_host_domains(svc, listener_port, wrapper.port, proxy)
    kept = []
    for d in domains:
        if d.lower() in seen_domains or (d in alt_hosts and d in known_fqdn):
            continue
        kept.append(d)
        seen_domains.add(d.lower())
    if not kept:
        return None
    return rc.VirtualHost(
        name=name,
        domains=kept,
        routes=[_copy(r) for r in wrapper.routes],
        include_request_attempt_count=True,
    )


def _copy(route: rc.Route) -> rc.Route:
    out = rc.Route()
    out.CopyFrom(route)
    return out


def virtual_hosts_for_sniffed_port(
    vhosts: list[rc.VirtualHost], route_name: str
) -> list[rc.VirtualHost]:
    """Istio's ``getVirtualHostsForSniffedServicePort``: the one virtual host of the sniffed
    service, matching any authority (the listener already picked the service by address)."""
    without_port = route_name.rpartition(":")[0]
    out = [vh for vh in vhosts if route_name in vh.domains or without_port in vh.domains]
    if len(out) == 1:
        del out[0].domains[:]
        out[0].domains.append("*")
    return out


def catch_all_virtual_host(push: PushContext, proxy: Proxy) -> rc.VirtualHost:
    """``allow_any`` → the egress cluster without timeout, or ``block_all`` → 502."""
    if is_allow_any(push, proxy):
        route = rc.Route(name=ALLOW_ANY_VHOST, match=rc.RouteMatch(prefix="/"))
        route.route.cluster = egress_cluster(push, proxy)
        route.route.timeout.CopyFrom(NO_TIMEOUT)
        route.route.max_grpc_timeout.CopyFrom(NO_TIMEOUT)
        return rc.VirtualHost(
            name=ALLOW_ANY_VHOST, domains=["*"], routes=[route], include_request_attempt_count=True
        )
    route = rc.Route(name=BLOCK_ALL_VHOST, match=rc.RouteMatch(prefix="/"))
    route.direct_response.status = 502
    return rc.VirtualHost(
        name=BLOCK_ALL_VHOST, domains=["*"], routes=[route], include_request_attempt_count=True
    )


def build_sidecar_inbound_route_config(
    cluster: str, hostname: str, service_port: int
) -> route_pb2.RouteConfiguration:
    """The inline route of an inbound HTTP chain: one ``*`` virtual host ``inbound|http|<port>``
    routing everything to the inbound cluster."""
    vhost = rc.VirtualHost(
        name=f"{INBOUND_VHOST_PREFIX}{service_port}",
        domains=["*"],
        routes=[build_default_inbound_route(cluster, trace_operation(hostname, service_port))],
    )
    return route_pb2.RouteConfiguration(
        name=cluster, virtual_hosts=[vhost], validate_clusters=wrappers_pb2.BoolValue(value=False)
    )
