"""The EDS generator: a ClusterLoadAssignment for each cluster the proxy watches.

Istio's ``EdsGenerator``. Endpoints are never a wildcard subscription: Envoy asks for the
EDS clusters it received over CDS, by name. Assignments are relative to the proxy (locality
priorities and weights), so they are built per connection.
"""

from __future__ import annotations

from pistio.pilot.generators.cds import connection_proxy, push_context
from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource


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
        return [
            Resource(name, build_cluster_load_assignment(ctx, proxy, name))
            for name in sorted(watched)
        ]
