"""Envoy's circuit breakers: per-cluster limits on connections, pending requests, active
requests and active retries, counted on one worker.

Each resource is a counter with a limit. The router and the connection pool ask before they
take one (``try_acquire``) and give it back when done (``release``); a refusal is an
*overflow*: the router answers 503 with response flag ``UO`` (or, for retries, gives up
retrying) and the matching ``upstream_*_overflow`` counter goes up. A retry budget, when
configured, replaces the fixed ``max_retries`` by a percentage of active plus pending requests
(with a floor of ``min_retry_concurrency``).

Envoy's limits are shared by all workers of a process; pistio's workers are processes, so a
worker enforces ``limit`` on its own traffic. Istio's default (no connection pool settings) is
the 2^32-1 "unlimited", which is unaffected; explicit small limits are per worker — the
documented difference.
"""

from __future__ import annotations

from pistio.proxy.config.cluster_config import CircuitBreakerThresholds


class Resource:
    """One limited resource: ``count`` in use, at most ``limit``."""

    __slots__ = ("limit", "count", "overflows")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.overflows = 0

    def can_create(self) -> bool:
        return self.count < self.limit

    def try_acquire(self) -> bool:
        """Take one unit; on overflow count it and return False."""
        if self.count < self.limit:
            self.count += 1
            return True
        self.overflows += 1
        return False

    def release(self) -> None:
        if self.count > 0:
            self.count -= 1

    @property
    def remaining(self) -> int:
        """The ``remaining_*`` gauge Envoy reports with ``track_remaining``."""
        return max(0, self.limit - self.count)


class RetryResource(Resource):
    """``max_retries``, or a retry budget relative to the cluster's outstanding requests."""

    __slots__ = ("_breakers", "_budget_percent", "_min_concurrency")

    def __init__(
        self,
        limit: int,
        breakers: CircuitBreakers,
        budget_percent: float | None,
        min_concurrency: int,
    ) -> None:
        super().__init__(limit)
        self._breakers = breakers
        self._budget_percent = budget_percent
        self._min_concurrency = min_concurrency

    def _current_limit(self) -> int:
        if self._budget_percent is None:
            return self.limit
        outstanding = self._breakers.requests.count + self._breakers.pending_requests.count
        return max(self._min_concurrency, int(outstanding * self._budget_percent / 100.0))

    def can_create(self) -> bool:
        return self.count < self._current_limit()

    def try_acquire(self) -> bool:
        if self.count < self._current_limit():
            self.count += 1
            return True
        self.overflows += 1
        return False

    @property
    def remaining(self) -> int:
        return max(0, self._current_limit() - self.count)


class CircuitBreakers:
    """The four resources of one cluster (DEFAULT routing priority)."""

    __slots__ = ("connections", "pending_requests", "requests", "retries", "track_remaining")

    def __init__(self, thresholds: CircuitBreakerThresholds) -> None:
        self.connections = Resource(thresholds.max_connections)
        self.pending_requests = Resource(thresholds.max_pending_requests)
        self.requests = Resource(thresholds.max_requests)
        self.retries = RetryResource(
            thresholds.max_retries,
            self,
            thresholds.retry_budget_percent,
            thresholds.min_retry_concurrency,
        )
        self.track_remaining = thresholds.track_remaining

    def stats(self) -> dict[str, int]:
        """Envoy's overflow counters and open/remaining gauges under their names."""
        out = {
            "upstream_cx_overflow": self.connections.overflows,
            # Envoy counts both the pending and the (HTTP/2) request limit here.
            "upstream_rq_pending_overflow": self.pending_requests.overflows
            + self.requests.overflows,
            "upstream_rq_retry_overflow": self.retries.overflows,
            "circuit_breakers.default.cx_open": int(not self.connections.can_create()),
            "circuit_breakers.default.rq_pending_open": int(
                not self.pending_requests.can_create()
            ),
            "circuit_breakers.default.rq_open": int(not self.requests.can_create()),
            "circuit_breakers.default.rq_retry_open": int(not self.retries.can_create()),
        }
        if self.track_remaining:
            out["circuit_breakers.default.remaining_cx"] = self.connections.remaining
            out["circuit_breakers.default.remaining_pending"] = self.pending_requests.remaining
            out["circuit_breakers.default.remaining_rq"] = self.requests.remaining
            out["circuit_breakers.default.remaining_retries"] = self.retries.remaining
        return out
