"""The router through a real listener on 127.0.0.1 (listener manager, connection manager and
router on the test's loop): routing, local replies, header mutations, rewrites, weighted
clusters, circuit breakers, config swaps."""

from __future__ import annotations

import asyncio
import collections

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import circuit_breaker_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from tests.unit.proxy.http_fixtures import (
    Env,
    InProcessProxy,
    eds_cluster,
    fetch,
    header_value,
    http_listener,
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


async def test_routes_by_header_and_prefix(env: Env) -> None:
    await env.start("v1", "v2")
    header_match = rc.RouteMatch(prefix="/", headers=[rc.HeaderMatcher(
        name="end-user", string_match=string_pb2.StringMatcher(exact="jason"))])
    await env.apply([route_config("http", [
        route(match=header_match, cluster="v2"),
        route("/", cluster="v1"),
    ])])
    r = await fetch(env.port, "/reviews/1")
    assert r.status == 200 and r.json()["server"] == "v1"
    assert r.headers["server"] == "istio-envoy"
    assert "x-envoy-upstream-service-time" in r.headers
    r = await fetch(env.port, "/reviews/1", headers={"end-user": "jason"})
    assert r.json()["server"] == "v2"
    sent = r.json()["headers"]
    assert sent["x-forwarded-proto"] == "http"
    assert len(sent["x-request-id"]) == 36
    assert sent["x-envoy-expected-rq-timeout-ms"] == "15000"
    assert env.proxy.counter("cluster.v2.upstream_rq_200") == 1  # type: ignore[union-attr]
    assert env.proxy.counter("http.ingress_http.downstream_rq_2xx") == 2  # type: ignore[union-attr]


async def test_no_route_no_cluster_direct_response_redirect(env: Env) -> None:
    await env.start("v1")
    direct = rc.DirectResponseAction(status=418)
    direct.body.inline_string = "short and stout"
    await env.apply([route_config("http", [
        route("/missing", cluster="nowhere"),
        route("/teapot", direct_response=direct,
              response_headers_to_add=[header_value("x-teapot", "yes")]),
        route("/old", redirect=rc.RedirectAction(prefix_rewrite="/new", host_redirect="b.com",
                                                 response_code=rc.RedirectAction.FOUND)),
        route("/v1", cluster="v1"),
    ], domains=["example.com"])])
    r = await fetch(env.port, "/v1", host="other.com")
    assert (r.status, r.body) == (404, b"")
    r = await fetch(env.port, "/nothing-matches")
    assert r.status == 404
    r = await fetch(env.port, "/missing")
    assert (r.status, r.body) == (503, b"")
    r = await fetch(env.port, "/teapot")
    assert (r.status, r.body, r.headers["x-teapot"]) == (418, b"short and stout", "yes")
    r = await fetch(env.port, "/old/page?q=1")
    assert r.status == 302
    assert r.headers["location"] == "http://b.com/new/page?q=1"
    c = env.proxy.counter  # type: ignore[union-attr]
    assert c("http.ingress_http.no_route") == 2
    assert c("http.ingress_http.no_cluster") == 1
    assert c("http.ingress_http.rq_direct_response") == 1
    assert c("http.ingress_http.rq_redirect") == 1


async def test_rewrites_and_header_mutations(env: Env) -> None:
    await env.start("v1")
    regex = rc.RouteAction(cluster="v1", regex_rewrite=regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex="^/api/v(\\d+)/(.*)$"), substitution="/\\2?v=\\1"))
    await env.apply([route_config("http", [
        route("/prefix/", cluster="v1", request_headers_to_add=[header_value("x-added", "1")],
              request_headers_to_remove=["x-secret"],
              response_headers_to_add=[header_value("x-resp", "r")]),
        route(match=rc.RouteMatch(prefix="/api/"), route=regex),
        route(match=rc.RouteMatch(prefix="/host/"), route=rc.RouteAction(
            cluster="v1", host_rewrite_literal="internal.svc", prefix_rewrite="/")),
    ], request_headers_to_add=[header_value("x-vhost", "vh")])])
    r = await fetch(env.port, "/prefix/a", headers={"x-secret": "s"})
    sent = r.json()["headers"]
    assert sent["x-added"] == "1" and sent["x-vhost"] == "vh" and "x-secret" not in sent
    assert r.headers["x-resp"] == "r"
    r = await fetch(env.port, "/api/v2/items?x=1")
    assert r.json()["path"] == "/items?v=2?x=1"
    assert r.json()["headers"]["x-envoy-original-path"] == "/api/v2/items?x=1"
    r = await fetch(env.port, "/host/a/b")
    assert r.json()["path"] == "/a/b"
    assert r.json()["headers"]["host"] == "internal.svc"


async def test_weighted_clusters_split(env: Env) -> None:
    await env.start("v1", "v2")
    weighted = rc.WeightedCluster(clusters=[
        rc.WeightedCluster.ClusterWeight(name="v1", weight={"value": 25}),
        rc.WeightedCluster.ClusterWeight(name="v2", weight={"value": 75}),
    ])
    await env.apply([route_config("http", [
        route(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(weighted_clusters=weighted))
    ])])
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(200):
        counts[(await fetch(env.port, "/")).json()["server"]] += 1
    assert 25 <= counts["v1"] <= 75, counts


async def test_no_healthy_upstream_and_overflow(env: Env) -> None:
    await env.start("slow")
    cb = circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections={"value": 1}, max_pending_requests={"value": 1})])
    await env.apply(
        [route_config("http", [route("/empty", cluster="empty"), route("/", cluster="slow")])],
        clusters=[eds_cluster("slow", circuit_breakers=cb), eds_cluster("empty")],
        assignments=[load_assignment("slow", [env.servers[0].port]),
                     load_assignment("empty", [])],
    )
    r = await fetch(env.port, "/empty")
    assert (r.status, r.body) == (503, b"no healthy upstream")
    results = await asyncio.gather(*(fetch(env.port, "/", headers={"x-delay-ms": "300"})
                                     for _ in range(5)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 200, 503, 503, 503], statuses
    overflow = [r for r in results if r.status == 503]
    assert overflow[0].headers["x-envoy-overloaded"] == "true"
    assert overflow[0].body.endswith(b"reset reason: overflow")
    assert env.proxy.counter("cluster.slow.upstream_rq_pending_overflow") == 3  # type: ignore


async def test_config_swap_affects_new_streams_only(env: Env) -> None:
    await env.start("v1", "v2")
    await env.apply([route_config("http", [route("/", cluster="v1")])])
    slow = asyncio.ensure_future(fetch(env.port, "/", headers={"x-delay-ms": "300"}))
    await asyncio.sleep(0.1)
    await env.apply([route_config("http", [route("/", cluster="v2")])])
    assert (await fetch(env.port, "/")).json()["server"] == "v2"
    r = await slow
    assert r.status == 200 and r.json()["server"] == "v1"


async def test_listener_removed_stops_accepting_but_keeps_connections(env: Env) -> None:
    await env.start("v1")
    await env.apply([route_config("http", [route("/", cluster="v1")])])
    slow = asyncio.ensure_future(fetch(env.port, "/", headers={"x-delay-ms": "300"}))
    await asyncio.sleep(0.1)
    await env.proxy.apply([], [], [eds_cluster("v1")],  # type: ignore[union-attr]
                          [load_assignment("v1", [env.servers[0].port])])
    assert (await slow).status == 200
    with pytest.raises(OSError):
        await fetch(env.port, "/")




async def test_websocket_upgrade_through_router(env: Env) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        while data := await reader.read(1024):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        env.proxy = InProcessProxy()
        port = server.sockets[0].getsockname()[1]
        await env.proxy.apply([http_listener("gw", env.port)],
                              [route_config("http", [route("/", cluster="ws")])],
                              [eds_cluster("ws")], [load_assignment("ws", [port])])
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        writer.write(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"HELLO"
        writer.close()
    finally:
        server.close()


async def test_stream_idle_timeout_chunked_body_and_client_reset(env: Env) -> None:
    await env.start("a")
    no_timeout = rc.RouteAction(cluster="a")
    no_timeout.timeout.FromMilliseconds(0)
    await env.apply([route_config("http", [route(match=rc.RouteMatch(prefix="/"),
                                                 route=no_timeout)])],
                    stream_idle_timeout=0.3)
    r = await fetch(env.port, "/", headers={"x-delay-ms": "1000"})
    assert (r.status, r.body) == (408, b"stream timeout")
    c = env.proxy.counter  # type: ignore[union-attr]
    assert c("http.ingress_http.downstream_rq_idle_timeout") == 1

    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    from tests.unit.proxy.http_fixtures import read_response

    r = await read_response(reader)
    assert r.status == 200 and r.json()["body"] == "hello world"
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
    r = await read_response(reader, head_only=True)
    assert r.status == 200 and int(r.headers["content-length"]) > 0

    # The client goes away while the upstream is still answering.
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-delay-ms: 300\r\n\r\n")
    await asyncio.sleep(0.1)
    writer.transport.abort()
    await asyncio.sleep(0.05)
    assert c("cluster.a.upstream_rq_cancelled") == 2  # the idle timeout, then the reset
    assert c("http.ingress_http.downstream_rq_active") == 0
    assert (await fetch(env.port, "/")).status == 200
