"""Istio's standard metrics: labeled counters and histograms, per worker, merged when scraped.

The families and their labels are Istio's (``istio_requests_total``,
``istio_request_duration_milliseconds``, ``istio_request_bytes``, ``istio_response_bytes``,
``istio_tcp_sent_bytes_total``, ``istio_tcp_received_bytes_total``,
``istio_tcp_connections_opened_total``, ``istio_tcp_connections_closed_total``), labels in the
order Istio's stats filter emits them. Histograms use Envoy's default buckets (0.5 ms ..
3600000), which is what Istio's sidecars export for all three histograms.

A *series* is one (metric, labels) pair; ``labels`` is a tuple of ``(name, value)`` pairs.
The stats filters ask for a series once per distinct label set and keep the handle: counting is
``handle.value += n`` or ``histogram.record(v)``. :meth:`IstioMetrics.dump` ships a worker's
series (names and values) to the admin, :func:`merge_labeled_dumps` adds them up, and
:func:`render_labeled` prints them in the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pistio.proxy.stats.histogram import DEFAULT_BUCKETS, Histogram, HistogramData

PREFIX = "istio_"
HTTP_METRICS = ("requests_total", "request_duration_milliseconds", "request_bytes",
                "response_bytes")
TCP_METRICS = ("tcp_sent_bytes_total", "tcp_received_bytes_total",
               "tcp_connections_opened_total", "tcp_connections_closed_total")
METRIC_NAMES = HTTP_METRICS + TCP_METRICS
HISTOGRAM_METRICS = frozenset({"request_duration_milliseconds", "request_bytes",
                               "response_bytes"})

PEER_LABELS = (
    "reporter",
    "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service",
    "destination_canonical_service", "destination_canonical_revision",
    "destination_service_name", "destination_service_namespace", "destination_cluster",
)
HTTP_LABELS = PEER_LABELS + ("request_protocol", "response_code", "grpc_response_status",
                             "response_flags", "connection_security_policy")
TCP_LABELS = PEER_LABELS + ("request_protocol", "response_flags", "connection_security_policy")
STANDARD_LABELS = frozenset(HTTP_LABELS)

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


class Count:
    """One labeled counter's value in a worker."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class IstioMetrics:
    """A worker's Istio series (one per :class:`~pistio.proxy.stats.store.StatsStore`)."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[SeriesKey, Count | Histogram] = {}

    def counter(self, metric: str, labels: Labels) -> Count:
        """``metric``: the full name (``istio_requests_total``)."""
        key = (metric, labels)
        c = self.series.get(key)
        if c is None:
            c = self.series[key] = Count()
        return c  # type: ignore[return-value]

    def histogram(self, metric: str, labels: Labels) -> Histogram:
        key = (metric, labels)
        h = self.series.get(key)
        if h is None:
            h = self.series[key] = Histogram(DEFAULT_BUCKETS)
        return h  # type: ignore[return-value]

    def dump(self) -> list[list[Any]]:
        """``[[metric, [name, value, name, value...], value | [counts, sum, count, min,
        max]], ...]`` (JSON-ready)."""
        out: list[list[Any]] = []
        for (metric, labels), s in self.series.items():
            flat = [part for pair in labels for part in pair]
            if isinstance(s, Histogram):
                out.append([metric, flat, [s.counts, s.sum, s.count, s.min, s.max]])
            else:
                out.append([metric, flat, s.value])
        return out


def _labels(flat: list[str]) -> Labels:
    return tuple(zip(flat[::2], flat[1::2], strict=True))


def merge_labeled_dumps(into: dict[SeriesKey, Any], dump: Iterable[list[Any]]) -> None:
    """Add one worker's :meth:`IstioMetrics.dump` to ``into`` (int or HistogramData)."""
    for metric, flat, value in dump:
        key = (metric, _labels(flat))
        mine = into.get(key)
        if isinstance(value, list):
            counts, total, count, low, high = value
            data = HistogramData(DEFAULT_BUCKETS, list(counts), total, count,
                                 low if low is not None else float("inf"),
                                 high if high is not None else float("-inf"))
            if mine is None:
                into[key] = data
            else:
                mine.merge(data)
        else:
            into[key] = (mine or 0) + value


def merge_labeled(into: dict[SeriesKey, Any], other: Mapping[SeriesKey, Any]) -> None:
    """Add merged series ``other`` to ``into`` (copies histograms it takes)."""
    for key, value in other.items():
        mine = into.get(key)
        if isinstance(value, HistogramData):
            if mine is None:
                into[key] = HistogramData(value.bounds, list(value.counts), value.sum,
                                          value.count, value.min, value.max)
            else:
                mine.merge(value)
        else:
            into[key] = (mine or 0) + value


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _label_text(labels: Labels) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels)


def render_labeled(labeled: Mapping[SeriesKey, Any], kind: str, out: list[str],
                   shows: Any = None) -> None:
    """Append the Prometheus text of every ``kind`` ("counter" or "histogram") family:
    ``# TYPE`` line, samples, an empty line. ``shows(name, used)``: the admin's filter."""
    families: dict[str, list[tuple[Labels, Any]]] = {}
    want_histogram = kind == "histogram"
    for (metric, labels), value in labeled.items():
        if isinstance(value, HistogramData) != want_histogram:
            continue
        if not (value.count if want_histogram else value):
            # Istio's series exist from their first increment: a handle taken early (a TCP
            # connection's closed counter, at open) shows nothing until it counts.
            continue
        if shows is not None and not shows(metric, True):
            continue
        families.setdefault(metric, []).append((labels, value))
    for metric in sorted(families):
        out.append(f"# TYPE {metric} {kind}\n")
        for labels, value in sorted(families[metric], key=lambda item: item[0]):
            text = _label_text(labels)
            if not want_histogram:
                out.append(f"{metric}{{{text}}} {value}\n")
                continue
            prefix = text + "," if text else ""
            for bound, count in zip(value.bounds, value.cumulative_counts(), strict=True):
                out.append(f'{metric}_bucket{{{prefix}le="{float(bound):.32g}"}} {count}\n')
            out.append(f'{metric}_bucket{{{prefix}le="+Inf"}} {value.count}\n')
            out.append(f"{metric}_sum{{{text}}} {float(value.sum):.32g}\n")
            out.append(f"{metric}_count{{{text}}} {value.count}\n")
        out.append("\n")
