"""The ``virtualInbound`` listener (15006) of a sidecar (Istio's ``listener_inbound.go``).

iptables redirects inbound connections to 15006; ``original_dst`` recovers the port the
client dialled and filter chains match on it: one chain set per port the workload serves
(``destination_port``), each ending in an HTTP connection manager routing to
``inbound|<port>||`` or a ``tcp_proxy`` to it; then passthrough chains for ports no service
declares (``InboundPassthroughCluster``), and a blackhole chain for traffic aimed at 15006
itself (it would loop).

PeerAuthentication chooses the chains per port (:mod:`pistio.pilot.security.peer_authn`):
STRICT ports get TLS chains only (``DownstreamTlsContext`` requiring a client certificate),
PERMISSIVE ports TLS chains matched on Istio's ALPNs plus plaintext chains, DISABLE ports
plaintext chains; ports named only in a workload policy's ``portLevelMtls`` get their own
passthrough chains. The security filters (CUSTOM authz, JWT, RBAC) come from
:mod:`pistio.pilot.security.filters`.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.type.v3 import range_pb2
from google.protobuf import duration_pb2

from pistio.config.protocol import Protocol, parse_protocol
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.http_filters import (
    HCM_FILTER,
    STAT_PREFIX_DELIMITER,
    HttpOptions,
    ListenerClass,
    build_http_connection_manager,
)
from pistio.pilot.networking.listener_filters import (
    HTTP_INSPECTOR,
    PLAINTEXT_HTTP_ALPNS,
    TLS,
    TLS_INSPECTOR,
    http_inspector_filter,
    original_dst_filter,
    socket_address,
    tcp_proxy_filter,
    tls_inspector_filter,
)
from pistio.pilot.networking.route_builder import build_sidecar_inbound_route_config
from pistio.pilot.networking.route_clusters import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    inbound_cluster,
)
from pistio.pilot.networking.tls import tls_transport_socket
from pistio.pilot.security.filters import inbound_tcp_filters
from pistio.pilot.security.peer_authn import (
    ListenerProtocol,
    MatchOption,
    MergedPeerAuthentication,
    MtlsMode,
    MTLSSettings,
    filter_chain_match_options,
    mtls_settings,
    peer_authentication_for,
)
from pistio.pilot.telemetry.access_logs import listener_access_logs
from pistio.pilot.telemetry.network import tcp_proxy_stack
from pistio.xds.any_codec import pack

VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_INBOUND_BLACKHOLE = "virtualInbound-blackhole"
VIRTUAL_INBOUND_CATCHALL_HTTP = "virtualInbound-catchall-http"
WILDCARD = "0.0.0.0"
DEFAULT_INBOUND_PORT = 15006


@dataclass(frozen=True)
class InboundChainConfig:
    """One port the workload serves (Istio's ``inboundChainConfig``)."""

    cluster: str
    target_port: int  # the workload port: what the chain matches on
    service_port: int
    protocol: Protocol
    hostname: str = ""  # the service, for the tracing operation name
    passthrough: bool = False

    def name(self, http: bool) -> str:
        if self.passthrough:
            return VIRTUAL_INBOUND_CATCHALL_HTTP if http else VIRTUAL_INBOUND
        return f"{WILDCARD}_{self.target_port}"

    def stat_prefix(self) -> str:
        base = self.cluster if self.passthrough else f"inbound_{self.name(True)}"
        return base + STAT_PREFIX_DELIMITER


def listener_protocol(protocol: Protocol) -> ListenerProtocol:
    """Istio's ModelProtocolToListenerProtocol: HTTP, sniffed (AUTO) or TCP chains."""
    if protocol.is_http:
        return ListenerProtocol.HTTP
    if protocol.is_unsupported:
        return ListenerProtocol.AUTO
    return ListenerProtocol.TCP


def chain_match_options(
    protocol: Protocol, mode: MtlsMode = MtlsMode.DISABLE
) -> tuple[MatchOption, ...]:
    """Istio's getFilterChainMatchOptions for a port's protocol and mTLS mode."""
    return filter_chain_match_options(mode, listener_protocol(protocol))


def inbound_chain_configs(push: PushContext, proxy: Proxy) -> list[InboundChainConfig]:
    """The ports the workload serves: its Sidecar's ingress listeners if it has any, else
    every service port selecting it (first service wins a port), sorted by port."""
    by_port: dict[int, InboundChainConfig] = {}
    sidecar = push.sidecar_for(proxy)
    if sidecar is not None and sidecar.spec.ingress:
        for ingress in sidecar.spec.ingress:
            if ingress.port is None or ingress.port.number in by_port:
                continue
            number = ingress.port.number
            by_port[number] = InboundChainConfig(
                cluster=inbound_cluster(number),
                target_port=number,
                service_port=number,
                protocol=parse_protocol(ingress.port.protocol),
                hostname=f"{sidecar.name}.{sidecar.namespace or proxy.namespace}",
            )
    else:
        for si in push.service_instances(proxy):
            target = si.endpoint.port
            if target in by_port:
                continue
            by_port[target] = InboundChainConfig(
                cluster=inbound_cluster(target),
                target_port=target,
                service_port=si.port.port,
                protocol=si.port.protocol,
                hostname=si.service.hostname,
            )
    return [by_port[p] for p in sorted(by_port)]


def build_virtual_inbound_listener(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    port = push.mesh.proxy_inbound_listen_port or DEFAULT_INBOUND_PORT
    chains = [_blackhole_chain(port)]
    merged = peer_authentication_for(push, proxy.namespace, proxy.labels)
    configs = inbound_chain_configs(push, proxy)
    for mtls in passthrough_mtls_settings(push, proxy, merged, configs):
        passthrough = InboundChainConfig(
            cluster=INBOUND_PASSTHROUGH_CLUSTER,
            target_port=mtls.port,
            service_port=0,
            protocol=Protocol.UNSUPPORTED,
            passthrough=True,
        )
        chains += build_inbound_chains(push, proxy, passthrough, mtls)
    for cc in configs:
        chains += build_inbound_chains(push, proxy, cc, mtls_settings(push, merged, cc.target_port))
    out = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=socket_address(WILDCARD, port),
        traffic_direction=base_pb2.INBOUND,
        continue_on_listener_filters_timeout=True,
        filter_chains=chains,
    )
    out.listener_filters.extend(inbound_listener_filters(chains))
    out.access_log.extend(listener_access_logs(push, proxy, True))
    timeout = push.mesh.protocol_detection_timeout
    seconds = timeout.seconds if timeout else 0.0
    out.listener_filters_timeout.CopyFrom(
        duration_pb2.Duration(seconds=int(seconds), nanos=round((seconds % 1) * 1e9))
    )
    return out


def passthrough_mtls_settings(
    push: PushContext,
    proxy: Proxy,
    merged: MergedPeerAuthentication,
    configs: list[InboundChainConfig],
) -> list[MTLSSettings]:
    """Istio's ForPassthrough: the catch-all chains, then one set per ``portLevelMtls``
    port that no service (or Sidecar ingress) declares, so the port's mode still holds."""
    out = [mtls_settings(push, merged, 0)]
    declared = {cc.target_port for cc in configs}
    for port in sorted(merged.per_port):
        if port not in declared:
            out.append(mtls_settings(push, merged, port))
    return out


def build_inbound_chains(
    push: PushContext, proxy: Proxy, cc: InboundChainConfig, mtls: MTLSSettings | None = None
) -> list[lc.FilterChain]:
    mtls = mtls or MTLSSettings(port=cc.target_port, mode=MtlsMode.DISABLE)
    out = []
    for opt in chain_match_options(cc.protocol, mtls.mode):
        match = lc.FilterChainMatch(
            application_protocols=opt.application_protocols,
            transport_protocol=opt.transport_protocol,
        )
        if cc.target_port:
            match.destination_port.value = cc.target_port
        filters = _http_filters(push, proxy, cc) if opt.http else _tcp_filters(push, proxy, cc)
        chain = lc.FilterChain(name=cc.name(opt.http), filter_chain_match=match, filters=filters)
        tls_context = opt.tls_context(mtls)
        if tls_context is not None:
            chain.transport_socket.CopyFrom(tls_transport_socket(tls_context))
        out.append(chain)
    return out


def _http_filters(push: PushContext, proxy: Proxy, cc: InboundChainConfig) -> list[lc.Filter]:
    route = build_sidecar_inbound_route_config(cc.cluster, cc.hostname, cc.service_port)
    hcm = build_http_connection_manager(
        push,
        proxy,
        HttpOptions(
            listener_class=ListenerClass.SIDECAR_INBOUND,
            stat_prefix=cc.stat_prefix(),
            protocol=cc.protocol,
            port=cc.target_port,
            route_config=route,
        ),
    )
    return [lc.Filter(name=HCM_FILTER, typed_config=pack(hcm))]


def _tcp_filters(push: PushContext, proxy: Proxy, cc: InboundChainConfig) -> list[lc.Filter]:
    """CUSTOM authz and RBAC network filters (Istio's buildCompleteNetworkFilters), the
    stats filter, then the tcp_proxy with its access logs."""
    return [
        *inbound_tcp_filters(push, proxy),
        *tcp_proxy_stack(push, proxy, True, cc.cluster, cc.cluster),
    ]


def _blackhole_chain(listen_port: int) -> lc.FilterChain:
    match = lc.FilterChainMatch()
    match.destination_port.value = listen_port
    return lc.FilterChain(
        name=VIRTUAL_INBOUND_BLACKHOLE,
        filter_chain_match=match,
        filters=[tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
    )


def inbound_listener_filters(
    chains: list[lc.FilterChain],
) -> list[lc.ListenerFilter]:
    """Istio's ``populateListenerFilters``: original_dst, then the TLS and HTTP inspectors,
    each disabled on the ports none of whose chains need it."""
    needs: dict[int, tuple[bool, bool]] = {}
    for fc in chains:
        m = fc.filter_chain_match
        port = m.destination_port.value if m.HasField("destination_port") else 0
        tls, http = needs.get(port, (False, False))
        tls = tls or m.transport_protocol == TLS
        http = http or any(p in PLAINTEXT_HTTP_ALPNS for p in m.application_protocols)
        needs[port] = (tls, http)
    out = [original_dst_filter()]
    if any(t for t, _ in needs.values()):
        out.append(_tls_inspector(needs))
    if any(h for _, h in needs.values()):
        disabled = sorted(p for p, (_, h) in needs.items() if not h)
        out.append(_with_disabled(http_inspector_filter(), disabled, HTTP_INSPECTOR))
    return out


def _tls_inspector(needs: dict[int, tuple[bool, bool]]) -> lc.ListenerFilter:
    if needs.get(0, (False, False))[0]:
        disabled = sorted(p for p, (t, _) in needs.items() if p and not t)
        return _with_disabled(tls_inspector_filter(), disabled, TLS_INSPECTOR)
    enabled = sorted(p for p, (t, _) in needs.items() if p and t)
    filt = tls_inspector_filter()
    if enabled:
        filt.filter_disabled.not_match.CopyFrom(_port_predicate(enabled))
    return filt


def _with_disabled(filt: lc.ListenerFilter, ports: list[int], name: str) -> lc.ListenerFilter:
    if ports:
        filt.filter_disabled.CopyFrom(_port_predicate(ports))
    return filt


def _port_predicate(ports: list[int]) -> lc.ListenerFilterChainMatchPredicate:
    """Matches connections to any of ``ports`` (Istio's ``listenerPredicateExcludePorts``)."""
    rules = [
        lc.ListenerFilterChainMatchPredicate(
            destination_port_range=range_pb2.Int32Range(start=p, end=p + 1)
        )
        for p in ports
    ]
    if len(rules) == 1:
        return rules[0]
    out = lc.ListenerFilterChainMatchPredicate()
    out.or_match.rules.extend(rules)
    return out
