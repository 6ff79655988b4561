"""LDS generator: the transport's entry point for listeners (Istio's ``LdsGenerator``).

Reads the push context from ``push.context`` and the proxy from the connection's node id
and metadata; proxyless gRPC clients (node metadata ``GENERATOR=grpc``) get API listeners,
sidecars get their full listener set. A sidecar's outbound listeners and
``virtualOutbound`` depend only on its scope and are shared by every proxy in it;
``virtualInbound`` depends on the proxy's own service instances and is built per proxy.
"""

from __future__ import annotations

from pistio.pilot import xds_cache
from pistio.pilot.generators.connection import connection_proxy
from pistio.pilot.grpcgen.lds import build_grpc_listeners
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.listener_builder import build_virtual_outbound_listener
from pistio.pilot.networking.listener_inbound import build_virtual_inbound_listener
from pistio.pilot.networking.listener_outbound import build_sidecar_outbound_listeners
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


def _shared_listeners(ctx: PushContext, proxy: Proxy) -> list[Resource]:
    listeners = build_sidecar_outbound_listeners(ctx, proxy)
    listeners.append(build_virtual_outbound_listener(ctx, proxy))
    return [Resource(lst.name, lst) for lst in listeners]


def sidecar_listener_resources(
    ctx: PushContext, proxy: Proxy, attributes: dict | None = None
) -> list[Resource]:
    """``build_sidecar_listeners``' listeners, the outbound ones shared within a scope."""
    if ctx.mesh.proxy_listen_port == 0:
        return []
    scope = xds_cache.connection_scope(ctx, proxy, attributes if attributes is not None else {})
    shared = xds_cache.cache_of(ctx).get_or_build(
        xds_cache.LDS, scope, lambda: _shared_listeners(ctx, proxy)
    )
    inbound = build_virtual_inbound_listener(ctx, proxy)
    return [*shared, Resource(inbound.name, inbound)]


class ListenerGenerator:
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push.context
        if not isinstance(ctx, PushContext):
            return None
        proxy = connection_proxy(conn)
        if proxy.is_proxyless_grpc:
            return [Resource(lst.name, lst) for lst in build_grpc_listeners(ctx, proxy, watched)]
        if proxy.type is not NodeType.SIDECAR:
            return None  # TODO(gateways): router and waypoint listeners
        resources = sidecar_listener_resources(ctx, proxy, conn.attributes)
        if watched is not None:
            resources = [r for r in resources if r.name in watched]
        return resources
