"""Istio's standard labels for one request or connection, and the series they select.

The label values follow Istio's stats filter:

- ``reporter``: ``destination`` on an inbound listener, else ``source``.
- The local side (``destination_*`` inbound, ``source_*`` outbound) comes from this proxy's node
  metadata as is; the peer side from the exchanged peer metadata (or the upstream endpoint's EDS
  metadata), ``unknown`` when absent (``latest`` for a canonical revision).
- Principals are SPIFFE ids of the mTLS certificates (``unknown`` without mTLS); the peer's
  namespace is the principal's ``/ns/`` when there is one, else the peer metadata's.
- ``destination_service``/``_name``: the host header when the host fallback is on, replaced by
  the cluster's ``istio.services[0]`` ``host``/``name`` metadata; ``BlackHoleCluster`` /
  ``PassthroughCluster`` (by route ``block_all``/``allow_any`` or by cluster); inbound falls back
  to the local canonical service, outbound to ``unknown``.
- ``connection_security_policy``: ``mutual_tls`` or ``none`` on the destination side;
  ``unknown`` on the source side (Istio does not report it there).

:class:`SeriesFactory` turns a label list into the handles of each enabled metric, applying the
Telemetry overrides (dropped metrics, removed labels, CEL dimensions) — once per distinct key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pistio.proxy.stats.histogram import Histogram
from pistio.proxy.stats.istio_metrics import HISTOGRAM_METRICS, PREFIX, Count, IstioMetrics
from pistio.proxy.telemetry.peer_metadata import PeerInfo, namespace_of_principal
from pistio.proxy.telemetry.plugin_config import StatsConfig

UNKNOWN = "unknown"
LATEST = "latest"
SPECIAL_CLUSTERS = frozenset({"BlackHoleCluster", "PassthroughCluster",
                              "InboundPassthroughCluster", "InboundPassthroughClusterIpv4",
                              "InboundPassthroughClusterIpv6"})


def cluster_service(cluster: str | None, cluster_metadata: Mapping[str, Any] | None,
                    route_name: str | None) -> tuple[str, str]:
    """(service host, service name) the route and cluster say ("" when they say nothing)."""
    if route_name == "block_all":
        return "", "BlackHoleCluster"
    if route_name == "allow_any":
        return "", "PassthroughCluster"
    if cluster in SPECIAL_CLUSTERS:
        return "", cluster  # type: ignore[return-value]
    istio = (cluster_metadata or {}).get("istio") or {}
    services = istio.get("services") or []
    if services and isinstance(services[0], Mapping):
        host = str(services[0].get("host", ""))
        name = services[0].get("name")
        return host, str(name) if name else host.split(".", 1)[0]
    return "", ""


def peer_labels(*, inbound: bool, peer: PeerInfo | None, local: PeerInfo, service_host: str,
                service_name: str, peer_principal: str, local_principal: str
                ) -> list[tuple[str, str]]:
    """``reporter`` through ``destination_cluster``, in Istio's order."""
    p = peer if peer is not None else PeerInfo()
    peer_ns = (namespace_of_principal(peer_principal) if peer_principal else "") or p.namespace
    if inbound:
        return [
            ("reporter", "destination"),
            ("source_workload", p.workload or UNKNOWN),
            ("source_canonical_service", p.canonical_service or UNKNOWN),
            ("source_canonical_revision", p.canonical_revision or LATEST),
            ("source_workload_namespace", peer_ns or UNKNOWN),
            ("source_principal", peer_principal or UNKNOWN),
            ("source_app", p.app or UNKNOWN),
            ("source_version", p.version or UNKNOWN),
            ("source_cluster", p.cluster or UNKNOWN),
            ("destination_workload", local.workload),
            ("destination_workload_namespace", local.namespace),
            ("destination_principal", local_principal or UNKNOWN),
            ("destination_app", local.app),
            ("destination_version", local.version),
            ("destination_service", service_host or local.canonical_service),
            ("destination_canonical_service", local.canonical_service),
            ("destination_canonical_revision", local.canonical_revision),
            ("destination_service_name", service_name or local.canonical_service),
            ("destination_service_namespace", local.namespace),
            ("destination_cluster", local.cluster),
        ]
    return [
        ("reporter", "source"),
        ("source_workload", local.workload),
        ("source_canonical_service", local.canonical_service),
        ("source_canonical_revision", local.canonical_revision),
        ("source_workload_namespace", local.namespace),
        ("source_principal", local_principal or UNKNOWN),
        ("source_app", local.app),
        ("source_version", local.version),
        ("source_cluster", local.cluster),
        ("destination_workload", p.workload or UNKNOWN),
        ("destination_workload_namespace", peer_ns or UNKNOWN),
        ("destination_principal", peer_principal or UNKNOWN),
        ("destination_app", p.app or UNKNOWN),
        ("destination_version", p.version or UNKNOWN),
        ("destination_service", service_host or UNKNOWN),
        ("destination_canonical_service", p.canonical_service or UNKNOWN),
        ("destination_canonical_revision", p.canonical_revision or LATEST),
        ("destination_service_name", service_name or UNKNOWN),
        ("destination_service_namespace", peer_ns or UNKNOWN),
        ("destination_cluster", p.cluster or UNKNOWN),
    ]


def cel_text(value: Any) -> str:
    """A CEL result as a label value (Istio prints it; a failed evaluation is ``unknown``)."""
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


Handle = Count | Histogram | None


class SeriesFactory:
    """The handles of ``metrics`` (short names) for a label list, overrides applied."""

    __slots__ = ("store", "plans")

    def __init__(self, store: IstioMetrics, config: StatsConfig, metrics: Sequence[str]) -> None:
        self.store = store
        self.plans = tuple((PREFIX + m, config.overrides.get(m), m in HISTOGRAM_METRICS)
                           for m in metrics)

    def handles(self, labels: list[tuple[str, str]], dims: Mapping[str, str] | None = None
                ) -> tuple[Handle, ...]:
        out: list[Handle] = []
        for full, override, histogram in self.plans:
            if override is not None and override.drop:
                out.append(None)
                continue
            final = labels
            if override is not None:
                final = [(k, v) for k, v in labels if k not in override.removed]
                for name, _ in override.dimensions:
                    value = (dims or {}).get(name, UNKNOWN)
                    for i, (k, _v) in enumerate(final):
                        if k == name:
                            final[i] = (k, value)
                            break
                    else:
                        final.append((name, value))
            key = tuple(final)
            out.append(self.store.histogram(full, key) if histogram
                       else self.store.counter(full, key))
        return tuple(out)
