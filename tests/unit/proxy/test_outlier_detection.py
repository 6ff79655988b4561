"""Outlier detection timelines with an injected clock: consecutive 5xx and gateway failures,
local-origin errors, max ejection percent, enforcement, backoff and unejection."""

from __future__ import annotations

import random

from pistio.proxy.config.cluster_config import LbPolicy, LbSettings, OutlierDetectionConfig
from pistio.proxy.upstream.load_balancer import LoadBalancer
from pistio.proxy.upstream.outlier_detection import LocalOrigin, OutlierDetector
from tests.unit.proxy.test_load_balancer import assignment, hosts


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def setup(n: int = 4, **cfg):
    clock = Clock()
    lb = LoadBalancer(LbSettings(policy=LbPolicy.ROUND_ROBIN), assignment(hosts(n)),
                      random.Random(1), now=clock)
    det = OutlierDetector(OutlierDetectionConfig(**cfg), lb.hosts, now=clock,
                          rng=random.Random(2), on_change=lb.refresh)
    return clock, lb, det


def test_consecutive_5xx_ejects_and_interval_unejects():
    clock, lb, det = setup(consecutive_5xx=3, base_ejection_time=30, interval=10,
                           max_ejection_percent=50)
    h = lb.hosts[0]
    det.report_http_status(h, 500)
    det.report_http_status(h, 500)
    det.report_http_status(h, 200)  # a success resets the run
    det.report_http_status(h, 500)
    det.report_http_status(h, 500)
    assert not h.ejected
    det.report_http_status(h, 500)
    assert h.ejected and det.ejections_active == 1
    assert h not in {lb.choose_host() for _ in range(20)}  # the LB was refreshed
    clock.t += 20
    det.tick()
    assert h.ejected  # 30 s not over
    clock.t += 10
    det.tick()
    assert not h.ejected and det.ejections_active == 0
    assert h in {lb.choose_host() for _ in range(20)}


def test_ejection_time_grows_with_repeat_ejections_and_is_capped():
    clock, lb, det = setup(consecutive_5xx=1, base_ejection_time=30, max_ejection_time=70,
                           max_ejection_percent=100)
    h = lb.hosts[0]
    durations = []
    for _ in range(3):
        det.report_http_status(h, 503)
        start = clock.t
        while h.ejected:
            clock.t += 10
            det.tick()
        durations.append(clock.t - start)
    assert durations == [30, 60, 70]  # 30×1, 30×2, min(30×3, 70)
    m = det.monitor(h)
    assert m.ejections == 3
    for _ in range(3):  # each interval in service lowers the multiplier
        det.tick()
    assert m.ejections == 0


def test_gateway_failures_need_enforcement():
    clock, lb, det = setup(consecutive_gateway_failure=2, max_ejection_percent=100)
    h = lb.hosts[1]
    for _ in range(2):
        det.report_http_status(h, 502)
    # Envoy's default enforcing_consecutive_gateway_failure is 0: detected, not ejected.
    assert not h.ejected
    assert det.stats["ejections_detected_consecutive_gateway_failure"] == 1
    clock, lb, det = setup(consecutive_gateway_failure=2, enforcing_consecutive_gateway_failure=100,
                           consecutive_5xx=10, max_ejection_percent=100)
    h = lb.hosts[1]
    det.report_http_status(h, 502)
    det.report_http_status(h, 500)  # a non-gateway 5xx breaks the gateway run
    det.report_http_status(h, 504)
    assert not h.ejected
    det.report_http_status(h, 503)
    assert h.ejected
    assert det.stats["ejections_enforced_consecutive_gateway_failure"] == 1


def test_connect_failures_count_as_gateway_errors_unless_split():
    clock, lb, det = setup(consecutive_5xx=2, max_ejection_percent=100)
    h = lb.hosts[0]
    det.report_local_origin(h, LocalOrigin.CONNECT_FAILED)
    det.report_local_origin(h, LocalOrigin.CONNECT_SUCCESS)  # says nothing without split
    det.report_local_origin(h, LocalOrigin.TIMEOUT)
    assert h.ejected
    clock, lb, det = setup(split_external_local_origin_errors=True,
                           consecutive_local_origin_failure=2, consecutive_5xx=2,
                           max_ejection_percent=100)
    h = lb.hosts[0]
    det.report_local_origin(h, LocalOrigin.CONNECT_FAILED)
    det.report_local_origin(h, LocalOrigin.CONNECT_SUCCESS)
    det.report_local_origin(h, LocalOrigin.CONNECT_FAILED)
    assert not h.ejected
    det.report_local_origin(h, LocalOrigin.RESET)
    assert h.ejected
    assert det.monitor(h).consecutive_5xx == 0  # local errors kept apart from 5xx


def test_max_ejection_percent_always_allows_one():
    clock, lb, det = setup(n=4, consecutive_5xx=1, max_ejection_percent=10)
    for h in lb.hosts:
        det.report_http_status(h, 500)
    # 0% ejected < 10% lets the first one go; 25% ≥ 10% stops the rest.
    assert sum(h.ejected for h in lb.hosts) == 1
    assert det.stats["ejections_overflow"] == 3
    clock, lb, det = setup(n=4, consecutive_5xx=1, max_ejection_percent=50)
    for h in lb.hosts:
        det.report_http_status(h, 500)
    assert sum(h.ejected for h in lb.hosts) == 2


def test_success_rate_ejects_the_outlier():
    clock, lb, det = setup(n=5, enforcing_success_rate=100, success_rate_request_volume=10,
                           success_rate_minimum_hosts=5, success_rate_stdev_factor=1000,
                           consecutive_5xx=1000, max_ejection_percent=100)
    bad = lb.hosts[2]
    for h in lb.hosts:
        for i in range(20):
            det.report_http_status(h, 500 if h is bad and i % 2 else 200)
    det.tick()
    assert bad.ejected and sum(h.ejected for h in lb.hosts) == 1


def test_eds_update_keeps_monitors():
    clock, lb, det = setup(consecutive_5xx=1, max_ejection_percent=100)
    det.report_http_status(lb.hosts[0], 500)
    lb.update(assignment(hosts(5)))
    det.set_hosts(lb.hosts)
    assert lb.hosts[0].ejected and det.ejections_active == 1
    assert det.monitor(lb.hosts[4]) is not None
