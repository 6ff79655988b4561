"""The CDS generator: clusters for one connected proxy, from the push context of a push.

Istio's ``CdsGenerator``. The transport hands over the connection and the push request;
the push context travels in ``push.context``. The proxy record is parsed from the xDS node
once per connection and kept in ``conn.attributes``.

Outbound clusters (and the catch-all ones) depend only on the proxy's scope
(:func:`pistio.pilot.xds_cache.proxy_scope`), so they are built once per scope and push
context and shared, as ``Resource`` objects, by every proxy in that scope; inbound clusters
depend on the proxy's own service instances and are built per proxy.
"""

from __future__ import annotations

from pistio.pilot import xds_cache
from pistio.pilot.generators.connection import connection_proxy, push_context
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_builder import (
    blackhole_cluster,
    build_clusters,
    build_inbound_clusters,
    build_outbound_clusters,
    inbound_passthrough_cluster,
    passthrough_cluster,
)
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


class _Shared:
    """A scope's shared clusters and their names (to drop per-proxy duplicates)."""

    __slots__ = ("names", "resources")

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = resources
        self.names = frozenset(r.name for r in resources)


def _shared_clusters(ctx: PushContext, proxy: Proxy) -> list[Resource]:
    """Outbound, BlackHole and (sidecars) Passthrough clusters, in build_clusters' order,
    one per name."""
    clusters = build_outbound_clusters(ctx, proxy)
    clusters.append(blackhole_cluster(ctx))
    if proxy.type is NodeType.SIDECAR:
        clusters.append(passthrough_cluster(ctx))
    return _unique([Resource(c.name, c) for c in clusters])


def _unique(resources: list[Resource]) -> list[Resource]:
    # Conflicting service definitions can produce one name twice: the first wins.
    seen: set[str] = set()
    out = []
    for r in resources:
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out


def cluster_resources(
    ctx: PushContext, proxy: Proxy, attributes: dict | None = None
) -> list[Resource]:
    """Every cluster of the proxy as shared Resources (same content as ``build_clusters``)."""
    if proxy.is_proxyless_grpc:
        return [Resource(c.name, c) for c in build_clusters(ctx, proxy)]
    scope = xds_cache.connection_scope(ctx, proxy, attributes if attributes is not None else {})
    scope = xds_cache.cluster_scope(scope)
    shared: _Shared = xds_cache.cache_of(ctx).get_or_build(
        xds_cache.CDS, scope, lambda: _Shared(_shared_clusters(ctx, proxy))
    )
    if proxy.type is not NodeType.SIDECAR:
        return shared.resources
    own = build_inbound_clusters(ctx, proxy)
    own.append(inbound_passthrough_cluster(ctx, proxy))
    out = list(shared.resources)
    seen = set(shared.names)
    for c in own:
        if c.name not in seen:
            seen.add(c.name)
            out.append(Resource(c.name, c))
    return out


class ClusterGenerator:
    """Every cluster of the proxy (Cluster is a wildcard type; a named subscription gets
    the named subset)."""

    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push_context(push)
        if ctx is None:
            return None
        proxy = connection_proxy(conn)
        resources = cluster_resources(ctx, proxy, conn.attributes)
        if watched is None:
            return resources
        return [r for r in resources if r.name in watched]
