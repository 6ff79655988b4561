"""Prometheus's ``histogram_quantile`` over classic (``le``-labelled) buckets.

The same steps as Prometheus's ``bucketQuantile``: sort by upper bound, require a ``+Inf``
bucket, repair non-monotonic counts (rates of separately-scraped buckets can dip), find the
first bucket whose cumulative count reaches ``q * total``, and interpolate linearly inside it
(from 0 when the first bucket's bound is positive). A rank that lands in the ``+Inf`` bucket
answers the highest finite bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """``q`` in [0, 1] of ``(upper_bound, cumulative_count)`` pairs; NaN when undefined."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts = []
    highest = 0.0
    for _, count in ordered:
        highest = max(highest, count)
        counts.append(highest)
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    if b == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, end, count = 0.0, ordered[b][0], counts[b]
    if b > 0:
        start = ordered[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count == 0:  # only with q = 0 and an empty first bucket
        return start
    return start + (end - start) * (rank / count)


def parse_le(value: str) -> float:
    """An ``le`` label as a bound: ``+Inf`` and Envoy's ``%.32g`` numbers alike."""
    return math.inf if value in ("+Inf", "Inf", "inf") else float(value)
