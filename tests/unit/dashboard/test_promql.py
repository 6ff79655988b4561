"""The dashboard's PromQL: the text a Prometheus runs, and the same query evaluated locally."""

from __future__ import annotations

import math

import pytest

from pistio.dashboard.promql import (
    QUERIES,
    Divide,
    HistogramQuantile,
    Matcher,
    Or,
    Rate,
    SumBy,
    render_all,
)

EDGE = ("source_workload, source_workload_namespace, source_app, source_version, "
        "destination_service, destination_service_name, destination_service_namespace, "
        "destination_workload, destination_workload_namespace, destination_app, "
        "destination_version")


def test_request_rate_query_is_kialis() -> None:
    assert render_all("1m")["requests"] == (
        'sum(rate(istio_requests_total{reporter="source"}[1m]) or '
        'rate(istio_requests_total{reporter="destination",source_workload="unknown"}[1m])) '
        f"by ({EDGE}, response_code)")


def test_error_ratio_query() -> None:
    by = "destination_workload, destination_workload_namespace"
    assert render_all("60s")["workload_error_ratio"] == (
        f'sum(rate(istio_requests_total{{reporter="destination",response_code=~"5.."}}[60s])) '
        f"by ({by}) / "
        f'sum(rate(istio_requests_total{{reporter="destination"}}[60s])) by ({by})')


def test_p99_and_security_and_tcp_queries() -> None:
    queries = render_all("30s")
    assert queries["p99_to_workload"] == (
        "histogram_quantile(0.99, sum("
        'rate(istio_request_duration_milliseconds_bucket{reporter="source"}[30s]) or '
        'rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
        'source_workload="unknown"}[30s])) by (le, destination_service, '
        "destination_service_name, destination_service_namespace, destination_workload, "
        "destination_workload_namespace, destination_app, destination_version))")
    assert queries["http_security"] == (
        'sum(rate(istio_requests_total{reporter="destination"}[30s])) '
        f"by ({EDGE}, connection_security_policy)")
    assert queries["tcp_sent"].startswith(
        'sum(rate(istio_tcp_sent_bytes_total{reporter="source"}[30s]) or ')
    assert set(QUERIES) == {"requests", "workload_error_ratio", "http_security",
                            "tcp_security", "p99_to_service", "p99_to_workload", "tcp_sent",
                            "tcp_received"}


SERIES = {
    "m": [
        ({"reporter": "source", "code": "200", "w": "a", "instance": "1"}, 3.0),
        ({"reporter": "source", "code": "503", "w": "a", "instance": "1"}, 1.0),
        ({"reporter": "destination", "code": "200", "w": "a", "instance": "2"}, 5.0),
        ({"reporter": "source", "code": "200", "w": "b", "instance": "3"}, 2.0),
        ({"reporter": "source", "code": "200", "instance": "4"}, 7.0),  # no w label
    ],
}


def rates(metric: str):  # type: ignore[no-untyped-def]
    return SERIES.get(metric, [])


def test_sum_by_drops_the_other_labels_and_empty_ones() -> None:
    got = SumBy(("w",), Rate("m", (Matcher("reporter", "=", "source"),))).evaluate(rates)
    assert got == {(("w", "a"),): 4.0, (("w", "b"),): 2.0, (): 7.0}


def test_regex_matchers_are_anchored() -> None:
    five = Rate("m", (Matcher("code", "=~", "5.."),)).evaluate(rates)
    assert list(five.values()) == [1.0]
    assert Rate("m", (Matcher("code", "=~", "0"),)).evaluate(rates) == {}
    assert len(Rate("m", (Matcher("code", "!~", "5.."),)).evaluate(rates)) == 4


def test_or_keeps_the_left_series_on_a_clash() -> None:
    left = SumBy(("w",), Rate("m", (Matcher("reporter", "=", "source"),)))
    right = SumBy(("w",), Rate("m", (Matcher("reporter", "=", "destination"),)))
    assert Or(left, right).evaluate(rates)[(("w", "a"),)] == 4.0


def test_divide_matches_identical_label_sets_only() -> None:
    errors = SumBy(("w",), Rate("m", (Matcher("code", "=~", "5.."),)))
    total = SumBy(("w",), Rate("m", ()))
    assert Divide(errors, total).evaluate(rates) == {(("w", "a"),): pytest.approx(1 / 9)}


def test_histogram_quantile_groups_without_le() -> None:
    buckets = {"h_bucket": [
        ({"le": "10", "w": "a"}, 5.0), ({"le": "20", "w": "a"}, 10.0),
        ({"le": "+Inf", "w": "a"}, 10.0),
        ({"le": "10", "w": "b"}, 0.0), ({"le": "+Inf", "w": "b"}, 0.0),
    ]}
    expr = HistogramQuantile(0.5, SumBy(("le", "w"), Rate("h_bucket", ())))
    got = expr.evaluate(lambda m: buckets.get(m, []))
    assert got[(("w", "a"),)] == pytest.approx(10.0)
    assert math.isnan(got[(("w", "b"),)])
