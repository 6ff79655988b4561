"""Distributed tracing in the proxy: Envoy's HTTP connection manager ``tracing`` with the
Zipkin and OpenTelemetry tracers (context propagation, sampling, spans, exporters)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pistio.proxy.tracing.config import TracingConfig
from pistio.proxy.tracing.node import local_node
from pistio.proxy.tracing.tracer import HttpTracer

if TYPE_CHECKING:
    from pistio.proxy.runtime.cluster_manager import ClusterManager
    from pistio.proxy.stats.store import StatsStore


def build_tracer(config: TracingConfig | None, traffic_direction: int,
                 loop: asyncio.AbstractEventLoop, clusters: ClusterManager,
                 store: StatsStore) -> HttpTracer | None:
    """The connection manager's tracer; ``None`` (no per-request work at all) without
    ``tracing`` or without a provider."""
    if config is None or config.provider is None:
        return None
    from pistio.proxy.tracing.exporter import exporter_for

    node = local_node()
    return HttpTracer(config, traffic_direction,
                      exporter_for(config.provider, loop, clusters, store, node), node)


__all__ = ["HttpTracer", "TracingConfig", "build_tracer"]
