"""``/stats`` as Envoy prints it: ``name: value`` lines, then histogram quantile summaries;
and ``/stats?format=json``.

Text: counters and gauges together in name order, then histograms in name order, each either
``name: No recorded values`` or ``name: P0(interval,cumulative) P25(...) ... P100(...)``.
JSON: ``{"stats": [{"name": ..., "value": ...}, ..., {"histograms": {"supported_quantiles":
[...], "computed_quantiles": [{"name": ..., "values": [{"interval": ..., "cumulative": ...}]}]}}]}``.
"""

from __future__ import annotations

import json
import math

from pistio.proxy.stats.histogram import SUPPORTED_QUANTILES, HistogramData
from pistio.proxy.stats.query import StatsQuery
from pistio.proxy.stats.snapshot import StatsSnapshot


def format_double(value: float) -> str:
    """A double as Envoy's ``{}`` formatting prints it: shortest form, no ``.0``."""
    if math.isnan(value):
        return "nan"
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


_QUANTILE_LABELS = tuple(f"P{100 * q:g}" for q in SUPPORTED_QUANTILES)


def quantile_summary(h: HistogramData) -> str:
    return " ".join(
        f"{label}(nan,{format_double(v)})"
        for label, v in zip(_QUANTILE_LABELS, h.quantiles(), strict=True)
    )


def _numeric(snapshot: StatsSnapshot, query: StatsQuery) -> list[tuple[str, int]]:
    values: dict[str, int] = {}
    if query.wants("Counters"):
        values.update(snapshot.counters)
    if query.wants("Gauges"):
        values.update(snapshot.gauges)
    return [(n, v) for n, v in sorted(values.items()) if query.shows(n, v != 0)]


def _histograms(snapshot: StatsSnapshot, query: StatsQuery) -> list[tuple[str, HistogramData]]:
    if not query.wants("Histograms"):
        return []
    return [(n, h) for n, h in sorted(snapshot.histograms.items()) if query.shows(n, h.count > 0)]


def render_text(snapshot: StatsSnapshot, query: StatsQuery | None = None) -> str:
    query = query or StatsQuery()
    out = [f"{name}: {value}\n" for name, value in _numeric(snapshot, query)]
    for name, h in _histograms(snapshot, query):
        if h.count == 0:
            out.append(f"{name}: No recorded values\n")
        else:
            out.append(f"{name}: {quantile_summary(h)}\n")
    return "".join(out)


def _json_number(value: float) -> float | int | None:
    if math.isnan(value):
        return None
    return int(value) if float(value).is_integer() else value


def render_json(snapshot: StatsSnapshot, query: StatsQuery | None = None) -> str:
    query = query or StatsQuery()
    stats: list[dict] = [{"name": n, "value": v} for n, v in _numeric(snapshot, query)]
    histograms = _histograms(snapshot, query)
    if histograms:
        computed = []
        for name, h in histograms:
            values = [{"interval": None, "cumulative": _json_number(v)} for v in h.quantiles()]
            computed.append({"name": name, "values": values})
        supported = [_json_number(100 * q) for q in SUPPORTED_QUANTILES]
        stats.append(
            {"histograms": {"supported_quantiles": supported, "computed_quantiles": computed}}
        )
    return json.dumps({"stats": stats}, indent=2)
