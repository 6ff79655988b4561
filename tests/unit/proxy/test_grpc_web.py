"""``envoy.filters.http.grpc_web`` over real sockets: a grpc-web client written here (raw
HTTP/1.1 requests with framed bodies, binary and base64 text) talks through an in-process proxy
to a real gRPC server (grpcio) reached over HTTP/2."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
import pytest_asyncio
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from pistio.proxy.filters.http.grpc_web import _b64decode, percent_encode
from pistio.proxy.http.http2_grpc import is_grpc
from tests.unit.proxy.h2_fixtures import GrpcEcho, H2Client, h2_cluster
from tests.unit.proxy.http_fixtures import (
    Env,
    eds_cluster,
    fetch,
    http_listener,
    load_assignment,
    pack,
    proxy_env,
    read_response,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

GRPC_WEB = hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_web",
                              typed_config=pack(grpc_web_pb2.GrpcWeb()))


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


async def _proxy(env: Env, echo: GrpcEcho, **extra) -> None:
    plain = await env.start("plain")
    await env.apply(
        [route_config("http", [route("/test.Echo/", cluster="grpc"),
                               route("/nowhere/", cluster="empty"),
                               route("/", cluster="plain")])],
        clusters=[h2_cluster("grpc"), h2_cluster("empty"), eds_cluster("plain")],
        assignments=[load_assignment("grpc", [echo.port]), load_assignment("empty", []),
                     load_assignment("plain", [plain[0].port])],
        first_filters=[GRPC_WEB],
        **extra,
    )


def frame(message: bytes, flags: int = 0) -> bytes:
    return bytes((flags,)) + len(message).to_bytes(4, "big") + message


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    out = []
    while body:
        length = int.from_bytes(body[1:5], "big")
        out.append((body[0], body[5:5 + length]))
        body = body[5 + length:]
    return out


def trailers_of(frames: list[tuple[int, bytes]]) -> dict[str, str]:
    (flags, block), = [f for f in frames if f[0] & 0x80]
    return dict(line.split(":", 1) for line in block.decode().split("\r\n") if line)


async def grpc_web_call(port: int, path: str, body: bytes, content_type: str,
                        headers: dict[str, str] | None = None, chunked: bool = False):
    """One grpc-web POST on a fresh HTTP/1.1 connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"POST {path} HTTP/1.1", "host: grpc.example", f"content-type: {content_type}",
                 "x-grpc-web: 1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if chunked:
            lines.append("transfer-encoding: chunked")
            # Split the body in uneven chunks: base64 groups straddle them.
            pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            lines.append(f"content-length: {len(body)}")
            payload = body
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


async def test_binary_unary_call_gets_message_and_trailer_frame(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    r = await grpc_web_call(env.port, "/test.Echo/Unary", frame(b"hello"),
                            "application/grpc-web+proto")
    assert r.status == 200
    assert r.headers["content-type"] == "application/grpc-web+proto"
    assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
    frames = parse_frames(r.body)
    assert frames[0] == (0, b"echo:hello")
    trailers = trailers_of(frames)
    assert trailers["grpc-status"] == "0"
    assert trailers["x-served-by"] == "echo"
    assert frames[-1][0] == 0x80
    assert env.proxy.counter("cluster.grpc.upstream_rq_200") == 1


async def test_text_request_and_text_response_are_base64(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    body = base64.b64encode(frame(b"text mode"))
    r = await grpc_web_call(env.port, "/test.Echo/Unary", body, "application/grpc-web-text",
                            {"accept": "application/grpc-web-text"}, chunked=True)
    assert r.status == 200
    assert r.headers["content-type"] == "application/grpc-web-text+proto"
    decoded = _b64decode(r.body)  # one base64 segment per frame, each padded
    frames = parse_frames(decoded)
    assert frames[0] == (0, b"echo:text mode")
    assert trailers_of(frames)["grpc-status"] == "0"
    # A binary response to a text request unless the client accepts text.
    r = await grpc_web_call(env.port, "/test.Echo/Unary", body,
                            "application/grpc-web-text+proto")
    assert r.headers["content-type"] == "application/grpc-web+proto"
    assert parse_frames(r.body)[0] == (0, b"echo:text mode")


async def test_streaming_response_frames_each_message(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    r = await grpc_web_call(env.port, "/test.Echo/Stream", frame(b"5x100"),
                            "application/grpc-web+proto", {"accept": "application/grpc-web-text"})
    frames = parse_frames(_b64decode(r.body))
    data = [m for flags, m in frames if flags == 0]
    assert [m[:8] for m in data] == [b"%08d" % i for i in range(5)]
    assert all(len(m) == 100 for m in data)
    assert trailers_of(frames)["grpc-status"] == "0"


async def test_grpc_error_status_reaches_the_client(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    r = await grpc_web_call(env.port, "/test.Echo/Unary", frame(b"x"),
                            "application/grpc-web", {"x-code": "NOT_FOUND"})
    assert r.status == 200
    # grpcio answers an error before any message trailers-only: the status rides in the
    # response headers, as gRPC-Web allows.
    status = r.headers.get("grpc-status") or trailers_of(parse_frames(r.body))["grpc-status"]
    assert status == "5"
    message = r.headers.get("grpc-message") or trailers_of(parse_frames(r.body))["grpc-message"]
    assert message == "failed on purpose"


async def test_local_replies_become_grpc_web_trailers_only(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    # No endpoint: 503 "no healthy upstream", as grpc-status UNAVAILABLE.
    r = await grpc_web_call(env.port, "/nowhere/x", frame(b"x"), "application/grpc-web+proto")
    assert r.status == 503
    assert r.headers["content-type"] == "application/grpc-web+proto"
    assert (r.headers["grpc-status"], r.headers["grpc-message"]) == ("14", "no healthy upstream")
    assert r.headers["content-length"] == "0" and r.body == b""
    # Not base64: 400 from the filter itself.
    r = await grpc_web_call(env.port, "/test.Echo/Unary", b"!!!!", "application/grpc-web-text")
    assert r.status == 400
    assert r.headers["grpc-status"] == "13"
    assert r.headers["grpc-message"] == "Bad gRPC-web request, invalid base64 data."
    assert r.headers["content-type"] == "application/grpc-web+proto"
    # Base64 that does not end on a group boundary.
    r = await grpc_web_call(env.port, "/test.Echo/Unary", base64.b64encode(frame(b"x"))[:-1],
                            "application/grpc-web-text")
    assert (r.status, r.headers["grpc-status"]) == (400, "13")
    assert echo.calls == 0


async def test_non_grpc_upstream_response_is_transformed(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    # A gRPC-Web request routed to a plain HTTP/1.1 server answering 503 text: trailers-only.
    r = await grpc_web_call(env.port, "/plain", frame(b"x"), "application/grpc-web",
                            {"x-status": "503"})
    assert r.status == 503
    assert r.headers["grpc-status"] == "14"
    assert r.headers["grpc-message"].startswith('{"server": "plain"')
    assert r.body == b""


async def test_non_grpc_web_requests_pass_through_untouched(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    r = await fetch(env.port, "/plain", headers={"content-type": "application/json"},
                    method="POST", body=b"{}")
    assert r.status == 200
    seen = r.json()["headers"]
    assert seen["content-type"] == "application/json" and seen["content-length"] == "2"
    assert "te" not in seen
    assert r.headers["content-type"] == "application/json"
    # Real gRPC keeps working through the same listener (the filter leaves it alone).
    await asyncio.get_running_loop().run_in_executor(None, _grpc_call, env.port)


def _grpc_call(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/test.Echo/Unary")
        assert call(b"native", timeout=5) == b"echo:native"


async def test_grpc_web_over_http2_downstream(env: Env, echo: GrpcEcho):
    await _proxy(env, echo)
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/test.Echo/Unary", method="POST", body=frame(b"h2"),
                                 headers={"content-type": "application/grpc-web+proto"})
        assert r.status == 200
        assert r.headers["content-type"] == "application/grpc-web+proto"
        frames = parse_frames(r.body)
        assert frames[0] == (0, b"echo:h2")
        assert trailers_of(frames)["grpc-status"] == "0"
        assert not r.trailers  # in the body, not HTTP/2 trailers
        r = await client.request("/nowhere/x", method="POST", body=frame(b"x"),
                                 headers={"content-type": "application/grpc-web+proto"})
        assert (r.status, r.headers["grpc-status"]) == (503, "14")
    finally:
        client.close()


async def test_filter_compiles_and_must_not_be_last():
    compile_listener(http_listener("l", 8080, first_filters=[GRPC_WEB]))
    last = http_listener("l", 8080)
    hcm = hcm_pb2.HttpConnectionManager()
    last.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.http_filters.append(GRPC_WEB)
    last.filter_chains[0].filters[0].typed_config.CopyFrom(pack(hcm))
    with pytest.raises(ConfigError) as err:
        compile_listener(last)
    assert "is the last filter in a http filter chain" in str(err.value)


async def test_helpers():
    assert is_grpc(b"application/grpc") and is_grpc(b"application/grpc+proto")
    assert is_grpc(b"application/grpc;charset=utf-8")
    assert not is_grpc(b"application/grpc-web") and not is_grpc(b"application/grpc-web-text")
    assert percent_encode(b"plain text: ok") == b"plain text: ok"
    assert percent_encode("100% é\n".encode()) == b"100%25 %C3%A9%0A"
    two = base64.b64encode(b"a") + base64.b64encode(b"bc") + base64.b64encode(b"def")
    assert _b64decode(two) == b"abcdef"
