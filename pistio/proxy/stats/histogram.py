"""A fixed-bucket histogram, Envoy's default buckets, and the quantile summary ``/stats`` prints.

Envoy records latency histograms (``upstream_rq_time``, ``downstream_rq_time``, in
milliseconds) into log-linear histograms and exports them to Prometheus with fixed bucket
bounds; by default those are 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
30000, 60000, 300000, 600000, 1800000 and 3600000. We keep exactly those buckets (plus an
overflow bucket), the sum, the count and the extremes: recording a value is one ``bisect`` and
a few additions, and two workers' histograms merge by adding their arrays.

``/stats`` prints ten quantiles (P0, P25, P50, P75, P90, P95, P99, P99.5, P99.9, P100) as
``P50(interval,cumulative)``. We estimate a quantile by interpolating linearly inside its
bucket, narrowed by the observed minimum and maximum; there is no periodic flush, so the
interval value prints ``nan`` as Envoy prints it for an interval without samples.
"""

from __future__ import annotations

from bisect import bisect_left

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)

SUPPORTED_QUANTILES: tuple[float, ...] = (0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1)


class Histogram:
    """One worker's histogram. ``counts[i]`` counts values ``<= bounds[i]`` and above the
    previous bound (Prometheus ``le`` semantics); ``counts[-1]`` is the overflow."""

    __slots__ = ("bounds", "counts", "sum", "count", "min", "max")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.min = float("inf")
        self.max = float("-inf")

    def record(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value


class HistogramData:
    """A histogram's values as a snapshot carries them (merged across workers)."""

    __slots__ = ("bounds", "counts", "sum", "count", "min", "max")

    def __init__(
        self,
        bounds: tuple[float, ...],
        counts: list[int],
        total: float,
        count: int,
        minimum: float,
        maximum: float,
    ) -> None:
        self.bounds = bounds
        self.counts = counts
        self.sum = total
        self.count = count
        self.min = minimum
        self.max = maximum

    @classmethod
    def of(cls, h: Histogram) -> HistogramData:
        return cls(h.bounds, list(h.counts), h.sum, h.count, h.min, h.max)

    def merge(self, other: HistogramData) -> None:
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different bucket bounds")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def cumulative_counts(self) -> list[int]:
        """Counts of values ``<= bounds[i]`` (Prometheus ``_bucket{le=...}``)."""
        out = []
        running = 0
        for c in self.counts[:-1]:
            running += c
            out.append(running)
        return out

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return float("nan")
        rank = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            if c == 0:
                continue
            if seen + c >= rank:
                low = self.bounds[i - 1] if i > 0 else 0.0
                high = self.bounds[i] if i < len(self.bounds) else self.max
                low = max(low, self.min)
                high = min(high, self.max)
                fraction = (rank - seen) / c
                return low + (high - low) * fraction
            seen += c
        return self.max

    def quantiles(self) -> list[float]:
        return [self.quantile(q) for q in SUPPORTED_QUANTILES]
