"""A worker's stats store: the families' handles plus free-standing counters and gauges.

One store per worker process (and one in the admin process for ``server.*``,
``cluster_manager.*`` and ``listener_manager.*``). Handles are obtained when config is compiled
and kept by whoever counts; asking again for the same name returns the same handle, so values
survive config updates. :meth:`StatsStore.snapshot` copies every value out for a scrape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from pistio.proxy.stats.families import (
    MAX,
    SUM,
    ClusterManagerStats,
    ClusterStats,
    CodecStats,
    HealthCheckStats,
    HttpConnectionManagerStats,
    ListenerManagerStats,
    ListenerStats,
    ServerStats,
    StatsGroup,
)
from pistio.proxy.stats.histogram import DEFAULT_BUCKETS, Histogram, HistogramData
from pistio.proxy.stats.istio_metrics import IstioMetrics, merge_labeled_dumps
from pistio.proxy.stats.snapshot import StatsSnapshot

G = TypeVar("G", bound=StatsGroup)


class Counter:
    """A free-standing counter: ``counter.value += 1``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Gauge:
    __slots__ = ("value", "merge")

    def __init__(self, merge: str = SUM) -> None:
        self.value = 0
        self.merge = merge


class StatsStore:
    """All stats of one worker."""

    def __init__(self) -> None:
        self._groups: dict[str, StatsGroup] = {}
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        # The worker's hosts as ``/clusters`` shows them (set by the worker to its cluster
        # manager's ``host_status_dump``), sent along with the stats.
        self.host_status: Callable[[], dict[str, list[list[Any]]]] | None = None
        # Istio's labeled metrics (istio_requests_total...), made by the first istio.stats.
        self.istio: IstioMetrics | None = None

    def _group(self, key: str, cls: type[G], *args: str) -> G:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = cls(*args)
        return group  # type: ignore[return-value]

    def dump(self) -> bytes:
        """This worker's values in the compact form :func:`~pistio.proxy.stats.snapshot.
        merge_dumps` reads: families as value arrays without names, loose stats by name."""
        hist = {}
        for name, h in self._histograms.items():
            bounds = None if h.bounds == DEFAULT_BUCKETS else list(h.bounds)
            hist[name] = [bounds, [h.counts, h.sum, h.count, h.min, h.max] if h.count else 0]
        doc = {
            "groups": [g.dump() for g in self._groups.values()],
            "counters": {name: c.value for name, c in self._counters.items()},
            "gauges": {name: [g.value, g.merge] for name, g in self._gauges.items()},
            "histograms": hist,
        }
        if self.host_status is not None:
            doc["hosts"] = self.host_status()
        if self.istio is not None:
            doc["istio"] = self.istio.dump()
        return json.dumps(doc, separators=(",", ":")).encode()

    def cluster(self, name: str) -> ClusterStats:
        return self._group("cluster." + name, ClusterStats, name)

    def health_check(self, cluster_name: str) -> HealthCheckStats:
        return self._group("health_check." + cluster_name, HealthCheckStats, cluster_name)

    def http_connection_manager(self, stat_prefix: str) -> HttpConnectionManagerStats:
        return self._group("http." + stat_prefix, HttpConnectionManagerStats, stat_prefix)

    def listener(self, stat_name: str) -> ListenerStats:
        """``stat_name``: the listener's ``stat_prefix``, else its address as
        :func:`~pistio.proxy.stats.families.listener_stat_name` spells it."""
        return self._group("listener." + stat_name, ListenerStats, stat_name)

    def server(self) -> ServerStats:
        return self._group("server", ServerStats)

    def cluster_manager(self) -> ClusterManagerStats:
        return self._group("cluster_manager", ClusterManagerStats)

    def codec(self, protocol: str) -> CodecStats:
        """``http1`` or ``http2``."""
        return self._group(protocol, CodecStats, protocol)

    def listener_manager(self) -> ListenerManagerStats:
        return self._group("listener_manager", ListenerManagerStats)

    def istio_metrics(self) -> IstioMetrics:
        if self.istio is None:
            self.istio = IstioMetrics()
        return self.istio

    def counter(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counter()
        return c

    def gauge(self, name: str, merge: str = SUM) -> Gauge:
        if merge not in (SUM, MAX):
            raise ValueError(f"gauge merge must be {SUM!r} or {MAX!r}")
        g = self._gauges.get(name)
        if g is None:
            g = self._gauges[name] = Gauge(merge)
        return g

    def histogram(self, name: str, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> Histogram:
        h = self._histograms.get(name)
        if h is None:
            h = self._histograms[name] = Histogram(bounds)
        return h

    def remove_cluster(self, name: str) -> None:
        """Forget a removed cluster's stats (Envoy drops them with the cluster)."""
        self._groups.pop("cluster." + name, None)
        self._groups.pop("health_check." + name, None)

    def snapshot(self) -> StatsSnapshot:
        counters: dict[str, int] = {}
        gauges: dict[str, int] = {}
        max_gauges: set[str] = set()
        histograms: dict[str, HistogramData] = {}
        for group in self._groups.values():
            counters.update(group.counter_values())
            for name, value, merge in group.gauge_values():
                gauges[name] = value
                if merge == MAX:
                    max_gauges.add(name)
            for name, h in group.histogram_values():
                histograms[name] = HistogramData.of(h)
        for name, c in self._counters.items():
            counters[name] = c.value
        for name, g in self._gauges.items():
            gauges[name] = g.value
            if g.merge == MAX:
                max_gauges.add(name)
        for name, h in self._histograms.items():
            histograms[name] = HistogramData.of(h)
        snap = StatsSnapshot(counters, gauges, max_gauges, histograms)
        if self.istio is not None:
            merge_labeled_dumps(snap.labeled, self.istio.dump())
        return snap
