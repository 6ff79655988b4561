"""LDS generator: the transport's entry point for listeners (Istio's ``LdsGenerator``).

Reads the push context from ``push.context`` and the proxy from the connection's node id
and metadata; proxyless gRPC clients (node metadata ``GENERATOR=grpc``) get API listeners,
sidecars get their full listener set.
"""

from __future__ import annotations

from pistio.pilot.generators.cds import connection_proxy
from pistio.pilot.grpcgen.lds import build_grpc_listeners
from pistio.pilot.model.proxy import NodeType
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


class ListenerGenerator:
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push.context
        if not isinstance(ctx, PushContext):
            return None
        proxy = connection_proxy(conn)
        if proxy.is_proxyless_grpc:
            listeners = build_grpc_listeners(ctx, proxy, watched)
        elif proxy.type is NodeType.SIDECAR:
            listeners = build_sidecar_listeners(ctx, proxy)
            if watched is not None:
                listeners = [lst for lst in listeners if lst.name in watched]
        else:
            return None  # TODO(gateways): router and waypoint listeners
        return [Resource(lst.name, lst) for lst in listeners]
