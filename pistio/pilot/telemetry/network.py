"""Telemetry of TCP filter chains: Istio's network ``istio.stats`` filter before the
``tcp_proxy``, and the ``tcp_proxy``'s access logs (``buildMetricsNetworkFilters``,
``setTCPAccessLog``)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.listener_filters import tcp_proxy_filter
from pistio.pilot.telemetry.access_logs import access_logs
from pistio.pilot.telemetry.metrics import tcp_stats_filters


def tcp_proxy_stack(
    ctx: PushContext,
    proxy: Proxy,
    inbound: bool,
    stat_prefix: str,
    cluster: str = "",
    weighted: list[tuple[str, int]] | None = None,
) -> list[lc.Filter]:
    """The stats filters, then the ``tcp_proxy`` (with its access logs) to ``cluster`` or to
    ``weighted`` clusters."""
    return [
        *tcp_stats_filters(ctx, proxy, inbound),
        tcp_proxy_filter(stat_prefix, cluster, weighted, access_logs(ctx, proxy, inbound)),
    ]
