"""Envoy's local rate limit filter (``envoy.filters.http.local_ratelimit``): compiled configs,
the token bucket, and requests through a real listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.local_rate_limit import TokenBucket, compile_local_rate_limit
from pistio.proxy.http.connection_manager import AccessLogFile
from tests.unit.proxy.http_fixtures import (
    KeepAliveClient,
    fetch,
    pack,
    proxy_env,
    route,
    route_config,
)

NAME = "envoy.filters.http.local_ratelimit"
ALL = {"default_value": {"numerator": 100}}
NONE = {"default_value": {"numerator": 0}}


def limit(max_tokens: int | None = 2, interval_s: int = 60, enforced: dict = ALL,
          **fields: Any) -> lrl.LocalRateLimit:
    msg = lrl.LocalRateLimit(stat_prefix="http_local_rate_limiter", filter_enabled=ALL,
                             filter_enforced=enforced, **fields)
    if max_tokens is not None:
        msg.token_bucket.max_tokens = max_tokens
        msg.token_bucket.tokens_per_fill.value = max_tokens
        msg.token_bucket.fill_interval.seconds = interval_s
    return msg


def rate_limit_filter(msg: lrl.LocalRateLimit) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=NAME, typed_config=pack(msg))


def test_token_bucket_fills_on_the_ticks() -> None:
    b = TokenBucket(3, 2, 1.0)
    assert [b.consume() for _ in range(4)] == [True, True, True, False]
    b.last_fill -= 1.5  # one tick has passed (and half of the next)
    assert [b.consume() for _ in range(3)] == [True, True, False]
    b.last_fill -= 10  # many ticks: never above max_tokens
    assert [b.consume() for _ in range(4)] == [True, True, True, False]


def test_compile_errors_name_the_field() -> None:
    bad = limit(interval_s=0, descriptors=[{"entries": [{"key": "k", "value": "v"}]}])
    bad.token_bucket.fill_interval.nanos = 10_000_000
    bad.stat_prefix = ""
    with pytest.raises(ConfigError) as err:
        compile_local_rate_limit(bad, "f")
    assert err.value.problems == [
        "f.descriptors: field not supported by pistio",
        "f.stat_prefix: must not be empty",
        "f.token_bucket.fill_interval: must be at least 50ms",
    ]
    low = limit(status={"code": 200})
    assert compile_local_rate_limit(low, "f").status == 429  # below 400: Envoy's 429
    unset = compile_local_rate_limit(lrl.LocalRateLimit(stat_prefix="x"), "f")
    assert not unset.enabled.enabled(0) and not unset.enforced.enabled(0)  # both default 0 %


@pytest.mark.asyncio
async def test_enforced_limit_answers_429_with_flag_rl(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    msg = limit(2, response_headers_to_add=[{"header": {"key": "x-local-rate-limit",
                                                        "value": "true"}}])
    access = accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(
        file_pb2.FileAccessLog(path=str(log), log_format={"text_format_source": {
            "inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}})))
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [route("/", cluster="app")])],
                        first_filters=[rate_limit_filter(msg)], hcm_fields={"access_log": [access]})
        codes = [(await fetch(env.port, "/")).status for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await fetch(env.port, "/")
        assert (r.status, r.body) == (429, b"local_rate_limited")
        assert r.headers["x-local-rate-limit"] == "true"
        grpc = await fetch(env.port, "/", headers={"content-type": "application/grpc"})
        assert (grpc.status, grpc.headers["grpc-status"]) == (200, "14")  # UNAVAILABLE
        c = env.proxy.counter  # type: ignore[union-attr]
        prefix = "http_local_rate_limiter.http_local_rate_limit."
        assert [c(prefix + n) for n in ("enabled", "ok", "rate_limited", "enforced")] == \
            [5, 2, 3, 3]
        AccessLogFile.flush_all()
    assert log.read_text().splitlines()[:3] == [
        "200 - via_upstream", "200 - via_upstream", "429 RL local_rate_limited"]


@pytest.mark.asyncio
async def test_not_enforced_marks_the_request_and_lets_it_through() -> None:
    msg = limit(1, enforced=NONE, request_headers_to_add_when_not_enforced=[
        {"header": {"key": "x-over-limit", "value": "yes"}}])
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [route("/", cluster="app")])],
                        first_filters=[rate_limit_filter(msg)])
        first = (await fetch(env.port, "/")).json()["headers"]
        second = await fetch(env.port, "/")
        assert "x-over-limit" not in first
        assert second.status == 200 and second.json()["headers"]["x-over-limit"] == "yes"
        c = env.proxy.counter  # type: ignore[union-attr]
        assert c("http_local_rate_limiter.http_local_rate_limit.rate_limited") == 1
        assert c("http_local_rate_limiter.http_local_rate_limit.enforced") == 0


@pytest.mark.asyncio
async def test_per_route_bucket_x_ratelimit_headers_and_per_connection() -> None:
    """The filter's own config has no bucket (limits nothing); a route's
    typed_per_filter_config brings its own bucket; DRAFT_VERSION_03 headers report it; with
    local_rate_limit_per_downstream_connection every connection has a bucket of its own."""
    limited = route("/limited", cluster="app", typed_per_filter_config={
        NAME: pack(limit(1, enable_x_ratelimit_headers=1))})
    per_conn = route("/per-conn", cluster="app", typed_per_filter_config={
        NAME: pack(limit(1, local_rate_limit_per_downstream_connection=True))})
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [limited, per_conn, route("/", cluster="app")])],
                        first_filters=[rate_limit_filter(limit(None))])
        assert [(await fetch(env.port, "/")).status for _ in range(3)] == [200] * 3
        ok = await fetch(env.port, "/limited")
        assert ok.status == 200
        assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("1", "0")
        assert 0 <= int(ok.headers["x-ratelimit-reset"]) <= 60
        over = await fetch(env.port, "/limited")
        assert over.status == 429 and over.headers["x-ratelimit-remaining"] == "0"
        # a fresh connection per request: a fresh bucket each time
        assert [(await fetch(env.port, "/per-conn")).status for _ in range(3)] == [200] * 3
        client = KeepAliveClient(env.port)
        try:
            assert [(await client.request("/per-conn")).status for _ in range(2)] == [200, 429]
        finally:
            client.close()
