"""HTTP/2 and gRPC through a real listener on 127.0.0.1: h2c prior knowledge downstream
(codec AUTO sniffs the preface), HTTP/2 upstream pools, gRPC via grpcio on both ends,
trailers, trailers-only local replies, mixed protocols, multiplexing, cancellation,
back-pressure, gRPC retries and grpc-timeout."""

from __future__ import annotations

import asyncio
import datetime

import grpc
import pytest
import pytest_asyncio

from tests.unit.proxy.h2_fixtures import GrpcEcho, H2Client, H2UpstreamServer, h2_cluster
from tests.unit.proxy.http_fixtures import (
    Env,
    InProcessProxy,
    eds_cluster,
    fetch,
    load_assignment,
    proxy_env,
    read_response,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


@pytest.fixture
def echo():
    server = GrpcEcho()
    try:
        yield server
    finally:
        server.close()


async def _h2_upstream(env: Env, name: str = "h2up", routes=None, **cluster_kw):
    env.proxy = InProcessProxy()
    up = await H2UpstreamServer(name).start()
    env.servers.append(up)
    await env.apply(routes or [route_config("http", [route("/", cluster=name)])],
                    clusters=[h2_cluster(name, **cluster_kw)],
                    assignments=[load_assignment(name, [up.port])])
    return up


async def _grpc_proxy(env: Env, echo: GrpcEcho, routes=None, **cluster_kw) -> None:
    env.proxy = InProcessProxy()
    await env.apply(routes or [route_config("http", [route("/", cluster="grpc")])],
                    clusters=[h2_cluster("grpc", **cluster_kw)],
                    assignments=[load_assignment("grpc", [echo.port])])


def _call(port: int, method: str, request: bytes, metadata=(), timeout: float = 5.0):
    """A blocking grpcio call (run in a thread: the proxy runs on the test's loop)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(method)
        return stub.with_call(request, metadata=metadata, timeout=timeout)


def _stream(port: int, request: bytes) -> list[bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(channel.unary_stream("/test.Echo/Stream")(request, timeout=10))


async def test_grpc_unary_through_proxy(env: Env, echo: GrpcEcho) -> None:
    await _grpc_proxy(env, echo)
    reply, call = await asyncio.to_thread(_call, env.port, "/test.Echo/Unary", b"hello")
    assert reply == b"echo:hello"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-served-by", "echo") in call.trailing_metadata()
    assert env.proxy.counter("http.ingress_http.downstream_rq_http2_total") == 1
    assert env.proxy.counter("cluster.grpc.upstream_rq_200") == 1


async def test_grpc_server_streaming_many_messages(env: Env, echo: GrpcEcho) -> None:
    # 4000 messages of 1 KiB: more than any window, so flow control runs both ways.
    await _grpc_proxy(env, echo, initial_stream_window_size=65535,
                      initial_connection_window_size=65535)
    messages = await asyncio.to_thread(_stream, env.port, b"4000x1024")
    assert len(messages) == 4000
    assert all(m.startswith(b"%08d" % i) for i, m in enumerate(messages))


async def test_grpc_error_status_in_trailers_passes_through(env: Env, echo: GrpcEcho) -> None:
    await _grpc_proxy(env, echo)
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(_call, env.port, "/test.Echo/Unary", b"x",
                                (("x-code", "PERMISSION_DENIED"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "failed on purpose"


async def test_grpc_local_replies_are_trailers_only(env: Env, echo: GrpcEcho) -> None:
    env.proxy = InProcessProxy()
    await env.apply([route_config("http", [route("/test.Echo/Unary", cluster="grpc"),
                                           route("/test.Other/", cluster="empty")])],
                    clusters=[h2_cluster("grpc"), h2_cluster("empty")],
                    assignments=[load_assignment("grpc", [echo.port]),
                                 load_assignment("empty", [])])
    # No route: 404 → UNIMPLEMENTED (12).
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(_call, env.port, "/test.Nope/Unary", b"x")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # No healthy upstream: 503 → UNAVAILABLE (14), the reason as grpc-message.
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(_call, env.port, "/test.Other/Unary", b"x")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "no healthy upstream"
    # The wire form: one HEADERS frame with END_STREAM, :status 200, grpc-status.
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/test.Nope/Unary", "POST",
                                 {"content-type": "application/grpc", "te": "trailers"},
                                 body=b"\0\0\0\0\0")
        assert r.status == 200 and r.body == b""
        assert r.headers["grpc-status"] == "12"
        assert r.headers["content-type"] == "application/grpc"
        r = await client.request("/nope")  # not gRPC: a plain 404
        assert r.status == 404
    finally:
        client.close()


async def test_grpc_retry_on_unavailable(env: Env, echo: GrpcEcho) -> None:
    r = route("/", cluster="grpc")
    r.route.retry_policy.retry_on = "unavailable"
    r.route.retry_policy.num_retries.value = 2
    await _grpc_proxy(env, echo, routes=[route_config("http", [r])])
    reply, _ = await asyncio.to_thread(_call, env.port, "/test.Echo/Unary", b"again",
                                       (("x-fail-first", "1"),))
    assert reply == b"echo:again"
    assert echo.calls == 2
    assert env.proxy.counter("cluster.grpc.upstream_rq_retry") == 1


async def test_grpc_timeout_header_bounds_the_call(env: Env, echo: GrpcEcho) -> None:
    r = route("/", cluster="grpc")
    r.route.max_stream_duration.grpc_timeout_header_max.FromTimedelta(
        datetime.timedelta(seconds=0))
    await _grpc_proxy(env, echo, routes=[route_config("http", [r])])

    def slow_call() -> grpc.StatusCode:
        # The client sends grpc-timeout 300m; the proxy expires the stream first or at
        # the same time; either way the client reads DEADLINE_EXCEEDED.
        with grpc.insecure_channel(f"127.0.0.1:{env.port}") as channel:
            try:
                channel.unary_unary("/test.Echo/Unary")(
                    b"x", metadata=(("x-sleep-ms", "2000"),), timeout=0.3)
            except grpc.RpcError as e:
                return e.code()
        return grpc.StatusCode.OK

    assert await asyncio.to_thread(slow_call) == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_http1_client_to_http2_upstream(env: Env) -> None:
    up = await _h2_upstream(env)
    r = await fetch(env.port, "/a?b=c", headers={"x-trailer": "t1"})
    assert r.status == 200
    body = r.json()
    assert body["headers"][":path"] == "/a?b=c"
    assert body["headers"][":authority"] == "example.com"
    assert "host" not in body["headers"]
    r = await fetch(env.port, "/post", method="POST", body=b"x" * 100_000)
    assert r.status == 200 and len(r.json()["body"]) == 100_000
    # A chunked request body: the HTTP/1 framing is taken off before the DATA frames.
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    try:
        writer.write(b"POST /chunked HTTP/1.1\r\nhost: example.com\r\n"
                     b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        async with asyncio.timeout(5):
            resp = await read_response(reader)
        assert resp.status == 200 and resp.json()["body"] == "hello world"
    finally:
        writer.close()
    assert up.connections == 1  # one multiplexed connection for every request


async def test_http2_client_to_http1_upstream(env: Env) -> None:
    await env.start("h1")
    await env.apply([route_config("http", [route("/", cluster="h1")])])
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/get", headers={"x-custom": "v"})
        assert r.status == 200
        assert r.headers["server"] == "istio-envoy"
        got = r.json()
        assert got["headers"]["host"] == "example.com"
        assert got["headers"]["x-custom"] == "v"
        # A body without content-length goes upstream chunked.
        sid = client.start("/post", "POST", end=False)
        client.h2c.send_data(sid, b"part1-")
        client.h2c.send_data(sid, b"part2", end_stream=True)
        client.transport.write(client.h2c.data_to_send())
        r = await client.response(sid)
        assert r.json()["body"] == "part1-part2"
        r = await client.request("/x", headers={"x-status": "503"})
        assert r.status == 503
    finally:
        client.close()
    assert env.proxy.counter("http.ingress_http.downstream_cx_http2_total") == 1


async def test_many_concurrent_streams_on_one_connection(env: Env) -> None:
    up = await _h2_upstream(env)
    client = await H2Client.connect(env.port)
    try:
        sids = [client.start(f"/s/{i}", headers={"x-delay-ms": "50"}) for i in range(100)]
        responses = await asyncio.gather(*(client.response(s) for s in sids))
        assert [r.status for r in responses] == [200] * 100
        assert {r.json()["headers"][":path"] for r in responses} == {
            f"/s/{i}" for i in range(100)}
    finally:
        client.close()
    assert up.connections == 1


async def test_upstream_max_concurrent_streams_opens_more_connections(env: Env) -> None:
    up = await _h2_upstream(env, max_concurrent_streams=10)
    client = await H2Client.connect(env.port)
    try:
        sids = [client.start(f"/s/{i}", headers={"x-delay-ms": "100"}) for i in range(30)]
        responses = await asyncio.gather(*(client.response(s) for s in sids))
        assert all(r.status == 200 for r in responses)
    finally:
        client.close()
    assert up.connections >= 3


async def test_trailers_pass_through(env: Env) -> None:
    await _h2_upstream(env)
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/t", headers={"x-trailer": "here", "te": "trailers"})
        assert r.status == 200
        assert r.trailers == {"x-trailer": "here"}
        assert r.json()["headers"]["te"] == "trailers"
    finally:
        client.close()


async def test_client_reset_cancels_upstream_stream(env: Env) -> None:
    up = await _h2_upstream(env)
    client = await H2Client.connect(env.port)
    try:
        sid = client.start("/hang", headers={"x-hang": "1"})
        async with asyncio.timeout(5):
            while not up.received:
                await asyncio.sleep(0.01)
        client.reset(sid)
        async with asyncio.timeout(5):
            while not up.resets:
                await asyncio.sleep(0.01)
        # The connection still serves other streams.
        r = await client.request("/after")
        assert r.status == 200
    finally:
        client.close()
    assert env.proxy.counter("cluster.h2up.upstream_rq_cancelled") == 1


async def test_response_back_pressure_bounds_proxy_buffering(env: Env) -> None:
    # The client grants the protocol's 64 KiB window and never returns credit. The proxy
    # sends what fits, holds up to its high-water mark (64 KiB) more, then stops
    # acknowledging the upstream's DATA; with a 64 KiB upstream window the server can push
    # only a few windows of its 8 MiB body, however long it tries.
    up = await _h2_upstream(env, initial_stream_window_size=65535,
                            initial_connection_window_size=65535)
    client = await H2Client.connect(env.port, auto_ack=False)
    try:
        sid = client.start("/big", headers={"x-stream-bytes": str(8 << 20)})
        await asyncio.sleep(0.5)
        assert client.received_bytes <= 65535
        assert up.streamed < 4 * 65536, up.streamed
        # Credit returned: everything flows to the end.
        client.auto_ack = True
        client.h2c.acknowledge_received_data(client.received_bytes, sid)
        client.transport.write(client.h2c.data_to_send())
        r = await client.response(sid, timeout=20)
        assert len(r.body) == 8 << 20
    finally:
        client.close()


async def test_grpc_timeout_header_expires_in_the_proxy(env: Env, echo: GrpcEcho) -> None:
    r = route("/", cluster="grpc")
    r.route.max_stream_duration.grpc_timeout_header_max.FromTimedelta(
        datetime.timedelta(seconds=0))
    await _grpc_proxy(env, echo, routes=[route_config("http", [r])])
    client = await H2Client.connect(env.port)
    try:
        t0 = asyncio.get_running_loop().time()
        resp = await client.request(
            "/test.Echo/Unary", "POST",
            {"content-type": "application/grpc", "te": "trailers", "grpc-timeout": "200m",
             "x-sleep-ms": "3000"}, body=b"\0\0\0\0\x01x", timeout=2)
        assert asyncio.get_running_loop().time() - t0 < 1.5
        assert resp.status == 200 and resp.headers["grpc-status"] == "4"
    finally:
        client.close()


async def test_upstream_goaway_moves_new_streams_to_a_new_connection(env: Env) -> None:
    up = await _h2_upstream(env)
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/first", headers={"x-goaway": "1"})
        assert r.status == 200 and r.json()["conn"] == 0
        await asyncio.sleep(0.05)
        r = await client.request("/second")
        assert r.status == 200 and r.json()["conn"] == 1
    finally:
        client.close()
    assert up.connections == 2


async def test_upstream_graceful_goaway_lets_streams_in_flight_finish(env: Env) -> None:
    """The upstream names the stream in flight as the last one and then answers it (gRPC's
    max connection age, an Envoy draining): the response reaches the client, a slow stream
    opened before it as well, and the next request goes to a new connection."""
    up = await _h2_upstream(env)
    client = await H2Client.connect(env.port)
    try:
        slow = client.start("/slow", headers={"x-delay-ms": "300"})
        await asyncio.sleep(0.05)
        r = await client.request("/last", headers={"x-goaway-first": "1"})
        assert r.status == 200 and r.reset is None and r.json()["conn"] == 0
        r = await client.response(slow)  # opened before the GOAWAY's last stream: finishes
        assert r.status == 200 and r.json()["conn"] == 0
        await asyncio.sleep(0.05)
        r = await client.request("/next")
        assert r.status == 200 and r.json()["conn"] == 1
    finally:
        client.close()
    assert up.connections == 2


async def test_codec_http1_still_served_on_auto(env: Env) -> None:
    await env.start("h1")
    await env.apply([route_config("http", [route("/", cluster="h1")])])
    r = await fetch(env.port, "/plain")
    assert r.status == 200
    assert env.proxy.counter("http.ingress_http.downstream_cx_http1_total") == 1


async def test_use_downstream_protocol(env: Env) -> None:
    """``use_downstream_protocol_config``: HTTP/2 upstream for an HTTP/2 client, HTTP/1.1
    for an HTTP/1.1 client (the upstream here speaks only HTTP/2: the HTTP/1.1 request
    fails)."""
    up = await _h2_upstream(env, use_downstream=True)
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/via-h2")
        assert r.status == 200 and r.json()["server"] == "h2up"
    finally:
        client.close()
    r = await fetch(env.port, "/via-h1")
    assert r.status == 503
    assert up.connections >= 1


async def test_unused_cluster_kinds_untouched(env: Env) -> None:
    # A plain cluster next to an HTTP/2 one keeps its HTTP/1.1 pool.
    await env.start("h1")
    up = await H2UpstreamServer("h2up").start()
    env.servers.append(up)
    await env.apply([route_config("http", [route("/h2", cluster="h2up"),
                                           route("/", cluster="h1")])],
                    clusters=[eds_cluster("h1"), h2_cluster("h2up")],
                    assignments=[load_assignment("h1", [env.servers[0].port]),
                                 load_assignment("h2up", [up.port])])
    assert (await fetch(env.port, "/h2")).json()["server"] == "h2up"
    assert (await fetch(env.port, "/h1")).json()["server"] == "h1"
