"""Istio's metric series out of a proxy's Prometheus text exposition.

A sidecar's ``/stats/prometheus`` carries hundreds of Envoy cluster and listener series
beside Istio's; only the lines of the metrics the dashboard queries go to the parser
(``prometheus_client``'s), which keeps a scrape cheap however many clusters a proxy has.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pistio.dashboard.promql import QUERIED_METRICS, labels_of
from pistio.dashboard.sample_window import SeriesKey

_FAMILY_PREFIXES = tuple(sorted({m.removesuffix("_total").removesuffix("_bucket")
                                 for m in QUERIED_METRICS}))
_COMMENT_PREFIXES = tuple(f"# {kind} {name}" for kind in ("TYPE", "HELP")
                          for name in _FAMILY_PREFIXES)


def _wanted(line: str) -> bool:
    return line.startswith(_FAMILY_PREFIXES) or line.startswith(_COMMENT_PREFIXES)


def parse_istio_series(text: str, instance: str) -> dict[SeriesKey, float]:
    """The queried metrics' samples, labelled with ``instance`` as Prometheus labels them.

    Raises ``ValueError`` when the exposition does not parse.
    """
    kept = "\n".join(line for line in text.splitlines() if _wanted(line))
    series: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(kept + "\n"):
        for sample in family.samples:
            if sample.name in QUERIED_METRICS:
                labels = dict(sample.labels)
                labels["instance"] = instance
                series[(sample.name, labels_of(labels))] = float(sample.value)
    return series
