"""Envoy's ``Cluster`` compiled into an immutable ``ClusterConfig``.

A cluster names a set of upstream hosts and how to reach them: the *discovery type* (where
hosts come from: EDS, an inline static list, DNS, or the connection's original destination),
the *load balancing policy*, connection limits (*circuit breakers*), passive health checking
(*outlier detection*), active health checking (``health_checks``, compiled by
``pistio.proxy.config.health_check``), DNS resolution settings (``dns_refresh_rate``,
``dns_failure_refresh_rate``, ``dns_jitter``, ``dns_lookup_family``; ``respect_dns_ttl`` is
accepted but cannot be honoured, see ``pistio.proxy.upstream.dns``), upstream HTTP protocol
options and the transport socket (plaintext or
TLS, chosen per endpoint by ``transport_socket_matches`` on its metadata, which is how Istio's
auto-mTLS works).

Every default below is Envoy's. Every field pistio does not implement is reported by its path
and the cluster is NACKed (``ConfigError``); nothing is ignored silently. Transport sockets are
kept as compiled records (SNI, ALPN, SAN matchers, SDS secret names) for the TLS code.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, json_format

from pistio.proxy.config.endpoints import (
    TRANSPORT_SOCKET_MATCH_KEY,
    EndpointConfig,
    LoadAssignment,
    compile_load_assignment,
)
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.health_check import HealthCheckConfig, compile_health_checks
from pistio.proxy.config.tls_fields import COMMON_TLS_ALLOWED, check_common_tls
from pistio.proxy.config.unsupported import unsupported_fields

Cluster = cluster_pb2.Cluster

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TYPE_URL = "type.googleapis.com/"
RAW_BUFFER_TYPE = _TYPE_URL + raw_buffer_pb2.RawBuffer.DESCRIPTOR.full_name
TLS_TYPE = _TYPE_URL + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name
PROXY_PROTOCOL_TYPE = (
    _TYPE_URL + upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport.DESCRIPTOR.full_name
)

# Envoy's defaults.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_CIRCUIT_BREAKER_LIMIT = 1024
DEFAULT_MAX_RETRIES = 3
DEFAULT_PANIC_THRESHOLD = 50.0
DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024
DEFAULT_MAGLEV_TABLE_SIZE = 65537
DEFAULT_CHOICE_COUNT = 2
DEFAULT_IDLE_TIMEOUT = 3600.0  # upstream connection idle timeout: one hour
DEFAULT_PER_CONNECTION_BUFFER_LIMIT = 1024 * 1024
DEFAULT_DNS_REFRESH_RATE = 5.0
DEFAULT_CLEANUP_INTERVAL = 5.0


class DiscoveryType(enum.Enum):
    STATIC = "STATIC"
    STRICT_DNS = "STRICT_DNS"
    LOGICAL_DNS = "LOGICAL_DNS"
    EDS = "EDS"
    ORIGINAL_DST = "ORIGINAL_DST"


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RING_HASH = "RING_HASH"
    RANDOM = "RANDOM"
    MAGLEV = "MAGLEV"
    CLUSTER_PROVIDED = "CLUSTER_PROVIDED"  # ORIGINAL_DST: the connection names its host


class UpstreamProtocol(enum.Enum):
    """Which HTTP codec the pool speaks upstream."""

    HTTP1 = "HTTP1"
    HTTP2 = "HTTP2"
    USE_DOWNSTREAM = "USE_DOWNSTREAM"  # the downstream request's protocol


_DISCOVERY = {
    Cluster.STATIC: DiscoveryType.STATIC,
    Cluster.STRICT_DNS: DiscoveryType.STRICT_DNS,
    Cluster.LOGICAL_DNS: DiscoveryType.LOGICAL_DNS,
    Cluster.EDS: DiscoveryType.EDS,
    Cluster.ORIGINAL_DST: DiscoveryType.ORIGINAL_DST,
}
_LB_POLICY = {
    Cluster.ROUND_ROBIN: LbPolicy.ROUND_ROBIN,
    Cluster.LEAST_REQUEST: LbPolicy.LEAST_REQUEST,
    Cluster.RING_HASH: LbPolicy.RING_HASH,
    Cluster.RANDOM: LbPolicy.RANDOM,
    Cluster.MAGLEV: LbPolicy.MAGLEV,
    Cluster.CLUSTER_PROVIDED: LbPolicy.CLUSTER_PROVIDED,
}

# Per message type, the fields pistio honours (see unsupported.py).
_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.config.cluster.v3.Cluster": frozenset(
        {
            "name",
            "alt_stat_name",
            "type",
            "eds_cluster_config",
            "connect_timeout",
            "per_connection_buffer_limit_bytes",
            "lb_policy",
            "load_assignment",
            "circuit_breakers",
            "typed_extension_protocol_options",
            "dns_refresh_rate",
            "dns_failure_refresh_rate",
            "dns_jitter",
            "respect_dns_ttl",
            "dns_lookup_family",
            "health_checks",
            "ignore_health_on_host_removal",
            "close_connections_on_host_health_failure",
            "outlier_detection",
            "cleanup_interval",
            "upstream_bind_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "least_request_lb_config",
            "round_robin_lb_config",
            "common_lb_config",
            "transport_socket",
            "transport_socket_matches",
            "metadata",
            "upstream_connection_options",
        }
    ),
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig": frozenset({"eds_config", "service_name"}),
    "envoy.config.cluster.v3.Cluster.RefreshRate": frozenset({"base_interval", "max_interval"}),
    "envoy.config.cluster.v3.CircuitBreakers": frozenset({"thresholds"}),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": frozenset(
        {
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "retry_budget",
            "track_remaining",
        }
    ),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": frozenset(
        {"budget_percent", "min_retry_concurrency"}
    ),
    "envoy.config.cluster.v3.OutlierDetection": frozenset(
        {
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_success_rate",
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "success_rate_stdev_factor",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "split_external_local_origin_errors",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "enforcing_local_origin_success_rate",
            "max_ejection_time",
            "always_eject_one_host",
            "successful_active_health_check_uneject_host",
        }
    ),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": frozenset(
        {"healthy_panic_threshold", "locality_weighted_lb_config", "zone_aware_lb_config",
         "ignore_new_hosts_until_first_hc"}
    ),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.ZoneAwareLbConfig": frozenset(
        {"routing_enabled", "min_cluster_size"}
    ),
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig": frozenset(
        {"minimum_ring_size", "maximum_ring_size", "hash_function"}
    ),
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig": frozenset({"table_size"}),
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": frozenset(
        {"choice_count", "active_request_bias", "slow_start_config"}
    ),
    "envoy.config.cluster.v3.Cluster.RoundRobinLbConfig": frozenset({"slow_start_config"}),
    "envoy.config.cluster.v3.Cluster.SlowStartConfig": frozenset(
        {"slow_start_window", "aggression", "min_weight_percent"}
    ),
    "envoy.config.core.v3.RuntimeDouble": frozenset({"default_value"}),
    "envoy.config.cluster.v3.Cluster.TransportSocketMatch": frozenset(
        {"name", "match", "transport_socket"}
    ),
    "envoy.config.core.v3.TransportSocket": frozenset({"name", "typed_config"}),
    "envoy.config.core.v3.BindConfig": frozenset({"source_address", "extra_source_addresses"}),
    "envoy.config.core.v3.ExtraSourceAddress": frozenset({"address"}),
    "envoy.config.core.v3.SocketAddress": frozenset({"address", "port_value"}),
    "envoy.config.cluster.v3.UpstreamConnectionOptions": frozenset({"tcp_keepalive"}),
    "envoy.config.core.v3.TcpKeepalive": frozenset(
        {"keepalive_probes", "keepalive_time", "keepalive_interval"}
    ),
    "envoy.config.core.v3.Metadata": frozenset({"filter_metadata"}),
    # Inside typed_extension_protocol_options:
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": frozenset(
        {
            "common_http_protocol_options",
            "upstream_http_protocol_options",
            "explicit_http_config",
            "use_downstream_protocol_config",
        }
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": frozenset(
        {"http_protocol_options", "http2_protocol_options"}
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig": frozenset(
        {"http_protocol_options", "http2_protocol_options"}
    ),
    "envoy.config.core.v3.HttpProtocolOptions": frozenset(
        {"idle_timeout", "max_connection_duration", "max_requests_per_connection",
         "max_headers_count"}
    ),
    "envoy.config.core.v3.Http1ProtocolOptions": frozenset(),
    "envoy.config.core.v3.Http2ProtocolOptions": frozenset(
        {"max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"}
    ),
    "envoy.config.core.v3.UpstreamHttpProtocolOptions": frozenset(
        {"auto_sni", "auto_san_validation"}
    ),
    # Inside transport sockets:
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": frozenset(),
    "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport": (
        frozenset({"config", "transport_socket"})
    ),
    "envoy.config.core.v3.ProxyProtocolConfig": frozenset({"version"}),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": frozenset(
        {"common_tls_context", "sni"}
    ),
    **COMMON_TLS_ALLOWED,
}


# --- compiled records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitBreakerThresholds:
    """``CircuitBreakers.Thresholds`` for the DEFAULT routing priority (Envoy: 1024 each,
    3 retries). A retry budget, when set, replaces ``max_retries`` by a share of the active
    requests."""

    max_connections: int = DEFAULT_CIRCUIT_BREAKER_LIMIT
    max_pending_requests: int = DEFAULT_CIRCUIT_BREAKER_LIMIT
    max_requests: int = DEFAULT_CIRCUIT_BREAKER_LIMIT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_budget_percent: float | None = None  # percent of active + pending requests
    min_retry_concurrency: int = 3
    track_remaining: bool = False


@dataclass(frozen=True, slots=True)
class OutlierDetectionConfig:
    """``OutlierDetection`` with Envoy's defaults; times in seconds, percentages 0–100."""

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900  # ÷1000
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = False
    successful_active_health_check_uneject_host: bool = True


@dataclass(frozen=True, slots=True)
class SlowStartConfig:
    """``SlowStartConfig``: new hosts ramp their weight up over ``window`` seconds."""

    window: float
    aggression: float = 1.0
    min_weight_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class LbSettings:
    """What the load balancer needs: the policy and its knobs plus ``CommonLbConfig``."""

    policy: LbPolicy = LbPolicy.ROUND_ROBIN
    healthy_panic_threshold: float = DEFAULT_PANIC_THRESHOLD  # 0 disables panic mode
    locality_weighted: bool = False
    zone_aware: bool = False  # inert: needs a local cluster, which Istio never configures
    choice_count: int = DEFAULT_CHOICE_COUNT
    active_request_bias: float = 1.0
    min_ring_size: int = DEFAULT_MIN_RING_SIZE
    max_ring_size: int = DEFAULT_MAX_RING_SIZE
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE
    slow_start: SlowStartConfig | None = None


@dataclass(frozen=True, slots=True)
class HttpProtocolConfig:
    """Upstream HTTP options (``HttpProtocolOptions`` extension): codec and pool limits."""

    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT  # None: never closed for idleness
    max_requests_per_connection: int | None = None
    max_connection_duration: float | None = None
    max_headers_count: int | None = None
    max_concurrent_streams: int | None = None
    initial_stream_window_size: int | None = None
    initial_connection_window_size: int | None = None
    auto_sni: bool = False
    auto_san_validation: bool = False


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """One ``match_subject_alt_names`` entry: ``kind`` is exact, prefix, suffix or contains."""

    kind: str
    value: str
    ignore_case: bool = False

    def matches(self, san: str) -> bool:
        value, san = (self.value.lower(), san.lower()) if self.ignore_case else (self.value, san)
        if self.kind == "exact":
            return san == value
        if self.kind == "prefix":
            return san.startswith(value)
        if self.kind == "suffix":
            return san.endswith(value)
        return value in san


@dataclass(frozen=True, slots=True)
class UpstreamTlsConfig:
    """An ``UpstreamTlsContext`` as the TLS code needs it; the proto is kept for config dumps."""

    sni: str
    alpn_protocols: tuple[str, ...]
    san_matchers: tuple[SanMatcher, ...]
    certificate_sds_names: tuple[str, ...]
    validation_sds_name: str | None
    min_version: int  # TlsParameters.TlsProtocol enum value, 0 = auto
    max_version: int
    cipher_suites: tuple[str, ...]
    ecdh_curves: tuple[str, ...]
    proto: tls_pb2.UpstreamTlsContext = field(repr=False, compare=False)
    # How long the cluster may warm waiting for these SDS secrets (None: for ever).
    sds_fetch_timeout: float | None = None

    @property
    def sds_names(self) -> tuple[str, ...]:
        names = self.certificate_sds_names
        return names + (self.validation_sds_name,) if self.validation_sds_name else names


@dataclass(frozen=True, slots=True)
class TransportSocketConfig:
    """Plaintext (``tls is None``) or TLS, optionally preceded by a PROXY protocol header."""

    name: str
    tls: UpstreamTlsConfig | None = None
    proxy_protocol_version: int | None = None  # ProxyProtocolConfig.Version (0 = V1, 1 = V2)


PLAINTEXT = TransportSocketConfig("envoy.transport_sockets.raw_buffer")


@dataclass(frozen=True, slots=True)
class TransportSocketMatch:
    """Use ``socket`` for endpoints whose ``envoy.transport_socket_match`` metadata contains
    every key/value of ``match`` (an empty match matches every endpoint)."""

    name: str
    match: Mapping[str, Any]
    socket: TransportSocketConfig

    def matches(self, endpoint_match_metadata: Mapping[str, Any]) -> bool:
        return all(endpoint_match_metadata.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    probes: int | None
    time: int | None
    interval: int | None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A compiled ``Cluster``."""

    name: str
    alt_stat_name: str
    discovery_type: DiscoveryType
    lb: LbSettings
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    per_connection_buffer_limit: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT
    circuit_breakers: CircuitBreakerThresholds = CircuitBreakerThresholds()
    outlier_detection: OutlierDetectionConfig | None = None
    http: HttpProtocolConfig = HttpProtocolConfig()
    transport_socket: TransportSocketConfig = PLAINTEXT
    transport_socket_matches: tuple[TransportSocketMatch, ...] = ()
    load_assignment: LoadAssignment | None = None  # STATIC / STRICT_DNS / LOGICAL_DNS
    eds_service_name: str | None = None  # EDS: the CLA name to subscribe to
    upstream_bind_address: str | None = None  # e.g. 127.0.0.6 for inbound clusters
    extra_bind_addresses: tuple[str, ...] = ()
    dns_refresh_rate: float = DEFAULT_DNS_REFRESH_RATE
    # dns_failure_refresh_rate: back-off after a failed resolution (None: dns_refresh_rate).
    dns_failure_refresh_base: float | None = None
    dns_failure_refresh_max: float | None = None
    dns_jitter: float = 0.0
    # Accepted, not honoured: the system resolver (getaddrinfo) reports no TTLs, so records
    # are re-resolved every dns_refresh_rate (see pistio.proxy.upstream.dns).
    respect_dns_ttl: bool = False
    dns_lookup_family: int = Cluster.AUTO
    health_check: HealthCheckConfig | None = None  # active health checking
    ignore_health_on_host_removal: bool = False
    close_connections_on_host_health_failure: bool = False
    ignore_new_hosts_until_first_hc: bool = False  # CommonLbConfig
    cleanup_interval: float = DEFAULT_CLEANUP_INTERVAL  # ORIGINAL_DST idle host removal
    tcp_keepalive: TcpKeepalive | None = None
    metadata: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def stat_name(self) -> str:
        return self.alt_stat_name or self.name

    def transport_socket_for(self, endpoint_match_metadata: Mapping[str, Any]) -> (
        TransportSocketConfig
    ):
        """Envoy's transport socket selection: the first matching entry, else the cluster's
        ``transport_socket``."""
        for tsm in self.transport_socket_matches:
            if tsm.matches(endpoint_match_metadata):
                return tsm.socket
        return self.transport_socket

    def transport_socket_of(self, endpoint: EndpointConfig | None) -> TransportSocketConfig:
        """The transport socket ``endpoint`` gets (None: the cluster's default choice), from
        its ``envoy.transport_socket_match`` metadata."""
        return self.transport_socket_for(
            endpoint.metadata.get(TRANSPORT_SOCKET_MATCH_KEY, {}) if endpoint else {})


# --- compilation ---------------------------------------------------------------------------


def compile_cluster(c: Cluster) -> ClusterConfig:
    """Compile one cluster; raise ``ConfigError`` with every unsupported or invalid field."""
    path = f"Cluster {c.name}: "
    problems = unsupported_fields(c, _ALLOWED, path)

    discovery = _DISCOVERY.get(c.type)
    if c.HasField("cluster_type") or discovery is None:
        problems.append(f"{path}type: only STATIC, STRICT_DNS, LOGICAL_DNS, EDS and ORIGINAL_DST "
                        "are supported")
        discovery = DiscoveryType.STATIC
    policy = _LB_POLICY.get(c.lb_policy)
    if policy is None:
        problems.append(f"{path}lb_policy: {Cluster.LbPolicy.Name(c.lb_policy)} is not supported")
        policy = LbPolicy.ROUND_ROBIN
    if (policy is LbPolicy.CLUSTER_PROVIDED) != (discovery is DiscoveryType.ORIGINAL_DST):
        problems.append(f"{path}lb_policy: CLUSTER_PROVIDED goes with (and only with) "
                        "type ORIGINAL_DST")

    lb = _lb_settings(c, policy, path, problems)
    breakers = _circuit_breakers(c.circuit_breakers, path, problems)
    outlier = _outlier_detection(c.outlier_detection) if c.HasField("outlier_detection") else None
    http = _http_protocol(c, path, problems)
    socket = (
        _transport_socket(c.transport_socket, f"{path}transport_socket", problems)
        if c.HasField("transport_socket")
        else PLAINTEXT
    )
    matches = tuple(
        TransportSocketMatch(
            m.name,
            MappingProxyType(json_format.MessageToDict(m.match)),
            _transport_socket(m.transport_socket, f"{path}transport_socket_matches[{i}]"
                              ".transport_socket", problems),
        )
        for i, m in enumerate(c.transport_socket_matches)
    )

    load_assignment = None
    eds_service_name = None
    if discovery is DiscoveryType.EDS:
        if c.HasField("load_assignment"):
            problems.append(f"{path}load_assignment: EDS clusters get endpoints from EDS")
        eds_service_name = c.eds_cluster_config.service_name or c.name
        source = c.eds_cluster_config.eds_config
        if c.HasField("eds_cluster_config") and source.WhichOneof("config_source_specifier") not in (
            None, "ads"
        ):
            problems.append(f"{path}eds_cluster_config.eds_config: only ADS is supported")
    elif discovery is DiscoveryType.ORIGINAL_DST:
        if c.HasField("load_assignment"):
            problems.append(f"{path}load_assignment: ORIGINAL_DST clusters take no endpoints")
    else:
        if c.HasField("eds_cluster_config"):
            problems.append(f"{path}eds_cluster_config: only for type EDS")
        try:
            load_assignment = compile_load_assignment(c.load_assignment, f"{path}load_assignment")
        except ConfigError as err:
            problems.extend(err.problems)
        if (
            load_assignment is not None
            and discovery is DiscoveryType.LOGICAL_DNS
            and len(load_assignment.endpoints) != 1
        ):
            problems.append(f"{path}load_assignment: LOGICAL_DNS needs exactly one endpoint")

    health_check = compile_health_checks(c.health_checks, path, problems)
    if health_check is not None and discovery is DiscoveryType.ORIGINAL_DST:
        problems.append(f"{path}health_checks: ORIGINAL_DST clusters cannot be health checked")
    dns_failure_base = dns_failure_max = None
    if c.HasField("dns_failure_refresh_rate"):
        rr = c.dns_failure_refresh_rate
        dns_failure_base = _seconds(rr.base_interval)
        dns_failure_max = (_seconds(rr.max_interval) if rr.HasField("max_interval")
                           else 10 * dns_failure_base)
        if dns_failure_base <= 0.001 or dns_failure_max < dns_failure_base:
            problems.append(f"{path}dns_failure_refresh_rate: base_interval must exceed 1ms and "
                            "max_interval must not be below it")
    if c.HasField("dns_refresh_rate") and _seconds(c.dns_refresh_rate) <= 0.001:
        problems.append(f"{path}dns_refresh_rate: must be greater than 1ms")

    bind = None
    extra_bind: tuple[str, ...] = ()
    if c.HasField("upstream_bind_config"):
        bind_config = c.upstream_bind_config
        bind = bind_config.source_address.address or None
        if bind_config.source_address.port_value:
            problems.append(f"{path}upstream_bind_config.source_address.port_value: "
                            "a fixed source port is not supported")
        extra_bind = tuple(e.address.address for e in bind_config.extra_source_addresses)

    keepalive = None
    if c.upstream_connection_options.HasField("tcp_keepalive"):
        ka = c.upstream_connection_options.tcp_keepalive
        keepalive = TcpKeepalive(
            ka.keepalive_probes.value if ka.HasField("keepalive_probes") else None,
            ka.keepalive_time.value if ka.HasField("keepalive_time") else None,
            ka.keepalive_interval.value if ka.HasField("keepalive_interval") else None,
        )

    if problems:
        raise ConfigError(problems)
    return ClusterConfig(
        name=c.name,
        alt_stat_name=c.alt_stat_name,
        discovery_type=discovery,
        lb=lb,
        connect_timeout=_seconds(c.connect_timeout) if c.HasField("connect_timeout")
        else DEFAULT_CONNECT_TIMEOUT,
        per_connection_buffer_limit=c.per_connection_buffer_limit_bytes.value
        if c.HasField("per_connection_buffer_limit_bytes")
        else DEFAULT_PER_CONNECTION_BUFFER_LIMIT,
        circuit_breakers=breakers,
        outlier_detection=outlier,
        http=http,
        transport_socket=socket,
        transport_socket_matches=matches,
        load_assignment=load_assignment,
        eds_service_name=eds_service_name,
        upstream_bind_address=bind,
        extra_bind_addresses=extra_bind,
        dns_refresh_rate=_seconds(c.dns_refresh_rate) if c.HasField("dns_refresh_rate")
        else DEFAULT_DNS_REFRESH_RATE,
        dns_failure_refresh_base=dns_failure_base,
        dns_failure_refresh_max=dns_failure_max,
        dns_jitter=_seconds(c.dns_jitter) if c.HasField("dns_jitter") else 0.0,
        respect_dns_ttl=c.respect_dns_ttl,
        dns_lookup_family=c.dns_lookup_family,
        health_check=health_check,
        ignore_health_on_host_removal=c.ignore_health_on_host_removal,
        close_connections_on_host_health_failure=c.close_connections_on_host_health_failure,
        ignore_new_hosts_until_first_hc=c.common_lb_config.ignore_new_hosts_until_first_hc,
        cleanup_interval=_seconds(c.cleanup_interval) if c.HasField("cleanup_interval")
        else DEFAULT_CLEANUP_INTERVAL,
        tcp_keepalive=keepalive,
        metadata=_metadata(c.metadata),
    )


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _metadata(md: base_pb2.Metadata) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType(
        {k: MappingProxyType(json_format.MessageToDict(v)) for k, v in md.filter_metadata.items()}
    )


def _lb_settings(c: Cluster, policy: LbPolicy, path: str, problems: list[str]) -> LbSettings:
    common = c.common_lb_config
    panic = DEFAULT_PANIC_THRESHOLD
    if common.HasField("healthy_panic_threshold"):
        panic = common.healthy_panic_threshold.value
    slow_start_proto = None
    choice_count = DEFAULT_CHOICE_COUNT
    bias = 1.0
    if c.HasField("least_request_lb_config"):
        lr = c.least_request_lb_config
        if lr.HasField("choice_count"):
            choice_count = lr.choice_count.value
            if choice_count < 2:
                problems.append(f"{path}least_request_lb_config.choice_count: must be >= 2")
        if lr.HasField("active_request_bias"):
            bias = lr.active_request_bias.default_value
            if lr.active_request_bias.runtime_key:
                problems.append(f"{path}least_request_lb_config.active_request_bias.runtime_key:"
                                " runtime overrides are not supported")
        if lr.HasField("slow_start_config"):
            slow_start_proto = lr.slow_start_config
    if c.round_robin_lb_config.HasField("slow_start_config"):
        slow_start_proto = c.round_robin_lb_config.slow_start_config
    slow_start = None
    if slow_start_proto is not None:
        aggression = 1.0
        if slow_start_proto.HasField("aggression"):
            aggression = slow_start_proto.aggression.default_value
            if slow_start_proto.aggression.runtime_key:
                problems.append(f"{path}slow_start_config.aggression.runtime_key: runtime "
                                "overrides are not supported")
            if aggression <= 0:
                problems.append(f"{path}slow_start_config.aggression: must be > 0")
        slow_start = SlowStartConfig(
            _seconds(slow_start_proto.slow_start_window),
            aggression,
            slow_start_proto.min_weight_percent.value
            if slow_start_proto.HasField("min_weight_percent")
            else 10.0,
        )
    min_ring, max_ring = DEFAULT_MIN_RING_SIZE, DEFAULT_MAX_RING_SIZE
    if c.HasField("ring_hash_lb_config"):
        rh = c.ring_hash_lb_config
        if rh.HasField("minimum_ring_size"):
            min_ring = rh.minimum_ring_size.value
        if rh.HasField("maximum_ring_size"):
            max_ring = rh.maximum_ring_size.value
        if rh.hash_function != Cluster.RingHashLbConfig.XX_HASH:
            problems.append(f"{path}ring_hash_lb_config.hash_function: only XX_HASH is supported")
        if min_ring > max_ring:
            problems.append(f"{path}ring_hash_lb_config: minimum_ring_size exceeds "
                            "maximum_ring_size")
    table_size = DEFAULT_MAGLEV_TABLE_SIZE
    if c.maglev_lb_config.HasField("table_size"):
        table_size = c.maglev_lb_config.table_size.value
        if not _is_prime(table_size):
            problems.append(f"{path}maglev_lb_config.table_size: {table_size} is not prime")
    return LbSettings(
        policy=policy,
        healthy_panic_threshold=panic,
        locality_weighted=common.HasField("locality_weighted_lb_config"),
        zone_aware=common.HasField("zone_aware_lb_config"),
        choice_count=choice_count,
        active_request_bias=bias,
        min_ring_size=min_ring,
        max_ring_size=max_ring,
        maglev_table_size=table_size,
        slow_start=slow_start,
    )


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _circuit_breakers(
    cb: circuit_breaker_pb2.CircuitBreakers, path: str, problems: list[str]
) -> CircuitBreakerThresholds:
    default = None
    for i, t in enumerate(cb.thresholds):
        if t.priority == base_pb2.DEFAULT:
            if default is not None:
                problems.append(f"{path}circuit_breakers.thresholds[{i}]: a second DEFAULT entry")
            default = t
        # HIGH priority thresholds apply to HIGH-priority routes, which pistio's routes
        # never are (RouteAction.priority is not supported), so they are unused, not ignored.
    if default is None:
        return CircuitBreakerThresholds()

    def limit(wrapper_field: str, fallback: int) -> int:
        return getattr(default, wrapper_field).value if default.HasField(wrapper_field) else (
            fallback
        )

    budget_percent = None
    min_concurrency = 3
    if default.HasField("retry_budget"):
        budget = default.retry_budget
        budget_percent = budget.budget_percent.value if budget.HasField("budget_percent") else 20.0
        if budget.HasField("min_retry_concurrency"):
            min_concurrency = budget.min_retry_concurrency.value
    return CircuitBreakerThresholds(
        max_connections=limit("max_connections", DEFAULT_CIRCUIT_BREAKER_LIMIT),
        max_pending_requests=limit("max_pending_requests", DEFAULT_CIRCUIT_BREAKER_LIMIT),
        max_requests=limit("max_requests", DEFAULT_CIRCUIT_BREAKER_LIMIT),
        max_retries=limit("max_retries", DEFAULT_MAX_RETRIES),
        retry_budget_percent=budget_percent,
        min_retry_concurrency=min_concurrency,
        track_remaining=default.track_remaining,
    )


def _outlier_detection(od: outlier_detection_pb2.OutlierDetection) -> OutlierDetectionConfig:
    d = OutlierDetectionConfig()

    def u32(name: str) -> int:
        return getattr(od, name).value if od.HasField(name) else getattr(d, name)

    def secs(name: str) -> float:
        return _seconds(getattr(od, name)) if od.HasField(name) else getattr(d, name)

    base = secs("base_ejection_time")
    return OutlierDetectionConfig(
        consecutive_5xx=u32("consecutive_5xx"),
        enforcing_consecutive_5xx=u32("enforcing_consecutive_5xx"),
        consecutive_gateway_failure=u32("consecutive_gateway_failure"),
        enforcing_consecutive_gateway_failure=u32("enforcing_consecutive_gateway_failure"),
        split_external_local_origin_errors=od.split_external_local_origin_errors,
        consecutive_local_origin_failure=u32("consecutive_local_origin_failure"),
        enforcing_consecutive_local_origin_failure=u32(
            "enforcing_consecutive_local_origin_failure"
        ),
        enforcing_success_rate=u32("enforcing_success_rate"),
        enforcing_local_origin_success_rate=u32("enforcing_local_origin_success_rate"),
        success_rate_minimum_hosts=u32("success_rate_minimum_hosts"),
        success_rate_request_volume=u32("success_rate_request_volume"),
        success_rate_stdev_factor=u32("success_rate_stdev_factor"),
        interval=secs("interval"),
        base_ejection_time=base,
        # Envoy: the cap is max(base_ejection_time, max_ejection_time).
        max_ejection_time=max(base, secs("max_ejection_time")),
        max_ejection_percent=u32("max_ejection_percent"),
        always_eject_one_host=od.always_eject_one_host.value
        if od.HasField("always_eject_one_host")
        else False,
        successful_active_health_check_uneject_host=(
            od.successful_active_health_check_uneject_host.value
            if od.HasField("successful_active_health_check_uneject_host") else True
        ),
    )


def _http_protocol(c: Cluster, path: str, problems: list[str]) -> HttpProtocolConfig:
    for key in c.typed_extension_protocol_options:
        if key != HTTP_PROTOCOL_OPTIONS_KEY:
            problems.append(f"{path}typed_extension_protocol_options[{key!r}]: not supported")
    if HTTP_PROTOCOL_OPTIONS_KEY not in c.typed_extension_protocol_options:
        return HttpProtocolConfig()
    any_msg = c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY]
    here = f"{path}typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS_KEY!r}]"
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    if not any_msg.Unpack(opts):
        problems.append(f"{here}: expected {HTTP_PROTOCOL_OPTIONS_KEY}, got {any_msg.type_url}")
        return HttpProtocolConfig()
    problems.extend(unsupported_fields(opts, _ALLOWED, here))

    choice = opts.WhichOneof("upstream_protocol_options")
    h2: protocol_pb2.Http2ProtocolOptions | None = None
    if choice == "explicit_http_config":
        explicit = opts.explicit_http_config
        if explicit.HasField("http2_protocol_options"):
            protocol, h2 = UpstreamProtocol.HTTP2, explicit.http2_protocol_options
        else:
            protocol = UpstreamProtocol.HTTP1
    elif choice == "use_downstream_protocol_config":
        protocol = UpstreamProtocol.USE_DOWNSTREAM
        if opts.use_downstream_protocol_config.HasField("http2_protocol_options"):
            h2 = opts.use_downstream_protocol_config.http2_protocol_options
    elif choice is None:
        protocol = UpstreamProtocol.HTTP1
    else:
        problems.append(f"{here}.{choice}: not supported")
        protocol = UpstreamProtocol.HTTP1

    common = opts.common_http_protocol_options
    idle: float | None = DEFAULT_IDLE_TIMEOUT
    if common.HasField("idle_timeout"):
        idle = _seconds(common.idle_timeout) or None  # 0 disables the idle timeout
    upstream = opts.upstream_http_protocol_options

    def opt_u32(msg: Any, name: str) -> int | None:
        return getattr(msg, name).value if msg is not None and msg.HasField(name) else None

    return HttpProtocolConfig(
        protocol=protocol,
        idle_timeout=idle,
        max_requests_per_connection=opt_u32(common, "max_requests_per_connection") or None,
        max_connection_duration=_seconds(common.max_connection_duration) or None
        if common.HasField("max_connection_duration")
        else None,
        max_headers_count=opt_u32(common, "max_headers_count"),
        max_concurrent_streams=opt_u32(h2, "max_concurrent_streams"),
        initial_stream_window_size=opt_u32(h2, "initial_stream_window_size"),
        initial_connection_window_size=opt_u32(h2, "initial_connection_window_size"),
        auto_sni=upstream.auto_sni,
        auto_san_validation=upstream.auto_san_validation,
    )


def _transport_socket(ts: Any, path: str, problems: list[str]) -> TransportSocketConfig:
    problems.extend(unsupported_fields(ts, _ALLOWED, path))
    inner: any_pb2.Any = ts.typed_config
    url = inner.type_url
    if url == RAW_BUFFER_TYPE or (not url and ts.name == PLAINTEXT.name):
        return TransportSocketConfig(ts.name)
    if url == TLS_TYPE:
        ctx = tls_pb2.UpstreamTlsContext()
        inner.Unpack(ctx)
        return TransportSocketConfig(ts.name, tls=_tls(ctx, f"{path}.typed_config", problems))
    if url == PROXY_PROTOCOL_TYPE:
        pp = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport()
        inner.Unpack(pp)
        here = f"{path}.typed_config"
        problems.extend(unsupported_fields(pp, _ALLOWED, here))
        wrapped = (
            _transport_socket(pp.transport_socket, f"{here}.transport_socket", problems)
            if pp.HasField("transport_socket")
            else PLAINTEXT
        )
        return TransportSocketConfig(ts.name, wrapped.tls, pp.config.version)
    problems.append(f"{path}.typed_config: transport socket {url or ts.name!r} is not supported")
    return PLAINTEXT


def _tls(ctx: tls_pb2.UpstreamTlsContext, path: str, problems: list[str]) -> UpstreamTlsConfig:
    problems.extend(unsupported_fields(ctx, _ALLOWED, path))
    common = ctx.common_tls_context
    timeout = check_common_tls(common, f"{path}.common_tls_context", problems, server=False)
    combined = common.combined_validation_context
    sans = tuple(
        SanMatcher(m.WhichOneof("match_pattern") or "exact",
                   getattr(m, m.WhichOneof("match_pattern") or "exact"), m.ignore_case)
        for m in combined.default_validation_context.match_subject_alt_names
    )
    validation_sds = None
    if combined.HasField("validation_context_sds_secret_config"):
        validation_sds = combined.validation_context_sds_secret_config.name
    elif common.HasField("validation_context_sds_secret_config"):
        validation_sds = common.validation_context_sds_secret_config.name
    return UpstreamTlsConfig(
        sni=ctx.sni,
        alpn_protocols=tuple(common.alpn_protocols),
        san_matchers=sans,
        certificate_sds_names=tuple(s.name for s in common.tls_certificate_sds_secret_configs),
        validation_sds_name=validation_sds,
        min_version=common.tls_params.tls_minimum_protocol_version,
        max_version=common.tls_params.tls_maximum_protocol_version,
        cipher_suites=tuple(common.tls_params.cipher_suites),
        ecdh_curves=tuple(common.tls_params.ecdh_curves),
        proto=ctx,
        sds_fetch_timeout=timeout,
    )
