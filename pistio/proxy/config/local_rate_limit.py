"""``envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit``, compiled.

The filter's own config (``http_filters``) and a route's, virtual host's or route
configuration's ``typed_per_filter_config`` compile the same way; each compiled config owns
its token bucket, shared by the whole proxy as in Envoy (with worker processes, through
``pistio.proxy.runtime.shared_buckets``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_action import (
    NO_MUTATION,
    HeaderMutation,
    compile_header_mutation,
)
from pistio.proxy.config.route_match import NEVER, Fraction, compile_runtime_fraction
from pistio.proxy.config.unsupported import field_path, unsupported_fields
from pistio.proxy.runtime import shared_buckets
from pistio.proxy.runtime.shared_buckets import bucket_key

LOCAL_RATE_LIMIT_TYPE = ("type.googleapis.com/"
                         + local_rate_limit_pb2.LocalRateLimit.DESCRIPTOR.full_name)
# Envoy refuses faster fill timers.
MIN_FILL_INTERVAL = 0.05
TOO_MANY_REQUESTS = 429

ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": frozenset({
        "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
        "request_headers_to_add_when_not_enforced", "response_headers_to_add",
        "local_rate_limit_per_downstream_connection", "enable_x_ratelimit_headers",
        "rate_limited_as_resource_exhausted",
    }),
    "envoy.type.v3.TokenBucket": frozenset({"max_tokens", "tokens_per_fill", "fill_interval"}),
    "envoy.config.core.v3.RuntimeFractionalPercent": frozenset({"default_value", "runtime_key"}),
    "envoy.type.v3.FractionalPercent": frozenset({"numerator", "denominator"}),
}


class TokenBucket:
    """``max_tokens`` to start with; ``tokens_per_fill`` more every ``fill_interval`` seconds,
    never above ``max_tokens``. Filled lazily, on the ticks a fill timer would have fired.
    With a ``key`` and worker processes, the bucket lives in the proxy's shared table
    (``pistio.proxy.runtime.shared_buckets``), so all processes draw from one bucket."""

    __slots__ = ("max_tokens", "tokens_per_fill", "fill_interval", "tokens", "last_fill", "key")

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float,
                 key: int = 0) -> None:
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval = fill_interval
        self.tokens = max_tokens
        self.last_fill = time.monotonic()
        self.key = key

    def _fill(self, now: float) -> None:
        ticks = int((now - self.last_fill) / self.fill_interval)
        if ticks > 0:
            self.tokens = min(self.max_tokens, self.tokens + ticks * self.tokens_per_fill)
            self.last_fill += ticks * self.fill_interval

    def consume(self) -> bool:
        table = shared_buckets.current
        if table is not None and self.key:
            taken = table.take(self.key, self.max_tokens, self.tokens_per_fill,
                               self.fill_interval)
            if taken is not None:
                # The shared state, for x-ratelimit-remaining and -reset.
                allowed, self.tokens, self.last_fill = taken
                return allowed
        self._fill(time.monotonic())
        if self.tokens > 0:
            self.tokens -= 1
            return True
        return False

    def seconds_to_fill(self) -> int:
        """``x-ratelimit-reset``: whole seconds until the next fill."""
        remaining = self.last_fill + self.fill_interval - time.monotonic()
        return max(0, round(remaining))


@dataclass(frozen=True, slots=True)
class LocalRateLimitConfig:
    stat_prefix: str
    status: int
    bucket: tuple[int, int, float] | None  # (max_tokens, tokens_per_fill, fill_interval)
    enabled: Fraction
    enforced: Fraction
    response_headers: HeaderMutation
    request_headers_when_not_enforced: HeaderMutation
    per_connection: bool
    x_ratelimit_headers: bool
    resource_exhausted: bool
    # The bucket shared by every stream under this config (per_connection: one per
    # connection instead, kept by the filter).
    shared: TokenBucket | None = field(default=None, compare=False)

    def new_bucket(self) -> TokenBucket | None:
        return TokenBucket(*self.bucket) if self.bucket is not None else None


def unpack_local_rate_limit(typed: Any) -> local_rate_limit_pb2.LocalRateLimit:
    msg = local_rate_limit_pb2.LocalRateLimit()
    typed.Unpack(msg)
    return msg


def compile_local_rate_limit(msg: local_rate_limit_pb2.LocalRateLimit,
                             where: str) -> LocalRateLimitConfig:
    problems = unsupported_fields(msg, ALLOWED, where)
    if not msg.stat_prefix:
        problems.append(f"{field_path(where, 'stat_prefix')}: must not be empty")
    bucket = None
    if msg.HasField("token_bucket"):
        tb = msg.token_bucket
        at = field_path(where, "token_bucket")
        per_fill = tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1
        interval = tb.fill_interval.ToTimedelta().total_seconds()
        if tb.max_tokens < 1:
            problems.append(f"{at}.max_tokens: must be greater than 0")
        if per_fill < 1:
            problems.append(f"{at}.tokens_per_fill: must be greater than 0")
        if interval < MIN_FILL_INTERVAL:
            problems.append(f"{at}.fill_interval: must be at least 50ms")
        bucket = (tb.max_tokens, per_fill, interval)
    try:
        response = compile_header_mutation(msg.response_headers_to_add, (), where, "response")
        not_enforced = compile_header_mutation(msg.request_headers_to_add_when_not_enforced,
                                               (), field_path(where, "when_not_enforced"),
                                               "request")
    except ConfigError as err:
        problems.extend(err.problems)
        response = not_enforced = NO_MUTATION
    if problems:
        raise ConfigError(problems)
    code = msg.status.code if msg.HasField("status") else 0
    per_connection = msg.local_rate_limit_per_downstream_connection
    shared = None
    if bucket is not None and not per_connection:
        # The same key in every process: where the config sits and what it says.
        key = bucket_key(where.encode(), msg.SerializeToString(deterministic=True))
        shared = TokenBucket(*bucket, key=key)
    return LocalRateLimitConfig(
        stat_prefix=msg.stat_prefix,
        status=code if code >= 400 else TOO_MANY_REQUESTS,  # Envoy: below 400 means 429
        bucket=bucket,
        # Both default to 0 %: a filter nobody enabled limits nothing.
        enabled=compile_runtime_fraction(msg.filter_enabled)
        if msg.HasField("filter_enabled") else NEVER,
        enforced=compile_runtime_fraction(msg.filter_enforced)
        if msg.HasField("filter_enforced") else NEVER,
        response_headers=response,
        request_headers_when_not_enforced=not_enforced,
        per_connection=per_connection,
        x_ratelimit_headers=msg.enable_x_ratelimit_headers == 1,  # DRAFT_VERSION_03
        resource_exhausted=msg.rate_limited_as_resource_exhausted,
        shared=shared,
    )
