"""The HTTP filter chain of a connection manager, built once per config from ``http_filters``.

The listener compiler already refused (NACKed) any filter pistio does not run
(``listener_config.SUPPORTED_HTTP_FILTERS``) and checked that the router is last; here each
entry becomes its runtime object, in order. A ``disabled`` entry is left out (it could only be
enabled per route, which pistio does not support); an unknown ``is_optional`` one is skipped,
as Envoy skips optional filters it does not know.
"""

from __future__ import annotations

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import (
    CORS_TYPE,
    EXT_AUTHZ_TYPE,
    FAULT_TYPE,
    GRPC_WEB_TYPE,
    JWT_AUTHN_TYPE,
    RBAC_TYPE,
    ROUTER_TYPE,
    HttpConnectionManagerConfig,
)
from pistio.proxy.config.local_rate_limit import (
    LOCAL_RATE_LIMIT_TYPE,
    compile_local_rate_limit,
    unpack_local_rate_limit,
)
from pistio.proxy.config.route_action import compile_http_fault
from pistio.proxy.filters.http.cors import CorsFilter
from pistio.proxy.filters.http.ext_authz import ExtAuthzFilter, unpack_ext_authz
from pistio.proxy.filters.http.fault import FaultFilter
from pistio.proxy.filters.http.grpc_web import GrpcWebFilter
from pistio.proxy.filters.http.istio_stats import IstioStatsFilter
from pistio.proxy.filters.http.jwt_authn import JwtAuthnFilter, unpack_jwt_authn
from pistio.proxy.filters.http.local_ratelimit import LocalRateLimitFilter
from pistio.proxy.filters.http.metadata_exchange import MetadataExchangeFilter
from pistio.proxy.filters.http.rbac import RbacFilter, unpack_http_rbac
from pistio.proxy.router.router import RouterConfig
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.telemetry.plugin_config import (
    TYPED_STRUCT_TYPES,
    MetadataExchangeConfig,
    compile_istio_filter,
)

HttpFilter = (FaultFilter | CorsFilter | GrpcWebFilter | RbacFilter | JwtAuthnFilter
              | ExtAuthzFilter | LocalRateLimitFilter | MetadataExchangeFilter
              | IstioStatsFilter)
TRAFFIC_INBOUND = 1  # envoy.config.core.v3.TrafficDirection.INBOUND


def build_filter_chain(
    hcm: HttpConnectionManagerConfig, store: StatsStore, traffic_direction: int = 0,
    scope: str = "",
) -> tuple[tuple[HttpFilter, ...], RouterConfig]:
    """``traffic_direction``: the listener's (Istio's stats reporter: ``destination`` when
    INBOUND, else ``source``); ``scope`` names the filter chain (listener and chain index:
    a rate limit's shared token bucket is that chain's own)."""
    filters: list[HttpFilter] = []
    router = RouterConfig()
    for entry in hcm.http_filters:
        if entry.disabled:
            continue
        url = entry.type_url
        if url == FAULT_TYPE:
            msg = fault_pb2.HTTPFault()
            entry.typed_config.Unpack(msg)  # type: ignore[union-attr]
            config = compile_http_fault(msg, entry.name)
            filters.append(FaultFilter(entry.name, config, store, hcm.stat_prefix))
        elif url == CORS_TYPE:
            filters.append(CorsFilter(entry.name))
        elif url == GRPC_WEB_TYPE:
            filters.append(GrpcWebFilter(entry.name))
        elif url == RBAC_TYPE:
            filters.append(RbacFilter(entry.name, unpack_http_rbac(entry.typed_config, entry.name),
                                      store, hcm.stat_prefix))
        elif url == JWT_AUTHN_TYPE:
            filters.append(JwtAuthnFilter(entry.name,
                                          unpack_jwt_authn(entry.typed_config, entry.name),
                                          store, hcm.stat_prefix))
        elif url == EXT_AUTHZ_TYPE:
            filters.append(ExtAuthzFilter(entry.name,
                                          unpack_ext_authz(entry.typed_config, entry.name),
                                          store, hcm.stat_prefix))
        elif url == LOCAL_RATE_LIMIT_TYPE:
            config = compile_local_rate_limit(unpack_local_rate_limit(entry.typed_config),
                                              f"{scope} {entry.name}")
            filters.append(LocalRateLimitFilter(entry.name, config, store))
        elif url in TYPED_STRUCT_TYPES:  # istio.metadata_exchange, istio.stats
            try:
                compiled = compile_istio_filter(entry.typed_config,  # type: ignore[arg-type]
                                                entry.name, entry.name)
            except ConfigError:
                continue  # an optional filter pistio does not run (others were NACKed)
            if isinstance(compiled, MetadataExchangeConfig):
                filters.append(MetadataExchangeFilter(entry.name, compiled))
            else:
                filters.append(IstioStatsFilter(entry.name, compiled, store,
                                                traffic_direction == TRAFFIC_INBOUND))
        elif url == ROUTER_TYPE:
            msg = router_pb2.Router()
            entry.typed_config.Unpack(msg)  # type: ignore[union-attr]
            router = RouterConfig(suppress_envoy_headers=msg.suppress_envoy_headers)
    return tuple(filters), router
