"""The HTTP connection manager of sidecar listeners and its HTTP filter chain (Istio's
``ListenerBuilder.buildHTTPConnectionManager``).

Istio's filter order is: metadata exchange, CUSTOM authz, authn (JWT, peer), authz (RBAC),
gRPC-Web, gRPC stats, ALPN, fault, CORS, telemetry (stats), router. The fault and CORS
filters are always present because routes configure them per route
(``typed_per_filter_config``). Security filters come from :mod:`pistio.pilot.security`
(inbound only, as Istio); Istio's peer metadata exchange filter comes first and its stats
filters (``telemetry_filters``) just before the router; access logs and tracing come from the
Telemetry API and mesh config (:mod:`pistio.pilot.telemetry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from envoy.config.core.v3 import config_source_pb2, protocol_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from pistio.config.protocol import Protocol
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security.filters import inbound_http_filters
from pistio.pilot.telemetry.access_logs import access_logs
from pistio.pilot.telemetry.metrics import http_stats_filters, metadata_exchange_filter
from pistio.pilot.telemetry.tracing import hcm_tracing
from pistio.xds.any_codec import pack

HCM_FILTER = "envoy.filters.network.http_connection_manager"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"
GRPC_WEB_FILTER = "envoy.filters.http.grpc_web"
INBOUND_SERVER_NAME = "istio-envoy"
# Istio's StatPrefixDelimiter: ends a listener's stat prefix so stats can be parsed back.
STAT_PREFIX_DELIMITER = ";"


class ListenerClass(Enum):
    """Istio's ListenerClass: which side of the sidecar a listener serves."""

    SIDECAR_INBOUND = "inbound"
    SIDECAR_OUTBOUND = "outbound"


@dataclass(frozen=True)
class HttpOptions:
    """What differs between the HTTP connection managers of one proxy."""

    listener_class: ListenerClass
    stat_prefix: str
    protocol: Protocol
    port: int
    rds: str = ""  # route config name served over ADS; "" for an inline route config
    route_config: object | None = None  # route_pb2.RouteConfiguration when inline


def fault_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()))


def cors_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors()))


def router_filter(suppress_envoy_headers: bool = False) -> hcm_pb2.HttpFilter:
    router = router_pb2.Router(suppress_envoy_headers=suppress_envoy_headers)
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router))


def grpc_web_filter() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=GRPC_WEB_FILTER, typed_config=pack(grpc_web_pb2.GrpcWeb()))


def security_filters(
    push: PushContext, proxy: Proxy, listener_class: ListenerClass
) -> list[hcm_pb2.HttpFilter]:
    """CUSTOM authz (RBAC shadow + ext_authz), authentication (jwt_authn) and RBAC (AUDIT,
    DENY, ALLOW) filters, in Istio's order; only on inbound connection managers."""
    if listener_class is not ListenerClass.SIDECAR_INBOUND:
        return []
    return inbound_http_filters(push, proxy)


def telemetry_filters(
    push: PushContext, proxy: Proxy, listener_class: ListenerClass
) -> list[hcm_pb2.HttpFilter]:
    """Istio's ``istio.stats`` filters (one per Prometheus provider in scope; none when the
    proxy's metrics are disabled on this side), after fault and CORS."""
    return http_stats_filters(push, proxy, listener_class is ListenerClass.SIDECAR_INBOUND)


def http_filters(
    push: PushContext, proxy: Proxy, listener_class: ListenerClass, protocol: Protocol
) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filter chain of one connection manager: metadata exchange first (before
    RBAC, which may read the peer), the router last."""
    filters = [metadata_exchange_filter(listener_class is ListenerClass.SIDECAR_INBOUND)]
    filters += security_filters(push, proxy, listener_class)
    if protocol is Protocol.GRPC_WEB:
        filters.append(grpc_web_filter())
    filters += [fault_filter(), cors_filter()]
    filters += telemetry_filters(push, proxy, listener_class)
    filters.append(router_filter())
    return filters


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Resources over the same ADS stream, with no initial fetch timeout (Istio's choice)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),
        resource_api_version=config_source_pb2.V3,
    )


def build_http_connection_manager(
    push: PushContext, proxy: Proxy, opts: HttpOptions
) -> hcm_pb2.HttpConnectionManager:
    """Istio's sidecar connection manager: auto codec, path normalization as the mesh says,
    websocket upgrades, no stream idle timeout, UUID request ids; ``use_remote_address``
    false on both sides of a sidecar (the peer is a local app or another sidecar)."""
    hcm = hcm_pb2.HttpConnectionManager(
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=opts.stat_prefix,
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
        use_remote_address=wrappers_pb2.BoolValue(value=False),
        stream_idle_timeout=duration_pb2.Duration(seconds=0),
        server_header_transformation=hcm_pb2.HttpConnectionManager.OVERWRITE,
    )
    _apply_path_normalization(push, hcm)
    hcm.upgrade_configs.add(upgrade_type="websocket")
    if opts.rds:
        hcm.rds.config_source.CopyFrom(ads_config_source())
        hcm.rds.route_config_name = opts.rds
    elif opts.route_config is not None:
        hcm.route_config.CopyFrom(opts.route_config)
    if opts.listener_class is ListenerClass.SIDECAR_INBOUND:
        hcm.server_name = INBOUND_SERVER_NAME
        hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
        details = hcm.set_current_client_cert_details
        details.subject.value = True
        details.uri = True
        details.dns = True
        if opts.protocol.is_http2:
            hcm.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    hcm.http_filters.extend(http_filters(push, proxy, opts.listener_class, opts.protocol))
    inbound = opts.listener_class is ListenerClass.SIDECAR_INBOUND
    hcm.access_log.extend(access_logs(push, proxy, inbound))
    tracing = hcm_tracing(push, proxy, inbound)
    if tracing.tracing is not None:
        hcm.tracing.CopyFrom(tracing.tracing)
    uuid = uuid_pb2.UuidRequestIdConfig(
        use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(
            value=tracing.use_request_id_for_trace_sampling
        )
    )
    hcm.request_id_extension.typed_config.CopyFrom(pack(uuid))
    return hcm


def _apply_path_normalization(push: PushContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
    setting = push.mesh.path_normalization
    mode = getattr(setting, "normalization", None) or "DEFAULT"
    if mode == "NONE":
        hcm.normalize_path.value = False
        return
    hcm.normalize_path.value = True
    if mode in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        hcm.merge_slashes = True
    if mode == "DECODE_AND_MERGE_SLASHES":
        hcm.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD
