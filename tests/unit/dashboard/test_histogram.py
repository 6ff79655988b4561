"""histogram_quantile as Prometheus computes it: linear interpolation inside the bucket."""

from __future__ import annotations

import math

import pytest

from pistio.dashboard.histogram import bucket_quantile, parse_le

INF = math.inf


def test_interpolates_inside_the_bucket_holding_the_rank() -> None:
    # 100 observations: 10 <= 5 ms, 90 <= 10 ms, all <= 25 ms. Rank 99 falls in (10, 25]:
    # 10 + 15 * (99 - 90) / (100 - 90) = 23.5.
    buckets = [(1, 0), (5, 10), (10, 90), (25, 100), (INF, 100)]
    assert bucket_quantile(0.99, buckets) == pytest.approx(23.5)
    assert bucket_quantile(0.5, buckets) == pytest.approx(5 + 5 * (50 - 10) / 80)


def test_first_bucket_interpolates_from_zero_and_order_does_not_matter() -> None:
    buckets = [(INF, 4), (10, 4), (20, 4)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(5.0)


def test_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert bucket_quantile(0.99, [(5, 1), (10, 2), (INF, 100)]) == 10


def test_undefined_cases() -> None:
    assert math.isnan(bucket_quantile(0.99, [(5, 1), (10, 2)]))  # no +Inf bucket
    assert math.isnan(bucket_quantile(0.99, [(INF, 3)]))  # fewer than two buckets
    assert math.isnan(bucket_quantile(0.99, [(5, 0), (INF, 0)]))  # no observations
    assert bucket_quantile(-0.1, [(5, 1), (INF, 1)]) == -INF
    assert bucket_quantile(1.1, [(5, 1), (INF, 1)]) == INF


def test_non_monotonic_counts_are_repaired() -> None:
    # Rates of separately scraped buckets can dip; Prometheus takes the running maximum.
    assert bucket_quantile(0.5, [(5, 10), (10, 8), (20, 20), (INF, 20)]) == pytest.approx(
        bucket_quantile(0.5, [(5, 10), (10, 10), (20, 20), (INF, 20)]))


def test_le_values() -> None:
    assert parse_le("+Inf") == INF
    assert parse_le("0.5") == 0.5
    assert parse_le("3600000") == 3600000.0
