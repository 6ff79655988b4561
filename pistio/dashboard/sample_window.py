"""Counter samples over a sliding window, and the per-series rates they give.

The scraping source's stand-in for a Prometheus TSDB: each target (a sidecar's 15090) keeps
its scrapes of the last ``window`` seconds; a series' rate is its increase across those
scrapes divided by the time they span. As in PromQL's ``rate``, a drop in a counter is a reset
(the proxy restarted): the increase continues from zero. Unlike a bare ``rate``, a series that
first appears in a later scrape of a target that was already scraped counts from zero: Istio
creates a series on its first request, and those first requests are traffic too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pistio.dashboard.promql import Labels, RateSource

SeriesKey = tuple[str, Labels]  # (metric name, labels including ``instance``)


@dataclass(frozen=True)
class Scrape:
    at: float
    series: Mapping[SeriesKey, float]


def series_increase(values: list[float | None]) -> float:
    """Increase of one counter across consecutive scrapes (None: absent from that scrape).

    Absent before its first appearance means "not created yet", i.e. zero; absent after it
    (a series cannot vanish from a live proxy, but a scrape may be partial) is skipped.
    """
    increase = 0.0
    previous: float | None = None
    seen = False
    for value in values:
        if value is None:
            if not seen:
                previous = 0.0
            continue
        if previous is not None:
            increase += value - previous if value >= previous else value
        previous, seen = value, True
    return increase


class SampleWindow:
    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._targets: dict[str, deque[Scrape]] = {}

    def add(self, target: str, scrape: Scrape) -> None:
        scrapes = self._targets.setdefault(target, deque())
        scrapes.append(scrape)
        horizon = scrape.at - self.window_seconds
        while len(scrapes) > 2 and scrapes[1].at <= horizon:
            # Keep one scrape at or before the horizon: the baseline of the window's deltas.
            scrapes.popleft()

    def keep_only(self, targets: set[str]) -> None:
        """Forget targets that no longer exist (deleted pods)."""
        for gone in set(self._targets) - targets:
            del self._targets[gone]

    def targets(self) -> list[str]:
        return sorted(self._targets)

    def rates(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """metric → [(labels, per-second rate)] over every target with two scrapes or more."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for scrapes in self._targets.values():
            for key, rate in _target_rates(scrapes):
                metric, labels = key
                out.setdefault(metric, []).append((dict(labels), rate))
        return out

    def rate_source(self) -> RateSource:
        """A :data:`pistio.dashboard.promql.RateSource` over the current window."""
        rates = self.rates()
        return lambda metric: rates.get(metric, ())


def _target_rates(scrapes: deque[Scrape]) -> Iterator[tuple[SeriesKey, float]]:
    if len(scrapes) < 2:
        return
    span = scrapes[-1].at - scrapes[0].at
    if span <= 0:
        return
    keys: dict[SeriesKey, None] = {}
    for scrape in scrapes:
        keys.update(dict.fromkeys(scrape.series))
    for key in keys:
        values = [scrape.series.get(key) for scrape in scrapes]
        yield key, series_increase(values) / span
