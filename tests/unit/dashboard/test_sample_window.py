"""Counter deltas over the window: resets, series that appear late, the window's edge."""

from __future__ import annotations

import pytest

from pistio.dashboard.sample_window import SampleWindow, Scrape, series_increase

KEY = ("istio_requests_total", (("instance", "10.0.0.5:15090"), ("reporter", "source")))


def test_increase_of_a_plain_counter() -> None:
    assert series_increase([100.0, 130.0, 160.0]) == 60


def test_a_drop_is_a_reset_and_counting_restarts_from_zero() -> None:
    # 100 → 150: +50; restart, 20 since: +20; 20 → 50: +30.
    assert series_increase([100.0, 150.0, 20.0, 50.0]) == 100


def test_a_series_absent_from_earlier_scrapes_counts_from_zero() -> None:
    assert series_increase([None, None, 7.0, 9.0]) == 9
    # ... but a gap after it appeared is only a missing sample.
    assert series_increase([3.0, None, 5.0]) == 2


def test_rates_divide_by_the_span_of_the_targets_scrapes() -> None:
    window = SampleWindow(60)
    window.add("default/a", Scrape(0.0, {KEY: 10.0}))
    assert window.rates() == {}  # one scrape gives no rate
    window.add("default/a", Scrape(5.0, {KEY: 40.0}))
    window.add("default/a", Scrape(10.0, {KEY: 60.0}))
    [(labels, rate)] = window.rates()["istio_requests_total"]
    assert labels == {"instance": "10.0.0.5:15090", "reporter": "source"}
    assert rate == pytest.approx(5.0)


def test_old_scrapes_leave_the_window_keeping_one_baseline() -> None:
    window = SampleWindow(10)
    for t, v in ((0, 0.0), (5, 1000.0), (10, 1010.0), (15, 1020.0), (20, 1030.0)):
        window.add("default/a", Scrape(float(t), {KEY: v}))
    # Horizon 10: the scrape at 10 is the baseline; 0 and 5 are gone.
    [(_, rate)] = window.rates()["istio_requests_total"]
    assert rate == pytest.approx(2.0)


def test_counter_reset_inside_the_window() -> None:
    window = SampleWindow(60)
    for t, v in ((0, 500.0), (10, 600.0), (20, 30.0)):  # the proxy restarted after 10 s
        window.add("default/a", Scrape(float(t), {KEY: v}))
    [(_, rate)] = window.rates()["istio_requests_total"]
    assert rate == pytest.approx((100 + 30) / 20)


def test_deleted_targets_are_forgotten() -> None:
    window = SampleWindow(60)
    window.add("default/a", Scrape(0.0, {KEY: 1.0}))
    window.add("default/b", Scrape(0.0, {KEY: 1.0}))
    window.keep_only({"default/b"})
    assert window.targets() == ["default/b"]
