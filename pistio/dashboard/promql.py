"""The dashboard's queries: Kiali's PromQL on Istio's standard metrics, as expression trees.

Each expression renders to the PromQL text a Prometheus runs (``render(window)``) and
evaluates locally over per-series rates (``evaluate(rates)``) with PromQL's semantics, so the
scraping source answers exactly what the Prometheus source asks. Only the shapes the dashboard
needs exist: ``rate``, ``or``, ``sum by``, ``/`` and ``histogram_quantile``.

Traffic comes from the source reporter (the client's sidecar saw it), plus what only a
destination saw with ``source_workload="unknown"`` (a caller outside the mesh), as Kiali reads
it. mTLS comes from the destination reporter, the side that terminated the connection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pistio.dashboard.histogram import bucket_quantile, parse_le

# A series' identity: its non-empty labels, sorted by name (Prometheus drops empty labels).
Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]
# metric name → (labels, per-second rate) of every series of that metric.
RateSource = Callable[[str], Iterable[tuple[Mapping[str, str], float]]]


def labels_of(mapping: Mapping[str, str], keep: Iterable[str] | None = None) -> Labels:
    names = mapping if keep is None else keep
    return tuple(sorted((k, v) for k in names if (v := mapping.get(k))))


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):  # PromQL regexes are fully anchored
            object.__setattr__(self, "_regex", re.compile(f"(?:{self.value})\\Z"))

    def render(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self._regex is not None:
            return bool(self._regex.match(value)) == (self.op == "=~")
        return (value == self.value) == (self.op == "=")


class Expr:
    def render(self, window: str) -> str:
        raise NotImplementedError

    def evaluate(self, rates: RateSource) -> Vector:
        raise NotImplementedError


@dataclass(frozen=True)
class Rate(Expr):
    metric: str
    matchers: tuple[Matcher, ...]

    def render(self, window: str) -> str:
        selector = ",".join(m.render() for m in self.matchers)
        return f"rate({self.metric}{{{selector}}}[{window}])"

    def evaluate(self, rates: RateSource) -> Vector:
        out: Vector = {}
        for labels, value in rates(self.metric):
            if all(m.matches(labels) for m in self.matchers):
                out[labels_of(labels)] = value
        return out


@dataclass(frozen=True)
class Or(Expr):
    left: Expr
    right: Expr

    def render(self, window: str) -> str:
        return f"{self.left.render(window)} or {self.right.render(window)}"

    def evaluate(self, rates: RateSource) -> Vector:
        out = self.left.evaluate(rates)
        for labels, value in self.right.evaluate(rates).items():
            out.setdefault(labels, value)  # `or` keeps the left side's series
        return out


@dataclass(frozen=True)
class SumBy(Expr):
    by: tuple[str, ...]
    inner: Expr

    def render(self, window: str) -> str:
        return f"sum({self.inner.render(window)}) by ({', '.join(self.by)})"

    def evaluate(self, rates: RateSource) -> Vector:
        out: Vector = {}
        for labels, value in self.inner.evaluate(rates).items():
            key = labels_of(dict(labels), self.by)
            out[key] = out.get(key, 0.0) + value
        return out


@dataclass(frozen=True)
class Divide(Expr):
    numerator: Expr
    denominator: Expr

    def render(self, window: str) -> str:
        return f"{self.numerator.render(window)} / {self.denominator.render(window)}"

    def evaluate(self, rates: RateSource) -> Vector:
        den = self.denominator.evaluate(rates)
        out: Vector = {}
        for labels, value in self.numerator.evaluate(rates).items():
            if labels in den:  # one-to-one matching on identical label sets
                out[labels] = value / den[labels] if den[labels] else math.nan
        return out


@dataclass(frozen=True)
class HistogramQuantile(Expr):
    quantile: float
    buckets: Expr

    def render(self, window: str) -> str:
        return f"histogram_quantile({self.quantile}, {self.buckets.render(window)})"

    def evaluate(self, rates: RateSource) -> Vector:
        groups: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in self.buckets.evaluate(rates).items():
            le = dict(labels).get("le")
            if le is None:
                continue
            key = tuple(kv for kv in labels if kv[0] != "le")
            groups.setdefault(key, []).append((parse_le(le), value))
        return {k: bucket_quantile(self.quantile, b) for k, b in groups.items()}


# --- the dashboard's queries ---------------------------------------------------------------

SOURCE_LABELS = ("source_workload", "source_workload_namespace", "source_app", "source_version")
SERVICE_LABELS = ("destination_service", "destination_service_name",
                  "destination_service_namespace")
DESTINATION_LABELS = ("destination_workload", "destination_workload_namespace",
                      "destination_app", "destination_version")
EDGE_LABELS = SOURCE_LABELS + SERVICE_LABELS + DESTINATION_LABELS

SOURCE_REPORTER = (Matcher("reporter", "=", "source"),)
DESTINATION_REPORTER = (Matcher("reporter", "=", "destination"),)
FROM_OUTSIDE = (Matcher("reporter", "=", "destination"),
                Matcher("source_workload", "=", "unknown"))
SERVER_ERROR = Matcher("response_code", "=~", "5..")


def mesh_traffic(metric: str, by: tuple[str, ...]) -> Expr:
    """Traffic as Kiali counts it: the source reporter's, plus callers outside the mesh."""
    return SumBy(by, Or(Rate(metric, SOURCE_REPORTER), Rate(metric, FROM_OUTSIDE)))


P99 = 0.99

QUERIES: dict[str, Expr] = {
    # Request rate per edge and response code: rates, error ratios and the node list.
    "requests": mesh_traffic("istio_requests_total", EDGE_LABELS + ("response_code",)),
    # The share of each workload's inbound requests that failed with a 5xx: node health.
    "workload_error_ratio": Divide(
        SumBy(("destination_workload", "destination_workload_namespace"),
              Rate("istio_requests_total", DESTINATION_REPORTER + (SERVER_ERROR,))),
        SumBy(("destination_workload", "destination_workload_namespace"),
              Rate("istio_requests_total", DESTINATION_REPORTER))),
    # How the destination sidecar accepted the requests and connections: the padlock.
    "http_security": SumBy(EDGE_LABELS + ("connection_security_policy",),
                           Rate("istio_requests_total", DESTINATION_REPORTER)),
    "tcp_security": SumBy(EDGE_LABELS + ("connection_security_policy",),
                          Rate("istio_tcp_received_bytes_total", DESTINATION_REPORTER)),
    # p99 latency of the workload → service hop and of the service → workload hop.
    "p99_to_service": HistogramQuantile(P99, mesh_traffic(
        "istio_request_duration_milliseconds_bucket", ("le",) + SOURCE_LABELS + SERVICE_LABELS)),
    "p99_to_workload": HistogramQuantile(P99, mesh_traffic(
        "istio_request_duration_milliseconds_bucket",
        ("le",) + SERVICE_LABELS + DESTINATION_LABELS)),
    # TCP bytes per second, both directions, per edge.
    "tcp_sent": mesh_traffic("istio_tcp_sent_bytes_total", EDGE_LABELS),
    "tcp_received": mesh_traffic("istio_tcp_received_bytes_total", EDGE_LABELS),
}

# Every metric the queries read: what the scraper keeps from a sidecar's exposition.
QUERIED_METRICS = frozenset({
    "istio_requests_total", "istio_request_duration_milliseconds_bucket",
    "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
})


def render_all(window: str) -> dict[str, str]:
    return {name: expr.render(window) for name, expr in QUERIES.items()}


def evaluate_all(rates: RateSource) -> dict[str, Vector]:
    return {name: expr.evaluate(rates) for name, expr in QUERIES.items()}
