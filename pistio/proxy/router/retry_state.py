"""Envoy's retry state for one request: may this attempt's outcome be retried, and when.

The conditions (``retry_on``) as Envoy's router applies them:

- a response: ``5xx`` any 5xx; ``gateway-error`` 502, 503, 504; ``retriable-4xx`` 409;
  ``retriable-status-codes`` a code from ``retriable_status_codes``; ``retriable-headers`` a
  response header matching one of ``retriable_headers``;
- no response (the upstream reset or closed, or the per-try timeout fired): ``5xx``,
  ``gateway-error`` and ``reset``; a failed or timed-out *connect* also ``connect-failure``;
  ``refused-stream`` is an HTTP/2 reset code and never occurs on HTTP/1.1;
- gRPC (``x-envoy-retry-grpc-on`` names, also accepted in ``retry_on``): ``cancelled``,
  ``deadline-exceeded``, ``internal``, ``resource-exhausted``, ``unavailable`` match the
  ``grpc-status`` of a response's *headers* (a trailers-only response): Envoy decides retries
  when the headers arrive, and a status in trailers comes after the response went downstream.

Each retry needs a token from the cluster's ``max_retries`` circuit breaker (refused: the
outcome stands and ``upstream_rq_retry_overflow`` counts it) and waits Envoy's jittered
exponential back-off (``retry_backoff``). When retries are exhausted on a retriable outcome,
the request gets the ``URX`` response flag. Retries happen only while nothing of the response
went downstream and while the request body is fully buffered (the router's decision).
"""

from __future__ import annotations

import random

from pistio.proxy.config.route_action import RetryOn, RetryPolicy, retry_backoff
from pistio.proxy.http import http2_grpc as grpc
from pistio.proxy.http.headers import Fields
from pistio.proxy.upstream.circuit_breaker import CircuitBreakers

# Plain-int masks: the request path does no enum arithmetic.
_ON_RESET = int(RetryOn.FIVE_XX | RetryOn.GATEWAY_ERROR | RetryOn.RESET)
_ON_CONNECT_FAILURE = _ON_RESET | int(RetryOn.CONNECT_FAILURE)
GRPC_RETRY_ON = int(RetryOn.GRPC_CANCELLED | RetryOn.GRPC_DEADLINE_EXCEEDED
                    | RetryOn.GRPC_INTERNAL | RetryOn.GRPC_RESOURCE_EXHAUSTED
                    | RetryOn.GRPC_UNAVAILABLE)
_RETRIABLE_HEADERS = int(RetryOn.RETRIABLE_HEADERS)
_GRPC_STATUS_RETRY_ON = {
    grpc.CANCELLED: int(RetryOn.GRPC_CANCELLED),
    grpc.DEADLINE_EXCEEDED: int(RetryOn.GRPC_DEADLINE_EXCEEDED),
    grpc.INTERNAL: int(RetryOn.GRPC_INTERNAL),
    grpc.RESOURCE_EXHAUSTED: int(RetryOn.GRPC_RESOURCE_EXHAUSTED),
    grpc.UNAVAILABLE: int(RetryOn.GRPC_UNAVAILABLE),
}


def response_is_retriable(policy: RetryPolicy, status: int, fields: Fields) -> bool:
    """May a response with ``status`` and ``fields`` be retried under ``policy``? The status
    alone decides through the policy's precomputed ``retriable_statuses``; the headers are
    read only when the policy has header-driven conditions."""
    if status in policy.retriable_statuses:
        return True
    if not policy.header_driven:
        return False
    on = policy.retry_on_bits
    if on & GRPC_RETRY_ON:
        code = grpc.grpc_status_of(fields)
        if code is not None and on & _GRPC_STATUS_RETRY_ON.get(code, 0):
            return True
    if on & _RETRIABLE_HEADERS and policy.retriable_headers:
        index = {n.lower(): v for n, v in fields}
        return any(m.matches_headers(index) for m in policy.retriable_headers)
    return False


def reset_is_retriable(policy: RetryPolicy, connect_failure: bool) -> bool:
    return bool(policy.retry_on_bits & (_ON_CONNECT_FAILURE if connect_failure else _ON_RESET))


class RetryState:
    """Counts the retries of one request against its policy. The router creates it only
    when an outcome is retriable (most requests never need one)."""

    __slots__ = ("policy", "retry_on", "retries_left", "retries_done", "tried_hosts")

    def __init__(self, policy: RetryPolicy, tried_hosts: list[object] | None = None) -> None:
        self.policy = policy
        self.retry_on = policy.retry_on_bits
        self.retries_left = policy.num_retries
        self.retries_done = 0
        # Hosts already tried, for the previous_hosts predicate.
        self.tried_hosts: list[object] = tried_hosts if tried_hosts is not None else []

    def response_is_retriable(self, status: int, fields: Fields) -> bool:
        return response_is_retriable(self.policy, status, fields)

    def reset_is_retriable(self, connect_failure: bool) -> bool:
        return reset_is_retriable(self.policy, connect_failure)

    def take_retry(self, breakers: CircuitBreakers) -> bool | None:
        """Spend one retry: True if granted, None when the limit is exhausted (URX), False
        when the circuit breaker refused it (overflow)."""
        if self.retries_left <= 0:
            return None
        if not breakers.retries.try_acquire():
            return False
        self.retries_left -= 1
        self.retries_done += 1
        return True

    def backoff(self) -> float:
        return retry_backoff(self.policy, self.retries_done - 1, random.getrandbits(32))
