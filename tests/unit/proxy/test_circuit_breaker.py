"""Circuit breakers: limits, overflow (the router's 503 UO), release, retry budgets, and the
limits of a generated Bookinfo cluster with a connection pool."""

from __future__ import annotations

from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.proxy.config.cluster_config import CircuitBreakerThresholds, compile_cluster
from pistio.proxy.upstream.circuit_breaker import CircuitBreakers
from tests.unit.pilot.bookinfo_fixture import sidecar_proxy
from tests.unit.pilot.test_clusters import TRAFFIC_POLICY_YAML, push_with


def test_pending_requests_overflow_and_release():
    cb = CircuitBreakers(CircuitBreakerThresholds(max_pending_requests=2))
    assert cb.pending_requests.try_acquire() and cb.pending_requests.try_acquire()
    assert not cb.pending_requests.try_acquire()  # → 503 UO
    assert cb.stats()["upstream_rq_pending_overflow"] == 1
    assert cb.stats()["circuit_breakers.default.rq_pending_open"] == 1
    cb.pending_requests.release()
    assert cb.pending_requests.try_acquire()
    assert cb.stats()["upstream_rq_pending_overflow"] == 1


def test_connections_and_requests_limits():
    cb = CircuitBreakers(CircuitBreakerThresholds(max_connections=1, max_requests=1,
                                                  track_remaining=True))
    assert cb.connections.try_acquire() and not cb.connections.try_acquire()
    assert cb.requests.try_acquire() and not cb.requests.try_acquire()
    stats = cb.stats()
    assert stats["upstream_cx_overflow"] == 1
    assert stats["upstream_rq_pending_overflow"] == 1  # request limit counts here, as in Envoy
    assert stats["circuit_breakers.default.remaining_cx"] == 0
    cb.connections.release()
    cb.connections.release()  # never below zero
    assert cb.connections.count == 0 and cb.stats()["circuit_breakers.default.remaining_cx"] == 1


def test_default_retries_are_three():
    cb = CircuitBreakers(CircuitBreakerThresholds())
    assert [cb.retries.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert cb.stats()["upstream_rq_retry_overflow"] == 1


def test_retry_budget_scales_with_outstanding_requests():
    cb = CircuitBreakers(CircuitBreakerThresholds(retry_budget_percent=20.0,
                                                  min_retry_concurrency=2))
    assert [cb.retries.try_acquire() for _ in range(3)] == [True, True, False]
    for _ in range(30):
        cb.requests.try_acquire()
    assert cb.retries.remaining == 4  # 20% of 30 = 6, 2 in use
    assert all(cb.retries.try_acquire() for _ in range(4)) and not cb.retries.try_acquire()


def test_generated_connection_pool_limits():
    clusters = build_clusters(push_with(TRAFFIC_POLICY_YAML, with_samples=False),
                              sidecar_proxy())
    reviews = next(c for c in clusters if c.name.startswith("outbound|9080||reviews"))
    cb = CircuitBreakers(compile_cluster(reviews).circuit_breakers)
    assert sum(cb.pending_requests.try_acquire() for _ in range(12)) == 10
    assert sum(cb.connections.try_acquire() for _ in range(120)) == 100
