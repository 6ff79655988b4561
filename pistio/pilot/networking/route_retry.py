"""VirtualService retries → Envoy ``RetryPolicy`` (Istio's ``route/retry/retry.go``).

Istio retries every outbound HTTP route by default: 2 retries on
``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`` with 503 as
the retriable status code, preferring hosts not tried yet (``previous_hosts`` predicate,
5 host selection attempts). ``attempts: 0`` turns retries off. With consistent hashing the
previous-hosts predicate is left out, since the hash must keep choosing the same host.
"""

from __future__ import annotations

from http import HTTPStatus

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from google.protobuf import duration_pb2, wrappers_pb2

from pistio.api import networking as net
from pistio.xds.any_codec import pack

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_ATTEMPTS = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
_HTTP_STATUS_CODES = frozenset(s.value for s in HTTPStatus)


def previous_hosts_predicate() -> rc.RetryPolicy.RetryHostPredicate:
    return rc.RetryPolicy.RetryHostPredicate(
        name=PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate())
    )


def default_retry_policy(consistent_hash: bool = False) -> rc.RetryPolicy:
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=DEFAULT_ATTEMPTS),
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
        retriable_status_codes=[503],
    )
    if not consistent_hash:
        policy.retry_host_predicate.append(previous_hosts_predicate())
    return policy


def convert_retry_policy(
    retries: net.HTTPRetry | None, consistent_hash: bool = False
) -> rc.RetryPolicy | None:
    """Istio's ``ConvertPolicy``: the default, overridden by what the VirtualService sets;
    None when ``attempts`` is 0 or less (retries disabled)."""
    out = default_retry_policy(consistent_hash)
    if retries is None:
        return out
    if retries.attempts <= 0:
        return None
    out.num_retries.value = retries.attempts
    if retries.retry_on:
        retry_on, codes = parse_retry_on(retries.retry_on)
        out.retry_on = retry_on
        del out.retriable_status_codes[:]
        out.retriable_status_codes.extend(codes)
        if codes and "retriable-status-codes" not in retry_on:
            out.retry_on = retry_on + ",retriable-status-codes"
    if retries.per_try_timeout is not None:
        out.per_try_timeout.CopyFrom(to_duration(retries.per_try_timeout.seconds))
    if retries.retry_ignore_previous_hosts is not None:
        del out.retry_host_predicate[:]
        if retries.retry_ignore_previous_hosts:
            out.retry_host_predicate.append(previous_hosts_predicate())
    if retries.retry_remote_localities:
        out.retry_priority.CopyFrom(
            rc.RetryPolicy.RetryPriority(
                name=PREVIOUS_PRIORITIES,
                typed_config=pack(
                    previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
                ),
            )
        )
    if retries.backoff is not None:
        out.retry_back_off.base_interval.CopyFrom(to_duration(retries.backoff.seconds))
    return out


def parse_retry_on(text: str) -> tuple[str, list[int]]:
    """Split ``retryOn`` into Envoy retry conditions and HTTP status codes."""
    conditions: list[str] = []
    codes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and int(part) in _HTTP_STATUS_CODES:
            codes.append(int(part))
        else:
            conditions.append(part)
    return ",".join(conditions), codes


def to_duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
