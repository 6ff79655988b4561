"""Envoy's Zipkin tracer's reporter: Zipkin v2 JSON (``collector_endpoint_version: HTTP_JSON``)
POSTed to ``collector_endpoint`` on a host of ``collector_cluster``, with ``Host:
collector_hostname`` (the cluster name when unset).

A span in the v2 model: ``traceId``, ``id``, ``parentId`` (absent for a root), ``name``,
``kind`` (``CLIENT``/``SERVER``), ``timestamp`` and ``duration`` in microseconds,
``localEndpoint`` (``serviceName``: the proxy's service cluster, Istio's
``<canonical service>.<namespace>``; ``ipv4``/``ipv6``; ``port``), ``remoteEndpoint`` when
the peer is known, ``tags`` (strings), and ``shared: true`` for a SERVER span that shares the
caller's span id.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from pistio.proxy.tracing.exporter import HttpCollectorClient, SpanExporter
from pistio.proxy.tracing.span import Span

if TYPE_CHECKING:
    from pistio.proxy.runtime.cluster_manager import ClusterManager
    from pistio.proxy.stats.store import StatsStore
    from pistio.proxy.tracing.config import ZipkinProvider
    from pistio.proxy.tracing.node import LocalNode

CONTENT_TYPE = "application/json"


def _endpoint(service: str | None, ip: str, port: int) -> dict[str, Any]:
    ep: dict[str, Any] = {}
    if service is not None:
        ep["serviceName"] = service
    if ip:
        ep["ipv6" if ":" in ip else "ipv4"] = ip
    if port:
        ep["port"] = port
    return ep


def span_json(span: Span, service_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "id": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "timestamp": span.start_us,
        "duration": span.duration_us,
        "localEndpoint": _endpoint(service_name, span.local_ip, span.local_port),
        "tags": span.tags,
    }
    if span.parent_id is not None:
        out["parentId"] = span.parent_id
    if span.remote_ip:
        out["remoteEndpoint"] = _endpoint(None, span.remote_ip, span.remote_port)
    if span.shared:
        out["shared"] = True
    return out


def encode_spans(spans: list[Span], service_name: str) -> bytes:
    return json.dumps([span_json(s, service_name) for s in spans],
                      separators=(",", ":")).encode()


class ZipkinExporter(SpanExporter):
    stat_prefix = "tracing.zipkin"

    def __init__(self, provider: ZipkinProvider, loop: asyncio.AbstractEventLoop,
                 clusters: ClusterManager, store: StatsStore, node: LocalNode) -> None:
        super().__init__(loop, clusters, store, provider.collector_cluster)
        self.provider = provider
        self.service_name = node.cluster or "unknown"
        self.client = HttpCollectorClient()

    async def send(self, address: str, port: int, batch: list[Span]) -> bool:
        p = self.provider
        status, _ = await self.client.post(address, port, p.collector_endpoint,
                                           p.collector_hostname, CONTENT_TYPE,
                                           encode_spans(batch, self.service_name))
        return 200 <= status < 300

    def close(self) -> None:
        super().close()
        self.client.close()
