"""All listeners of a sidecar, in Istio's order (``ListenerBuilder.getListeners``): the
outbound listeners, ``virtualOutbound`` (15001), then ``virtualInbound`` (15006).

``virtualOutbound`` receives every outbound connection iptables captures. It binds, and
with ``use_original_dst`` hands each connection to the (non-binding) listener for its
original destination; connections no listener matches take its own chains: a blackhole
chain for traffic addressed to 15001 itself (a loop), else the catch-all chain to
PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.listener_filters import socket_address, tcp_proxy_filter
from pistio.pilot.networking.listener_inbound import build_virtual_inbound_listener
from pistio.pilot.networking.listener_outbound import (
    build_sidecar_outbound_listeners,
    passthrough_filters,
)
from pistio.pilot.networking.route_clusters import BLACKHOLE_CLUSTER
from pistio.pilot.telemetry.access_logs import listener_access_logs

VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_OUTBOUND_BLACKHOLE = "virtualOutbound-blackhole"
VIRTUAL_OUTBOUND_CATCHALL_TCP = "virtualOutbound-catchall-tcp"
DEFAULT_OUTBOUND_PORT = 15001


def build_sidecar_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """Every listener a sidecar gets (none when the mesh disables capture: port 0)."""
    if push.mesh.proxy_listen_port == 0:
        return []
    out = build_sidecar_outbound_listeners(push, proxy)
    out.append(build_virtual_outbound_listener(push, proxy))
    out.append(build_virtual_inbound_listener(push, proxy))
    return out


def build_virtual_outbound_listener(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    port = push.mesh.proxy_listen_port or DEFAULT_OUTBOUND_PORT
    blackhole = lc.FilterChain(
        name=VIRTUAL_OUTBOUND_BLACKHOLE,
        filters=[tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
    )
    blackhole.filter_chain_match.destination_port.value = port
    catch_all = lc.FilterChain(
        name=VIRTUAL_OUTBOUND_CATCHALL_TCP, filters=passthrough_filters(push, proxy)
    )
    out = listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=socket_address("0.0.0.0", port),
        filter_chains=[blackhole, catch_all],
        traffic_direction=base_pb2.OUTBOUND,
    )
    out.use_original_dst.value = True
    out.access_log.extend(listener_access_logs(push, proxy, False))
    return out
