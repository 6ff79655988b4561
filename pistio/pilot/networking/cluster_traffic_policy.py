"""A DestinationRule's trafficPolicy applied to an Envoy cluster.

Istio's ``cluster_traffic_policy.go`` and ``cluster_tls.go``: which policy applies to a
cluster (port-level settings replace the rule's policy; a subset's policy overrides field by
field), and how each part maps onto Envoy — connectionPool → circuit breakers, timeouts and
HTTP protocol options; outlierDetection → outlier_detection and the panic threshold;
loadBalancer → lb_policy (LEAST_REQUEST by default), ring hash / Maglev, slow start and the
locality-weighted flag; tls → the upstream transport socket, including auto mTLS.

Also the route side of consistent hashing: ``hash_policy_for`` gives the route builder the
hash policy matching the cluster's ``consistentHash``.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, proxy_protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2 as ppp
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2

from pistio.api import networking as net
from pistio.api.mesh import MeshConfig
from pistio.config.protocol import Protocol
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext, labels_match
from pistio.pilot.model.service import Resolution, Service, ServicePort
from pistio.pilot.networking import tls as tlsctx
from pistio.pilot.security.peer_authn import MtlsMode, peer_authentication_for

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_UINT32 = 2**32 - 1
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
# The endpoint metadata key Envoy matches transport_socket_matches against, and Istio's value.
TRANSPORT_SOCKET_MATCH_KEY = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
ISTIO_TLS_MODE = "istio"


# --- small conversions ---------------------------------------------------------------------


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def mesh_connect_timeout(mesh: MeshConfig) -> duration_pb2.Duration:
    value = mesh.connect_timeout
    return duration(value.seconds if value is not None else DEFAULT_CONNECT_TIMEOUT_SECONDS)


# --- the cluster under construction --------------------------------------------------------


@dataclass(slots=True)
class ClusterWrapper:
    """A cluster plus the HTTP protocol options that end up, packed, in
    ``typed_extension_protocol_options`` (Istio's clusterWrapper)."""

    cluster: cluster_pb2.Cluster
    http_options: http_protocol_options_pb2.HttpProtocolOptions | None = None

    def options(self) -> http_protocol_options_pb2.HttpProtocolOptions:
        if self.http_options is None:
            self.http_options = http_protocol_options_pb2.HttpProtocolOptions()
        return self.http_options

    @property
    def is_http2(self) -> bool:
        opts = self.http_options
        return (
            opts is not None
            and opts.HasField("explicit_http_config")
            and opts.explicit_http_config.HasField("http2_protocol_options")
        )

    def build(self) -> cluster_pb2.Cluster:
        """Pack the protocol options; Envoy requires upstream_protocol_options once they exist,
        so default to explicit HTTP/1.1 as Istio does."""
        if self.http_options is not None:
            if self.http_options.WhichOneof("upstream_protocol_options") is None:
                self.http_options.explicit_http_config.http_protocol_options.SetInParent()
            self.cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(
                tlsctx.to_any(self.http_options)
            )
        return self.cluster


def set_h2_options(wrapper: ClusterWrapper) -> None:
    """Make the cluster speak HTTP/2 upstream (HTTP2/gRPC ports, or an h2 upgrade)."""
    wrapper.options().explicit_http_config.http2_protocol_options.SetInParent()


def set_use_downstream_protocol(wrapper: ClusterWrapper) -> None:
    """Use whatever protocol the downstream spoke (sniffed ports, useClientProtocol)."""
    cfg = wrapper.options().use_downstream_protocol_config
    cfg.http_protocol_options.SetInParent()
    cfg.http2_protocol_options.SetInParent()


# --- which policy applies ------------------------------------------------------------------


def port_level_policy(
    policy: net.TrafficPolicy | None, port: int | None
) -> tuple[net.TrafficPolicy | None, bool]:
    """Istio's GetPortLevelTrafficPolicy: a matching portLevelSettings entry replaces the
    whole policy (its omitted fields take defaults, not the rule's values)."""
    if policy is None or port is None:
        return policy, False
    for pls in policy.port_level_settings:
        if pls.port is not None and pls.port.number == port:
            return (
                net.TrafficPolicy(
                    connection_pool=pls.connection_pool,
                    load_balancer=pls.load_balancer,
                    outlier_detection=pls.outlier_detection,
                    tls=pls.tls,
                ),
                True,
            )
    return policy, False


def merge_subset_policy(
    original: net.TrafficPolicy | None, subset: net.TrafficPolicy | None, port: int | None
) -> net.TrafficPolicy | None:
    """Istio's MergeSubsetTrafficPolicy: the subset's fields win; a subset port-level entry
    replaces connection pool, outlier detection, load balancer and TLS all together."""
    original, _ = port_level_policy(original, port)
    if subset is None:
        return original
    subset, has_port_level = port_level_policy(subset, port)
    if original is None:
        return subset
    assert subset is not None
    update: dict[str, object] = {"port_level_settings": []}
    for name in ("connection_pool", "outlier_detection", "load_balancer", "tls"):
        value = getattr(subset, name)
        if value is not None or has_port_level:
            update[name] = value
    for name in ("tunnel", "proxy_protocol"):
        if getattr(subset, name) is not None:
            update[name] = getattr(subset, name)
    return original.model_copy(update=update)


def subset_of(rule: net.DestinationRule | None, name: str) -> net.Subset | None:
    if rule is None or not name:
        return None
    return next((s for s in rule.subsets if s.name == name), None)


def cluster_policy(
    rule: net.DestinationRule | None, port: int, subset: str = ""
) -> net.TrafficPolicy | None:
    """The traffic policy for ``outbound|port|subset|host`` under ``rule``."""
    if rule is None:
        return None
    if not subset:
        return port_level_policy(rule.traffic_policy, port)[0]
    found = subset_of(rule, subset)
    return merge_subset_policy(rule.traffic_policy, found.traffic_policy if found else None, port)


# --- connection pool -----------------------------------------------------------------------


def default_circuit_breaker_thresholds() -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """Istio lifts Envoy's defaults (1024 connections, 3 retries, ...) to the maximum: small
    limits caused 503s during rollouts before endpoint updates arrived."""
    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(track_remaining=True)
    for name in ("max_retries", "max_requests", "max_connections", "max_pending_requests"):
        getattr(t, name).value = MAX_UINT32
    return t


def apply_connection_pool(
    mesh: MeshConfig, wrapper: ClusterWrapper, settings: net.ConnectionPoolSettings | None
) -> None:
    """connectionPool → circuit breakers, connect timeout, keepalive and HTTP options.

    As in Istio, zero means "unset" (proto3 cannot tell them apart)."""
    if settings is None:
        settings = net.ConnectionPoolSettings()
    c = wrapper.cluster
    threshold = default_circuit_breaker_thresholds()
    idle_timeout = None
    max_requests_per_connection = 0
    max_concurrent_streams = 0
    max_connection_duration = None
    http = settings.http
    if http is not None:
        if http.http2_max_requests > 0:
            threshold.max_requests.value = http.http2_max_requests
        if http.http1_max_pending_requests > 0:
            threshold.max_pending_requests.value = http.http1_max_pending_requests
        if http.max_retries > 0:
            threshold.max_retries.value = http.max_retries
        idle_timeout = http.idle_timeout
        max_requests_per_connection = http.max_requests_per_connection
        max_concurrent_streams = http.max_concurrent_streams

    c.connect_timeout.CopyFrom(mesh_connect_timeout(mesh))
    tcp = settings.tcp
    if tcp is not None:
        if tcp.connect_timeout is not None:
            c.connect_timeout.CopyFrom(duration(tcp.connect_timeout.seconds))
        if tcp.max_connections > 0:
            threshold.max_connections.value = tcp.max_connections
        max_connection_duration = tcp.max_connection_duration
        if idle_timeout is None:
            idle_timeout = tcp.idle_timeout
    apply_tcp_keepalive(mesh, c, tcp)

    c.circuit_breakers.Clear()
    c.circuit_breakers.thresholds.append(threshold)

    if (
        max_connection_duration is not None
        or idle_timeout is not None
        or max_requests_per_connection > 0
        or max_concurrent_streams > 0
    ):
        common = wrapper.options().common_http_protocol_options
        if idle_timeout is not None:
            common.idle_timeout.CopyFrom(duration(idle_timeout.seconds))
        if max_requests_per_connection > 0:
            common.max_requests_per_connection.value = max_requests_per_connection
        if max_connection_duration is not None:
            common.max_connection_duration.CopyFrom(duration(max_connection_duration.seconds))
        if wrapper.is_http2 and max_concurrent_streams > 0:
            h2 = wrapper.options().explicit_http_config.http2_protocol_options
            h2.max_concurrent_streams.value = max_concurrent_streams
    if http is not None and http.use_client_protocol:
        set_use_downstream_protocol(wrapper)


def apply_tcp_keepalive(
    mesh: MeshConfig, c: cluster_pb2.Cluster, tcp: net.TCPSettings | None
) -> None:
    """Mesh-wide keepalive first, then the rule's fields on top."""
    for keepalive in (mesh.tcp_keepalive, tcp.tcp_keepalive if tcp is not None else None):
        if keepalive is None:
            continue
        ka = c.upstream_connection_options.tcp_keepalive
        ka.SetInParent()
        if keepalive.probes > 0:
            ka.keepalive_probes.value = keepalive.probes
        if keepalive.time is not None:
            ka.keepalive_time.value = int(keepalive.time.seconds)
        if keepalive.interval is not None:
            ka.keepalive_interval.value = int(keepalive.interval.seconds)


def should_h2_upgrade(
    port: ServicePort | None, mesh: MeshConfig, pool: net.ConnectionPoolSettings | None
) -> bool:
    """The rule's h2UpgradePolicy wins; otherwise the mesh's, for HTTP ports only."""
    if pool is not None and pool.http is not None:
        if pool.http.h2_upgrade_policy == "UPGRADE":
            return True
        if pool.http.h2_upgrade_policy == "DO_NOT_UPGRADE":
            return False
    if port is not None and not port.protocol.is_http:
        return False
    return mesh.h2_upgrade_policy == "UPGRADE"


# --- outlier detection ---------------------------------------------------------------------


def apply_outlier_detection(c: cluster_pb2.Cluster, outlier: net.OutlierDetection | None) -> None:
    """outlierDetection → Envoy outlier_detection, success-rate ejection off, and the panic
    threshold set to minHealthPercent (0 unless given: panic mode rarely helps in k8s)."""
    if outlier is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if outlier.consecutive_5xx_errors is not None:
        v = outlier.consecutive_5xx_errors
        out.consecutive_5xx.value = v
        out.enforcing_consecutive_5xx.value = 100 if v > 0 else 0
    if outlier.consecutive_gateway_errors is not None:
        v = outlier.consecutive_gateway_errors
        out.consecutive_gateway_failure.value = v
        out.enforcing_consecutive_gateway_failure.value = 100 if v > 0 else 0
    if outlier.interval is not None:
        out.interval.CopyFrom(duration(outlier.interval.seconds))
    if outlier.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time.seconds))
    if outlier.max_ejection_percent > 0:
        out.max_ejection_percent.value = outlier.max_ejection_percent
    if outlier.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if (outlier.consecutive_local_origin_failures or 0) > 0:
            out.consecutive_local_origin_failure.value = outlier.consecutive_local_origin_failures
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    c.outlier_detection.CopyFrom(out)
    if outlier.min_health_percent >= 0:
        c.common_lb_config.healthy_panic_threshold.CopyFrom(
            percent_pb2.Percent(value=float(outlier.min_health_percent))
        )


# --- load balancing ------------------------------------------------------------------------


def locality_lb_setting(
    mesh: MeshConfig, lb: net.LoadBalancerSettings | None
) -> net.LocalityLoadBalancerSetting | None:
    """The rule's localityLbSetting, else the mesh's; ``enabled: false`` turns it off."""
    rule = lb.locality_lb_setting if lb is not None else None
    if rule is not None:
        return None if rule.enabled is False else rule
    mesh_setting = mesh.locality_lb_setting
    if mesh_setting is not None and mesh_setting.enabled is False:
        return None
    return mesh_setting


def apply_load_balancer(
    c: cluster_pb2.Cluster,
    lb: net.LoadBalancerSettings | None,
    port: ServicePort | None,
    mesh: MeshConfig,
) -> net.LocalityLoadBalancerSetting | None:
    """loadBalancer → lb_policy and its config; returns the locality setting in force so the
    caller can prioritise a static load assignment. Call after outlier detection: locality
    failover is only switched on when outlier detection can eject hosts."""
    locality = locality_lb_setting(mesh, lb)
    failover = (
        c.HasField("outlier_detection")
        and locality is not None
        and bool(locality.failover or locality.failover_priority)
    )
    if failover or (locality is not None and locality.distribute):
        c.common_lb_config.locality_weighted_lb_config.SetInParent()

    if c.type == cluster_pb2.Cluster.ORIGINAL_DST:
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return locality
    if port is not None and port.protocol is Protocol.REDIS:
        # Istio defaults Redis to MAGLEV for client-side sharding.
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        return locality

    simple = lb.simple if lb is not None else None
    if simple in ("LEAST_CONN", "LEAST_REQUEST"):
        _least_request(c, lb)
    elif simple == "RANDOM":
        c.lb_policy = cluster_pb2.Cluster.RANDOM
    elif simple == "ROUND_ROBIN":
        _round_robin(c, lb)
    elif simple == "PASSTHROUGH":
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.ClearField("load_assignment")
    else:
        # Istio's default algorithm.
        _least_request(c, lb)
    _apply_consistent_hash(c, lb)
    return locality


def _slow_start(lb: net.LoadBalancerSettings | None) -> cluster_pb2.Cluster.SlowStartConfig | None:
    if lb is None:
        return None
    window = lb.warmup.duration if lb.warmup is not None else None
    window = window or lb.warmup_duration_secs
    if window is None:
        return None
    cfg = cluster_pb2.Cluster.SlowStartConfig(slow_start_window=duration(window.seconds))
    if lb.warmup is not None:
        if lb.warmup.aggression is not None:
            cfg.aggression.default_value = lb.warmup.aggression
            cfg.aggression.runtime_key = "upstream.slow_start.aggression"
        if lb.warmup.minimum_percent is not None:
            cfg.min_weight_percent.value = lb.warmup.minimum_percent
    return cfg


def _round_robin(c: cluster_pb2.Cluster, lb: net.LoadBalancerSettings | None) -> None:
    c.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
    slow = _slow_start(lb)
    if slow is not None:
        c.round_robin_lb_config.slow_start_config.CopyFrom(slow)


def _least_request(c: cluster_pb2.Cluster, lb: net.LoadBalancerSettings | None) -> None:
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    slow = _slow_start(lb)
    if slow is not None:
        c.least_request_lb_config.slow_start_config.CopyFrom(slow)


def _apply_consistent_hash(c: cluster_pb2.Cluster, lb: net.LoadBalancerSettings | None) -> None:
    """consistentHash → MAGLEV or RING_HASH (minimum ring 1024 unless given)."""
    ch = lb.consistent_hash if lb is not None else None
    if ch is None:
        return
    if ch.maglev is not None:
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        if ch.maglev.table_size:
            c.maglev_lb_config.table_size.value = ch.maglev.table_size
    elif ch.ring_hash is not None:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        if ch.ring_hash.minimum_ring_size:
            c.ring_hash_lb_config.minimum_ring_size.value = ch.ring_hash.minimum_ring_size
    else:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        c.ring_hash_lb_config.minimum_ring_size.value = ch.minimum_ring_size or 1024


def consistent_hash_for(
    rule: net.DestinationRule | None, port: int, subset: str
) -> net.ConsistentHashLB | None:
    """Istio's hashForHTTPDestination precedence: subset port-level, subset, rule
    port-level, then the rule's own consistentHash."""
    if rule is None:
        return None

    def pls_hash(policy: net.TrafficPolicy | None) -> net.ConsistentHashLB | None:
        for pls in policy.port_level_settings if policy is not None else []:
            if pls.port is not None and pls.port.number == port and pls.load_balancer:
                return pls.load_balancer.consistent_hash
        return None

    policy = rule.traffic_policy
    chosen = policy.load_balancer.consistent_hash if policy and policy.load_balancer else None
    rule_pls = pls_hash(policy)
    found = subset_of(rule, subset)
    sub_policy = found.traffic_policy if found is not None else None
    sub_hash = (
        sub_policy.load_balancer.consistent_hash
        if sub_policy is not None and sub_policy.load_balancer is not None
        else None
    )
    for candidate in (pls_hash(sub_policy), sub_hash, rule_pls):
        if candidate is not None:
            return candidate
    return chosen


def hash_policy_for(
    push: PushContext, proxy: Proxy, host: str, subset: str, port: int
) -> list[route_components_pb2.RouteAction.HashPolicy]:
    """The route-level hash policy for traffic to ``outbound|port|subset|host``.

    Envoy's ring hash / Maglev clusters hash on what the route says; Istio puts the key
    (header, cookie, source IP, query parameter) on the route. [] when none applies."""
    dr = push.destination_rule(proxy, host)
    ch = consistent_hash_for(dr.spec if dr is not None else None, port, subset)
    if ch is None:
        return []
    hp = route_components_pb2.RouteAction.HashPolicy
    if ch.http_header_name:
        return [hp(header=hp.Header(header_name=ch.http_header_name))]
    if ch.http_cookie is not None:
        cookie = hp.Cookie(name=ch.http_cookie.name, path=ch.http_cookie.path)
        if ch.http_cookie.ttl is not None:
            cookie.ttl.CopyFrom(duration(ch.http_cookie.ttl.seconds))
        for attr in ch.http_cookie.attributes:
            cookie.attributes.add(name=attr.name, value=attr.value)
        return [hp(cookie=cookie)]
    if ch.use_source_ip:
        return [hp(connection_properties=hp.ConnectionProperties(source_ip=True))]
    if ch.http_query_parameter_name:
        return [hp(query_parameter=hp.QueryParameter(name=ch.http_query_parameter_name))]
    return []


# --- TLS -----------------------------------------------------------------------------------


def namespace_mtls_disabled(push: PushContext, namespace: str) -> bool:
    """True when PeerAuthentication turns mTLS off for a namespace (namespace-wide policy,
    else the mesh-wide one in the root namespace). Workload-level policies do not count:
    Istio infers the service's mode from namespace and mesh policy only (a workload with
    no labels matches no selector)."""
    return peer_authentication_for(push, namespace, {}).mode is MtlsMode.DISABLE


def service_mtls_enabled(
    push: PushContext, policy: net.TrafficPolicy | None, service: Service, port: ServicePort
) -> bool:
    """Istio's BestEffortInferServiceMTLSMode, reduced to "may auto mTLS apply?"."""
    if service.mesh_external:
        return False
    passthrough = service.resolution is Resolution.PASSTHROUGH or (
        policy is not None
        and policy.load_balancer is not None
        and policy.load_balancer.simple == "PASSTHROUGH"
    )
    if passthrough:
        # No per-endpoint socket choice on ORIGINAL_DST: mTLS only if every endpoint can.
        eps = push.endpoints(service.hostname, port.name)
        if not eps or any(e.tls_mode != ISTIO_TLS_MODE for e in eps):
            return False
    return not namespace_mtls_disabled(push, service.namespace)


@dataclass(frozen=True, slots=True)
class UpstreamTlsInputs:
    """What the TLS decision needs besides the rule's ClientTLSSettings."""

    service_accounts: tuple[str, ...]
    sni: str  # outbound_.9080_.v1_.reviews.default.svc.cluster.local
    mesh_external: bool
    auto_mtls_possible: bool
    dr_has_selector: bool
    # ServiceEntry hosts: SIMPLE/MUTUAL without subjectAltNames verify the entry's
    # subjectAltNames (carried as the service's accounts).
    service_entry: bool = False


def apply_upstream_tls(
    push: PushContext,
    proxy: Proxy,
    wrapper: ClusterWrapper,
    settings: net.ClientTLSSettings | None,
    inputs: UpstreamTlsInputs,
) -> None:
    """The rule's tls, or auto mTLS when it says nothing.

    Auto mTLS becomes two transport_socket_matches: endpoints whose metadata carries
    ``tlsMode: istio`` get Istio mutual TLS, every other endpoint plaintext."""
    c = wrapper.cluster
    auto = False
    if settings is None:
        auto_enabled = push.mesh.enable_auto_mtls is not False
        if inputs.mesh_external or not auto_enabled or not inputs.auto_mtls_possible:
            return
        settings = net.ClientTLSSettings(
            mode="ISTIO_MUTUAL", subject_alt_names=list(inputs.service_accounts), sni=inputs.sni
        )
        auto = True
    elif settings.mode == "ISTIO_MUTUAL":
        settings = settings.model_copy(
            update={
                "sni": settings.sni or inputs.sni,
                "subject_alt_names": settings.subject_alt_names or list(inputs.service_accounts),
            }
        )

    if settings.mode == "DISABLE":
        return
    if settings.mode == "ISTIO_MUTUAL":
        ctx = tlsctx.istio_mutual_upstream_tls(
            settings.sni or c.name, settings.subject_alt_names, wrapper.is_http2
        )
    else:
        _set_auto_sni_and_san(wrapper, settings)
        if inputs.service_entry and not settings.subject_alt_names:
            settings = settings.model_copy(
                update={"subject_alt_names": list(inputs.service_accounts)}
            )
        ctx = tlsctx.user_upstream_tls(
            settings,
            wrapper.is_http2,
            allow_credential_name=proxy.type is not NodeType.SIDECAR or inputs.dr_has_selector,
        )
        if ctx is None:
            return
    socket = tlsctx.tls_transport_socket(ctx)
    if auto and c.type != cluster_pb2.Cluster.ORIGINAL_DST:
        c.ClearField("transport_socket")
        c.transport_socket_matches.extend(
            [
                cluster_pb2.Cluster.TransportSocketMatch(
                    name="tlsMode-" + ISTIO_TLS_MODE,
                    match=struct_pb2.Struct(
                        fields={TLS_MODE_KEY: struct_pb2.Value(string_value=ISTIO_TLS_MODE)}
                    ),
                    transport_socket=socket,
                ),
                cluster_pb2.Cluster.TransportSocketMatch(
                    name="tlsMode-disabled",
                    match=struct_pb2.Struct(),
                    transport_socket=tlsctx.raw_buffer_transport_socket(),
                ),
            ]
        )
    else:
        c.transport_socket.CopyFrom(socket)


def _set_auto_sni_and_san(wrapper: ClusterWrapper, settings: net.ClientTLSSettings) -> None:
    """SIMPLE/MUTUAL without an explicit SNI: Envoy sets SNI from the request's host and,
    unless SANs are given, verifies the certificate against it."""
    auto_sni = not settings.sni
    auto_san = auto_sni and not settings.subject_alt_names and not settings.insecure_skip_verify
    if auto_sni or auto_san:
        upstream = wrapper.options().upstream_http_protocol_options
        upstream.SetInParent()
        if auto_sni:
            upstream.auto_sni = True
        if auto_san:
            upstream.auto_san_validation = True


def apply_proxy_protocol(wrapper: ClusterWrapper, proxy_protocol: net.ProxyProtocol | None) -> None:
    """trafficPolicy.proxyProtocol: wrap the transport socket(s) in the upstream PROXY
    protocol socket."""
    if proxy_protocol is None:
        return

    version = proxy_protocol_pb2.ProxyProtocolConfig.V2 if proxy_protocol.version == "V2" else 0

    def wrap(inner: base_pb2.TransportSocket) -> base_pb2.TransportSocket:
        cfg = ppp.ProxyProtocolUpstreamTransport(transport_socket=inner)
        cfg.config.version = version
        return base_pb2.TransportSocket(
            name="envoy.transport_sockets.upstream_proxy_protocol", typed_config=tlsctx.to_any(cfg)
        )

    c = wrapper.cluster
    if c.HasField("transport_socket"):
        c.transport_socket.CopyFrom(wrap(c.transport_socket))
    elif c.transport_socket_matches:
        for tsm in c.transport_socket_matches:
            tsm.transport_socket.CopyFrom(wrap(tsm.transport_socket))
    else:
        c.transport_socket.CopyFrom(wrap(tlsctx.raw_buffer_transport_socket()))


def dr_selects(rule: net.DestinationRule | None, proxy: Proxy) -> bool:
    """True for a rule with a workload selector matching the proxy (credentialName allowed)."""
    return (
        rule is not None
        and rule.workload_selector is not None
        and bool(rule.workload_selector.match_labels)
        and labels_match(rule.workload_selector.match_labels, proxy.labels)
    )
