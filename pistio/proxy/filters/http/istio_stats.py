"""Istio's HTTP stats filter (``istio.stats``, ``stats.PluginConfig``).

At the end of every stream it counts ``istio_requests_total`` and records
``istio_request_duration_milliseconds``, ``istio_request_bytes`` and ``istio_response_bytes``
(body bytes) with Istio's standard labels (:mod:`pistio.proxy.telemetry.labels`): the peer
found by ``istio.metadata_exchange``, this proxy's own node metadata, the route's cluster, the
response code and flags, the gRPC status and the mTLS state.

The per-request work is building a short key — (peer object, cluster, code, flags, gRPC status,
mTLS principals[, host][, CEL dimension values]) — and one dict lookup that yields the metric
handles; labels are only formatted the first time a key is seen. The filter does nothing on
the way in or out: it is an end-of-stream hook (``on_stream_end``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from pistio.proxy.access_log.response_flags import to_short_string
from pistio.proxy.http.http2_grpc import GRPC_CONTENT_TYPE, grpc_status_for_http
from pistio.proxy.stats.istio_metrics import HTTP_METRICS
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.telemetry.labels import (
    UNKNOWN,
    SeriesFactory,
    cel_text,
    cluster_service,
    peer_labels,
)
from pistio.proxy.telemetry.peer_metadata import local_node
from pistio.proxy.telemetry.plugin_config import StatsConfig

if TYPE_CHECKING:
    from pistio.proxy.access_log.stream_info import StreamInfo
    from pistio.proxy.http.connection_manager import ActiveStream

_MAX_KEYS = 8192
def grpc_status(info: StreamInfo) -> str:
    """The grpc_response_status label: the response's grpc-status, else Envoy's
    httpToGrpcStatus of its HTTP status ("" when nothing was sent)."""
    status = info.grpc_status()
    if status is None:
        if info.response_code == 0:
            return ""
        status = grpc_status_for_http(info.response_code)
    return str(status)


class IstioStatsFilter:
    __slots__ = ("name", "config", "inbound", "factory", "_cache", "_local", "_dims",
                 "_host_fallback")

    # Nothing to do on the way in or out: the connection manager's filter plan skips the filter
    # both ways (``applies`` is False) and calls ``on_stream_end`` at the end of the stream.
    route_scoped = True
    encodes = False

    def applies(self, route: object) -> bool:
        return False

    def __init__(self, name: str, config: StatsConfig, store: StatsStore, inbound: bool) -> None:
        self.name = name
        self.config = config
        self.inbound = inbound
        self.factory = SeriesFactory(store.istio_metrics(), config, HTTP_METRICS)
        self._cache: dict[tuple, tuple] = {}
        self._local = local_node()
        self._dims = tuple({name: program for o in config.overrides.values()
                            for name, program in o.dimensions}.items())
        self._host_fallback = not config.disable_host_header_fallback

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        return True

    def encode_headers(self, s: ActiveStream, status: int, fields: Any) -> Any:
        return fields

    def on_stream_end(self, s: ActiveStream) -> None:
        info = s.info
        head = s.stream.head
        grpc = None
        content_type = head.index.get(b"content-type")
        if content_type is not None and content_type.startswith(GRPC_CONTENT_TYPE):
            grpc = grpc_status(info)
        if self.inbound:
            d = info.downstream
            tls = (d.peer_uri_san, d.local_uri_san)
            peer = info.downstream_peer
        else:
            tls = None
            peer = info.upstream_peer
        if self._host_fallback:
            key: tuple = (peer, info.upstream_cluster, info.response_code, info.response_flags,
                          grpc, tls, info.route_name, head.index.get(b"host", b""))
        else:
            key = (peer, info.upstream_cluster, info.response_code, info.response_flags, grpc,
                   tls, info.route_name)
        if self._dims:
            key += tuple(cel_text(p.evaluate(info)) for _, p in self._dims)
        handles = self._cache.get(key)
        if handles is None:
            handles = self._series(s, key)
        requests, duration, request_bytes, response_bytes = handles
        # Histograms recorded inline (bucket, sum, count: all Prometheus shows of them).
        if requests is not None:
            requests.value += 1
        if duration is not None:
            ms = ((info.last_downstream_tx_byte_sent or time.monotonic_ns())
                  - info.start_monotonic_ns) / 1e6
            duration.counts[bisect_left(duration.bounds, ms)] += 1
            duration.sum += ms
            duration.count += 1
        if request_bytes is not None:
            n = info.bytes_received
            request_bytes.counts[bisect_left(request_bytes.bounds, n)] += 1
            request_bytes.sum += n
            request_bytes.count += 1
        if response_bytes is not None:
            n = info.bytes_sent
            response_bytes.counts[bisect_left(response_bytes.bounds, n)] += 1
            response_bytes.sum += n
            response_bytes.count += 1

    def _series(self, s: ActiveStream, key: tuple) -> tuple:
        peer, cluster, code, flags, grpc, tls, route_name = key[:7]
        runtime = s.hcm.router_context.clusters.get(cluster) if cluster else None
        metadata = runtime.config.metadata if runtime is not None else None
        service_host, service_name = cluster_service(cluster, metadata, route_name)
        if self._host_fallback and not service_host:
            authority = key[7].decode("latin-1")
            service_host = authority
            if not service_name:
                service_name = authority
        local = self._local
        if self.inbound:
            peer_san, local_san = tls or (None, None)
            mtls = "mutual_tls" if peer_san and local_san else "none"
        else:
            # The upstream connection is mutual TLS when the cluster originates TLS to a
            # sidecar peer (Istio's auto mTLS); the certificates carry the two identities.
            mtls = UNKNOWN
            tls_on = runtime is not None and runtime.tls.enabled and peer is not None
            peer_san = peer.principal if tls_on else ""
            local_san = local.principal if tls_on else ""
        labels = peer_labels(inbound=self.inbound, peer=peer, local=local.peer,
                             service_host=service_host, service_name=service_name,
                             peer_principal=peer_san or "", local_principal=local_san or "")
        labels += [
            ("request_protocol", "grpc" if grpc is not None else "http"),
            ("response_code", str(code)),
            ("grpc_response_status", grpc or ""),
            ("response_flags", to_short_string(flags)),
            ("connection_security_policy", mtls),
        ]
        dims = None
        if self._dims:
            values = key[-len(self._dims):]
            dims = {name: v for (name, _), v in zip(self._dims, values, strict=True)}
        handles = self.factory.handles(labels, dims)
        if len(self._cache) >= _MAX_KEYS:
            self._cache.clear()
        self._cache[key] = handles
        return handles
