"""Envoy's ``Listener`` compiled into a ``ListenerConfig``: the socket, the listener filters,
and the filter chains with Envoy's filter chain match.

A listener accepts connections on an address; listener filters run first (``original_dst``
recovers the pre-iptables destination, ``tls_inspector`` reads SNI and ALPN from the
ClientHello, ``http_inspector`` sniffs plaintext HTTP/1.x or h2c), then one filter chain is
chosen for the connection by its ``FilterChainMatch``. The criteria are applied in Envoy's
order — destination port, destination IP, server name, transport protocol, application
protocols, directly connected source IP, source type, source IP, source port — and at each
step only the chains with the *most specific* matching value survive (an exact port beats no
port, a longer prefix beats a shorter one, ``www.example.com`` beats ``*.example.com`` beats
``*.com`` beats no server name). There is no backtracking: if the survivors of one step all
fail a later one, the connection gets the ``default_filter_chain`` (or is closed).

``use_original_dst`` is Istio's ``virtualOutbound`` hand-off: a connection accepted on 15001
is given to the (non-binding) listener whose address equals its original destination, if any.

Each chain's network filters are recognised: ``http_connection_manager`` (kept as an
``HttpConnectionManagerConfig``; its routes are compiled by ``route_table`` and its HTTP filters
by their own factories) and ``tcp_proxy``. Anything else is NACKed.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2, duration_pb2, json_format

from pistio.proxy.access_log.filters import (
    LogFilter,
    check_access_logger,
    compile_access_log_filter,
)
from pistio.proxy.config.cluster_config import SanMatcher
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.local_rate_limit import (
    LOCAL_RATE_LIMIT_TYPE,
    compile_local_rate_limit,
    unpack_local_rate_limit,
)
from pistio.proxy.config.route_action import compile_http_fault
from pistio.proxy.config.tls_fields import COMMON_TLS_ALLOWED, check_common_tls
from pistio.proxy.config.unsupported import field_path, unsupported_fields
from pistio.proxy.filters.http.ext_authz import unpack_ext_authz
from pistio.proxy.filters.http.jwt_authn import unpack_jwt_authn
from pistio.proxy.filters.http.rbac import unpack_http_rbac
from pistio.proxy.filters.network.rbac import (
    NETWORK_RBAC_TYPE,
    NetworkRbacConfig,
    compile_network_rbac,
)
from pistio.proxy.telemetry.plugin_config import (
    TYPED_STRUCT_TYPES,
    StatsConfig,
    compile_istio_filter,
)
from pistio.proxy.tracing.config import TracingConfig, compile_tracing

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HCM_NAME = "envoy.filters.network.http_connection_manager"
TCP_PROXY_NAME = "envoy.filters.network.tcp_proxy"


def _type_url(message_type: Any) -> str:
    return "type.googleapis.com/" + message_type.DESCRIPTOR.full_name


HCM_TYPE = _type_url(hcm_pb2.HttpConnectionManager)
TCP_PROXY_TYPE = _type_url(tcp_proxy_pb2.TcpProxy)
ORIGINAL_DST_TYPE = _type_url(original_dst_pb2.OriginalDst)
TLS_INSPECTOR_TYPE = _type_url(tls_inspector_pb2.TlsInspector)
HTTP_INSPECTOR_TYPE = _type_url(http_inspector_pb2.HttpInspector)
DOWNSTREAM_TLS_TYPE = _type_url(tls_pb2.DownstreamTlsContext)
RAW_BUFFER_TYPE = _type_url(raw_buffer_pb2.RawBuffer)
UUID_REQUEST_ID_TYPE = _type_url(uuid_pb2.UuidRequestIdConfig)
FAULT_TYPE = _type_url(fault_pb2.HTTPFault)
CORS_TYPE = _type_url(cors_pb2.Cors)
ROUTER_TYPE = _type_url(router_pb2.Router)
GRPC_WEB_TYPE = _type_url(grpc_web_pb2.GrpcWeb)
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
# The security filters' compilers (pistio.proxy.filters.http), by type: each NACKs what it
# does not implement.
SECURITY_HTTP_FILTERS = MappingProxyType({
    RBAC_TYPE: unpack_http_rbac,
    JWT_AUTHN_TYPE: unpack_jwt_authn,
    EXT_AUTHZ_TYPE: unpack_ext_authz,
})
# The HTTP filters pistio runs (``pistio.proxy.filters.http``), by typed_config type; any
# other filter is NACKed unless ``is_optional``. The router must be the last one.
SUPPORTED_HTTP_FILTERS: Mapping[str, str] = MappingProxyType({
    FAULT_TYPE: "envoy.filters.http.fault",
    CORS_TYPE: "envoy.filters.http.cors",
    GRPC_WEB_TYPE: "envoy.filters.http.grpc_web",
    RBAC_TYPE: "envoy.filters.http.rbac",
    JWT_AUTHN_TYPE: "envoy.filters.http.jwt_authn",
    EXT_AUTHZ_TYPE: "envoy.filters.http.ext_authz",
    LOCAL_RATE_LIMIT_TYPE: "envoy.filters.http.local_ratelimit",
    ROUTER_TYPE: "envoy.filters.http.router",
})

DEFAULT_STREAM_IDLE_TIMEOUT = 300.0
DEFAULT_LISTENER_FILTERS_TIMEOUT = 15.0
DEFAULT_TCP_IDLE_TIMEOUT = 3600.0
DEFAULT_PER_CONNECTION_BUFFER_LIMIT = 1024 * 1024

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.config.listener.v3.Listener": frozenset(
        {
            "name",
            "address",
            "stat_prefix",
            "filter_chains",
            "use_original_dst",
            "default_filter_chain",
            "per_connection_buffer_limit_bytes",
            "metadata",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            "traffic_direction",
            "bind_to_port",
            "access_log",
        }
    ),
    "envoy.config.core.v3.Address": frozenset({"socket_address"}),
    "envoy.config.core.v3.SocketAddress": frozenset({"address", "port_value", "protocol"}),
    "envoy.config.listener.v3.FilterChain": frozenset(
        {"filter_chain_match", "filters", "metadata", "transport_socket", "name"}
    ),
    "envoy.config.listener.v3.FilterChainMatch": frozenset(
        {
            "destination_port",
            "prefix_ranges",
            "direct_source_prefix_ranges",
            "source_type",
            "source_prefix_ranges",
            "source_ports",
            "server_names",
            "transport_protocol",
            "application_protocols",
        }
    ),
    "envoy.config.core.v3.CidrRange": frozenset({"address_prefix", "prefix_len"}),
    "envoy.config.listener.v3.Filter": frozenset({"name", "typed_config"}),
    "envoy.config.listener.v3.ListenerFilter": frozenset(
        {"name", "typed_config", "filter_disabled"}
    ),
    "envoy.config.listener.v3.ListenerFilterChainMatchPredicate": frozenset(
        {"or_match", "and_match", "not_match", "any_match", "destination_port_range"}
    ),
    "envoy.config.listener.v3.ListenerFilterChainMatchPredicate.MatchSet": frozenset({"rules"}),
    "envoy.type.v3.Int32Range": frozenset({"start", "end"}),
    "envoy.config.core.v3.TransportSocket": frozenset({"name", "typed_config"}),
    "envoy.config.core.v3.Metadata": frozenset({"filter_metadata"}),
    # listener filters
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst": frozenset(),
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": frozenset(),
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector": frozenset(
        {"initial_read_buffer_size"}
    ),
    # network filters
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": (
        frozenset(
            {
                "codec_type",
                "stat_prefix",
                "rds",
                "route_config",
                "http_filters",
                "common_http_protocol_options",
                "http_protocol_options",
                "http2_protocol_options",
                "server_name",
                "stream_idle_timeout",
                "request_timeout",
                "access_log",
                "use_remote_address",
                "xff_num_trusted_hops",
                "skip_xff_append",
                "internal_address_config",
                "generate_request_id",
                "preserve_external_request_id",
                "forward_client_cert_details",
                "set_current_client_cert_details",
                "upgrade_configs",
                "normalize_path",
                "merge_slashes",
                "path_with_escaped_slashes_action",
                "request_id_extension",
                "tracing",
            }
        )
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ".InternalAddressConfig": frozenset({"unix_sockets", "cidr_ranges"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds": frozenset(
        {"config_source", "route_config_name"}
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": frozenset(
        {"name", "typed_config", "is_optional", "disabled"}
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ".UpgradeConfig": frozenset({"upgrade_type", "enabled"}),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ".SetCurrentClientCertDetails": frozenset({"subject", "cert", "chain", "dns", "uri"}),
    "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig": frozenset(
        {"pack_trace_reason", "use_request_id_for_trace_sampling"}
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension": frozenset(
        {"typed_config"}
    ),
    "envoy.config.core.v3.HttpProtocolOptions": frozenset(
        {"idle_timeout", "max_connection_duration", "max_headers_count", "max_stream_duration",
         "headers_with_underscores_action", "max_requests_per_connection"}
    ),
    "envoy.config.core.v3.Http1ProtocolOptions": frozenset(),
    "envoy.config.core.v3.Http2ProtocolOptions": frozenset(
        {"max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"}
    ),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": frozenset(
        {"stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log"}
    ),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster": frozenset(
        {"clusters"}
    ),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": (
        frozenset({"name", "weight"})
    ),
    "envoy.config.accesslog.v3.AccessLog": frozenset({"name", "typed_config", "filter"}),
    # downstream TLS
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer": frozenset(),
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": frozenset(
        {"common_tls_context", "require_client_certificate"}
    ),
    **COMMON_TLS_ALLOWED,
}


class SourceType(enum.IntEnum):
    """``FilterChainMatch.ConnectionSourceType``."""

    ANY = 0
    SAME_IP_OR_LOOPBACK = 1
    EXTERNAL = 2


class ListenerFilterKind(enum.Enum):
    ORIGINAL_DST = "envoy.filters.listener.original_dst"
    TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
    HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"


_LISTENER_FILTER_TYPES = {
    ORIGINAL_DST_TYPE: ListenerFilterKind.ORIGINAL_DST,
    TLS_INSPECTOR_TYPE: ListenerFilterKind.TLS_INSPECTOR,
    HTTP_INSPECTOR_TYPE: ListenerFilterKind.HTTP_INSPECTOR,
}
_LISTENER_FILTER_NAMES = {k.value: k for k in ListenerFilterKind}


# --- compiled records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What is known about a connection when its filter chain is chosen: addresses (after
    ``original_dst``), SNI and transport protocol (``tls_inspector``: ``"tls"``, else
    ``"raw_buffer"``), ALPN or sniffed protocol (``http_inspector``: ``http/1.1``, ``h2c``)."""

    dst_ip: str
    dst_port: int
    src_ip: str = "127.0.0.1"
    src_port: int = 0
    server_name: str = ""
    transport_protocol: str = "raw_buffer"
    application_protocols: tuple[str, ...] = ()
    direct_src_ip: str | None = None  # differs from src_ip only behind PROXY protocol


@dataclass(frozen=True, slots=True)
class PortPredicate:
    """A ``ListenerFilterChainMatchPredicate`` (Envoy only defines destination-port rules):
    when it matches, the listener filter is skipped for the connection."""

    kind: str  # "any", "port_range", "or", "and", "not"
    start: int = 0
    end: int = 0
    children: tuple[PortPredicate, ...] = ()

    def matches(self, dst_port: int) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "port_range":
            return self.start <= dst_port < self.end
        if self.kind == "or":
            return any(c.matches(dst_port) for c in self.children)
        if self.kind == "and":
            return all(c.matches(dst_port) for c in self.children)
        return not self.children[0].matches(dst_port)


@dataclass(frozen=True, slots=True)
class ListenerFilterConfig:
    kind: ListenerFilterKind
    name: str
    disabled_when: PortPredicate | None = None
    initial_read_buffer_size: int | None = None  # tls_inspector

    def enabled_for(self, dst_port: int) -> bool:
        return self.disabled_when is None or not self.disabled_when.matches(dst_port)


@dataclass(frozen=True, slots=True)
class HttpFilterConfig:
    """One entry of the HCM's ``http_filters``; its ``typed_config`` is compiled by the HTTP
    filter's own factory (``pistio.proxy.filters``), which NACKs what it does not know."""

    name: str
    typed_config: any_pb2.Any | None
    is_optional: bool = False
    disabled: bool = False

    @property
    def type_url(self) -> str:
        return self.typed_config.type_url if self.typed_config is not None else ""


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """An ``AccessLog`` entry, compiled by ``pistio.proxy.access_log``."""

    name: str
    typed_config: any_pb2.Any | None
    # The compiled ``filter`` (pistio.proxy.access_log.filters); None: every stream is logged.
    filter: LogFilter | None = None


@dataclass(frozen=True, slots=True)
class HttpConnectionManagerConfig:
    """The HCM settings the HTTP layer implements. Times are seconds; ``None`` = disabled."""

    stat_prefix: str
    codec_type: int  # HttpConnectionManager.CodecType: AUTO, HTTP1, HTTP2
    rds_route_config_name: str | None
    route_config: route_pb2.RouteConfiguration | None = field(repr=False)
    http_filters: tuple[HttpFilterConfig, ...]
    server_name: str = "envoy"
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    # internal_address_config: CIDR ranges ("10.0.0.0/8") and Unix socket peers; none set:
    # no address is internal (Envoy 1.36 and later).
    internal_cidrs: tuple[str, ...] = ()
    internal_unix_sockets: bool = False
    generate_request_id: bool = True
    preserve_external_request_id: bool = False
    use_request_id_for_trace_sampling: bool = True
    forward_client_cert_details: int = 0  # SANITIZE
    set_current_client_cert_details: tuple[str, ...] = ()  # subject, cert, chain, dns, uri
    normalize_path: bool = False
    merge_slashes: bool = False
    path_with_escaped_slashes_action: int = 0
    request_timeout: float | None = None
    stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT
    idle_timeout: float | None = None  # common_http_protocol_options (downstream connections)
    max_connection_duration: float | None = None
    max_requests_per_connection: int | None = None
    max_headers_count: int | None = None
    headers_with_underscores_action: int = 0
    max_concurrent_streams: int | None = None
    upgrade_types: tuple[str, ...] = ()  # enabled upgrades, lower-case (e.g. "websocket")
    access_logs: tuple[AccessLogConfig, ...] = ()
    # ``tracing`` (pistio.proxy.tracing.config); None: no tracing, no per-request cost.
    tracing: TracingConfig | None = None


@dataclass(frozen=True, slots=True)
class TcpProxyConfig:
    stat_prefix: str
    cluster: str | None
    weighted_clusters: tuple[tuple[str, int], ...] = ()
    idle_timeout: float | None = DEFAULT_TCP_IDLE_TIMEOUT
    access_logs: tuple[AccessLogConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class DownstreamTlsConfig:
    """A ``DownstreamTlsContext`` for the TLS code (mTLS termination on inbound chains)."""

    require_client_certificate: bool
    alpn_protocols: tuple[str, ...]
    san_matchers: tuple[SanMatcher, ...]
    certificate_sds_names: tuple[str, ...]
    validation_sds_name: str | None
    min_version: int
    max_version: int
    cipher_suites: tuple[str, ...]
    proto: tls_pb2.DownstreamTlsContext = field(repr=False, compare=False)
    ecdh_curves: tuple[str, ...] = ()
    # How long the listener may warm waiting for these SDS secrets (None: for ever).
    sds_fetch_timeout: float | None = None

    @property
    def sds_names(self) -> tuple[str, ...]:
        names = self.certificate_sds_names
        return names + (self.validation_sds_name,) if self.validation_sds_name else names


@dataclass(frozen=True, slots=True)
class FilterChainMatchConfig:
    destination_port: int | None = None
    prefix_ranges: tuple[IpNetwork, ...] = ()
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()
    direct_source_prefix_ranges: tuple[IpNetwork, ...] = ()
    source_type: SourceType = SourceType.ANY
    source_prefix_ranges: tuple[IpNetwork, ...] = ()
    source_ports: frozenset[int] = frozenset()

    def identity(self) -> tuple:
        """Order-insensitive form, to reject two chains with the same match (Envoy does)."""
        return (
            self.destination_port,
            frozenset(self.prefix_ranges),
            frozenset(self.server_names),
            self.transport_protocol,
            frozenset(self.application_protocols),
            frozenset(self.direct_source_prefix_ranges),
            self.source_type,
            frozenset(self.source_prefix_ranges),
            self.source_ports,
        )


@dataclass(frozen=True, slots=True)
class FilterChainConfig:
    name: str
    match: FilterChainMatchConfig
    http: HttpConnectionManagerConfig | None = None
    tcp_proxy: TcpProxyConfig | None = None
    tls: DownstreamTlsConfig | None = None
    metadata: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # ``envoy.filters.network.rbac`` filters before the terminal one, in order.
    network_rbac: tuple[NetworkRbacConfig, ...] = ()
    # Istio's network ``istio.stats`` filters before ``tcp_proxy`` (one per provider).
    istio_stats: tuple[StatsConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    address: str
    port: int
    bind_to_port: bool
    use_original_dst: bool
    traffic_direction: int
    listener_filters: tuple[ListenerFilterConfig, ...]
    listener_filters_timeout: float | None
    continue_on_listener_filters_timeout: bool
    filter_chains: tuple[FilterChainConfig, ...]
    default_filter_chain: FilterChainConfig | None
    per_connection_buffer_limit: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT
    stat_prefix: str = ""
    # First match level, precomputed: chains by exact destination port, and portless chains.
    _by_port: Mapping[int, tuple[FilterChainConfig, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _any_port: tuple[FilterChainConfig, ...] = field(default=(), repr=False, compare=False)

    def select_filter_chain(self, conn: ConnInfo) -> FilterChainConfig | None:
        return select_filter_chain(self, conn)


# --- filter chain selection --------------------------------------------------------------------


def select_filter_chain(listener: ListenerConfig, conn: ConnInfo) -> FilterChainConfig | None:
    """Envoy's filter chain match (see the module docstring); ``None`` = close the
    connection."""
    chains = listener._by_port.get(conn.dst_port) or listener._any_port
    if chains:
        dst = _ip(conn.dst_ip)
        src = _ip(conn.src_ip)
        chains = _most_specific(chains, lambda m: _prefix_score(m.prefix_ranges, dst))
        if chains:
            chains = _most_specific(chains, lambda m: _server_name_score(m.server_names,
                                                                         conn.server_name))
        if chains:
            chains = _most_specific(chains, lambda m: _exact_score(m.transport_protocol,
                                                                   conn.transport_protocol))
        if chains:
            chains = _most_specific(chains, lambda m: _alpn_score(m.application_protocols,
                                                                  conn.application_protocols))
        if chains:
            direct = _ip(conn.direct_src_ip) if conn.direct_src_ip else src
            chains = _most_specific(
                chains, lambda m: _prefix_score(m.direct_source_prefix_ranges, direct)
            )
        if chains:
            chains = _most_specific(chains, lambda m: _source_type_score(m.source_type, src,
                                                                         dst))
        if chains:
            chains = _most_specific(chains, lambda m: _prefix_score(m.source_prefix_ranges, src))
        if chains:
            chains = _most_specific(chains, lambda m: _port_score(m.source_ports, conn.src_port))
        if chains:
            return chains[0]
    return listener.default_filter_chain


# A score of None excludes the chain; among the rest the highest score wins. A criterion the
# chain leaves empty scores 0 (matches anything, least specific).


def _most_specific(
    chains: Sequence[FilterChainConfig], score
) -> tuple[FilterChainConfig, ...]:
    best: int | tuple | None = None
    out: list[FilterChainConfig] = []
    for chain in chains:
        s = score(chain.match)
        if s is None:
            continue
        if best is None or s > best:
            best, out = s, [chain]
        elif s == best:
            out.append(chain)
    return tuple(out)


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _prefix_score(ranges: tuple[IpNetwork, ...], addr: IpAddress | None) -> int | None:
    if not ranges:
        return 0
    if addr is None:
        return None
    best = None
    for net in ranges:
        # +1 so that a /0 range still beats "no range".
        if addr.version == net.version and addr in net and (
            best is None or net.prefixlen + 1 > best
        ):
            best = net.prefixlen + 1
    return best


def _server_name_score(names: tuple[str, ...], sni: str) -> tuple[int, int] | None:
    if not names:
        return (0, 0)
    if not sni:
        return None
    sni = sni.lower()
    best = None
    for name in names:
        if name == sni:
            return (2, len(name))
        if name.startswith("*.") and sni.endswith(name[1:]) and (
            best is None or len(name) > best[1]
        ):
            best = (1, len(name))
    return best


def _exact_score(wanted: str, actual: str) -> int | None:
    if not wanted:
        return 0
    return 1 if wanted == actual else None


def _alpn_score(wanted: tuple[str, ...], actual: tuple[str, ...]) -> int | None:
    if not wanted:
        return 0
    return 1 if any(p in wanted for p in actual) else None


def _port_score(ports: frozenset[int], port: int) -> int | None:
    if not ports:
        return 0
    return 1 if port in ports else None


def _source_type_score(
    kind: SourceType, src: IpAddress | None, dst: IpAddress | None
) -> int | None:
    if kind is SourceType.ANY:
        return 0
    local = src is not None and (src.is_loopback or src == dst)
    if kind is SourceType.SAME_IP_OR_LOOPBACK:
        return 1 if local else None
    return 1 if not local else None


# --- compilation ---------------------------------------------------------------------------


def compile_listener(listener: listener_pb2.Listener) -> ListenerConfig:
    """Compile one listener; raise ``ConfigError`` with every unsupported or invalid field."""
    path = f"Listener {listener.name}: "
    problems = unsupported_fields(listener, _ALLOWED, path)
    sock = listener.address.socket_address
    if not listener.address.HasField("socket_address"):
        problems.append(f"{path}address: only socket_address is supported")
    elif sock.protocol != 0:
        problems.append(f"{path}address.socket_address.protocol: only TCP is supported")

    filters = tuple(
        f for f in (
            _listener_filter(lf, f"{path}listener_filters[{i}]", problems)
            for i, lf in enumerate(listener.listener_filters)
        ) if f is not None
    )
    chains = tuple(
        _filter_chain(fc, f"{path}filter_chains[{i}]", problems)
        for i, fc in enumerate(listener.filter_chains)
    )
    seen: dict[tuple, str] = {}
    for i, chain in enumerate(chains):
        key = chain.match.identity()
        if key in seen:
            problems.append(f"{path}filter_chains[{i}]: same filter_chain_match as chain "
                            f"{seen[key]!r}")
        else:
            seen[key] = chain.name or str(i)
    # Listener-level access logs (connections no filter chain took) are checked, not written.
    _access_logs(listener.access_log, path, problems)
    default = None
    if listener.HasField("default_filter_chain"):
        default = _filter_chain(listener.default_filter_chain, f"{path}default_filter_chain",
                                problems)
    if problems:
        raise ConfigError(problems)

    by_port: dict[int, list[FilterChainConfig]] = {}
    any_port: list[FilterChainConfig] = []
    for chain in chains:
        if chain.match.destination_port is None:
            any_port.append(chain)
        else:
            by_port.setdefault(chain.match.destination_port, []).append(chain)
    timeout: float | None = DEFAULT_LISTENER_FILTERS_TIMEOUT
    if listener.HasField("listener_filters_timeout"):
        timeout = _seconds(listener.listener_filters_timeout) or None
    return ListenerConfig(
        name=listener.name,
        address=sock.address,
        port=sock.port_value,
        bind_to_port=listener.bind_to_port.value if listener.HasField("bind_to_port") else True,
        use_original_dst=listener.use_original_dst.value,
        traffic_direction=listener.traffic_direction,
        listener_filters=filters,
        listener_filters_timeout=timeout,
        continue_on_listener_filters_timeout=listener.continue_on_listener_filters_timeout,
        filter_chains=chains,
        default_filter_chain=default,
        per_connection_buffer_limit=listener.per_connection_buffer_limit_bytes.value
        if listener.HasField("per_connection_buffer_limit_bytes")
        else DEFAULT_PER_CONNECTION_BUFFER_LIMIT,
        stat_prefix=listener.stat_prefix,
        _by_port=MappingProxyType({p: tuple(c) for p, c in by_port.items()}),
        _any_port=tuple(any_port),
    )


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _listener_filter(
    lf: lc.ListenerFilter, path: str, problems: list[str]
) -> ListenerFilterConfig | None:
    problems.extend(unsupported_fields(lf, _ALLOWED, path))
    url = lf.typed_config.type_url
    kind = _LISTENER_FILTER_TYPES.get(url) if url else _LISTENER_FILTER_NAMES.get(lf.name)
    if kind is None:
        problems.append(f"{path}: listener filter {lf.name!r} ({url or 'no typed_config'}) is "
                        "not supported")
        return None
    initial = None
    if kind is ListenerFilterKind.TLS_INSPECTOR and url:
        cfg = tls_inspector_pb2.TlsInspector()
        lf.typed_config.Unpack(cfg)
        problems.extend(unsupported_fields(cfg, _ALLOWED, f"{path}.typed_config"))
        if cfg.HasField("initial_read_buffer_size"):
            initial = cfg.initial_read_buffer_size.value
    elif url:
        cfg_type = (original_dst_pb2.OriginalDst if kind is ListenerFilterKind.ORIGINAL_DST
                    else http_inspector_pb2.HttpInspector)
        cfg = cfg_type()
        lf.typed_config.Unpack(cfg)
        problems.extend(unsupported_fields(cfg, _ALLOWED, f"{path}.typed_config"))
    disabled = None
    if lf.HasField("filter_disabled"):
        disabled = _predicate(lf.filter_disabled, f"{path}.filter_disabled", problems)
    return ListenerFilterConfig(kind, lf.name, disabled, initial)


def _predicate(
    p: lc.ListenerFilterChainMatchPredicate, path: str, problems: list[str]
) -> PortPredicate:
    which = p.WhichOneof("rule")
    if which == "any_match":
        return PortPredicate("any")
    if which == "destination_port_range":
        return PortPredicate("port_range", p.destination_port_range.start,
                             p.destination_port_range.end)
    if which in ("or_match", "and_match"):
        children = tuple(
            _predicate(r, f"{path}.{which}.rules[{i}]", problems)
            for i, r in enumerate(getattr(p, which).rules)
        )
        return PortPredicate("or" if which == "or_match" else "and", children=children)
    if which == "not_match":
        return PortPredicate("not", children=(_predicate(p.not_match, f"{path}.not_match",
                                                         problems),))
    problems.append(f"{path}: empty predicate")
    return PortPredicate("any")


def _filter_chain(fc: lc.FilterChain, path: str, problems: list[str]) -> FilterChainConfig:
    match = _chain_match(fc.filter_chain_match, f"{path}.filter_chain_match", problems)
    http = tcp = None
    network_rbac: list[NetworkRbacConfig] = []
    istio_stats: list[StatsConfig] = []
    if not fc.filters:
        problems.append(f"{path}.filters: a filter chain needs a terminal network filter")
    for i, f in enumerate(fc.filters):
        here = f"{path}.filters[{i}]"
        problems.extend(unsupported_fields(f, _ALLOWED, here))
        url = f.typed_config.type_url
        if url in TYPED_STRUCT_TYPES and i != len(fc.filters) - 1:
            try:
                compiled = compile_istio_filter(f.typed_config, f.name, f"{here}.typed_config",
                                                network=True)
            except ConfigError as err:
                problems.extend(err.problems)
                continue
            istio_stats.append(compiled)  # type: ignore[arg-type]
            continue
        if url == NETWORK_RBAC_TYPE and i != len(fc.filters) - 1:
            try:
                network_rbac.append(compile_network_rbac(f.typed_config, f.name,
                                                         f"{here}.typed_config"))
            except ConfigError as err:
                problems.extend(err.problems)
            continue
        if i != len(fc.filters) - 1:
            problems.append(f"{here}: only one (terminal) network filter per chain is supported;"
                            f" {f.name!r} is not")
            continue
        if url == HCM_TYPE:
            http = _hcm(f.typed_config, f"{here}.typed_config", problems)
        elif url == TCP_PROXY_TYPE:
            tcp = _tcp_proxy(f.typed_config, f"{here}.typed_config", problems)
        else:
            problems.append(f"{here}: network filter {f.name!r} ({url or 'no typed_config'}) "
                            "is not supported")
    tls = None
    if fc.HasField("transport_socket"):
        ts = fc.transport_socket
        problems.extend(unsupported_fields(ts, _ALLOWED, f"{path}.transport_socket"))
        url = ts.typed_config.type_url
        if url == DOWNSTREAM_TLS_TYPE:
            ctx = tls_pb2.DownstreamTlsContext()
            ts.typed_config.Unpack(ctx)
            tls = _downstream_tls(ctx, f"{path}.transport_socket.typed_config", problems)
        elif url and url != RAW_BUFFER_TYPE:
            problems.append(f"{path}.transport_socket: {url} is not supported")
    metadata = MappingProxyType(
        {k: MappingProxyType(json_format.MessageToDict(v))
         for k, v in fc.metadata.filter_metadata.items()}
    )
    if istio_stats and tcp is None:
        problems.append(f"{path}: the istio.stats network filter needs tcp_proxy after it")
    return FilterChainConfig(fc.name, match, http, tcp, tls, metadata, tuple(network_rbac),
                             tuple(istio_stats))


def _internal_cidrs(config: Any, path: str, problems: list[str]) -> tuple[str, ...]:
    out = []
    for i, r in enumerate(config.cidr_ranges):
        try:
            out.append(str(ipaddress.ip_network(f"{r.address_prefix}/{r.prefix_len.value}",
                                                strict=False)))
        except ValueError as err:
            problems.append(f"{path}.internal_address_config.cidr_ranges[{i}]: {err}")
    return tuple(out)


def _chain_match(
    m: lc.FilterChainMatch, path: str, problems: list[str]
) -> FilterChainMatchConfig:
    def cidrs(field_name: str) -> tuple[IpNetwork, ...]:
        out = []
        for i, r in enumerate(getattr(m, field_name)):
            try:
                out.append(ipaddress.ip_network(
                    f"{r.address_prefix}/{r.prefix_len.value}", strict=False
                ))
            except ValueError as err:
                problems.append(f"{path}.{field_name}[{i}]: {err}")
        return tuple(out)

    names = tuple(n.lower() for n in m.server_names)
    for n in names:
        if "*" in n and not (n.startswith("*.") and "*" not in n[1:]):
            problems.append(f"{path}.server_names: {n!r}: only a leading '*.' wildcard is "
                            "supported")
    return FilterChainMatchConfig(
        destination_port=m.destination_port.value if m.HasField("destination_port") else None,
        prefix_ranges=cidrs("prefix_ranges"),
        server_names=names,
        transport_protocol=m.transport_protocol,
        application_protocols=tuple(m.application_protocols),
        direct_source_prefix_ranges=cidrs("direct_source_prefix_ranges"),
        source_type=SourceType(m.source_type),
        source_prefix_ranges=cidrs("source_prefix_ranges"),
        source_ports=frozenset(m.source_ports),
    )


def _access_logs(
    entries: Sequence[Any], path: str, problems: list[str]
) -> tuple[AccessLogConfig, ...]:
    """The ``access_log`` entries: the logger type, its format and its filter are checked
    here, so a bad one NACKs the listener (a bad CEL expression names itself and why)."""
    out = []
    for i, a in enumerate(entries):
        here = field_path(path, f"access_log[{i}]")
        problems.extend(check_access_logger(a, here))
        log_filter = None
        if a.HasField("filter"):
            try:
                log_filter = compile_access_log_filter(a.filter, f"{here}.filter")
            except ConfigError as err:
                problems.extend(err.problems)
        out.append(AccessLogConfig(
            a.name, a.typed_config if a.HasField("typed_config") else None, log_filter))
    return tuple(out)


def _hcm(
    typed: any_pb2.Any, path: str, problems: list[str]
) -> HttpConnectionManagerConfig:
    hcm = hcm_pb2.HttpConnectionManager()
    typed.Unpack(hcm)
    problems.extend(unsupported_fields(hcm, _ALLOWED, path))
    rds_name = None
    route_config = None
    which = hcm.WhichOneof("route_specifier")
    if which == "rds":
        rds_name = hcm.rds.route_config_name
        source = hcm.rds.config_source.WhichOneof("config_source_specifier")
        if source not in (None, "ads"):
            problems.append(f"{path}.rds.config_source: only ADS is supported")
    elif which == "route_config":
        route_config = hcm.route_config
    else:
        problems.append(f"{path}: needs rds or route_config")
    filters = []
    last = len(hcm.http_filters) - 1
    for i, hf in enumerate(hcm.http_filters):
        if hf.HasField("config_discovery"):
            problems.append(f"{path}.http_filters[{i}].config_discovery: not supported")
        _check_http_filter(hf, i == last, f"{path}.http_filters[{i}]", problems)
        filters.append(HttpFilterConfig(
            hf.name, hf.typed_config if hf.HasField("typed_config") else None,
            hf.is_optional, hf.disabled,
        ))
    request_id_sampling = True
    if hcm.HasField("request_id_extension"):
        url = hcm.request_id_extension.typed_config.type_url
        if url == UUID_REQUEST_ID_TYPE:
            uuid = uuid_pb2.UuidRequestIdConfig()
            hcm.request_id_extension.typed_config.Unpack(uuid)
            problems.extend(unsupported_fields(uuid, _ALLOWED,
                                               f"{path}.request_id_extension.typed_config"))
            if uuid.HasField("use_request_id_for_trace_sampling"):
                request_id_sampling = uuid.use_request_id_for_trace_sampling.value
        else:
            problems.append(f"{path}.request_id_extension: {url} is not supported")
    ccd = hcm.set_current_client_cert_details
    if ccd.chain:
        problems.append(f"{path}.set_current_client_cert_details.chain: the peer's certificate "
                        "chain is not available to pistio (cert is)")
    cert_details = tuple(
        name for name, on in (
            ("subject", ccd.subject.value), ("cert", ccd.cert), ("chain", ccd.chain),
            ("dns", ccd.dns), ("uri", ccd.uri),
        ) if on
    )
    upgrades = tuple(
        u.upgrade_type.lower() for u in hcm.upgrade_configs
        if not u.HasField("enabled") or u.enabled.value
    )
    common = hcm.common_http_protocol_options
    stream_idle: float | None = DEFAULT_STREAM_IDLE_TIMEOUT
    if hcm.HasField("stream_idle_timeout"):
        stream_idle = _seconds(hcm.stream_idle_timeout) or None
    h2 = hcm.http2_protocol_options
    return HttpConnectionManagerConfig(
        stat_prefix=hcm.stat_prefix,
        codec_type=hcm.codec_type,
        rds_route_config_name=rds_name,
        route_config=route_config,
        http_filters=tuple(filters),
        server_name=hcm.server_name or "envoy",
        use_remote_address=hcm.use_remote_address.value,
        xff_num_trusted_hops=hcm.xff_num_trusted_hops,
        skip_xff_append=hcm.skip_xff_append,
        internal_cidrs=_internal_cidrs(hcm.internal_address_config, path, problems),
        internal_unix_sockets=hcm.internal_address_config.unix_sockets,
        generate_request_id=hcm.generate_request_id.value
        if hcm.HasField("generate_request_id") else True,
        preserve_external_request_id=hcm.preserve_external_request_id,
        use_request_id_for_trace_sampling=request_id_sampling,
        forward_client_cert_details=hcm.forward_client_cert_details,
        set_current_client_cert_details=cert_details,
        normalize_path=hcm.normalize_path.value,
        merge_slashes=hcm.merge_slashes,
        path_with_escaped_slashes_action=hcm.path_with_escaped_slashes_action,
        request_timeout=_seconds(hcm.request_timeout) or None
        if hcm.HasField("request_timeout") else None,
        stream_idle_timeout=stream_idle,
        idle_timeout=_seconds(common.idle_timeout) or None
        if common.HasField("idle_timeout") else None,
        max_connection_duration=_seconds(common.max_connection_duration) or None
        if common.HasField("max_connection_duration") else None,
        max_requests_per_connection=common.max_requests_per_connection.value or None
        if common.HasField("max_requests_per_connection") else None,
        max_headers_count=common.max_headers_count.value
        if common.HasField("max_headers_count") else None,
        headers_with_underscores_action=common.headers_with_underscores_action,
        max_concurrent_streams=h2.max_concurrent_streams.value
        if h2.HasField("max_concurrent_streams") else None,
        upgrade_types=upgrades,
        access_logs=_access_logs(hcm.access_log, path, problems),
        tracing=compile_tracing(hcm.tracing, f"{path}.tracing", problems, request_id_sampling)
        if hcm.HasField("tracing") else None,
    )


_ROUTER_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.router.v3.Router": frozenset(
        {"suppress_envoy_headers", "start_child_span", "dynamic_stats"}
    ),
}


_GRPC_WEB_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb": frozenset(),
}


def _check_http_filter(
    hf: hcm_pb2.HttpFilter, is_last: bool, path: str, problems: list[str]
) -> None:
    """NACK an HTTP filter pistio does not run; the router must come last, as Envoy says."""
    url = hf.typed_config.type_url if hf.HasField("typed_config") else ""
    if url in TYPED_STRUCT_TYPES:  # Istio's istio.metadata_exchange / istio.stats
        if is_last:
            problems.append(f"{path}: non-terminal filter named {hf.name!r} is the last filter "
                            "in a http filter chain")
        try:
            compile_istio_filter(hf.typed_config, hf.name, f"{path}.typed_config")
        except ConfigError as err:
            if not hf.is_optional:
                problems.extend(err.problems)
        return
    name = SUPPORTED_HTTP_FILTERS.get(url)
    if name is None:
        if not hf.is_optional:
            problems.append(f"{path}: HTTP filter {hf.name!r} ({url or 'no typed_config'}) is "
                            "not supported by pistio")
        return
    if url == ROUTER_TYPE:
        if not is_last:
            problems.append(f"{path}: terminal filter named {hf.name!r} of type {name} must be "
                            "the last filter in a http filter chain")
        router = router_pb2.Router()
        hf.typed_config.Unpack(router)
        problems.extend(unsupported_fields(router, _ROUTER_ALLOWED, f"{path}.typed_config"))
    elif is_last:
        problems.append(f"{path}: non-terminal filter named {hf.name!r} of type {name} is the "
                        "last filter in a http filter chain")
    elif url == GRPC_WEB_TYPE:
        grpc_web = grpc_web_pb2.GrpcWeb()
        hf.typed_config.Unpack(grpc_web)
        problems.extend(unsupported_fields(grpc_web, _GRPC_WEB_ALLOWED, f"{path}.typed_config"))
    elif url == FAULT_TYPE:
        fault = fault_pb2.HTTPFault()
        hf.typed_config.Unpack(fault)
        try:
            compile_http_fault(fault, f"{path}.typed_config")
        except ConfigError as err:
            problems.extend(err.problems)
    elif url in SECURITY_HTTP_FILTERS:
        try:
            SECURITY_HTTP_FILTERS[url](hf.typed_config, f"{path}.typed_config")
        except ConfigError as err:
            problems.extend(err.problems)
    elif url == LOCAL_RATE_LIMIT_TYPE:
        try:
            compile_local_rate_limit(unpack_local_rate_limit(hf.typed_config),
                                     f"{path}.typed_config")
        except ConfigError as err:
            problems.extend(err.problems)


def _tcp_proxy(typed: any_pb2.Any, path: str, problems: list[str]) -> TcpProxyConfig:
    tp = tcp_proxy_pb2.TcpProxy()
    typed.Unpack(tp)
    problems.extend(unsupported_fields(tp, _ALLOWED, path))
    which = tp.WhichOneof("cluster_specifier")
    if which is None:
        problems.append(f"{path}: needs cluster or weighted_clusters")
    weighted = tuple((c.name, c.weight) for c in tp.weighted_clusters.clusters)
    idle: float | None = DEFAULT_TCP_IDLE_TIMEOUT
    if tp.HasField("idle_timeout"):
        idle = _seconds(tp.idle_timeout) or None
    return TcpProxyConfig(
        stat_prefix=tp.stat_prefix,
        cluster=tp.cluster if which == "cluster" else None,
        weighted_clusters=weighted,
        idle_timeout=idle,
        access_logs=_access_logs(tp.access_log, path, problems),
    )


def _downstream_tls(
    ctx: tls_pb2.DownstreamTlsContext, path: str, problems: list[str]
) -> DownstreamTlsConfig:
    problems.extend(unsupported_fields(ctx, _ALLOWED, path))
    common = ctx.common_tls_context
    timeout = check_common_tls(common, f"{path}.common_tls_context", problems, server=True)
    combined = common.combined_validation_context
    sans = []
    for m in combined.default_validation_context.match_subject_alt_names:
        kind = m.WhichOneof("match_pattern") or "exact"
        sans.append(SanMatcher(kind, getattr(m, kind), m.ignore_case))
    validation = None
    if combined.HasField("validation_context_sds_secret_config"):
        validation = combined.validation_context_sds_secret_config.name
    elif common.HasField("validation_context_sds_secret_config"):
        validation = common.validation_context_sds_secret_config.name
    return DownstreamTlsConfig(
        require_client_certificate=ctx.require_client_certificate.value,
        alpn_protocols=tuple(common.alpn_protocols),
        san_matchers=tuple(sans),
        certificate_sds_names=tuple(s.name for s in common.tls_certificate_sds_secret_configs),
        validation_sds_name=validation,
        min_version=common.tls_params.tls_minimum_protocol_version,
        max_version=common.tls_params.tls_maximum_protocol_version,
        cipher_suites=tuple(common.tls_params.cipher_suites),
        proto=ctx,
        ecdh_curves=tuple(common.tls_params.ecdh_curves),
        sds_fetch_timeout=timeout,
    )


def original_dst_listener(
    listeners: Mapping[tuple[str, int], ListenerConfig], dst_ip: str, dst_port: int
) -> ListenerConfig | None:
    """The ``use_original_dst`` hand-off: the listener bound (or not) to the exact original
    destination, else the wildcard ``0.0.0.0:port`` one, as Envoy looks them up."""
    return listeners.get((dst_ip, dst_port)) or listeners.get(("0.0.0.0", dst_port)) or (
        listeners.get(("::", dst_port))
    )
