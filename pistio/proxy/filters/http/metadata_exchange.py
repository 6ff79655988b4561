"""Istio's HTTP peer metadata exchange (``istio.metadata_exchange``,
``io.istio.http.peer_metadata.Config``).

Sidecars name themselves to each other in ``x-envoy-peer-metadata`` and
``x-envoy-peer-metadata-id`` (see :mod:`pistio.proxy.telemetry.peer_metadata`):

- outbound (``upstream_*``): this proxy's two headers go on the upstream request; the server's
  come back on the response, are stripped and decoded into ``StreamInfo.upstream_peer``; without
  them (``workload_discovery``) the upstream endpoint's EDS ``istio.workload`` metadata names
  the peer. ``skip_external_clusters`` keeps the headers off ``PassthroughCluster`` and clusters
  marked ``external``; a cluster marked ``disable_mx`` never gets them.
- inbound (``downstream_*``): the client's headers are read from the request, stripped and
  decoded into ``StreamInfo.downstream_peer``; the response carries this proxy's headers back
  only when the request had them (not to clients outside the mesh).

Decoding is cached by header value, so per request this is a couple of dict lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pistio.proxy.http.headers import Fields
from pistio.proxy.telemetry.peer_metadata import (
    PEER_METADATA_HEADER,
    PEER_METADATA_ID_HEADER,
    decode_peer_metadata,
    endpoint_peer,
    local_node,
)
from pistio.proxy.telemetry.plugin_config import MetadataExchangeConfig

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream

_NAMES = frozenset({PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER})
_LENGTHS = frozenset(len(n) for n in _NAMES)
_PASSTHROUGH = "PassthroughCluster"


class MetadataExchangeFilter:
    __slots__ = ("name", "config", "own_value", "own_id", "_skip_clusters")

    route_scoped = False
    encodes = True

    def __init__(self, name: str, config: MetadataExchangeConfig) -> None:
        self.name = name
        self.config = config
        node = local_node()
        self.own_value = node.header_value
        self.own_id = node.header_id
        # cluster name -> no headers upstream (external / disable_mx), decided once.
        self._skip_clusters: dict[str, bool] = {}

    def _skips(self, s: ActiveStream) -> bool:
        route = s.route()
        action = route.action if route is not None else None
        cluster = action.cluster if action is not None else ""
        skip = self._skip_clusters.get(cluster)
        if skip is None:
            skip = self._skip_clusters[cluster] = self._cluster_skips(s, cluster)
        return skip

    def _cluster_skips(self, s: ActiveStream, cluster: str) -> bool:
        skip_external = self.config.skip_external_clusters
        if skip_external and cluster == _PASSTHROUGH:
            return True
        runtime = s.hcm.router_context.clusters.get(cluster) if cluster else None
        istio: Mapping[str, Any] = {}
        if runtime is not None:
            istio = runtime.config.metadata.get("istio") or {}
        return bool(istio.get("disable_mx")) or (skip_external and bool(istio.get("external")))

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        cfg = self.config
        head = s.stream.head
        if cfg.downstream_headers:
            index = head.index
            value = index.get(PEER_METADATA_HEADER)
            peer_id = index.get(PEER_METADATA_ID_HEADER)
            if value is not None or peer_id is not None:
                if value is not None:
                    s.info.downstream_peer = decode_peer_metadata(value, peer_id)
                # One pass over the headers for both names (the codec keeps the client's case).
                index.pop(PEER_METADATA_HEADER, None)
                index.pop(PEER_METADATA_ID_HEADER, None)
                head.fields = _take_exchange_headers(head.fields)[0]
        if cfg.propagate_upstream and not self._skips(s):
            head.set(PEER_METADATA_ID_HEADER, self.own_id)
            head.set(PEER_METADATA_HEADER, self.own_value)
        return True

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        cfg = self.config
        info = s.info
        if cfg.upstream_headers or cfg.upstream_workload:
            value = peer_id = None
            if cfg.upstream_headers:
                fields, value, peer_id = _take_exchange_headers(fields)
            peer = decode_peer_metadata(value, peer_id) if value is not None else None
            if peer is None and cfg.upstream_workload:
                router = s.router
                attempt = router.attempt if router is not None else None
                if attempt is not None:
                    peer = endpoint_peer(attempt.host.config.metadata)
            if peer is not None:
                info.upstream_peer = peer
        if cfg.propagate_downstream and info.downstream_peer is not None:
            fields = [*fields, (PEER_METADATA_ID_HEADER, self.own_id),
                      (PEER_METADATA_HEADER, self.own_value)]
        return fields


def _take_exchange_headers(fields: Fields) -> tuple[Fields, bytes | None, bytes | None]:
    """``fields`` without the two exchange headers (any case), and their values. One pass;
    the list is copied only from the first exchange header on (a sidecar appends them last)."""
    value = peer_id = None
    kept: Fields | None = None
    for i, field in enumerate(fields):
        name = field[0]
        if len(name) in _LENGTHS:
            lower = name.lower()
            if lower == PEER_METADATA_HEADER:
                value = field[1]
            elif lower == PEER_METADATA_ID_HEADER:
                peer_id = field[1]
            else:
                if kept is not None:
                    kept.append(field)
                continue
            if kept is None:
                kept = fields[:i]
        elif kept is not None:
            kept.append(field)
    return (fields if kept is None else kept), value, peer_id
