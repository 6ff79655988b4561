"""CDS for a proxy: Istio's outbound, inbound and catch-all clusters.

Istio's ``pilot/pkg/networking/core/cluster.go`` and ``cluster_builder.go``. For a sidecar,
in Istio's order:

- ``outbound|<port>||<host>`` for every service port the proxy can see (UDP ports and
  ExternalName aliases excepted), then ``outbound|<port>|<subset>|<host>`` for each subset of
  the service's DestinationRule. The discovery type follows the service's resolution: EDS
  over ADS, STRICT_DNS / LOGICAL_DNS with a static load assignment (a DNS cluster without
  endpoints is left out, as Istio does), ORIGINAL_DST for passthrough (headless) services;
- ``BlackHoleCluster`` (STATIC, no endpoints) and ``PassthroughCluster`` (ORIGINAL_DST): the
  listeners pick one for unknown destinations per outboundTrafficPolicy; both always exist;
- ``inbound|<targetPort>||`` per port of the proxy's own workload: ORIGINAL_DST bound to
  127.0.0.6 so iptables lets the proxy's own traffic through (inboundTrafficPolicy
  PASSTHROUGH, the default), or STATIC to 127.0.0.1 (LOCALHOST); Sidecar ingress listeners
  replace them with their defaultEndpoint;
- ``InboundPassthroughCluster`` for inbound traffic to ports no service declares.

Gateways get the outbound clusters and ``BlackHoleCluster`` only.
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import struct_pb2

from pistio.api import networking as net
from pistio.config.protocol import Protocol, parse_protocol
from pistio.pilot.grpcgen.cds import build_grpc_clusters
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import DestinationRuleConfig, PushContext
from pistio.pilot.model.service import (
    Resolution,
    Service,
    ServiceInstance,
    ServicePort,
    Source,
)
from pistio.pilot.networking import cluster_traffic_policy as policy_mod
from pistio.pilot.networking.cluster_traffic_policy import (
    HTTP_PROTOCOL_OPTIONS_KEY,
    ClusterWrapper,
    UpstreamTlsInputs,
    apply_connection_pool,
    apply_load_balancer,
    apply_outlier_detection,
    apply_proxy_protocol,
    apply_upstream_tls,
    duration,
    merge_subset_policy,
    mesh_connect_timeout,
    port_level_policy,
    service_mtls_enabled,
    set_h2_options,
    set_use_downstream_protocol,
    should_h2_upgrade,
)
from pistio.pilot.networking.endpoint_builder import (
    ISTIO_METADATA_KEY,
    LocalityGroup,
    apply_locality_lb,
    locality_groups,
    socket_address,
)
from pistio.pilot.networking.route_clusters import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    inbound_cluster,
    outbound_cluster,
)
from pistio.pilot.networking.tls import to_any

Cluster = cluster_pb2.Cluster

# Source addresses of inbound passthrough traffic: iptables skips packets from these, so the
# proxy's own connections to the app are not captured again (Istio's InboundPassthroughBindIpv4/6).
INBOUND_PASSTHROUGH_BIND_IPV4 = "127.0.0.6"
INBOUND_PASSTHROUGH_BIND_IPV6 = "::6"
LOCALHOST_IPV4 = "127.0.0.1"
# Istio disables host cleanup on inbound ORIGINAL_DST clusters with the largest duration
# Envoy accepts ((2^63-1 - 999999999) ns in seconds, about 292 years).
MAX_CLEANUP_SECONDS = 9223372035
PASSTHROUGH_IDLE_TIMEOUT_SECONDS = 300
DR_CONFIG_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/destination-rule/{name}"


def build_clusters(push: PushContext, proxy: Proxy) -> list[Cluster]:
    """Every cluster the proxy gets over CDS, in Istio's order, one per name."""
    if proxy.is_proxyless_grpc:
        # gRPC NACKs sidecar clusters (LEAST_REQUEST): it gets Istio's grpcgen clusters.
        return build_grpc_clusters(push, proxy)
    clusters = build_outbound_clusters(push, proxy)
    clusters.append(blackhole_cluster(push))
    if proxy.type is NodeType.SIDECAR:
        clusters.append(passthrough_cluster(push))
        clusters.extend(build_inbound_clusters(push, proxy))
        clusters.append(inbound_passthrough_cluster(push, proxy))
    seen: set[str] = set()
    out = []
    for c in clusters:
        # Conflicting service definitions can produce one name twice: the first wins.
        if c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


# --- outbound ------------------------------------------------------------------------------


def discovery_type(proxy: Proxy, service: Service) -> int:
    """Istio's convertResolution: gateways cannot use ORIGINAL_DST, so they get EDS."""
    if service.resolution is Resolution.DNS_LB:
        return Cluster.STRICT_DNS
    if service.resolution is Resolution.DNS_ROUND_ROBIN_LB:
        return Cluster.LOGICAL_DNS
    if service.resolution is Resolution.PASSTHROUGH and proxy.type is not NodeType.ROUTER:
        return Cluster.ORIGINAL_DST
    return Cluster.EDS


def service_accounts(push: PushContext, service: Service, port: ServicePort) -> tuple[str, ...]:
    """Identities the client accepts for the service: declared ones plus every endpoint's."""
    accounts = set(service.service_accounts)
    accounts.update(
        e.service_account for e in push.endpoints(service.hostname, port.name) if e.service_account
    )
    return tuple(sorted(accounts))


def istio_mtls_sni(subset: str, host: str, port: int) -> str:
    """Istio's BuildDNSSrvSubsetKey, the SNI of in-mesh mTLS: ``outbound_.9080_._.host``
    (an empty subset is written ``_``)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def build_outbound_clusters(push: PushContext, proxy: Proxy) -> list[Cluster]:
    out: list[Cluster] = []
    for svc in push.services_for(proxy):
        if svc.external_name:
            continue  # an alias: routes go to the aliased host's clusters
        dr = push.destination_rule(proxy, svc.hostname)
        for port in svc.ports:
            if port.protocol is Protocol.UDP:
                continue
            out.extend(_service_port_clusters(push, proxy, svc, port, dr))
    return out


def _service_port_clusters(
    push: PushContext,
    proxy: Proxy,
    svc: Service,
    port: ServicePort,
    dr: DestinationRuleConfig | None,
) -> list[Cluster]:
    """The default cluster of one service port and its subset clusters."""
    rule = dr.spec if dr is not None else None
    ctype = discovery_type(proxy, svc)
    groups = _static_groups(push, svc, port, ctype, {}, None)
    name = outbound_cluster(svc.hostname, port.port)
    base = _base_cluster(push, proxy, name, ctype, groups, port, [svc])
    if base is None:
        return []
    accounts = service_accounts(push, svc, port)
    policy = port_level_policy(rule.traffic_policy, port.port)[0] if rule else None
    _apply_outbound_policy(
        push, proxy, base, policy, port, svc, dr, groups,
        istio_mtls_sni("", svc.hostname, port.port), accounts,
    )  # fmt: skip
    _maybe_eds(base.cluster)
    if svc.mesh_external:
        _istio_metadata(base.cluster).fields["external"].bool_value = True
    if dr is not None:
        _add_config_metadata(base.cluster, dr)
    clusters = [base.build()]

    for subset in rule.subsets if rule else []:
        sub_policy = merge_subset_policy(rule.traffic_policy, subset.traffic_policy, port.port)
        passthrough = (
            subset.traffic_policy is not None
            and subset.traffic_policy.load_balancer is not None
            and subset.traffic_policy.load_balancer.simple == "PASSTHROUGH"
        )
        sub_type = Cluster.ORIGINAL_DST if passthrough else base.cluster.type
        sub_groups = _static_groups(push, svc, port, sub_type, subset.labels, sub_policy)
        sub_name = outbound_cluster(svc.hostname, port.port, subset.name)
        wrapper = _base_cluster(push, proxy, sub_name, sub_type, sub_groups, port, [svc])
        if wrapper is None:
            continue
        _apply_outbound_policy(
            push, proxy, wrapper, sub_policy, port, svc, dr, sub_groups,
            istio_mtls_sni(subset.name, svc.hostname, port.port), accounts,
        )  # fmt: skip
        _maybe_eds(wrapper.cluster)
        assert dr is not None
        _add_config_metadata(wrapper.cluster, dr)
        _istio_metadata(wrapper.cluster).fields["subset"].string_value = subset.name
        clusters.append(wrapper.build())
    return clusters


def _static_groups(
    push: PushContext,
    svc: Service,
    port: ServicePort,
    ctype: int,
    labels: dict[str, str],
    policy: net.TrafficPolicy | None,
) -> list[LocalityGroup]:
    """Endpoints carried in CDS: only STATIC/DNS clusters have a load assignment."""
    if ctype not in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS, Cluster.STATIC):
        return []
    groups = locality_groups(push, svc, port, labels, policy)
    if ctype == Cluster.LOGICAL_DNS and groups:
        # Envoy's LOGICAL_DNS takes exactly one host.
        first = groups[0]
        del first.proto.lb_endpoints[1:]
        first.endpoints[1:] = []
        first.proto.load_balancing_weight.value = first.proto.lb_endpoints[
            0
        ].load_balancing_weight.value
        groups = [first]
    return groups


def _base_cluster(
    push: PushContext,
    proxy: Proxy,
    name: str,
    ctype: int,
    groups: list[LocalityGroup],
    port: ServicePort,
    services: list[Service],
) -> ClusterWrapper | None:
    """Istio's buildCluster: type, DNS settings, load assignment, upstream protocol and
    telemetry metadata. None for a DNS/STATIC cluster without endpoints."""
    c = Cluster(name=name, type=ctype, alt_stat_name=name + ";")
    c.common_lb_config.SetInParent()
    if ctype in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS):
        c.dns_lookup_family = _dns_lookup_family(proxy)
        if push.mesh.dns_refresh_rate is not None:
            c.dns_refresh_rate.CopyFrom(duration(push.mesh.dns_refresh_rate.seconds))
        c.respect_dns_ttl = True
    if ctype in (Cluster.STRICT_DNS, Cluster.LOGICAL_DNS, Cluster.STATIC):
        if not groups:
            return None
        c.load_assignment.cluster_name = name
        c.load_assignment.endpoints.extend(g.proto for g in groups)
    wrapper = ClusterWrapper(c)
    if port.protocol.is_http2:
        set_h2_options(wrapper)
    elif proxy.type is NodeType.SIDECAR and port.protocol.is_unsupported:
        # Sniffed port: speak upstream whatever the downstream spoke.
        set_use_downstream_protocol(wrapper)
    services_meta = _istio_metadata(c).fields["services"].list_value
    seen: set[str] = set()
    for svc in services:
        if svc.hostname in seen:
            continue
        seen.add(svc.hostname)
        services_meta.values.add().struct_value.update(
            {"host": svc.hostname, "name": svc.name, "namespace": svc.namespace}
        )
    return wrapper


def _dns_lookup_family(proxy: Proxy) -> int:
    versions = set()
    for ip in proxy.ip_addresses:
        try:
            versions.add(ipaddress.ip_address(ip).version)
        except ValueError:
            continue
    if versions == {6}:
        return Cluster.V6_ONLY
    return Cluster.V4_ONLY


def _apply_outbound_policy(
    push: PushContext,
    proxy: Proxy,
    wrapper: ClusterWrapper,
    policy: net.TrafficPolicy | None,
    port: ServicePort,
    svc: Service,
    dr: DestinationRuleConfig | None,
    groups: list[LocalityGroup],
    sni: str,
    accounts: tuple[str, ...],
) -> None:
    """Istio's applyTrafficPolicy for an outbound cluster, in Istio's order (outlier
    detection before load balancing: locality failover depends on it)."""
    mesh = push.mesh
    c = wrapper.cluster
    pool = policy.connection_pool if policy else None
    outlier = policy.outlier_detection if policy else None
    lb = policy.load_balancer if policy else None
    apply_connection_pool(mesh, wrapper, pool)
    if should_h2_upgrade(port, mesh, pool):
        set_h2_options(wrapper)
    apply_outlier_detection(c, outlier)
    locality = apply_load_balancer(c, lb, port, mesh)
    if c.HasField("load_assignment") and locality is not None and groups:
        del c.load_assignment.endpoints[:]
        c.load_assignment.endpoints.extend(
            apply_locality_lb(groups, proxy, locality, outlier is not None)
        )
    inputs = UpstreamTlsInputs(
        service_accounts=accounts,
        sni=sni,
        mesh_external=svc.mesh_external,
        auto_mtls_possible=service_mtls_enabled(push, policy, svc, port),
        dr_has_selector=policy_mod.dr_selects(dr.spec if dr else None, proxy),
        service_entry=svc.source is Source.SERVICE_ENTRY,
    )
    apply_upstream_tls(push, proxy, wrapper, policy.tls if policy else None, inputs)
    apply_proxy_protocol(wrapper, policy.proxy_protocol if policy else None)
    if c.type == Cluster.ORIGINAL_DST:
        c.lb_policy = Cluster.CLUSTER_PROVIDED


def _maybe_eds(c: Cluster) -> None:
    """EDS clusters fetch endpoints over the same ADS stream, named by the cluster name;
    a zero initial fetch timeout makes Envoy wait for them rather than warm empty."""
    if c.type != Cluster.EDS:
        return
    eds = c.eds_cluster_config
    eds.service_name = c.name
    eds.eds_config.ads.SetInParent()
    eds.eds_config.initial_fetch_timeout.SetInParent()
    eds.eds_config.resource_api_version = config_source_pb2.V3


def _istio_metadata(c: Cluster) -> struct_pb2.Struct:
    return c.metadata.filter_metadata[ISTIO_METADATA_KEY]


def _add_config_metadata(c: Cluster, dr: DestinationRuleConfig) -> None:
    """Which DestinationRule shaped the cluster (istioctl proxy-config shows it)."""
    _istio_metadata(c).fields["config"].string_value = DR_CONFIG_PATH.format(
        ns=dr.namespace, name=dr.name
    )


# --- catch-all clusters --------------------------------------------------------------------


def blackhole_cluster(push: PushContext) -> Cluster:
    """A STATIC cluster with no endpoints: requests to it fail with 503 (no healthy upstream)."""
    c = Cluster(
        name=BLACKHOLE_CLUSTER,
        type=Cluster.STATIC,
        lb_policy=Cluster.ROUND_ROBIN,
        alt_stat_name=BLACKHOLE_CLUSTER + ";",
    )
    c.connect_timeout.CopyFrom(mesh_connect_timeout(push.mesh))
    return c


def _passthrough_http_options() -> http_protocol_options_pb2.HttpProtocolOptions:
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.common_http_protocol_options.idle_timeout.seconds = PASSTHROUGH_IDLE_TIMEOUT_SECONDS
    cfg = opts.use_downstream_protocol_config
    cfg.http_protocol_options.SetInParent()
    cfg.http2_protocol_options.SetInParent()
    return opts


def passthrough_cluster(push: PushContext) -> Cluster:
    """ORIGINAL_DST: forward to the address the application dialled."""
    c = Cluster(
        name=PASSTHROUGH_CLUSTER,
        type=Cluster.ORIGINAL_DST,
        lb_policy=Cluster.CLUSTER_PROVIDED,
        alt_stat_name=PASSTHROUGH_CLUSTER + ";",
    )
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(
        to_any(_passthrough_http_options())
    )
    wrapper = ClusterWrapper(c)
    apply_connection_pool(push.mesh, wrapper, net.ConnectionPoolSettings())
    return wrapper.build()


def inbound_passthrough_cluster(push: PushContext, proxy: Proxy) -> Cluster:
    """PassthroughCluster for inbound traffic, bound to 127.0.0.6 (and ::6 on dual-stack
    pods) so it is not captured again. Istio renames the passthrough cluster and keeps its
    ``PassthroughCluster;`` stat name."""
    c = passthrough_cluster(push)
    c.name = INBOUND_PASSTHROUGH_CLUSTER
    v4, v6 = _ip_families(proxy)
    bind = c.upstream_bind_config
    bind.source_address.address = (
        INBOUND_PASSTHROUGH_BIND_IPV4 if v4 or not v6 else INBOUND_PASSTHROUGH_BIND_IPV6
    )
    bind.source_address.port_value = 0
    if v4 and v6:
        extra = bind.extra_source_addresses.add()
        extra.address.address = INBOUND_PASSTHROUGH_BIND_IPV6
        extra.address.port_value = 0
    return c


def _ip_families(proxy: Proxy) -> tuple[bool, bool]:
    v4 = v6 = False
    for ip in proxy.ip_addresses:
        try:
            version = ipaddress.ip_address(ip).version
        except ValueError:
            continue
        v4 |= version == 4
        v6 |= version == 6
    return v4, v6


# --- inbound -------------------------------------------------------------------------------


def build_inbound_clusters(push: PushContext, proxy: Proxy) -> list[Cluster]:
    """``inbound|<port>||`` per workload port (or per Sidecar ingress listener)."""
    sidecar = push.sidecar_for(proxy)
    ingress = sidecar.spec.ingress if sidecar is not None else []
    instances = push.service_instances(proxy)
    if ingress:
        return [_sidecar_ingress_cluster(push, proxy, il, instances) for il in ingress]
    by_port: dict[int, list[ServiceInstance]] = {}
    for inst in instances:
        by_port.setdefault(inst.endpoint.port, []).append(inst)
    bind = LOCALHOST_IPV4 if _inbound_localhost(push) else ""
    out = []
    for ep_port, insts in by_port.items():
        out.append(_inbound_cluster(push, proxy, ep_port, bind, ep_port, insts))
    return out


def _inbound_localhost(push: PushContext) -> bool:
    policy = push.mesh.inbound_traffic_policy
    return policy is not None and policy.mode == "LOCALHOST"


def _inbound_cluster(
    push: PushContext,
    proxy: Proxy,
    cluster_port: int,
    bind: str,
    target_port: int,
    instances: list[ServiceInstance],
    service_port: ServicePort | None = None,
    connection_pool: net.ConnectionPoolSettings | None = None,
) -> Cluster:
    """Istio's buildInboundCluster: STATIC to ``bind:target_port`` when an address is given,
    else ORIGINAL_DST (deliver to the pod IP the client dialled)."""
    primary = instances[0] if instances else None
    port = service_port or (
        primary.port if primary else ServicePort("", cluster_port, Protocol.TCP)
    )
    name = inbound_cluster(cluster_port)
    groups: list[LocalityGroup] = []
    if bind:
        proto = endpoint_components_pb2.LocalityLbEndpoints()
        proto.lb_endpoints.add().endpoint.address.CopyFrom(_bind_address(bind, target_port))
        groups = [LocalityGroup("", proto)]
    ctype = Cluster.STATIC if groups else Cluster.ORIGINAL_DST
    services = [i.service for i in instances if i.port.port == port.port] or [
        i.service for i in instances
    ]
    wrapper = _base_cluster(push, proxy, name, ctype, groups, port, services)
    assert wrapper is not None
    c = wrapper.cluster
    if ctype == Cluster.ORIGINAL_DST:
        c.cleanup_interval.seconds = MAX_CLEANUP_SECONDS

    # Circuit breakers set on the client side must also hold on the server side, so the
    # rule's connection pool applies to the inbound cluster too.
    pool = None
    if primary is not None:
        dr = push.destination_rule(proxy, primary.service.hostname)
        if dr is not None and dr.spec.traffic_policy is not None:
            tp = port_level_policy(dr.spec.traffic_policy, primary.port.port)[0]
            pool = tp.connection_pool if tp else None
            _add_config_metadata(c, dr)
    sidecar_pool = connection_pool or _sidecar_inbound_pool(push, proxy)
    if sidecar_pool is not None:
        pool = sidecar_pool
    apply_connection_pool(push.mesh, wrapper, pool)
    if ctype == Cluster.ORIGINAL_DST:
        c.lb_policy = Cluster.CLUSTER_PROVIDED

    if bind not in (LOCALHOST_IPV4, "::1") and not bind.startswith("unix://"):
        v4, v6 = _ip_families(proxy)
        c.upstream_bind_config.source_address.address = (
            INBOUND_PASSTHROUGH_BIND_IPV4 if v4 or not v6 else INBOUND_PASSTHROUGH_BIND_IPV6
        )
        c.upstream_bind_config.source_address.port_value = 0
    return wrapper.build()


def _bind_address(bind: str, port: int) -> address_pb2.Address:
    if bind.startswith("unix://"):
        return address_pb2.Address(pipe=address_pb2.Pipe(path=bind[len("unix://") :]))
    return socket_address(bind, port)


def _sidecar_inbound_pool(push: PushContext, proxy: Proxy) -> net.ConnectionPoolSettings | None:
    sidecar = push.sidecar_for(proxy)
    return sidecar.spec.inbound_connection_pool if sidecar is not None else None


def _sidecar_ingress_cluster(
    push: PushContext,
    proxy: Proxy,
    listener: net.IstioIngressListener,
    instances: list[ServiceInstance],
) -> Cluster:
    """A Sidecar ingress listener's cluster. defaultEndpoint ``127.0.0.1:<port>`` sends to
    localhost, ``0.0.0.0:<port>`` to the pod IP, ``unix://...`` to a socket; none means
    ORIGINAL_DST."""
    number = listener.port.number if listener.port else 0
    port = ServicePort(
        listener.port.name if listener.port else "",
        number,
        _parse_protocol(listener.port.protocol if listener.port else ""),
    )
    bind, target = "", 0
    default = listener.default_endpoint
    if default.startswith("unix://"):
        bind = default
    elif default:
        host, _, port_text = default.rpartition(":")
        target = int(port_text) if port_text.isdigit() else 0
        host = host.strip("[]")
        if host == "0.0.0.0":
            bind = next(
                (ip for ip in proxy.ip_addresses if ipaddress.ip_address(ip).version == 4),
                LOCALHOST_IPV4,
            )
        elif host in (LOCALHOST_IPV4, "::1"):
            bind = host
    matching = [i for i in instances if i.endpoint.port == number]
    return _inbound_cluster(
        push, proxy, number, bind, target, matching, port,
        listener.connection_pool or _sidecar_inbound_pool(push, proxy),
    )  # fmt: skip


def _parse_protocol(text: str) -> Protocol:
    return parse_protocol(text) if text else Protocol.UNSUPPORTED


__all__ = [
    "blackhole_cluster",
    "build_clusters",
    "build_inbound_clusters",
    "build_outbound_clusters",
    "discovery_type",
    "inbound_passthrough_cluster",
    "istio_mtls_sni",
    "passthrough_cluster",
    "service_accounts",
]
