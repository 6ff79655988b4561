"""The EDS generator: a ClusterLoadAssignment for each cluster the proxy watches.

Istio's ``EdsGenerator``. Endpoints are never a wildcard subscription: Envoy asks for the
EDS clusters it received over CDS, by name. An assignment depends on the cluster name, the
service the proxy sees under that name, the DestinationRule that applies (subset labels,
locality settings) and, for locality load balancing, the proxy's locality (and labels, for
``failoverPriority``). Assignments are memoized by exactly that, so proxies share them; each
proxy scope also remembers its name → assignment answers.
"""

from __future__ import annotations

from collections.abc import Hashable

from pistio.pilot import xds_cache
from pistio.pilot.generators.connection import connection_proxy, push_context
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment, visible_service
from pistio.pilot.networking.route_clusters import parse_subset_key
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


def assignment_key(ctx: PushContext, proxy: Proxy, scope: tuple, name: str) -> Hashable:
    """What ``build_cluster_load_assignment(ctx, proxy, name)`` depends on."""
    parsed = parse_subset_key(name)
    if parsed is None or parsed[0] != "outbound":
        return (name,)
    host = parsed[3]
    svc = visible_service(ctx, proxy, host)
    if svc is None:
        return (name, None)
    dr = ctx.destination_rule(proxy, host)
    dr_key = (dr.namespace, dr.name, tuple(sorted(dr.selector.items()))) if dr else None
    return (
        name,
        (svc.hostname, svc.namespace),
        dr_key,
        scope[xds_cache.SCOPE_LOCALITY],
        scope[xds_cache.SCOPE_LABELS],
    )


def assignment_resources(
    ctx: PushContext, proxy: Proxy, names: list[str], attributes: dict | None = None
) -> list[Resource]:
    scope = xds_cache.connection_scope(ctx, proxy, attributes if attributes is not None else {})
    scope = xds_cache.cluster_scope(scope)
    cache = xds_cache.cache_of(ctx)
    by_name: dict[str, Resource] = cache.get_or_build(xds_cache.EDS, ("scope", scope), dict)
    shared = cache.table(xds_cache.EDS)
    out = []
    for name in names:
        res = by_name.get(name)
        if res is None:
            key = ("cla", assignment_key(ctx, proxy, scope, name))
            res = shared.get(key)
            if res is None:
                res = shared[key] = Resource(name, build_cluster_load_assignment(ctx, proxy, name))
            by_name[name] = res
        out.append(res)
    return out


class EndpointGenerator:
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        ctx = push_context(push)
        if ctx is None:
            return None
        if not watched:
            return []
        proxy = connection_proxy(conn)
        return assignment_resources(ctx, proxy, sorted(watched), conn.attributes)
