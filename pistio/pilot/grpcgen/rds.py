"""Route configurations for proxyless gRPC clients (Istio's ``grpcgen/rds.go``).

A gRPC client's API listener names its route config after the service's default cluster,
``outbound|<port>||<fqdn>``. The virtual hosts are the sidecar ones for that port, built for
a gRPC proxy: domains carry ``:<port>`` (gRPC matches the authority as dialled), timeouts
are set as ``max_stream_duration`` (gRPC ignores ``max_grpc_timeout``), and there is no
catch-all virtual host. gRPC honours weighted clusters, header matches, fault injection,
retries and timeouts; it ignores the rest.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.route_builder import build_sidecar_outbound_virtual_hosts
from pistio.pilot.networking.route_clusters import parse_subset_key


def build_grpc_route_config(
    push: PushContext, proxy: Proxy, name: str
) -> route_pb2.RouteConfiguration | None:
    """The route config ``name``; None when the name is not a cluster-style route name."""
    key = parse_subset_key(name)
    if key is None or not key[3] or key[1] == 0:
        return None
    vhosts = build_sidecar_outbound_virtual_hosts(push, proxy, key[1])
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=vhosts)
