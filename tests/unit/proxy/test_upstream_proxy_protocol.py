"""``envoy.transport_sockets.upstream_proxy_protocol`` (Istio's DestinationRule
``trafficPolicy.proxyProtocol``): the header's bytes, then over real sockets — HTTP
connections carry their downstream's addresses and are pooled per downstream, the TCP proxy
sends the binary form before relaying."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from envoy.config.core.v3 import proxy_protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2

from pistio.proxy.upstream.proxy_protocol import V1, V2, proxy_protocol_header
from tests.unit.proxy.http_fixtures import (
    InProcessProxy,
    KeepAliveClient,
    eds_cluster,
    free_port,
    http_listener,
    load_assignment,
    pack,
    route,
    route_config,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def test_header_bytes() -> None:
    assert proxy_protocol_header(V1, ("10.0.0.1", 5000), ("10.0.0.2", 80)) == (
        b"PROXY TCP4 10.0.0.1 10.0.0.2 5000 80\r\n")
    assert proxy_protocol_header(V1, ("::1", 5000), ("fd00::2", 443)) == (
        b"PROXY TCP6 ::1 fd00::2 5000 443\r\n")
    assert proxy_protocol_header(V1, ("::ffff:10.0.0.1", 1), ("10.0.0.2", 2)) == (
        b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n")
    assert proxy_protocol_header(V1, None, ("10.0.0.2", 80)) == b"PROXY UNKNOWN\r\n"
    assert proxy_protocol_header(V2, ("10.0.0.1", 5000), ("10.0.0.2", 80)) == (
        SIGNATURE + b"\x21\x11\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2])
        + (5000).to_bytes(2, "big") + (80).to_bytes(2, "big"))
    assert proxy_protocol_header(V2, ("10.0.0.1", 1), ("::1", 2)) == (
        SIGNATURE + b"\x20\x00\x00\x00")  # mixed families: LOCAL


def proxied(version: int) -> dict:
    """An ``upstream_proxy_protocol`` transport socket around plaintext."""
    pp = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport(
        config=proxy_protocol_pb2.ProxyProtocolConfig(version=version))
    pp.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    return {"name": "envoy.transport_sockets.upstream_proxy_protocol", "typed_config": pack(pp)}


@contextlib.asynccontextmanager
async def header_server(read_header) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP/1.1 keep-alive server whose connections start with a PROXY header; every
    connection's header is recorded (``read_header`` reads it)."""
    headers: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers.append(await read_header(reader))
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], headers
    finally:
        server.close()


async def v1_line(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n")


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_http_connections_carry_their_downstreams_addresses() -> None:
    proxy = InProcessProxy()
    port = free_port()
    async with header_server(v1_line) as (upstream_port, headers):
        try:
            await proxy.apply(
                [http_listener("gw", port)], [route_config("http", [route("/", cluster="pp")])],
                [eds_cluster("pp", transport_socket=proxied(V1))],
                [load_assignment("pp", [upstream_port])])
            first, second = KeepAliveClient(port), KeepAliveClient(port)
            try:
                for _ in range(3):
                    assert (await first.request("/")).status == 200
                assert (await second.request("/")).status == 200
                ports = [w.get_extra_info("sockname")[1]  # type: ignore[union-attr]
                         for w in (first.writer, second.writer)]
            finally:
                first.close()
                second.close()
        finally:
            await proxy.close()
    # One upstream connection per downstream connection, each naming its client.
    assert headers == [f"PROXY TCP4 127.0.0.1 127.0.0.1 {p} {port}\r\n".encode()
                       for p in ports]


async def v2_header(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(16)
    return head + await reader.readexactly(int.from_bytes(head[14:16], "big"))


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_tcp_proxy_sends_the_binary_header_first() -> None:
    proxy = InProcessProxy()
    port = free_port()
    tcp = listener_pb2.Listener(
        name="tcp", address={"socket_address": {"address": "127.0.0.1", "port_value": port}},
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.tcp_proxy",
                typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix="pp", cluster="pp")))])])
    async with header_server(v2_header) as (upstream_port, headers):
        try:
            await proxy.apply([tcp], [], [eds_cluster("pp", transport_socket=proxied(V2))],
                              [load_assignment("pp", [upstream_port])])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
                client_port = writer.get_extra_info("sockname")[1]
            finally:
                writer.close()
        finally:
            await proxy.close()
    assert headers == [proxy_protocol_header(V2, ("127.0.0.1", client_port),
                                             ("127.0.0.1", port))]


@pytest.mark.asyncio
async def test_pools_per_downstream_do_not_pile_up() -> None:
    """A pool per downstream connection (its PROXY header) is forgotten once it holds no
    connection; live ones are kept."""
    from pistio.proxy.upstream.connection_pool import (
        VARIANT_PRUNE_MIN,
        UpstreamHttpOptions,
        UpstreamPools,
    )

    pools = UpstreamPools(asyncio.get_running_loop(), UpstreamHttpOptions())
    live = pools.get(("127.0.0.1", 9), proxy_header=b"PROXY UNKNOWN\r\n")
    live.connections.add(object())  # type: ignore[arg-type]  # as if a connection were open
    for i in range(10 * VARIANT_PRUNE_MIN):
        header = proxy_protocol_header(V1, ("127.0.0.1", 1000 + i), ("127.0.0.1", 80))
        assert pools.get(("127.0.0.1", 9), proxy_header=header).unused
    assert len(pools._variant_pools) <= VARIANT_PRUNE_MIN
    assert pools.get(("127.0.0.1", 9), proxy_header=b"PROXY UNKNOWN\r\n") is live
    live.connections.clear()
    pools.close()
