"""The HTTP/1.1 data path through a real relay on 127.0.0.1: keep-alive and pooling,
pipelining, chunked bodies, back-pressure, 100-continue, WebSocket, HTTP/1.0, upstream
failures and client resets."""

from __future__ import annotations

import asyncio
import re

from pistio.proxy.http.codec_options import HttpConnectionOptions
from pistio.proxy.http.headers import RequestHead, RequestIdGenerator
from pistio.proxy.http.relay import LocalReplyDecision, Relay
from tests.unit.proxy.test_http1_harness import (
    Client,
    Request,
    Upstream,
    get,
    ok_response,
    relay_to,
    run_bounded,
)

UUID4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_request_ids_are_uuid4() -> None:
    gen = RequestIdGenerator()
    ids = {gen() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(UUID4.match(i) for i in ids)


def test_keep_alive_reuses_one_upstream_connection_and_edits_headers() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                for _ in range(2):  # two downstream connections share the pooled upstream
                    client = await Client.connect(relay.port)
                    for i in range(3):
                        extra = b"Keep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\n"
                        resp = await get(client, b"/p%d" % i, extra)
                        assert resp.status == 200
                        assert resp.body == b"/p%d" % i
                        assert resp.header(b"server") == b"istio-envoy"
                        assert resp.header(b"x-envoy-upstream-service-time") is not None
                        assert resp.header(b"connection") is None
                    client.close()
                    await asyncio.sleep(0.05)
                assert up.connections == 1
                assert len(up.requests) == 6
                req = up.requests[0]
                assert UUID4.match(req.header(b"x-request-id") or b"")
                assert req.header(b"x-forwarded-proto") == b"http"
                for hop in (b"keep-alive", b"proxy-connection", b"te", b"connection"):
                    assert req.header(hop) is None, hop
                # An x-request-id from the client is kept.
                client = await Client.connect(relay.port)
                await get(client, b"/", b"x-request-id: abc\r\n")
                assert up.requests[-1].header(b"x-request-id") == b"abc"
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(req: Request, reader, writer) -> bool:
        if req.path == b"/slow":
            await asyncio.sleep(0.2)
        writer.write(ok_response(req.path))
        return True

    async def scenario() -> None:
        up = Upstream(slow_first)
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                client.send(
                    b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
                    b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                    b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
                )
                bodies = [(await client.response()).body for _ in range(3)]
                assert bodies == [b"/slow", b"/two", b"/three"]
                assert up.requests[1].body == b"abc"
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_chunked_both_ways_and_close_delimited_response() -> None:
    async def chunked_reply(req: Request, reader, writer) -> bool:
        if req.path == b"/close":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil-the-end")
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"hello ", b"", b"chunked ", req.body):
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        return True

    async def scenario() -> None:
        up = Upstream(chunked_reply)
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                client.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                client.send(b"4\r\nwiki\r\n")
                await asyncio.sleep(0.05)
                client.send(b"5\r\npedia\r\n0\r\n\r\n")
                resp = await client.response()
                assert resp.status == 200 and resp.chunked
                assert resp.body == b"hello chunked wikipedia"
                assert up.requests[0].header(b"transfer-encoding") == b"chunked"
                assert up.requests[0].body == b"wikipedia"
                # An upstream body ended by close reaches an HTTP/1.1 client chunked.
                resp = await get(client, b"/close")
                assert resp.chunked and resp.body == b"until-the-end"
                resp = await get(client, b"/again")
                assert resp.body == b"hello chunked "
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_large_body_streams_with_bounded_buffering() -> None:
    """A slow upstream must hold the client back, not make the relay buffer the body."""
    total = 24 * 1024 * 1024
    received = 0

    async def scenario() -> None:
        nonlocal received
        gate = asyncio.Event()
        max_buffered = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"content-length: %d" % total in head.lower()
            await gate.wait()
            while received < total:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    return
                received += len(chunk)
            writer.write(ok_response(b"%d" % received))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with relay_to(port) as relay:
                client = await Client.connect(relay.port)
                client.send(b"PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
                sent = 0
                block = b"z" * (1 << 20)

                async def produce() -> None:
                    nonlocal sent
                    while sent < total:
                        client.send(block)
                        sent += len(block)
                        await client.writer.drain()

                producer = asyncio.create_task(produce())
                # The upstream reads nothing for a while: the client must stall well short of
                # the whole body, and the relay must hold at most about a watermark of it.
                # (Kernel socket buffers on loopback absorb several MB; what must stay small
                # is what the relay itself holds.)
                paused_seen = False
                for _ in range(40):
                    await asyncio.sleep(0.01)
                    pool = relay.pools.get(("127.0.0.1", port))
                    for conn in pool.connections:
                        if conn.transport is not None and conn._down is not None:
                            max_buffered = max(
                                max_buffered,
                                conn.transport.get_write_buffer_size()
                                + sum(len(p) for p in conn.out),
                            )
                            paused_seen = paused_seen or conn._down.gate.paused
                assert not producer.done()
                assert paused_seen
                assert max_buffered <= 512 * 1024, max_buffered
                gate.set()
                await producer
                resp = await client.response()
                assert resp.status == 200 and resp.body == b"%d" % total
                client.close()
        finally:
            server.close()

    run_bounded(scenario, timeout=15)


def test_slow_client_pauses_the_upstream_response() -> None:
    total = 16 * 1024 * 1024

    async def big_reply(req: Request, reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"y" * (1 << 20)
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        return True

    async def scenario() -> None:
        up = Upstream(big_reply)
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", relay.port, limit=1 << 16
                )
                writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                await asyncio.sleep(0.3)  # the client reads nothing meanwhile
                # Find the downstream connection's buffer through the pooled upstream side.
                pool = relay.pools.get(("127.0.0.1", up.port))
                (conn,) = pool.connections
                down = conn._down
                assert down is not None
                # Bounded by the high-water mark plus one read (uvloop reads up to 256 KiB).
                assert down.transport.get_write_buffer_size() <= 512 * 1024
                assert conn._reading_paused
                got = 0
                while got < total:
                    chunk = await reader.read(1 << 20)
                    assert chunk
                    got += len(chunk)
                writer.close()
        finally:
            await up.close()

    run_bounded(scenario, timeout=15)


def test_expect_100_continue_is_answered_by_the_proxy() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                client.send(
                    b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n"
                )
                interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 2)
                assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
                client.send(b"data")
                resp = await client.response()
                assert resp.status == 200
                assert up.requests[0].header(b"expect") is None
                assert up.requests[0].body == b"data"
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_websocket_upgrade_relays_raw_bytes() -> None:
    async def scenario() -> None:
        async def ws(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"upgrade: websocket" in head.lower()
            assert b"connection: upgrade" in head.lower()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
            )
            while data := await reader.read(65536):
                writer.write(data.upper())
            writer.close()

        server = await asyncio.start_server(ws, "127.0.0.1", 0)
        try:
            async with relay_to(server.sockets[0].getsockname()[1]) as relay:
                client = await Client.connect(relay.port)
                client.send(
                    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"
                )
                head = await client.reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                assert b"upgrade: websocket" in head.lower()
                for word in (b"frame-one", b"frame-two"):
                    client.send(word)
                    assert await client.reader.readexactly(len(word)) == word.upper()
                client.close()
        finally:
            server.close()

    run_bounded(scenario)


def test_http10_refused_by_default_and_served_when_accepted() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                client.send(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
                resp = await client.response()
                assert resp.status == 426
                assert await client.closed()
            opts = HttpConnectionOptions(accept_http_10=True, default_host_for_http_10=b"dflt")
            async with relay_to(up.port, opts) as relay:
                client = await Client.connect(relay.port)
                client.send(b"GET /ten HTTP/1.0\r\n\r\n")
                resp = await client.response()
                assert resp.status == 200 and resp.body == b"/ten"
                assert resp.header(b"connection") == b"close"
                assert await client.closed()
                assert up.requests[-1].header(b"host") == b"dflt"
                client = await Client.connect(relay.port)
                client.send(b"GET /ka HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
                resp = await client.response()
                assert resp.header(b"connection") == b"keep-alive"
                client.send(b"GET /ka2 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
                assert (await client.response()).body == b"/ka2"
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_upstream_connect_failure_is_a_503_and_the_connection_lives_on() -> None:
    async def scenario() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with relay_to(dead_port) as relay:
            client = await Client.connect(relay.port)
            for _ in range(2):
                resp = await get(client)
                assert resp.status == 503
                assert resp.body == (
                    b"upstream connect error or disconnect/reset before headers. "
                    b"reset reason: connection failure"
                )
            client.close()

    run_bounded(scenario)


def test_local_reply_from_the_router_keeps_the_connection() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def pick(head: RequestHead):
            return LocalReplyDecision(404) if head.target == b"/none" else ("127.0.0.1", 9)

        relay = Relay(pick, HttpConnectionOptions())
        server = await loop.create_server(relay.protocol, "127.0.0.1", 0)
        try:
            client = await Client.connect(server.sockets[0].getsockname()[1])
            for _ in range(2):
                resp = await get(client, b"/none")
                assert resp.status == 404 and resp.header(b"connection") is None
            client.close()
        finally:
            server.close()
            relay.close()

    run_bounded(scenario)


def test_upstream_reset_before_and_during_the_response() -> None:
    async def flaky(req: Request, reader, writer) -> bool:
        if req.path == b"/before":
            writer.transport.abort()
            return False
        if req.path == b"/during":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await writer.drain()
            writer.transport.abort()
            return False
        writer.write(ok_response(b"fine"))
        return True

    async def scenario() -> None:
        up = Upstream(flaky)
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                resp = await get(client, b"/before")
                assert resp.status == 503
                assert resp.body.endswith(b"reset reason: connection termination")
                assert (await get(client, b"/ok")).body == b"fine"
                client.send(b"GET /during HTTP/1.1\r\nHost: a\r\n\r\n")
                got = b""
                try:
                    while chunk := await client.reader.read(65536):
                        got += chunk
                except ConnectionError:
                    pass
                assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"partial")
                # Another client is served by a fresh upstream connection.
                other = await Client.connect(relay.port)
                assert (await get(other, b"/ok")).body == b"fine"
                other.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_client_reset_mid_body_aborts_upstream_and_pool_stays_clean() -> None:
    async def scenario() -> None:
        up_closed = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if b"/upload" in head:
                        while await reader.read(65536):
                            pass
                        up_closed.set()
                        return
                    writer.write(ok_response(b"fine"))
            except (asyncio.IncompleteReadError, ConnectionError):
                up_closed.set()
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with relay_to(port) as relay:
                client = await Client.connect(relay.port)
                client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
                client.send(b"x" * 5000)
                await client.writer.drain()
                await asyncio.sleep(0.05)
                client.writer.transport.abort()
                await asyncio.wait_for(up_closed.wait(), 2)
                pool = relay.pools.get(("127.0.0.1", port))
                assert not pool.idle
                other = await Client.connect(relay.port)
                assert (await get(other, b"/ok")).body == b"fine"
                other.close()
        finally:
            server.close()

    run_bounded(scenario)


def test_idle_downstream_connection_is_closed() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port, HttpConnectionOptions(idle_timeout=0.2)) as relay:
                client = await Client.connect(relay.port)
                assert (await get(client)).status == 200
                assert await client.closed(timeout=2)
        finally:
            await up.close()

    run_bounded(scenario)


def test_router_header_edits() -> None:
    from pistio.proxy.http.headers import (
        set_decorator_operation,
        set_expected_timeout,
        upstream_service_time_line,
    )

    head = RequestHead(b"GET", b"/", "1.1", [(b"Host", b"a")], {b"host": b"a"})
    set_expected_timeout(head, 0)
    assert head.get(b"x-envoy-expected-rq-timeout-ms") is None
    set_expected_timeout(head, 15000)
    set_expected_timeout(head, 2500)
    set_decorator_operation(head, b"reviews.default.svc.cluster.local:9080/*")
    assert head.fields == [
        (b"Host", b"a"),
        (b"x-envoy-expected-rq-timeout-ms", b"2500"),
        (b"x-envoy-decorator-operation", b"reviews.default.svc.cluster.local:9080/*"),
    ]
    assert upstream_service_time_line(3.7) == b"x-envoy-upstream-service-time: 3\r\n"


def test_head_and_no_content_responses_keep_the_connection_in_step() -> None:
    async def reply(req: Request, reader, writer) -> bool:
        if req.method == b"HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        elif req.path == b"/204":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(ok_response(req.path))
        return True

    async def scenario() -> None:
        up = Upstream(reply)
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                client = await Client.connect(relay.port)
                client.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
                head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 2)
                assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1234" in head
                client._parser = type(client._parser)(client)
                resp = await get(client, b"/204")
                assert resp.status == 204 and not resp.chunked
                assert (await get(client, b"/after")).body == b"/after"
                assert up.connections == 1
                client.close()
        finally:
            await up.close()

    run_bounded(scenario)
