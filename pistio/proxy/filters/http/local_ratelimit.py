"""Envoy's local rate limit filter (``envoy.filters.http.local_ratelimit``): a token bucket.

The config in force for a request is the most specific ``typed_per_filter_config`` for the
filter's name (weighted cluster, route, virtual host, route configuration), else the
filter's own. Per request, as Envoy does: if ``filter_enabled`` does not pick it (default
0 %), nothing happens; else ``<stat_prefix>.http_local_rate_limit.enabled`` counts, and a
token is taken from the bucket (``ok``). With none left the request is ``rate_limited``; if
``filter_enforced`` picks it (default 0 %) it is answered with ``status`` (429) and the body
``local_rate_limited``, ``response_headers_to_add``, response flag ``RL`` (``enforced``);
if not, it goes on with ``request_headers_to_add_when_not_enforced``. gRPC requests get
``grpc-status`` UNAVAILABLE (RESOURCE_EXHAUSTED with ``rate_limited_as_resource_exhausted``).
``enable_x_ratelimit_headers: DRAFT_VERSION_03`` adds ``x-ratelimit-limit``,
``-remaining`` and ``-reset`` to responses of requests the bucket saw. A config without a
``token_bucket`` limits nothing.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.config.local_rate_limit import LocalRateLimitConfig, TokenBucket
from pistio.proxy.config.route_match import is_grpc_content_type
from pistio.proxy.http import http2_grpc
from pistio.proxy.http.headers import Fields
from pistio.proxy.router.header_mutation import mutate_request, mutate_response

if TYPE_CHECKING:
    from pistio.proxy.config.route_table import Route
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.stats.store import Counter, StatsStore

BODY = b"local_rate_limited"
_X_LIMIT = b"x-ratelimit-limit"
_X_REMAINING = b"x-ratelimit-remaining"
_X_RESET = b"x-ratelimit-reset"


class _Counters:
    __slots__ = ("enabled", "enforced", "rate_limited", "ok")

    def __init__(self, store: StatsStore, stat_prefix: str) -> None:
        prefix = f"{stat_prefix}.http_local_rate_limit."
        self.enabled: Counter = store.counter(prefix + "enabled")
        self.enforced: Counter = store.counter(prefix + "enforced")
        self.rate_limited: Counter = store.counter(prefix + "rate_limited")
        self.ok: Counter = store.counter(prefix + "ok")


class LocalRateLimitFilter:
    """One ``envoy.filters.http.local_ratelimit`` entry of a connection manager."""

    __slots__ = ("name", "config", "store", "_counters", "_per_connection", "_prune_at",
                 "_buckets_seen")

    # Route-scoped: the connection manager skips the filter (both ways) on routes where no
    # config with a token bucket applies.
    route_scoped = True

    def __init__(self, name: str, config: LocalRateLimitConfig, store: StatsStore) -> None:
        self.name = name
        self.config = config
        self.store = store
        self._counters: dict[str, _Counters] = {}
        # local_rate_limit_per_downstream_connection: (connection, config) -> the connection
        # and its bucket; closed connections are swept as the table grows.
        self._per_connection: dict[tuple[int, int], tuple[object, TokenBucket]] = {}
        self._prune_at = 64
        self._buckets_seen: dict[int, TokenBucket] = {}  # stream id -> the bucket it used

    def _config(self, route: Route | None) -> LocalRateLimitConfig | None:
        config = route.config_for(self.name, self.config) if route is not None else self.config
        return config if isinstance(config, LocalRateLimitConfig) else None

    def applies(self, route: Route | None) -> bool:
        config = self._config(route)
        return config is not None and config.bucket is not None

    def counters(self, config: LocalRateLimitConfig) -> _Counters:
        c = self._counters.get(config.stat_prefix)
        if c is None:
            c = self._counters[config.stat_prefix] = _Counters(self.store, config.stat_prefix)
        return c

    def _bucket(self, s: ActiveStream, config: LocalRateLimitConfig) -> TokenBucket | None:
        if not config.per_connection:
            return config.shared
        conn = s.stream.conn
        key = (id(conn), id(config))
        entry = self._per_connection.get(key)
        if entry is None or entry[0] is not conn:
            table = self._per_connection
            if len(table) >= self._prune_at:
                for k in [k for k, (c, _) in table.items() if getattr(c, "closed", True)]:
                    del table[k]
                self._prune_at = max(64, 2 * len(table))
            entry = table[key] = (conn, config.new_bucket())  # type: ignore[assignment]
        return entry[1]

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        config = self._config(s.route())
        if config is None or config.bucket is None:
            return True
        if not config.enabled.enabled(random.getrandbits(32)):
            return True
        counters = self.counters(config)
        counters.enabled.value += 1
        bucket = self._bucket(s, config)
        if bucket is None:
            return True
        if config.x_ratelimit_headers:
            self._buckets_seen[id(s)] = bucket
            s.on_end(lambda: self._buckets_seen.pop(id(s), None))
        if bucket.consume():
            counters.ok.value += 1
            return True
        counters.rate_limited.value += 1
        if not config.enforced.enabled(random.getrandbits(32)):
            if config.request_headers_when_not_enforced:
                mutate_request(s.stream.head, (config.request_headers_when_not_enforced,))
            return True
        counters.enforced.value += 1
        fields: Fields = mutate_response([], (config.response_headers,))
        if config.x_ratelimit_headers:  # its own reply skips this filter's encode_headers
            fields = self.encode_headers(s, config.status, fields)
        if is_grpc_content_type(_text(s.stream.head.index.get(b"content-type"))):
            code = (http2_grpc.RESOURCE_EXHAUSTED if config.resource_exhausted
                    else http2_grpc.grpc_status_for_http(config.status))
            fields += [(b"content-type", b"application/grpc"),
                       (b"grpc-status", b"%d" % code), (b"grpc-message", BODY)]
            s.send_local_reply(200, b"", fields, flag=rf.RATE_LIMITED,
                               details="local_rate_limited", filter_position=position)
        else:
            s.send_local_reply(config.status, BODY, fields, flag=rf.RATE_LIMITED,
                               details="local_rate_limited", filter_position=position)
        return False

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        bucket = self._buckets_seen.get(id(s))
        if bucket is None:
            return fields
        return fields + [(_X_LIMIT, b"%d" % bucket.max_tokens),
                         (_X_REMAINING, b"%d" % bucket.tokens),
                         (_X_RESET, b"%d" % bucket.seconds_to_fill())]


def _text(raw: bytes | None) -> str | None:
    return raw.decode("latin-1") if raw is not None else None
