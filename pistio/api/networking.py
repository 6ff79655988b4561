"""API model: networking.istio.io (VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar,
WorkloadEntry, WorkloadGroup, EnvoyFilter, ProxyConfig).

Field lists follow istio.io/api ``networking/v1alpha3`` and ``networking/v1beta1``; the three
served versions share one schema, as in Istio's CRDs.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from pistio.api import type_v1beta1
from pistio.api.base import Double, Duration, Int64, IstioModel, Struct, proto_enum
from pistio.api.registry import register_spec_kind

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")

# Proto scalar ranges: protojson refuses out-of-range numbers, so the model does too.
UInt32 = Annotated[int, Field(ge=0, le=4294967295)]
Int32 = Annotated[int, Field(ge=-2147483648, le=2147483647)]


# --- Shared messages ------------------------------------------------------------------------


class PortSelector(IstioModel):
    """A port on a destination service (PortSelector)."""

    number: UInt32 = 0


class Destination(IstioModel):
    """A service (and optional subset and port) that traffic is sent to."""

    host: str = ""
    subset: str = ""
    port: PortSelector | None = None


class Percent(IstioModel):
    """A percentage as a double in [0, 100]."""

    value: Double = 0.0


class WorkloadSelector(IstioModel):
    """networking.v1alpha3.WorkloadSelector: the labels of the workloads a config applies to."""

    labels: dict[str, str] = Field(default_factory=dict)


# --- VirtualService -------------------------------------------------------------------------


class StringMatch(IstioModel):
    """A string matched exactly, by prefix, or by RE2 regex (one of)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HTTPMatchRequest(IstioModel):
    """Conditions an HTTP request must meet for a route to apply."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: UInt32 = 0
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str = ""
    stat_prefix: str = ""


class HeaderOperations(IstioModel):
    """Header set/add/remove operations on a request or response."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(IstioModel):
    """Header manipulation for requests and responses."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioModel):
    """A weighted HTTP destination with its own header operations."""

    destination: Destination | None = None
    weight: Int32 = 0
    headers: Headers | None = None


class RouteDestination(IstioModel):
    """A weighted L4 destination (TLS and TCP routes)."""

    destination: Destination | None = None
    weight: Int32 = 0


class HTTPRedirect(IstioModel):
    """A 3xx redirect response sent instead of forwarding."""

    uri: str = ""
    authority: str = ""
    port: UInt32 | None = None
    derive_port: proto_enum("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT") | None = None
    scheme: str = ""
    redirect_code: UInt32 = 0
    prefix_rewrite: str = ""


class HTTPBody(IstioModel):
    """A direct response body: text or base64 bytes (one of)."""

    string: str | None = None
    bytes: str | None = None


class HTTPDirectResponse(IstioModel):
    """A fixed response sent instead of forwarding."""

    status: UInt32 = 0
    body: HTTPBody | None = None


class Delegate(IstioModel):
    """A VirtualService that HTTP routes are delegated to."""

    name: str = ""
    namespace: str = ""


class RegexRewrite(IstioModel):
    """A regex rewrite of the URI path."""

    match: str = ""
    rewrite: str = ""


class HTTPRewrite(IstioModel):
    """Rewrite of the URI path and authority before forwarding."""

    uri: str = ""
    authority: str = ""
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(IstioModel):
    """Retry policy of an HTTP route."""

    attempts: Int32 = 0
    per_try_timeout: Duration | None = None
    retry_on: str = ""
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class CorsPolicy(IstioModel):
    """Cross-origin resource sharing policy of an HTTP route."""

    allow_origin: list[str] = Field(default_factory=list)
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: proto_enum("UNSPECIFIED", "FORWARD", "IGNORE") = "UNSPECIFIED"


class HTTPFaultInjectionDelay(IstioModel):
    """HTTPFaultInjection.Delay: a delay injected before forwarding."""

    fixed_delay: Duration | None = None
    exponential_delay: Duration | None = None
    percent: Int32 = 0
    percentage: Percent | None = None


class HTTPFaultInjectionAbort(IstioModel):
    """HTTPFaultInjection.Abort: an error returned instead of forwarding."""

    http_status: Int32 | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(IstioModel):
    """Fault injection (delays and aborts) on an HTTP route."""

    delay: HTTPFaultInjectionDelay | None = None
    abort: HTTPFaultInjectionAbort | None = None


class HTTPMirrorPolicy(IstioModel):
    """A destination that a share of the traffic is mirrored to."""

    destination: Destination | None = None
    percentage: Percent | None = None


class HTTPRoute(IstioModel):
    """An HTTP routing rule: matches and what to do with matching requests."""

    name: str = ""
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    # The proto's JSON name is "mirror_percent"; Istio's CRD also takes "mirrorPercent".
    mirror_percent: UInt32 | None = Field(default=None, alias="mirrorPercent")
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class TLSMatchAttributes(IstioModel):
    """Conditions on a TLS connection (SNI, ports, sources)."""

    sni_hosts: list[str] = Field(default_factory=list)
    destination_subnets: list[str] = Field(default_factory=list)
    port: UInt32 = 0
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str = ""


class L4MatchAttributes(IstioModel):
    """Conditions on a TCP connection (addresses, ports, sources)."""

    destination_subnets: list[str] = Field(default_factory=list)
    port: UInt32 = 0
    source_subnet: str = ""
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str = ""


class TLSRoute(IstioModel):
    """A routing rule for unterminated TLS traffic."""

    match: list[TLSMatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class TCPRoute(IstioModel):
    """A routing rule for opaque TCP traffic."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class VirtualService(IstioModel):
    """VirtualService spec: routing rules for a set of hosts."""

    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


# --- DestinationRule ------------------------------------------------------------------------


class HTTPCookieAttribute(IstioModel):
    """ConsistentHashLB.HTTPCookie.Attribute: an extra attribute of a generated cookie."""

    name: str = ""
    value: str = ""


class HTTPCookie(IstioModel):
    """ConsistentHashLB.HTTPCookie: a cookie used as the hash key."""

    name: str = ""
    path: str = ""
    ttl: Duration | None = None
    attributes: list[HTTPCookieAttribute] = Field(default_factory=list)


class RingHash(IstioModel):
    """ConsistentHashLB.RingHash: ring hash algorithm settings."""

    minimum_ring_size: Int64 = 0


class MagLev(IstioModel):
    """ConsistentHashLB.MagLev: Maglev algorithm settings."""

    table_size: Int64 = 0


class ConsistentHashLB(IstioModel):
    """Consistent-hash load balancing: what to hash and which algorithm."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: Int64 = 0


class LocalityDistribute(IstioModel):
    """LocalityLoadBalancerSetting.Distribute: traffic shares from one locality to others."""

    from_: str = Field(default="", alias="from")
    to: dict[str, UInt32] = Field(default_factory=dict)


class LocalityFailover(IstioModel):
    """LocalityLoadBalancerSetting.Failover: the region to fail over to from another."""

    from_: str = Field(default="", alias="from")
    to: str = ""


class LocalityLoadBalancerSetting(IstioModel):
    """Locality-aware load balancing: distribution, failover, priorities."""

    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None


class ZoneAwareLoadBalancerSetting(IstioModel):
    """Zone-aware load balancing: Envoy prefers endpoints in the caller's zone (Istio 1.31)."""

    enabled: bool | None = None
    min_cluster_size: UInt32 | None = None
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)


class WarmupConfiguration(IstioModel):
    """Slow start of new endpoints."""

    duration: Duration | None = None
    minimum_percent: Double | None = None
    aggression: Double | None = None


class LoadBalancerSettings(IstioModel):
    """Load balancing policy: a simple algorithm or consistent hashing, plus locality."""

    simple: (
        proto_enum(
            "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
        )
        | None
    ) = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


class TcpKeepalive(IstioModel):
    """ConnectionPoolSettings.TCPSettings.TcpKeepalive: SO_KEEPALIVE settings."""

    probes: UInt32 = 0
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    """ConnectionPoolSettings.TCPSettings: limits common to TCP and HTTP upstreams."""

    max_connections: Int32 = 0
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTP2KeepAlive(IstioModel):
    """HTTP/2 keepalive PINGs on upstream connections (Istio 1.31)."""

    interval: Duration | None = None
    timeout: Duration | None = None


class HTTPSettings(IstioModel):
    """ConnectionPoolSettings.HTTPSettings: HTTP/1.1 and HTTP/2 limits."""

    http1_max_pending_requests: Int32 = 0
    http2_max_requests: Int32 = 0
    max_requests_per_connection: Int32 = 0
    max_retries: Int32 = 0
    idle_timeout: Duration | None = None
    h2_upgrade_policy: proto_enum("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE") = "DEFAULT"
    use_client_protocol: bool = False
    max_concurrent_streams: Int32 = 0
    http2_keep_alive: HTTP2KeepAlive | None = None


class ConnectionPoolSettings(IstioModel):
    """Connection pool limits for an upstream host."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    """Ejection of unhealthy hosts from the load balancing pool."""

    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive_5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_errors: Int32 = 0
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Int32 = 0
    min_health_percent: Int32 = 0


class ClientTLSSettings(IstioModel):
    """TLS settings for connections to an upstream service."""

    mode: proto_enum("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL") = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str = ""
    insecure_skip_verify: bool | None = None
    ca_crl: str = ""


class PortTrafficPolicy(IstioModel):
    """TrafficPolicy.PortTrafficPolicy: a traffic policy for one port."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(IstioModel):
    """TrafficPolicy.TunnelSettings: tunnelling TCP over HTTP CONNECT or POST."""

    protocol: str = ""
    target_host: str = ""
    target_port: UInt32 = 0


class ProxyProtocol(IstioModel):
    """TrafficPolicy.ProxyProtocol: PROXY protocol sent upstream."""

    version: proto_enum("V1", "V2") = "V1"


class RetryBudget(IstioModel):
    """TrafficPolicy.RetryBudget: a limit on concurrent retries."""

    percent: Double | None = None
    min_retry_concurrency: UInt32 = 0
    budget_interval: Duration | None = None


class TrafficPolicy(IstioModel):
    """Traffic policy for a destination: load balancing, pools, outliers, TLS."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


class Subset(IstioModel):
    """A named subset of a service's endpoints, chosen by labels."""

    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRule(IstioModel):
    """DestinationRule spec: policies for traffic to a host after routing."""

    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: type_v1beta1.WorkloadSelector | None = None


# --- Gateway --------------------------------------------------------------------------------


class Port(IstioModel):
    """A port a gateway server listens on."""

    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 = 0


class TLSCertificate(IstioModel):
    """ServerTLSSettings.TLSCertificate: one certificate/key pair served by a gateway."""

    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


TLSProtocol = proto_enum("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")


class ServerTLSSettings(IstioModel):
    """TLS settings of a gateway server (or sidecar ingress listener)."""

    https_redirect: bool = False
    mode: proto_enum(
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ) = "PASSTHROUGH"
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: list[str] = Field(default_factory=list)
    tls_certificates: list[TLSCertificate] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TLSProtocol = "TLS_AUTO"
    max_protocol_version: TLSProtocol = "TLS_AUTO"
    cipher_suites: list[str] = Field(default_factory=list)


class Server(IstioModel):
    """A listener of a gateway: port, hosts and TLS."""

    port: Port | None = None
    bind: str = ""
    hosts: list[str] = Field(default_factory=list)
    tls: ServerTLSSettings | None = None
    default_endpoint: str = ""
    name: str = ""


class Gateway(IstioModel):
    """Gateway spec: the servers of a load balancer at the mesh edge."""

    servers: list[Server] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)


# --- ServiceEntry, WorkloadEntry, WorkloadGroup ---------------------------------------------


class WorkloadEntry(IstioModel):
    """WorkloadEntry spec (also a ServiceEntry endpoint): a non-Kubernetes workload."""

    address: str = ""
    ports: dict[str, UInt32] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str = ""
    locality: str = ""
    weight: UInt32 = 0
    service_account: str = ""


class ServicePort(IstioModel):
    """A port of a service declared by a ServiceEntry."""

    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 = 0


class ServiceEntry(IstioModel):
    """ServiceEntry spec: adds a service to the mesh's registry."""

    hosts: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: proto_enum("MESH_EXTERNAL", "MESH_INTERNAL") = "MESH_EXTERNAL"
    resolution: proto_enum("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS") = "NONE"
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)


class WorkloadGroupObjectMeta(IstioModel):
    """WorkloadGroup.ObjectMeta: labels and annotations given to generated WorkloadEntries."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class HTTPHeader(IstioModel):
    """A header sent with an HTTP health check."""

    name: str = ""
    value: str = ""


class HTTPHealthCheckConfig(IstioModel):
    """An HTTP GET readiness check."""

    path: str = ""
    port: UInt32 = 0
    host: str = ""
    scheme: str = ""
    http_headers: list[HTTPHeader] = Field(default_factory=list)


class TCPHealthCheckConfig(IstioModel):
    """A TCP connect readiness check."""

    host: str = ""
    port: UInt32 = 0


class ExecHealthCheckConfig(IstioModel):
    """A command run as a readiness check."""

    command: list[str] = Field(default_factory=list)


class GrpcHealthCheckConfig(IstioModel):
    """A gRPC health-protocol readiness check."""

    port: UInt32 = 0
    service: str = ""


class ReadinessProbe(IstioModel):
    """The readiness check of the workloads of a WorkloadGroup (one method)."""

    initial_delay_seconds: Int32 = 0
    timeout_seconds: Int32 = 0
    period_seconds: Int32 = 0
    success_threshold: Int32 = 0
    failure_threshold: Int32 = 0
    http_get: HTTPHealthCheckConfig | None = None
    tcp_socket: TCPHealthCheckConfig | None = None
    exec: ExecHealthCheckConfig | None = None
    grpc: GrpcHealthCheckConfig | None = None


class WorkloadGroup(IstioModel):
    """WorkloadGroup spec: a template for WorkloadEntries of auto-registered VMs."""

    metadata: WorkloadGroupObjectMeta | None = None
    template: WorkloadEntry | None = None
    probe: ReadinessProbe | None = None


# --- Sidecar --------------------------------------------------------------------------------


CaptureMode = proto_enum("DEFAULT", "IPTABLES", "NONE")


class SidecarPort(IstioModel):
    """A port of a sidecar listener."""

    number: UInt32 = 0
    protocol: str = ""
    name: str = ""
    target_port: UInt32 = 0


class IstioIngressListener(IstioModel):
    """An inbound listener of a sidecar."""

    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"
    default_endpoint: str = ""
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(IstioModel):
    """An outbound listener of a sidecar and the hosts it can reach."""

    port: SidecarPort | None = None
    bind: str = ""
    capture_mode: CaptureMode = "DEFAULT"
    hosts: list[str] = Field(default_factory=list)


class OutboundTrafficPolicy(IstioModel):
    """What a sidecar does with traffic to unknown destinations."""

    mode: proto_enum("REGISTRY_ONLY", "ALLOW_ANY") = "REGISTRY_ONLY"
    egress_proxy: Destination | None = None


class Sidecar(IstioModel):
    """Sidecar spec: the inbound and outbound configuration of a workload's proxy."""

    workload_selector: WorkloadSelector | None = None
    ingress: list[IstioIngressListener] = Field(default_factory=list)
    egress: list[IstioEgressListener] = Field(default_factory=list)
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None


# --- EnvoyFilter ----------------------------------------------------------------------------


ApplyTo = proto_enum(
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
)
PatchContext = proto_enum("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT")


class ProxyMatch(IstioModel):
    """EnvoyFilter.ProxyMatch: proxy version and node metadata to match."""

    proxy_version: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class SubFilterMatch(IstioModel):
    """EnvoyFilter.ListenerMatch.SubFilterMatch: an HTTP filter within the HCM."""

    name: str = ""


class FilterMatch(IstioModel):
    """EnvoyFilter.ListenerMatch.FilterMatch: a network filter to match."""

    name: str = ""
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioModel):
    """EnvoyFilter.ListenerMatch.FilterChainMatch: a filter chain to match."""

    name: str = ""
    sni: str = ""
    transport_protocol: str = ""
    application_protocols: str = ""
    filter: FilterMatch | None = None
    destination_port: UInt32 = 0


class ListenerMatch(IstioModel):
    """EnvoyFilter.ListenerMatch: a listener to patch."""

    port_number: UInt32 = 0
    port_name: str = ""
    filter_chain: FilterChainMatch | None = None
    listener_filter: str = ""
    name: str = ""


class RouteMatch(IstioModel):
    """EnvoyFilter.RouteConfigurationMatch.RouteMatch: a route to patch."""

    name: str = ""
    action: proto_enum("ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE") = "ANY"


class VirtualHostMatch(IstioModel):
    """EnvoyFilter.RouteConfigurationMatch.VirtualHostMatch: a virtual host to patch."""

    name: str = ""
    route: RouteMatch | None = None
    domain_name: str = ""


class RouteConfigurationMatch(IstioModel):
    """EnvoyFilter.RouteConfigurationMatch: a route configuration to patch."""

    port_number: UInt32 = 0
    port_name: str = ""
    gateway: str = ""
    vhost: VirtualHostMatch | None = None
    name: str = ""


class ClusterMatch(IstioModel):
    """EnvoyFilter.ClusterMatch: a cluster to patch."""

    port_number: UInt32 = 0
    service: str = ""
    subset: str = ""
    name: str = ""


class WaypointMatch(IstioModel):
    """EnvoyFilter.WaypointMatch: what to patch in a waypoint proxy."""

    filter: FilterMatch | None = None
    port_number: UInt32 = 0


class EnvoyConfigObjectMatch(IstioModel):
    """EnvoyFilter.EnvoyConfigObjectMatch: which generated object a patch applies to."""

    context: PatchContext = "ANY"
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None


class Patch(IstioModel):
    """EnvoyFilter.Patch: the operation and value applied to a matched object."""

    operation: proto_enum(
        "INVALID",
        "MERGE",
        "ADD",
        "REMOVE",
        "INSERT_BEFORE",
        "INSERT_AFTER",
        "INSERT_FIRST",
        "REPLACE",
        "MERGE_AND_REPLACE_LIST",
    ) = "INVALID"
    value: Struct | None = None
    filter_class: proto_enum("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS") = "UNSPECIFIED"


class EnvoyConfigObjectPatch(IstioModel):
    """EnvoyFilter.EnvoyConfigObjectPatch: one patch of generated Envoy config."""

    apply_to: ApplyTo = "INVALID"
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None


class EnvoyFilter(IstioModel):
    """EnvoyFilter spec: patches to the Envoy configuration Istio generates."""

    workload_selector: WorkloadSelector | None = None
    target_refs: list[type_v1beta1.PolicyTargetReference] = Field(default_factory=list)
    config_patches: list[EnvoyConfigObjectPatch] = Field(default_factory=list)
    priority: Int32 = 0


# --- ProxyConfig ----------------------------------------------------------------------------


class ProxyImage(IstioModel):
    """The proxy image variant (default, debug, distroless)."""

    image_type: str = ""


class ProxyConfig(IstioModel):
    """ProxyConfig spec: per-workload proxy settings."""

    selector: type_v1beta1.WorkloadSelector | None = None
    concurrency: Int32 | None = None
    environment_variables: dict[str, str] = Field(default_factory=dict)
    image: ProxyImage | None = None
    # Istio 1.31 connection settings (buffer limits, HTTP timeouts, HTTP/2, normalization);
    # kept free-form until pistio reads them.
    connection_settings: Struct | None = None


# --- Registration ---------------------------------------------------------------------------


def _register(kind: str, spec: type[IstioModel], versions: tuple[str, ...], **kw: Any) -> Any:
    return register_spec_kind(GROUP, kind, versions, spec, **kw)


VirtualServiceObject = _register("VirtualService", VirtualService, VERSIONS, short_names=("vs",))
DestinationRuleObject = _register("DestinationRule", DestinationRule, VERSIONS, short_names=("dr",))
GatewayObject = _register("Gateway", Gateway, VERSIONS, short_names=("gw",))
ServiceEntryObject = _register(
    "ServiceEntry", ServiceEntry, VERSIONS, plural="serviceentries", short_names=("se",)
)
SidecarObject = _register("Sidecar", Sidecar, VERSIONS)
WorkloadEntryObject = _register(
    "WorkloadEntry", WorkloadEntry, VERSIONS, plural="workloadentries", short_names=("we",)
)
WorkloadGroupObject = _register("WorkloadGroup", WorkloadGroup, VERSIONS, short_names=("wg",))
EnvoyFilterObject = _register("EnvoyFilter", EnvoyFilter, ("v1alpha3",))
ProxyConfigObject = _register("ProxyConfig", ProxyConfig, ("v1beta1",))
