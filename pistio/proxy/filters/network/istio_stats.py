"""Istio's TCP stats (network filter ``istio.stats`` before ``tcp_proxy``).

Per connection: ``istio_tcp_connections_opened_total`` once the upstream connection is up,
``istio_tcp_sent_bytes_total`` / ``istio_tcp_received_bytes_total`` (bytes sent to / received
from the downstream) every ``tcp_reporting_duration`` (Istio's default 15 s) while the
connection lives and at its close, and ``istio_tcp_connections_closed_total`` at the close. A
connection that never reached its upstream reports opened and closed together at its close.

The peer: inbound, the client's mTLS certificate (principal and namespace); outbound, the
upstream endpoint's EDS ``istio.workload`` metadata. Labels are fixed when the connection is
first reported, as Istio does. One timer per filter flushes all of its live connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pistio.proxy.access_log.response_flags import to_short_string
from pistio.proxy.access_log.stream_info import StreamInfo
from pistio.proxy.stats.istio_metrics import TCP_METRICS
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.telemetry.labels import UNKNOWN, SeriesFactory, cluster_service, peer_labels
from pistio.proxy.telemetry.peer_metadata import endpoint_peer, local_node
from pistio.proxy.telemetry.plugin_config import StatsConfig

_MAX_KEYS = 4096


class _Conn:
    __slots__ = ("handles", "sent", "received")

    def __init__(self, handles: tuple) -> None:
        self.handles = handles
        self.sent = 0
        self.received = 0


class IstioTcpStatsFilter:
    """One chain's TCP stats; the TCP proxy calls :meth:`on_connected` and
    :meth:`on_complete`."""

    __slots__ = ("config", "inbound", "factory", "cluster_config", "tls_for", "live",
                 "_cache", "_timer", "_local")

    def __init__(self, config: StatsConfig, store: StatsStore, inbound: bool, *,
                 cluster_config: Callable[[str], Any] | None = None,
                 tls_for: Callable[[str, Any], Any] | None = None) -> None:
        self.config = config
        self.inbound = inbound
        self.factory = SeriesFactory(store.istio_metrics(), config, TCP_METRICS)
        self.cluster_config = cluster_config
        self.tls_for = tls_for
        self.live: dict[int, tuple[StreamInfo, _Conn]] = {}
        self._cache: dict[tuple, tuple] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._local = local_node()

    def on_connected(self, info: StreamInfo, host: Any) -> None:
        conn = _Conn(self._handles(info, host))
        opened = conn.handles[2]
        if opened is not None:
            opened.value += 1
        self.live[id(info)] = (info, conn)
        if self._timer is None:
            self._arm()

    def on_complete(self, info: StreamInfo) -> None:
        entry = self.live.pop(id(info), None)
        if entry is None:
            conn = _Conn(self._handles(info, None))
            opened = conn.handles[2]
            if opened is not None:
                opened.value += 1
        else:
            conn = entry[1]
        self._flush(info, conn)
        closed = conn.handles[3]
        if closed is not None:
            closed.value += 1

    def _flush(self, info: StreamInfo, conn: _Conn) -> None:
        sent_h, received_h = conn.handles[0], conn.handles[1]
        sent, received = info.bytes_sent, info.bytes_received
        if sent_h is not None:
            sent_h.value += sent - conn.sent
        if received_h is not None:
            received_h.value += received - conn.received
        conn.sent, conn.received = sent, received

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.config.tcp_reporting_duration, self._tick)

    def _tick(self) -> None:
        self._timer = None
        for info, conn in self.live.values():
            self._flush(info, conn)
        if self.live:
            self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handles(self, info: StreamInfo, host: Any) -> tuple:
        cluster = info.upstream_cluster
        d = info.downstream
        if self.inbound:
            peer = None
            tls: Any = (d.peer_uri_san, d.local_uri_san)
        else:
            config = getattr(host, "config", None)
            peer = endpoint_peer(config.metadata) if config is not None else None
            tls = (self.tls_for is not None and cluster is not None and host is not None
                   and self.tls_for(cluster, host) is not None)
        key = (peer, cluster, tls, info.response_flags)
        handles = self._cache.get(key)
        if handles is not None:
            return handles
        cfg = self.cluster_config(cluster) if self.cluster_config and cluster else None
        service_host, service_name = cluster_service(
            cluster, cfg.metadata if cfg is not None else None, None)
        local = self._local
        if self.inbound:
            peer_san, local_san = tls
            mtls = "mutual_tls" if peer_san and local_san else "none"
        else:
            mtls = UNKNOWN
            peer_san = ""
            local_san = local.principal if tls else ""
        labels = peer_labels(inbound=self.inbound, peer=peer, local=local.peer,
                             service_host=service_host, service_name=service_name,
                             peer_principal=peer_san or "", local_principal=local_san or "")
        labels += [
            ("request_protocol", "tcp"),
            ("response_flags", to_short_string(info.response_flags)),
            ("connection_security_policy", mtls),
        ]
        handles = self.factory.handles(labels)
        if len(self._cache) >= _MAX_KEYS:
            self._cache.clear()
        self._cache[key] = handles
        return handles
