"""Outbound listeners of a sidecar (Istio's ``buildSidecarOutboundListeners``,
``buildSidecarOutboundListener`` and ``buildListenerFromEntry`` in ``listener.go``).

These listeners do not bind: iptables sends outbound connections to ``virtualOutbound``
(15001), which hands each one to the listener matching its original destination.

- HTTP ports: one ``0.0.0.0_<port>`` listener shared by all services on the port, routing by
  Host through RDS route config ``<port>``. Its HTTP chain matches sniffed HTTP
  (``http/1.1``, ``h2c`` over ``raw_buffer``); anything else falls to the passthrough chain.
- TCP (and TLS) ports: a ``<VIP>_<port>`` listener per service with a ``tcp_proxy`` to the
  service's cluster, or to the destinations of a VirtualService ``tcp``/``tls`` route.
- Undeclared protocols: a ``<VIP>_<port>`` listener that sniffs: an HTTP chain (RDS route
  ``<host>:<port>``) for HTTP and the TCP chain for everything else.
- Headless TCP services: a listener per endpoint address, since there is no VIP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import duration_pb2

from pistio.api import networking as net
from pistio.config.protocol import Protocol
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import (
    MESH_GATEWAY,
    PushContext,
    VirtualServiceConfig,
    host_matches,
)
from pistio.pilot.model.service import UNSPECIFIED_IP, Resolution, Service, ServicePort, Source
from pistio.pilot.networking.http_filters import (
    HCM_FILTER,
    STAT_PREFIX_DELIMITER,
    HttpOptions,
    ListenerClass,
    build_http_connection_manager,
)
from pistio.pilot.networking.listener_filters import (
    PLAINTEXT_HTTP_ALPNS,
    RAW_BUFFER,
    http_inspector_filter,
    socket_address,
    tls_inspector_filter,
)
from pistio.pilot.networking.route_clusters import (
    destination_cluster,
    egress_cluster,
    outbound_cluster,
)
from pistio.pilot.networking.route_translation import config_metadata, resolve_gateway_name
from pistio.pilot.telemetry.access_logs import listener_access_logs
from pistio.pilot.telemetry.network import tcp_proxy_stack
from pistio.xds.any_codec import pack

WILDCARD = UNSPECIFIED_IP
PASSTHROUGH_FILTER_CHAIN = "PassthroughFilterChain"


@dataclass
class ChainOptions:
    """One filter chain to build (Istio's ``filterChainOpts``): its match, and either an HTTP
    connection manager (``rds`` set) or network filters."""

    sni_hosts: list[str] = field(default_factory=list)
    destination_cidrs: list[str] = field(default_factory=list)
    application_protocols: list[str] = field(default_factory=list)
    transport_protocol: str = ""
    rds: str = ""
    http_protocol: Protocol = Protocol.HTTP
    network_filters: list[lc.Filter] = field(default_factory=list)
    metadata: base_pb2.Metadata | None = None

    @property
    def is_http(self) -> bool:
        return bool(self.rds)

    def is_match_all(self) -> bool:
        return not (
            self.sni_hosts
            or self.destination_cidrs
            or self.application_protocols
            or self.transport_protocol
        )

    def match_key(self) -> tuple[tuple[str, ...], ...]:
        return (
            tuple(sorted(self.sni_hosts)),
            tuple(sorted(self.destination_cidrs)),
            tuple(self.application_protocols),
            (self.transport_protocol,),
        )

    def filter_chain_match(self) -> lc.FilterChainMatch:
        match = lc.FilterChainMatch(
            server_names=self.sni_hosts,
            application_protocols=self.application_protocols,
            transport_protocol=self.transport_protocol,
        )
        for cidr in self.destination_cidrs:
            match.prefix_ranges.append(cidr_range(cidr))
        return match


@dataclass
class _Entry:
    port: ServicePort
    bind: str
    chains: list[ChainOptions]
    protocol: Protocol


def cidr_range(cidr: str) -> address_pb2.CidrRange:
    net_ = ipaddress.ip_network(cidr, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(net_.network_address), prefix_len=net_.prefixlen
    )


def listener_name(bind: str, port: int) -> str:
    return f"{bind}_{port}"


def build_sidecar_outbound_listeners(
    push: PushContext, proxy: Proxy
) -> list[listener_pb2.Listener]:
    """All outbound listeners of a sidecar, sorted by name."""
    entries: dict[tuple[str, int], _Entry] = {}
    virtual_services = push.virtual_services(proxy, MESH_GATEWAY)
    own_ip = proxy.ip_addresses[0] if proxy.ip_addresses else ""
    for svc in push.services_for(proxy):
        for port in svc.ports:
            if _is_headless_tcp(svc, port):
                endpoints = push.endpoints(svc.hostname, port.name)
                if not endpoints and svc.source is not Source.KUBERNETES:
                    _add_service_port(push, proxy, svc, port, "", virtual_services, entries)
                    continue
                for ep in endpoints:
                    if _is_ip(ep.address) and ep.address != own_ip:
                        _add_service_port(
                            push, proxy, svc, port, ep.address, virtual_services, entries
                        )
            else:
                _add_service_port(push, proxy, svc, port, "", virtual_services, entries)
    listeners = [_listener_from_entry(push, proxy, e) for e in entries.values()]
    listeners.sort(key=lambda listener: listener.name)
    return listeners


def _is_headless_tcp(svc: Service, port: ServicePort) -> bool:
    return (
        svc.resolution is Resolution.PASSTHROUGH
        and svc.vip == UNSPECIFIED_IP
        and (port.protocol.is_tcp or port.protocol.is_unsupported)
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _add_service_port(
    push: PushContext,
    proxy: Proxy,
    svc: Service,
    port: ServicePort,
    bind: str,
    virtual_services: list[VirtualServiceConfig],
    entries: dict[tuple[str, int], _Entry],
) -> None:
    """Istio's ``buildSidecarOutboundListener``: add or merge one service port's chains."""
    protocol = port.protocol
    if protocol is Protocol.UDP:
        return
    cidrs: list[str] = []
    if protocol.is_http:
        bind = bind or WILDCARD
    elif not bind:
        address = svc.vip
        if "/" in address:
            bind, cidrs = WILDCARD, [address]  # a CIDR: match it on the wildcard listener
        else:
            bind = address
    key = (bind, port.port)
    current = entries.get(key)
    listener_protocol = protocol
    if protocol.is_http:
        if current is not None and not current.protocol.is_tcp:
            return  # an HTTP or sniffing listener already serves this port
        chains = [_http_chain(push, proxy, svc, port, bind)]
        if bind == WILDCARD:
            chains[0].application_protocols = list(PLAINTEXT_HTTP_ALPNS)
            chains[0].transport_protocol = RAW_BUFFER
            # HTTP chain plus TCP passthrough: the listener sniffs.
            listener_protocol = Protocol.UNSUPPORTED
        if current is not None:
            _merge_chains(current, chains)
            current.protocol = Protocol.UNSUPPORTED
            return
    elif protocol.is_tcp:
        chains = _tcp_chains(push, proxy, svc, port, bind, cidrs, virtual_services)
        if current is not None:
            _merge_chains(current, chains)
            if current.protocol.is_http:
                current.protocol = Protocol.UNSUPPORTED
            return
    else:  # undeclared: sniff
        if current is not None and not (current.protocol.is_http or current.protocol.is_tcp):
            return
        http = _http_chain(push, proxy, svc, port, bind)
        http.application_protocols = list(PLAINTEXT_HTTP_ALPNS)
        http.transport_protocol = RAW_BUFFER
        chains = _tcp_chains(push, proxy, svc, port, bind, cidrs, virtual_services) + [http]
        if current is not None and current.protocol.is_tcp:
            _merge_chains(current, chains)
            current.protocol = Protocol.UNSUPPORTED
            return
        # A sniffing listener replaces a plain HTTP one on the same address (AutoOverHTTP).
    entries[key] = _Entry(port=port, bind=bind, chains=chains, protocol=listener_protocol)


def _merge_chains(entry: _Entry, chains: list[ChainOptions]) -> None:
    """Istio's ``mergeTCPFilterChains``: add chains whose match is not taken yet."""
    taken = {c.match_key() for c in entry.chains}
    for chain in chains:
        if chain.match_key() not in taken:
            entry.chains.append(chain)
            taken.add(chain.match_key())


def _http_chain(
    push: PushContext, proxy: Proxy, svc: Service, port: ServicePort, bind: str
) -> ChainOptions:
    if port.protocol.is_unsupported and bind != WILDCARD:
        rds = f"{svc.hostname}:{port.port}"  # a sniffed service has a route of its own
    else:
        rds = str(port.port)
    return ChainOptions(rds=rds, http_protocol=port.protocol)


def _tcp_chains(
    push: PushContext,
    proxy: Proxy,
    svc: Service,
    port: ServicePort,
    bind: str,
    cidrs: list[str],
    virtual_services: list[VirtualServiceConfig],
) -> list[ChainOptions]:
    """Istio's ``buildSidecarOutboundTCPListenerOpts``: TLS chains by SNI for TLS ports,
    else TCP chains from VirtualService ``tcp`` routes, else a default chain."""
    configs = [
        vs for vs in virtual_services if any(host_matches(h, svc.hostname) for h in vs.hosts)
    ]
    if port.protocol.is_tls:
        return _tls_chains(push, proxy, svc, port, bind, cidrs, configs)
    out: list[ChainOptions] = []
    for vs in configs:
        for tcp in vs.spec.tcp:
            if not tcp.match:
                out.append(_route_chain(push, proxy, vs, tcp.route, port, cidrs))
                return out
            subnets: list[str] = []
            for match in tcp.match:
                if not _static_l4_match(match, proxy, port.port, vs.namespace):
                    continue
                if not match.destination_subnets:
                    out.append(_route_chain(push, proxy, vs, tcp.route, port, cidrs))
                    return out
                subnets.extend(match.destination_subnets)
            if subnets:
                out.append(_route_chain(push, proxy, vs, tcp.route, port, subnets))
                if sorted(subnets) == sorted(cidrs):
                    return out
    out.append(_default_chain(push, proxy, svc, port, cidrs))
    return out


def _tls_chains(
    push: PushContext,
    proxy: Proxy,
    svc: Service,
    port: ServicePort,
    bind: str,
    cidrs: list[str],
    configs: list[VirtualServiceConfig],
) -> list[ChainOptions]:
    out: list[ChainOptions] = []
    handled: set[str] = set()
    for vs in configs:
        for tls in vs.spec.tls:
            for match in tls.match:
                if not _static_l4_match(match, proxy, port.port, vs.namespace):
                    continue
                subnets = list(match.destination_subnets) or cidrs
                key = ",".join(match.sni_hosts) + "|" + ",".join(match.destination_subnets)
                if key in handled:
                    continue  # same runtime match: the first one wins
                handled.add(key)
                chain = _route_chain(push, proxy, vs, tls.route, port, subnets)
                chain.sni_hosts = list(match.sni_hosts)
                out.append(chain)
    if out:
        return out
    chain = _default_chain(push, proxy, svc, port, cidrs)
    address = "" if "/" in svc.vip else svc.vip
    if cidrs or not address or (address == WILDCARD and bind == WILDCARD):
        chain.sni_hosts = [svc.hostname]  # no VIP to tell services apart: match by SNI
    return [chain]


def _static_l4_match(
    match: net.TLSMatchAttributes | net.L4MatchAttributes, proxy: Proxy, port: int, vs_ns: str
) -> bool:
    """Istio's ``matchTLS``/``matchTCP``: conditions known when config is built."""
    gateways_ok = not match.gateways or any(
        resolve_gateway_name(g, vs_ns) == MESH_GATEWAY for g in match.gateways
    )
    labels_ok = all(proxy.labels.get(k) == v for k, v in match.source_labels.items())
    port_ok = not match.port or match.port == port
    ns_ok = not match.source_namespace or match.source_namespace == proxy.namespace
    return gateways_ok and labels_ok and port_ok and ns_ok


def _default_chain(
    push: PushContext, proxy: Proxy, svc: Service, port: ServicePort, cidrs: list[str]
) -> ChainOptions:
    target = svc.ports[0].port if len(svc.ports) == 1 else port.port
    cluster = outbound_cluster(svc.hostname, target)
    return ChainOptions(
        destination_cidrs=list(cidrs),
        network_filters=tcp_proxy_stack(push, proxy, False, cluster, cluster),
    )


def _route_chain(
    push: PushContext,
    proxy: Proxy,
    vs: VirtualServiceConfig,
    routes: list[net.RouteDestination],
    port: ServicePort,
    cidrs: list[str],
) -> ChainOptions:
    """Istio's ``buildOutboundNetworkFilters``: one cluster (stat prefix = cluster name) or
    weighted clusters (stat prefix = ``<vs name>.<vs namespace>``)."""
    resolved = []
    for route in routes:
        dest = route.destination
        host = push.resolve(dest.host, vs.namespace) if dest else ""
        svc = push.service(host) if host else None
        resolved.append((route, destination_cluster(dest, svc, port.port, host)))
    if len(resolved) == 1:
        cluster = resolved[0][1]
        filters = tcp_proxy_stack(push, proxy, False, cluster, cluster)
    else:
        weighted = [(name, r.weight) for r, name in resolved if r.weight > 0]
        filters = tcp_proxy_stack(push, proxy, False, f"{vs.name}.{vs.namespace}",
                                  weighted=weighted)
    return ChainOptions(
        destination_cidrs=list(cidrs), network_filters=filters, metadata=config_metadata(vs)
    )


def passthrough_filters(push: PushContext, proxy: Proxy) -> list[lc.Filter]:
    """Istio's ``buildOutboundCatchAllNetworkFiltersOnly``: unknown destinations go to the
    egress cluster (PassthroughCluster, or BlackHoleCluster under REGISTRY_ONLY), with the
    stats filter and access logs."""
    cluster = egress_cluster(push, proxy)
    return tcp_proxy_stack(push, proxy, False, cluster, cluster)


def _listener_from_entry(push: PushContext, proxy: Proxy, entry: _Entry) -> listener_pb2.Listener:
    name = listener_name(entry.bind, entry.port.port)
    out = listener_pb2.Listener(
        name=name,
        address=socket_address(entry.bind, entry.port.port),
        traffic_direction=base_pb2.OUTBOUND,
        continue_on_listener_filters_timeout=True,
    )
    out.bind_to_port.value = False
    out.access_log.extend(listener_access_logs(push, proxy, False))
    need_tls = any(c.sni_hosts for c in entry.chains)
    need_http = any(c.application_protocols for c in entry.chains)
    # Istio adds the TLS inspector whenever it sniffs HTTP: an ALPN match without it would
    # make Envoy inject one anyway.
    if need_tls or need_http:
        out.listener_filters.append(tls_inspector_filter())
    if need_http:
        out.listener_filters.append(http_inspector_filter())
        timeout = push.mesh.protocol_detection_timeout
        out.listener_filters_timeout.CopyFrom(_duration(timeout.seconds if timeout else 0.0))
    else:
        out.listener_filters_timeout.CopyFrom(duration_pb2.Duration(seconds=0))
    default_chain: lc.FilterChain | None = None
    for opts in entry.chains:
        chain = lc.FilterChain()
        if opts.metadata is not None:
            chain.metadata.CopyFrom(opts.metadata)
        if opts.is_http:
            hcm = build_http_connection_manager(
                push,
                proxy,
                HttpOptions(
                    listener_class=ListenerClass.SIDECAR_OUTBOUND,
                    stat_prefix=f"outbound_{name}{STAT_PREFIX_DELIMITER}",
                    protocol=opts.http_protocol,
                    port=entry.port.port,
                    rds=opts.rds,
                ),
            )
            chain.filters.append(lc.Filter(name=HCM_FILTER, typed_config=pack(hcm)))
        else:
            chain.filters.extend(opts.network_filters)
        if opts.is_match_all():
            default_chain = chain
        else:
            chain.filter_chain_match.CopyFrom(opts.filter_chain_match())
            out.filter_chains.append(chain)
    if default_chain is not None and not out.filter_chains:
        out.filter_chains.append(default_chain)
    elif default_chain is not None:
        out.default_filter_chain.CopyFrom(default_chain)
    else:
        out.default_filter_chain.CopyFrom(
            lc.FilterChain(
                name=PASSTHROUGH_FILTER_CHAIN,
                filter_chain_match=lc.FilterChainMatch(),
                filters=passthrough_filters(push, proxy),
            )
        )
    return out


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
