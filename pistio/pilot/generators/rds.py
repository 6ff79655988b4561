"""RDS generator: route configurations by name (Istio's ``RdsGenerator``).

Route configs are never wildcard: the proxy names the ones its listeners refer to
(``9080``, ``reviews.default.svc.cluster.local:9080`` for sniffed ports, or
``outbound|9080||reviews.default.svc.cluster.local`` for proxyless gRPC). A route
configuration depends on its name and the proxy's scope only (namespace and DNS domain for
short names and exportTo, Sidecar, ``sourceLabels`` matches), so it is built once per scope
and shared.
"""

from __future__ import annotations

from pistio.pilot import xds_cache
from pistio.pilot.generators.connection import connection_proxy
from pistio.pilot.grpcgen.rds import build_grpc_route_config
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


def route_resource(
    ctx: PushContext, proxy: Proxy, name: str, attributes: dict | None = None
) -> Resource | None:
    """The route configuration ``name`` for the proxy (None: not one of its names)."""
    scope = xds_cache.connection_scope(ctx, proxy, attributes if attributes is not None else {})

    def build() -> Resource | None:
        if proxy.is_proxyless_grpc:
            config = build_grpc_route_config(ctx, proxy, name)
        else:
            config = build_sidecar_outbound_route_config(ctx, proxy, name)
        return Resource(name, config) if config is not None else None

    return xds_cache.cache_of(ctx).get_or_build(xds_cache.RDS, (name, scope), build)


class RouteGenerator:
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push.context
        if not isinstance(ctx, PushContext):
            return None
        proxy = connection_proxy(conn)
        if not proxy.is_proxyless_grpc and proxy.type is not NodeType.SIDECAR:
            return None if watched else []  # TODO(gateways): gateway route configs
        out: list[Resource] = []
        for name in sorted(watched or ()):
            res = route_resource(ctx, proxy, name, conn.attributes)
            if res is not None:
                out.append(res)
        return out
