"""The CDS generator: clusters for one connected proxy, from the push context of a push.

Istio's ``CdsGenerator``. The transport hands over the connection and the push request;
the push context travels in ``push.context``. The proxy record is parsed from the xDS node
once per connection and kept in ``conn.attributes``.
"""

from __future__ import annotations

from pistio.pilot.model.proxy import Proxy, parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource

PROXY_ATTRIBUTE = "proxy"


def connection_proxy(conn: ConnectionInfo) -> Proxy:
    """The connection's Proxy, parsed once; the node's locality (not part of the node id)
    is copied into metadata ``LOCALITY`` as ``region/zone/subzone``."""
    cached = conn.attributes.get(PROXY_ATTRIBUTE)
    if isinstance(cached, Proxy):
        return cached
    proxy = parse_node_id(conn.node_id, conn.metadata)
    node = conn.node
    if node is not None and node.HasField("locality") and "LOCALITY" not in proxy.metadata:
        loc = node.locality
        parts = [p for p in (loc.region, loc.zone, loc.sub_zone) if p]
        if parts:
            proxy.metadata["LOCALITY"] = "/".join(parts)
    conn.attributes[PROXY_ATTRIBUTE] = proxy
    return proxy


def push_context(push: PushRequest) -> PushContext | None:
    ctx = push.context
    return ctx if isinstance(ctx, PushContext) else None


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
        clusters = build_clusters(ctx, proxy)
        return [Resource(c.name, c) for c in clusters if watched is None or c.name in watched]
