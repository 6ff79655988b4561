"""The ``tcp_proxy`` network filter over real sockets on 127.0.0.1: relay, weighted clusters,
back-pressure, idle timeout, upstream failures, half-close, and Istio's PassthroughCluster and
BlackHoleCluster through the cluster manager."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import time

import uvloop

from pistio.proxy.access_log import response_flags as flags
from pistio.proxy.access_log.stream_info import StreamInfo
from pistio.proxy.config.cluster_config import compile_cluster
from pistio.proxy.config.listener_config import ConnInfo, TcpProxyConfig
from pistio.proxy.network.tcp_proxy import TcpProxyFilter, TcpUpstreams
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.resource_compiler import CompiledCluster
from pistio.proxy.runtime.snapshot import build_snapshot
from pistio.proxy.stats.store import StatsStore


def run(coro_fn, timeout: float = 30.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    uvloop.run(bounded())


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@contextlib.asynccontextmanager
async def upstream_server(handler=None, protocol=EchoProtocol):
    loop = asyncio.get_running_loop()
    if handler is not None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
    else:
        server = await loop.create_server(protocol, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


@contextlib.asynccontextmanager
async def proxy_listener(proxy: TcpProxyFilter):
    """A listening socket whose connections are served by ``proxy`` (the listener manager's
    role); yields ``(port, finished StreamInfos)``."""
    loop = asyncio.get_running_loop()
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    infos: list[StreamInfo] = []
    tasks: set[asyncio.Task] = set()

    async def serve_one(sock: socket.socket, peer) -> None:
        conn = ConnInfo("127.0.0.1", port, peer[0], peer[1])
        infos.append(await proxy.serve(sock, conn))

    async def accept_loop() -> None:
        while True:
            sock, peer = await loop.sock_accept(server)
            task = asyncio.ensure_future(serve_one(sock, peer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = asyncio.ensure_future(accept_loop())
    try:
        yield port, infos
    finally:
        acceptor.cancel()
        proxy.close_all()
        if tasks:
            await asyncio.wait(tasks, timeout=3)
        for task in tasks:
            task.cancel()
        server.close()


def fixed(port: int):
    return lambda cluster, conn: ("127.0.0.1", port)


def test_echo_relay_counts_bytes_and_fills_stream_info() -> None:
    async def scenario() -> None:
        store = StatsStore()
        async with upstream_server() as up:
            proxy = TcpProxyFilter(TcpProxyConfig("echo", "outbound|9000||echo"),
                                   TcpUpstreams(fixed(up)), store)
            async with proxy_listener(proxy) as (port, infos):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for size in (1, 1000, 100_000):
                    payload = random.randbytes(size)
                    writer.write(payload)
                    assert await reader.readexactly(size) == payload
                writer.close()
                await writer.wait_closed()
                while not infos:
                    await asyncio.sleep(0.01)
        info = infos[0]
        assert info.upstream_cluster == "outbound|9000||echo"
        assert info.upstream_host == ("127.0.0.1", up)
        assert info.bytes_received == info.bytes_sent == 101_001
        assert info.response_flags == 0
        assert info.last_downstream_tx_byte_sent is not None
        counters = store.snapshot().counters
        assert counters["cluster.outbound|9000||echo.upstream_cx_total"] == 1
        assert counters["cluster.outbound|9000||echo.upstream_cx_tx_bytes_total"] == 101_001
        assert counters["cluster.outbound|9000||echo.upstream_cx_rx_bytes_total"] == 101_001
        assert counters["tcp.echo.downstream_cx_total"] == 1
        assert counters["tcp.echo.downstream_cx_rx_bytes_total"] == 101_001
        assert store.snapshot().gauges["cluster.outbound|9000||echo.upstream_cx_active"] == 0

    run(scenario)


def test_weighted_clusters_split_connections_by_weight() -> None:
    async def scenario() -> None:
        def named(name: bytes):
            async def handler(reader, writer) -> None:
                writer.write(name)
                await writer.drain()
                writer.close()
            return handler

        async with upstream_server(named(b"v1")) as v1, upstream_server(named(b"v2")) as v2:
            ports = {"reviews-v1": v1, "reviews-v2": v2}
            config = TcpProxyConfig("reviews", None, (("reviews-v1", 75), ("reviews-v2", 25)))
            proxy = TcpProxyFilter(
                config, TcpUpstreams(lambda c, conn: ("127.0.0.1", ports[c])),
                rng=random.Random(11))
            seen: collections.Counter[bytes] = collections.Counter()
            async with proxy_listener(proxy) as (port, _):
                async def one() -> None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    seen[await reader.read()] += 1
                    writer.close()

                for _ in range(8):
                    await asyncio.gather(*(one() for _ in range(50)))
            assert sum(seen.values()) == 400
            assert 0.68 < seen[b"v1"] / 400 < 0.82, seen

    run(scenario)


def test_large_transfer_to_a_slow_reader_buffers_a_bounded_amount() -> None:
    total = 24 * 1024 * 1024
    limit = 64 * 1024

    async def scenario() -> None:
        async def firehose(reader, writer) -> None:
            chunk = b"x" * 65536
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.close()

        async with upstream_server(firehose) as up:
            proxy = TcpProxyFilter(TcpProxyConfig("bulk", "bulk"), TcpUpstreams(fixed(up)),
                                   downstream_buffer_limit=limit)
            async with proxy_listener(proxy) as (port, infos):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=65536)
                received = 0
                peak = 0
                while received < total:
                    data = await reader.read(65536)
                    if not data:
                        break
                    received += len(data)
                    for session in proxy.sessions:
                        peak = max(peak, session.downstream.transport.get_write_buffer_size())
                    if received < total // 3:
                        await asyncio.sleep(0.002)  # a slow reader for the first third
                assert received == total
                writer.close()
                while not infos:
                    await asyncio.sleep(0.01)
        # The proxy holds at most its high-water mark plus one read's worth.
        assert peak <= limit + 256 * 1024, peak
        stats = proxy.store.snapshot().counters
        assert stats["tcp.bulk.downstream_cx_tx_bytes_total"] == total

    run(scenario)


def test_idle_timeout_closes_both_sides() -> None:
    async def scenario() -> None:
        upstream_closed = asyncio.get_running_loop().create_future()

        async def quiet(reader, writer) -> None:
            await reader.read()  # returns at EOF/close
            upstream_closed.set_result(time.monotonic())
            writer.close()

        async with upstream_server(quiet) as up:
            proxy = TcpProxyFilter(TcpProxyConfig("idle", "idle", idle_timeout=0.3),
                                   TcpUpstreams(fixed(up)))
            async with proxy_listener(proxy) as (port, infos):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.monotonic()
                writer.write(b"a")
                await asyncio.sleep(0.2)
                writer.write(b"b")  # activity pushes the deadline
                assert await asyncio.wait_for(reader.read(), 3) == b""
                elapsed = time.monotonic() - started
                assert 0.45 < elapsed < 2.0, elapsed
                await asyncio.wait_for(upstream_closed, 3)
                writer.close()
                while not infos:
                    await asyncio.sleep(0.01)
        assert infos[0].connection_termination_details == "tcp_proxy_idle_timeout"
        assert proxy.store.snapshot().counters["tcp.idle.idle_timeout"] == 1

    run(scenario)


def test_upstream_refused_closes_downstream_quickly_with_uf() -> None:
    async def scenario() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]  # bound, not listening: connections are refused
            proxy = TcpProxyFilter(TcpProxyConfig("dead", "dead"), TcpUpstreams(fixed(dead_port)))
            async with proxy_listener(proxy) as (port, infos):
                started = time.monotonic()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(), 3) == b""
                assert time.monotonic() - started < 1.0
                writer.close()
                while not infos:
                    await asyncio.sleep(0.01)
        assert infos[0].response_flags == flags.UPSTREAM_CONNECTION_FAILURE
        counters = proxy.store.snapshot().counters
        assert counters["cluster.dead.upstream_cx_connect_fail"] == 1

    run(scenario)


def test_half_close_is_propagated_both_ways() -> None:
    async def scenario() -> None:
        async def read_all_then_answer(reader, writer) -> None:
            request = await reader.read()  # until the client's FIN arrives through the proxy
            writer.write(b"got " + str(len(request)).encode())
            await writer.drain()
            writer.close()

        async with upstream_server(read_all_then_answer) as up:
            proxy = TcpProxyFilter(TcpProxyConfig("hc", "hc"), TcpUpstreams(fixed(up)))
            async with proxy_listener(proxy) as (port, infos):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"z" * 300_000)
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 5) == b"got 300000"
                writer.close()
                while not infos:
                    await asyncio.sleep(0.01)
        assert infos[0].bytes_received == 300_000 and infos[0].bytes_sent == 10

    run(scenario)


def test_server_speaks_first() -> None:
    async def scenario() -> None:
        async def greet(reader, writer) -> None:
            writer.write(b"220 smtp ready\r\n")
            await writer.drain()
            assert await reader.readline() == b"QUIT\r\n"
            writer.close()

        async with upstream_server(greet) as up:
            proxy = TcpProxyFilter(TcpProxyConfig("smtp", "smtp"), TcpUpstreams(fixed(up)))
            async with proxy_listener(proxy) as (port, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert await asyncio.wait_for(reader.readline(), 3) == b"220 smtp ready\r\n"
                writer.write(b"QUIT\r\n")
                assert await asyncio.wait_for(reader.read(), 3) == b""
                writer.close()

    run(scenario)


def test_passthrough_and_blackhole_clusters_through_the_cluster_manager() -> None:
    from pistio.pilot.networking.cluster_builder import blackhole_cluster, passthrough_cluster
    from tests.unit.pilot.bookinfo_fixture import bookinfo_push

    push = bookinfo_push("")
    compiled = {
        c.name: CompiledCluster(compile_cluster(c))
        for c in (passthrough_cluster(push), blackhole_cluster(push))
    }
    manager = ClusterManager()
    manager.apply(build_snapshot(1, compiled, {}, {}, {}))
    upstreams = TcpUpstreams.from_cluster_manager(manager)

    async def scenario() -> None:
        async with upstream_server() as up:
            store = StatsStore()
            passthrough = TcpProxyFilter(
                TcpProxyConfig("PassthroughCluster", "PassthroughCluster"), upstreams, store)
            server = socket.create_server(("127.0.0.1", 0))
            server.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                # The ORIGINAL_DST cluster connects to the connection's original destination.
                reader, writer = await asyncio.open_connection(*server.getsockname())
                sock, peer = await loop.sock_accept(server)
                conn = ConnInfo("127.0.0.1", up, peer[0], peer[1])
                task = asyncio.ensure_future(passthrough.serve(sock, conn))
                writer.write(b"through")
                assert await reader.readexactly(7) == b"through"
                writer.close()
                info = await asyncio.wait_for(task, 3)
                assert info.upstream_host == ("127.0.0.1", up)
                assert info.upstream_cluster == "PassthroughCluster"

                blackhole = TcpProxyFilter(
                    TcpProxyConfig("BlackHoleCluster", "BlackHoleCluster"), upstreams, store)
                reader, writer = await asyncio.open_connection(*server.getsockname())
                sock, peer = await loop.sock_accept(server)
                info = await asyncio.wait_for(
                    blackhole.serve(sock, ConnInfo("10.0.0.1", 80, peer[0], peer[1])), 3)
                assert info.response_flags == flags.NO_HEALTHY_UPSTREAM
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(), 3) == b""
                writer.close()

                unknown = TcpProxyFilter(TcpProxyConfig("x", "no-such-cluster"), upstreams, store)
                reader, writer = await asyncio.open_connection(*server.getsockname())
                sock, peer = await loop.sock_accept(server)
                info = await asyncio.wait_for(
                    unknown.serve(sock, ConnInfo("10.0.0.1", 80, peer[0], peer[1])), 3)
                assert info.response_flags == flags.NO_CLUSTER_FOUND
                writer.close()
            finally:
                server.close()
            counters = store.snapshot().counters
            assert counters["cluster.BlackHoleCluster.upstream_cx_none_healthy"] == 1
            assert counters["tcp.x.downstream_cx_no_route"] == 1

    run(scenario)
