"""``/stats/prometheus``: the Prometheus text exposition Envoy serves.

Metrics are grouped by tag-extracted name (see :mod:`tag_extraction`): counters, then gauges,
then histograms; each group opens with ``# TYPE <name> <counter|gauge|histogram>`` and ends
with an empty line. A sample with no labels still prints ``{}`` (``envoy_server_live{} 1``), as
Envoy does. Histograms print cumulative ``_bucket{le="..."}`` lines for Envoy's bucket bounds,
``le="+Inf"``, ``_sum`` and ``_count``; bounds and sums use ``%.32g`` like Envoy. Istio's
labeled families (``istio_requests_total``...) follow Envoy's counters and histograms.
"""

from __future__ import annotations

from collections.abc import Iterable

from pistio.proxy.stats.histogram import HistogramData
from pistio.proxy.stats.istio_metrics import render_labeled
from pistio.proxy.stats.query import StatsQuery
from pistio.proxy.stats.snapshot import StatsSnapshot
from pistio.proxy.stats.tag_extraction import extract_tags, prometheus_label, prometheus_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(tags: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{prometheus_label(k)}="{_escape(v)}"' for k, v in tags)


def _token_key(name: str) -> tuple[str, ...]:
    # Envoy orders stat names token by token (its symbol table compares dotted segments).
    return tuple(name.split("."))


def _grouped(names: Iterable[str]) -> list[tuple[str, list[tuple[str, tuple]]]]:
    groups: dict[str, list[tuple[str, tuple]]] = {}
    for name in names:
        extracted, tags = extract_tags(name)
        groups.setdefault(extracted, []).append((name, tags))
    out = []
    for extracted in sorted(groups, key=_token_key):
        members = sorted(groups[extracted], key=lambda m: _token_key(m[0]))
        out.append((prometheus_name(extracted), members))
    return out


def _histogram_lines(metric: str, tags: tuple, h: HistogramData, out: list[str]) -> None:
    labels = _labels(tags)
    prefix = labels + "," if labels else ""
    for bound, count in zip(h.bounds, h.cumulative_counts(), strict=True):
        out.append(f'{metric}_bucket{{{prefix}le="{float(bound):.32g}"}} {count}\n')
    out.append(f'{metric}_bucket{{{prefix}le="+Inf"}} {h.count}\n')
    out.append(f"{metric}_sum{{{labels}}} {float(h.sum):.32g}\n")
    out.append(f"{metric}_count{{{labels}}} {h.count}\n")


def render_prometheus(snapshot: StatsSnapshot, query: StatsQuery | None = None) -> str:
    query = query or StatsQuery()
    out: list[str] = []
    for kind, values in (("counter", snapshot.counters), ("gauge", snapshot.gauges)):
        if not query.wants(kind.capitalize() + "s"):
            continue
        shown = [n for n, v in values.items() if query.shows(n, v != 0)]
        for metric, members in _grouped(shown):
            out.append(f"# TYPE {metric} {kind}\n")
            for name, tags in members:
                out.append(f"{metric}{{{_labels(tags)}}} {values[name]}\n")
            out.append("\n")
        if kind == "counter" and snapshot.labeled:
            render_labeled(snapshot.labeled, "counter", out, query.shows)
    if query.wants("Histograms"):
        histograms = snapshot.histograms
        shown = [n for n, h in histograms.items() if query.shows(n, h.count > 0)]
        for metric, members in _grouped(shown):
            out.append(f"# TYPE {metric} histogram\n")
            for name, tags in members:
                _histogram_lines(metric, tags, histograms[name], out)
            out.append("\n")
        if snapshot.labeled:
            render_labeled(snapshot.labeled, "histogram", out, query.shows)
    return "".join(out)
