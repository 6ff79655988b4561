"""Prometheus metrics of the discovery server, in the text exposition format (version 0.0.4).

Names are Istio's pilot metrics so dashboards and alerts written for istiod work unchanged:
``pilot_xds`` (connected proxies), ``pilot_xds_pushes{type}``, ``pilot_total_xds_rejects{type}``
(NACKs), ``pilot_proxy_convergence_time`` and ``pilot_xds_push_time`` (histograms),
``pilot_push_triggers{type}``, ``pilot_services``, ``pilot_virt_services``,
``pilot_sds_certificate_errors_total``, ``galley_validation_failed`` /
``galley_validation_passed``, plus pistio's
``pistio_config_rejected_total{kind}``.

A few lines of exposition code rather than a client library: the counters already live as
plain values in the transport (`XdsStats`) and the store (`StoreStats`); they are only read
when scraped.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pistio import __version__

if TYPE_CHECKING:
    from pistio.pilot.discovery import Discovery

# Istio's buckets (pilot/pkg/xds/monitoring.go).
CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)
PUSH_TIME_BUCKETS = (0.01, 0.1, 1, 3, 5, 10, 20, 30)

Labels = Mapping[str, str]


@dataclass
class Histogram:
    """A cumulative histogram with fixed buckets (upper bounds, +Inf implied)."""

    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.count += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels | None, extra: tuple[str, str] | None = None) -> str:
    items = list((labels or {}).items())
    if extra is not None:
        items.append(extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Builds one scrape: families in the order they are added."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Labels | None, float]] = (),
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help_text: str, series: Iterable[tuple[Labels | None, Histogram]]
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        for labels, hist in series:
            running = 0
            for bound, n in zip(hist.buckets, hist.counts, strict=True):
                running += n
                le = _number(bound if isinstance(bound, int) else float(bound))
                self._lines.append(f"{name}_bucket{_labels(labels, ('le', le))} {running}")
            self._lines.append(f"{name}_bucket{_labels(labels, ('le', '+Inf'))} {hist.count}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(float(hist.total))}")
            self._lines.append(f"{name}_count{_labels(labels)} {hist.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def discovery_metrics(discovery: Discovery) -> str:
    """One scrape of ``pistio discovery``: transport, push context and config store."""
    server = discovery.server
    stats = server.stats
    # The store's counters grow in its reload thread: read copies (dict() copies atomically).
    store = discovery.store.stats
    context = discovery.push_context
    out = Exposition()
    out.family(
        "istio_build",
        "gauge",
        "Istio component build info",
        [({"component": "pilot", "tag": __version__}, 1)],
    )
    out.family(
        "pilot_xds",
        "gauge",
        "Number of endpoints connected to this pilot using XDS.",
        [({"version": __version__}, stats.connections)],
    )
    out.family(
        "pilot_xds_pushes",
        "counter",
        "Pilot build and send errors for lds, rds, cds and eds.",
        [({"type": t.lower()}, n) for t, n in sorted(stats.pushes.items())],
    )
    out.family(
        "pilot_total_xds_rejects",
        "counter",
        "Total number of XDS responses from pilot rejected by proxy.",
        [({"type": t.lower()}, n) for t, n in sorted(stats.rejects.items())],
    )
    out.family(
        "pilot_xds_push_timeout",
        "counter",
        "Pilot push timeout, will retry.",
        [(None, stats.push_timeouts)],
    )
    out.family(
        "pilot_push_triggers",
        "counter",
        "Total number of times a push was triggered, labeled by reason for the push.",
        [({"type": r}, n) for r, n in sorted(stats.push_triggers.items())],
    )
    out.family(
        "pilot_xds_full_pushes",
        "counter",
        "Debounced pushes that rebuilt every type (full) or endpoints only (eds).",
        [({"type": "full"}, stats.full_pushes), ({"type": "eds"}, stats.eds_pushes)],
    )
    out.histogram(
        "pilot_proxy_convergence_time",
        "Delay in seconds between config change and a proxy receiving all required configuration.",
        [(None, server.convergence)],
    )
    out.histogram(
        "pilot_xds_push_time",
        "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
        [({"type": t}, h) for t, h in sorted(server.push_time.items())],
    )
    out.family(
        "pilot_sds_certificate_errors_total",
        "counter",
        "Total number of failures to fetch SDS key and certificate.",
        [(None, discovery.sds_errors.total)],
    )
    services = len(context.services) if context is not None else 0
    virtual_services = len(context.configs_of("VirtualService")) if context is not None else 0
    out.family("pilot_services", "gauge", "Total services known to pilot.", [(None, services)])
    out.family(
        "pilot_virt_services",
        "gauge",
        "Total virtual services known to pilot.",
        [(None, virtual_services)],
    )
    out.family(
        "galley_validation_passed",
        "counter",
        "Resource is valid.",
        [
            ({"group": g, "version": v, "resource": r}, n)
            for (g, v, r), n in sorted(dict(store.validation_passed).items())
        ],
    )
    out.family(
        "galley_validation_failed",
        "counter",
        "Resource validation failed.",
        [
            ({"group": g, "version": v, "resource": r, "reason": reason}, n)
            for (g, v, r, reason), n in sorted(dict(store.validation_failed).items())
        ],
    )
    out.family(
        "pistio_config_rejected_total",
        "counter",
        "Resources rejected by validation; the last good version stays in force.",
        [({"kind": k}, n) for k, n in sorted(dict(store.rejected).items())],
    )
    out.family(
        "pistio_config_parse_errors_total",
        "counter",
        "Config files that could not be parsed; their previous resources stay in force.",
        [(None, store.parse_errors)],
    )
    out.family(
        "pistio_config_resources",
        "gauge",
        "Resources in force in the config store.",
        [(None, len(discovery.store))],
    )
    return out.text()
