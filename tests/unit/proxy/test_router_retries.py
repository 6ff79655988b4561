"""Retries, timeouts, outlier feedback, mirroring and access logs through a real listener."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import outlier_detection_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import duration_pb2

from tests.unit.proxy.http_fixtures import (
    Env,
    eds_cluster,
    fetch,
    load_assignment,
    proxy_env,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


def ms(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


def action(cluster: str = "svc", **fields) -> rc.RouteAction:
    return rc.RouteAction(cluster=cluster, **fields)


def retry(retry_on: str, n: int = 2, per_try_ms: int = 0, **fields) -> rc.RetryPolicy:
    p = rc.RetryPolicy(retry_on=retry_on, num_retries={"value": n}, **fields)
    if per_try_ms:
        p.per_try_timeout.CopyFrom(ms(per_try_ms))
    p.retry_back_off.base_interval.CopyFrom(ms(5))
    return p


async def two_host_env(env: Env, route_action: rc.RouteAction, **vhost) -> None:
    a, b = await env.start("a", "b")
    await env.apply(
        [route_config("http", [route(match=rc.RouteMatch(prefix="/"), route=route_action)],
                      **vhost)],
        clusters=[eds_cluster("svc")],
        assignments=[load_assignment("svc", [a.port, b.port])],
    )


async def test_retry_on_503_lands_on_the_other_host(env: Env) -> None:
    await two_host_env(env, action(retry_policy=retry("5xx", retry_host_predicate=[
        rc.RetryPolicy.RetryHostPredicate(name="envoy.retry_host_predicates.previous_hosts")])),
        include_request_attempt_count=True, include_attempt_count_in_response=True)
    for _ in range(6):
        r = await fetch(env.port, "/", headers={"x-fail-on": "a"})
        assert r.status == 200 and r.json()["server"] == "b"
    c = env.proxy.counter  # type: ignore[union-attr]
    assert c("cluster.svc.upstream_rq_retry") >= 1
    assert c("cluster.svc.upstream_rq_retry_success") == c("cluster.svc.upstream_rq_retry")
    assert c("cluster.svc.upstream_rq_503") == c("cluster.svc.upstream_rq_retry")
    r = await fetch(env.port, "/", headers={"x-fail-on": "a,b"})
    assert r.status == 503  # the last upstream 503 stands, flag URX
    assert r.headers["x-envoy-attempt-count"] == "3"
    assert r.json()["headers"]["x-envoy-attempt-count"] == "3"
    assert c("cluster.svc.upstream_rq_retry_limit_exceeded") == 1
    breakers = env.proxy.clusters.get("svc").circuit_breakers  # type: ignore[union-attr]
    assert (breakers.retries.count, breakers.requests.count) == (0, 0)  # every token returned


async def test_retry_on_reset_and_connect_failure(env: Env) -> None:
    a, b = await env.start("a", "b")
    dead = b.port
    await b.close()
    await env.apply(
        [route_config("http", [route(match=rc.RouteMatch(prefix="/"),
                                     route=action(retry_policy=retry("connect-failure,reset")))])],
        clusters=[eds_cluster("svc")],
        assignments=[load_assignment("svc", [a.port, dead])],
    )
    for _ in range(4):
        assert (await fetch(env.port, "/")).status == 200
    r = await fetch(env.port, "/", headers={"x-close-on": "a"})
    assert r.status == 503
    assert r.body.startswith(b"upstream connect error or disconnect/reset before headers. "
                             b"retried and the latest reset reason: ")


async def test_no_retry_policy_reports_connect_failure(env: Env) -> None:
    (a,) = await env.start("a")
    port = a.port
    await a.close()
    await env.apply([route_config("http", [route("/", cluster="a")])],
                    assignments=[load_assignment("a", [port])])
    r = await fetch(env.port, "/")
    assert r.status == 503
    assert r.body == (b"upstream connect error or disconnect/reset before headers. reset reason: "
                      b"connection failure")


async def test_per_try_and_route_timeouts(env: Env) -> None:
    await two_host_env(env, action(timeout=ms(500), retry_policy=retry("5xx", 1, per_try_ms=150)))
    start = time.monotonic()
    r = await fetch(env.port, "/", headers={"x-delay-ms": "400"})
    elapsed = time.monotonic() - start
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert 0.25 < elapsed < 0.7, elapsed  # two tries of 150 ms (not the 400 ms reply)
    c = env.proxy.counter  # type: ignore[union-attr]
    assert c("cluster.svc.upstream_rq_per_try_timeout") == 2
    assert r.headers.get("x-envoy-upstream-service-time") is None


async def test_route_timeout(env: Env) -> None:
    (a,) = await env.start("a")
    await env.apply([route_config("http", [
        route(match=rc.RouteMatch(prefix="/"), route=action("a", timeout=ms(200)))])])
    start = time.monotonic()
    r = await fetch(env.port, "/", headers={"x-delay-ms": "1000"})
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert time.monotonic() - start < 0.6
    assert env.proxy.counter("cluster.a.upstream_rq_timeout") == 1  # type: ignore[union-attr]
    assert (await fetch(env.port, "/")).status == 200


INTERNAL_10 = {"internal_address_config": {
    "cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": {"value": 8}}]}}


async def test_timeout_request_headers_override_the_route(env: Env) -> None:
    """On an internal request (x-forwarded-for holds one address inside
    internal_address_config), x-envoy-upstream-rq-timeout-ms and -per-try-timeout-ms replace
    the route's timeouts and are not forwarded; the upstream learns the timeout in force."""
    (a,) = await env.start("a")
    await env.apply([route_config("http", [
        route(match=rc.RouteMatch(prefix="/"), route=action("a", timeout=ms(5000)))])],
        hcm_fields=INTERNAL_10)
    internal = {"x-forwarded-for": "10.1.2.3"}
    start = time.monotonic()
    r = await fetch(env.port, "/", headers={**internal, "x-delay-ms": "1000",
                                            "x-envoy-upstream-rq-timeout-ms": "150"})
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert time.monotonic() - start < 0.6
    got = a.received[-1].headers
    assert "x-envoy-upstream-rq-timeout-ms" not in got
    assert got["x-envoy-expected-rq-timeout-ms"] == "150"
    assert got["x-envoy-internal"] == "true"
    r = await fetch(env.port, "/", headers={**internal,
                                            "x-envoy-upstream-rq-per-try-timeout-ms": "250"})
    assert r.status == 200
    got = r.json()["headers"]
    assert got["x-envoy-expected-rq-timeout-ms"] == "250"  # the per-try timeout, below 5 s
    assert "x-envoy-upstream-rq-per-try-timeout-ms" not in got
    r = await fetch(env.port, "/", headers={**internal, "x-envoy-upstream-rq-timeout-ms": "soon"})
    assert r.json()["headers"]["x-envoy-expected-rq-timeout-ms"] == "5000"  # ignored


async def test_external_requests_cannot_steer_the_proxy(env: Env) -> None:
    """Without x-forwarded-for, or with one outside internal_address_config, a request is
    external: Envoy strips the x-envoy-* headers that would change retries, timeouts or
    tracing before anything reads them, and a client's own x-envoy-internal."""
    (a,) = await env.start("a")
    await env.apply([route_config("http", [
        route(match=rc.RouteMatch(prefix="/"), route=action("a", timeout=ms(5000)))])],
        hcm_fields=INTERNAL_10)
    steering = {"x-envoy-upstream-rq-timeout-ms": "150", "x-envoy-retry-on": "5xx",
                "x-envoy-max-retries": "3", "x-envoy-force-trace": "true",
                "x-envoy-internal": "true", "x-envoy-decorator-operation": "op"}
    for extra in ({}, {"x-forwarded-for": "203.0.113.9"}, {"x-forwarded-for": "10.0.0.1,10.0.0.2"}):
        r = await fetch(env.port, "/", headers={**steering, **extra, "x-delay-ms": "300"})
        assert r.status == 200  # the 150 ms timeout was not taken
        got = r.json()["headers"]
        assert got["x-envoy-expected-rq-timeout-ms"] == "5000"
        for name in ("x-envoy-upstream-rq-timeout-ms", "x-envoy-retry-on", "x-envoy-max-retries",
                     "x-envoy-force-trace", "x-envoy-internal"):
            assert name not in got, (extra, name)
        assert got["x-envoy-decorator-operation"] == "op"  # stripped at the edge only
        assert got.get("x-forwarded-for") == extra.get("x-forwarded-for")  # not appended


GRPC = {"content-type": "application/grpc"}


async def test_max_grpc_timeout_takes_the_callers_grpc_timeout(env: Env) -> None:
    """Istio's routes carry max_grpc_timeout (= the route timeout): a gRPC call's own
    grpc-timeout replaces the route timeout (capped by it), less grpc_timeout_offset, and is
    what the upstream is sent; without grpc-timeout there is no timeout at all."""
    (a,) = await env.start("a")
    routes = [route_config("http", [
        route(match=rc.RouteMatch(prefix="/capped"),
              route=action("a", timeout=ms(300), max_grpc_timeout=ms(300))),
        route(match=rc.RouteMatch(prefix="/offset"),
              route=action("a", timeout=ms(300), max_grpc_timeout=ms(0),
                           grpc_timeout_offset=ms(50))),
        route(match=rc.RouteMatch(prefix="/plain"), route=action("a", timeout=ms(300))),
    ])]
    await env.apply(routes)
    r = await fetch(env.port, "/capped", headers={**GRPC, "grpc-timeout": "10S"})
    assert a.received[-1].headers["grpc-timeout"] == "300m"  # capped by max_grpc_timeout
    assert a.received[-1].headers["x-envoy-expected-rq-timeout-ms"] == "300"
    r = await fetch(env.port, "/offset", headers={**GRPC, "grpc-timeout": "200m"})
    assert a.received[-1].headers["grpc-timeout"] == "150m"
    start = time.monotonic()
    r = await fetch(env.port, "/offset", headers={**GRPC, "grpc-timeout": "150m",
                                                  "x-delay-ms": "1000"})
    assert r.headers.get("grpc-status") == "14" or r.status == 504
    assert time.monotonic() - start < 0.6  # 150 ms less 50, not the route's 300
    # No grpc-timeout and max_grpc_timeout 0: no timeout, the route's 300 ms do not apply.
    r = await fetch(env.port, "/offset", headers={**GRPC, "x-delay-ms": "500"})
    assert r.status == 200 and r.json()["server"] == "a"
    assert "grpc-timeout" not in a.received[-1].headers
    # A route without max_grpc_timeout keeps its timeout for gRPC calls too.
    r = await fetch(env.port, "/plain", headers={**GRPC, "grpc-timeout": "10S",
                                                 "x-delay-ms": "1000"})
    assert r.headers.get("grpc-status") == "14" or r.status == 504


async def test_post_body_is_replayed_on_retry(env: Env) -> None:
    await two_host_env(env, action(retry_policy=retry("5xx", 3, retry_host_predicate=[
        rc.RetryPolicy.RetryHostPredicate(name="envoy.retry_host_predicates.previous_hosts")])))
    for _ in range(4):
        r = await fetch(env.port, "/", method="POST", body=b"payload" * 1000,
                        headers={"x-fail-on": "a"})
        assert r.status == 200
        assert r.json()["body"] == "payload" * 1000


async def test_outlier_detection_ejects_failing_host(env: Env) -> None:
    a, b = await env.start("a", "b")
    od = outlier_detection_pb2.OutlierDetection(consecutive_5xx={"value": 2},
                                                max_ejection_percent={"value": 50})
    await env.apply(
        [route_config("http", [route("/", cluster="svc")])],
        clusters=[eds_cluster("svc", outlier_detection=od)],
        assignments=[load_assignment("svc", [a.port, b.port])],
    )
    for _ in range(8):
        await fetch(env.port, "/", headers={"x-fail-on": "a"})
    servers = [(await fetch(env.port, "/", headers={"x-fail-on": "a"})).json()["server"]
               for _ in range(6)]
    assert servers == ["b"] * 6


async def test_mirror_reaches_shadow_cluster_with_suffixed_host(env: Env) -> None:
    main, shadow = await env.start("main", "shadow")
    mirror = rc.RouteAction.RequestMirrorPolicy(cluster="shadow")
    await env.apply([route_config("http", [route(match=rc.RouteMatch(prefix="/"), route=action(
        "main", request_mirror_policies=[mirror]))])])
    r = await fetch(env.port, "/m", host="reviews:9080", method="POST", body=b"hello",
                    headers={"x-delay-ms": "0"})
    assert r.status == 200 and r.json()["server"] == "main"
    for _ in range(50):
        if shadow.received:
            break
        await asyncio.sleep(0.02)
    got = shadow.received[0]
    assert got.headers["host"] == "reviews-shadow:9080"
    assert got.body == b"hello"
    assert main.received[0].headers["host"] == "reviews:9080"


async def test_failing_mirror_never_fails_the_request(env: Env) -> None:
    (main,) = await env.start("main")
    mirror = rc.RouteAction.RequestMirrorPolicy(cluster="gone")
    await env.apply([route_config("http", [route(match=rc.RouteMatch(prefix="/"), route=action(
        "main", request_mirror_policies=[mirror]))])],
        clusters=[eds_cluster("main"), eds_cluster("gone")],
        assignments=[load_assignment("main", [main.port]), load_assignment("gone", [1])])
    for _ in range(3):
        assert (await fetch(env.port, "/")).status == 200


async def test_access_log_written_at_stream_end(env: Env, tmp_path) -> None:
    log_path = tmp_path / "access.log"
    await env.start("a")
    await env.apply([route_config("http", [route("/", cluster="a")], domains=["example.com"])],
                    access_log_path=str(log_path))
    await fetch(env.port, "/x")
    await fetch(env.port, "/y", host="nope")
    from pistio.proxy.http.connection_manager import AccessLogFile

    AccessLogFile.flush_all()
    lines = log_path.read_text().splitlines()
    assert len(lines) == 2
    assert '"GET /x HTTP/1.1" 200 - ' in lines[0]
    assert '"GET /y HTTP/1.1" 404 NR ' in lines[1]


async def test_cluster_tcp_keepalive_on_upstream_sockets(env: Env) -> None:
    """upstream_connection_options.tcp_keepalive (Istio: connectionPool.tcp.tcpKeepalive)
    turns on SO_KEEPALIVE with the cluster's probes, idle time and interval."""
    import socket

    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import address_pb2

    (a,) = await env.start("a")
    cluster = eds_cluster("a")
    cluster.upstream_connection_options.CopyFrom(cluster_pb2.UpstreamConnectionOptions(
        tcp_keepalive=address_pb2.TcpKeepalive(keepalive_probes={"value": 3},
                                               keepalive_time={"value": 45},
                                               keepalive_interval={"value": 7})))
    await env.apply([route_config("http", [route("/", cluster="a")])], clusters=[cluster])
    assert (await fetch(env.port, "/")).status == 200
    runtime = env.proxy.clusters.clusters["a"]  # type: ignore[union-attr]
    (pool,) = runtime.pools(asyncio.get_running_loop())._pools.values()
    (conn,) = pool.idle
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert [sock.getsockopt(socket.IPPROTO_TCP, o) for o in (
        socket.TCP_KEEPCNT, socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL)] == [3, 45, 7]
