"""RDS generator: route configurations by name (Istio's ``RdsGenerator``).

Route configs are never wildcard: the proxy names the ones its listeners refer to
(``9080``, ``reviews.default.svc.cluster.local:9080`` for sniffed ports, or
``outbound|9080||reviews.default.svc.cluster.local`` for proxyless gRPC).
"""

from __future__ import annotations

from pistio.pilot.generators.cds import connection_proxy
from pistio.pilot.grpcgen.rds import build_grpc_route_config
from pistio.pilot.model.proxy import NodeType
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


class RouteGenerator:
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push.context
        if not isinstance(ctx, PushContext):
            return None
        proxy = connection_proxy(conn)
        out: list[Resource] = []
        for name in sorted(watched or ()):
            if proxy.is_proxyless_grpc:
                config = build_grpc_route_config(ctx, proxy, name)
            elif proxy.type is NodeType.SIDECAR:
                config = build_sidecar_outbound_route_config(ctx, proxy, name)
            else:
                return None  # TODO(gateways): gateway route configs
            if config is not None:
                out.append(Resource(name, config))
        return out
