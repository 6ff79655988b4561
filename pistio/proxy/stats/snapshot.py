"""A stats snapshot: one worker's values at a moment, and the merge of several workers'.

Workers count into their own store without locks or messages. When ``/stats`` or
``/stats/prometheus`` is scraped, the admin process asks every worker for a snapshot and merges
them: counters add up, gauges add up or take the maximum as each gauge declares, histograms add
bucket by bucket. Only scrapes pay for merging.

:func:`merge_dumps` is the admin side of the process boundary: a worker's
:meth:`~pistio.proxy.stats.store.StatsStore.dump` sends each family as its kind, key and value
arrays in declaration order (no stat names), the dumps are summed array by array, and names are
expanded once for the merged result. The transport carrying the dumps is not this module's
concern.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from pistio.proxy.stats.families import FAMILIES, MAX
from pistio.proxy.stats.histogram import DEFAULT_BUCKETS, HistogramData
from pistio.proxy.stats.istio_metrics import SeriesKey, merge_labeled, merge_labeled_dumps

# One host in a worker's ``hosts`` dump: [address, port, hostname, health flags, weight,
# priority, region, zone, sub_zone, rq_active, cx_active].
HOST_ADDRESS, HOST_PORT, HOST_FLAGS, HOST_RQ_ACTIVE, HOST_CX_ACTIVE = 0, 1, 3, 9, 10


def merge_hosts(into: dict[str, dict[tuple[str, int], list]],
                hosts: dict[str, list[list]]) -> None:
    """Fold one worker's hosts into ``into``: health flags set in any worker are kept (each
    worker checks on its own), active counts add up, the rest is the first worker's."""
    for cluster, entries in hosts.items():
        known = into.setdefault(cluster, {})
        for entry in entries:
            key = (entry[HOST_ADDRESS], entry[HOST_PORT])
            mine = known.get(key)
            if mine is None:
                known[key] = list(entry)
                continue
            mine[HOST_FLAGS] = [*mine[HOST_FLAGS],
                                *(f for f in entry[HOST_FLAGS] if f not in mine[HOST_FLAGS])]
            mine[HOST_RQ_ACTIVE] += entry[HOST_RQ_ACTIVE]
            mine[HOST_CX_ACTIVE] += entry[HOST_CX_ACTIVE]


@dataclass
class StatsSnapshot:
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, int] = field(default_factory=dict)
    # Gauges merged by maximum rather than sum (values every worker computes identically).
    max_gauges: set[str] = field(default_factory=set)
    histograms: dict[str, HistogramData] = field(default_factory=dict)
    # The workers' hosts by cluster and (address, port), for ``/clusters``.
    hosts: dict[str, dict[tuple[str, int], list]] = field(default_factory=dict)
    # Istio's labeled series (pistio.proxy.stats.istio_metrics): int or HistogramData.
    labeled: dict[SeriesKey, object] = field(default_factory=dict)

    def merge(self, other: StatsSnapshot) -> None:
        """Fold another worker's snapshot into this one."""
        if other.labeled:
            merge_labeled(self.labeled, other.labeled)
        if other.hosts:
            merge_hosts(self.hosts, {c: list(h.values()) for c, h in other.hosts.items()})
        counters = self.counters
        for name, value in other.counters.items():
            counters[name] = counters.get(name, 0) + value
        self.max_gauges |= other.max_gauges
        gauges = self.gauges
        max_gauges = self.max_gauges
        for name, value in other.gauges.items():
            prev = gauges.get(name)
            if prev is None:
                gauges[name] = value
            elif name in max_gauges:
                gauges[name] = max(prev, value)
            else:
                gauges[name] = prev + value
        histograms = self.histograms
        for name, data in other.histograms.items():
            mine = histograms.get(name)
            if mine is None:
                histograms[name] = HistogramData(
                    data.bounds, list(data.counts), data.sum, data.count, data.min, data.max
                )
            else:
                mine.merge(data)


def merge_snapshots(snapshots: Iterable[StatsSnapshot]) -> StatsSnapshot:
    """The sum of several workers' snapshots (a new object; the inputs are not changed)."""
    merged = StatsSnapshot()
    for snap in snapshots:
        merged.merge(snap)
    return merged


def _merge_histogram(mine: list | int, other: list | int) -> list | int:
    if not other:
        return mine
    if not mine:
        return other
    counts = [a + b for a, b in zip(mine[0], other[0], strict=True)]
    return [
        counts,
        mine[1] + other[1],
        mine[2] + other[2],
        min(mine[3], other[3]),
        max(mine[4], other[4]),
    ]


def merge_dumps(dumps: Iterable[bytes]) -> StatsSnapshot:
    """Merge the dumps of several workers' stores into one snapshot."""
    groups: dict[tuple[str, str], list] = {}
    merged = StatsSnapshot()
    for raw in dumps:
        doc = json.loads(raw)
        if "hosts" in doc:
            merge_hosts(merged.hosts, doc["hosts"])
        if "istio" in doc:
            merge_labeled_dumps(merged.labeled, doc["istio"])
        for kind, key, counters, gauges, histograms, extra in doc["groups"]:
            acc = groups.get((kind, key))
            if acc is None:
                groups[(kind, key)] = [counters, gauges, histograms, dict(extra or {})]
                continue
            acc[0] = [a + b for a, b in zip(acc[0], counters, strict=True)]
            modes = FAMILIES[kind].GAUGES
            acc[1] = [
                max(a, b) if modes[i][2] == MAX else a + b
                for i, (a, b) in enumerate(zip(acc[1], gauges, strict=True))
            ]
            acc[2] = [_merge_histogram(a, b) for a, b in zip(acc[2], histograms, strict=True)]
            for name, n in (extra or {}).items():
                acc[3][name] = acc[3].get(name, 0) + n
        loose = StatsSnapshot(
            doc["counters"],
            {name: v for name, (v, _) in doc["gauges"].items()},
            {name for name, (_, mode) in doc["gauges"].items() if mode == MAX},
            {
                name: HistogramData(
                    tuple(bounds) if bounds else DEFAULT_BUCKETS,
                    h[0] if h else [0] * ((len(bounds) if bounds else len(DEFAULT_BUCKETS)) + 1),
                    h[1] if h else 0.0,
                    h[2] if h else 0,
                    h[3] if h else float("inf"),
                    h[4] if h else float("-inf"),
                )
                for name, (bounds, h) in doc["histograms"].items()
            },
        )
        merged.merge(loose)
    counters, gauges, max_gauges, hists = (
        merged.counters,
        merged.gauges,
        merged.max_gauges,
        merged.histograms,
    )
    empty_counts = [0] * (len(DEFAULT_BUCKETS) + 1)
    for (kind, key), (c_values, g_values, h_values, extra) in groups.items():
        family = FAMILIES[kind]
        prefix = family.prefix_for(key)
        for (_, suffix), value in zip(family.COUNTERS, c_values, strict=True):
            counters[prefix + suffix] = value
        for name, value in extra.items():
            counters[prefix + name] = value
        for (_, suffix, mode), value in zip(family.GAUGES, g_values, strict=True):
            gauges[prefix + suffix] = value
            if mode == MAX:
                max_gauges.add(prefix + suffix)
        for (_, suffix), h in zip(family.HISTOGRAMS, h_values, strict=True):
            hists[prefix + suffix] = (
                HistogramData(DEFAULT_BUCKETS, h[0], h[1], h[2], h[3], h[4])
                if h
                else HistogramData(
                    DEFAULT_BUCKETS, list(empty_counts), 0.0, 0, float("inf"), float("-inf")
                )
            )
    return merged
