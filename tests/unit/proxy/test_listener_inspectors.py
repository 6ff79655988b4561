"""Listener filters: the TLS inspector on real ClientHellos from Python's ``ssl`` module, the
HTTP inspector on real requests, and the peek-without-consuming stage over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import random
import socket
import ssl
import struct
import threading
import time

import pytest
import uvloop

from pistio.proxy.config.listener_config import (
    ListenerFilterConfig,
    ListenerFilterKind,
    PortPredicate,
)
from pistio.proxy.filters.listener.http_inspector import HttpDetection, inspect_http
from pistio.proxy.filters.listener.inspection import InspectionVerdict, InspectorStats, inspect
from pistio.proxy.filters.listener.tls_inspector import (
    TlsDetection,
    inspect_client_hello,
)
from pistio.proxy.stats.store import StatsStore

TLS = ListenerFilterConfig(ListenerFilterKind.TLS_INSPECTOR, "envoy.filters.listener.tls_inspector")
HTTP = ListenerFilterConfig(ListenerFilterKind.HTTP_INSPECTOR,
                            "envoy.filters.listener.http_inspector")
ORIGINAL_DST = ListenerFilterConfig(ListenerFilterKind.ORIGINAL_DST,
                                    "envoy.filters.listener.original_dst")


def client_hello(server_hostname: str | None, alpn: list[str] | None = None,
                 maximum: ssl.TLSVersion | None = None) -> bytes:
    """The bytes Python's TLS client sends first (a real OpenSSL ClientHello)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maximum is not None:
        ctx.maximum_version = maximum
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def refragment(hello: bytes, size: int) -> bytes:
    """The same handshake message split over several TLS records of ``size`` bytes."""
    version = hello[1:3]
    message = hello[5:]
    out = b""
    for i in range(0, len(message), size):
        chunk = message[i : i + size]
        out += b"\x16" + version + struct.pack("!H", len(chunk)) + chunk
    return out


# --- TLS inspector ---------------------------------------------------------------------------


@pytest.mark.parametrize("alpn", [["h2", "http/1.1"], ["istio-peer-exchange", "istio"], None])
def test_sni_and_alpn_from_real_client_hellos(alpn) -> None:
    hello = client_hello("reviews.default.svc.cluster.local", alpn)
    result = inspect_client_hello(hello)
    assert result.state is TlsDetection.TLS
    assert result.server_name == "reviews.default.svc.cluster.local"
    assert result.alpn == tuple(alpn or ())


def test_tls12_client_hello_and_no_sni() -> None:
    result = inspect_client_hello(client_hello(None, ["http/1.1"], ssl.TLSVersion.TLSv1_2))
    assert result.state is TlsDetection.TLS
    assert result.server_name == ""
    assert result.alpn == ("http/1.1",)
    # An IP address is not sent as SNI (RFC 6066).
    assert inspect_client_hello(client_hello("10.0.0.1")).server_name == ""


def test_every_prefix_of_a_client_hello_needs_more_and_fragments_are_joined() -> None:
    hello = client_hello("example.com", ["h2"])
    for i in range(len(hello)):
        assert inspect_client_hello(hello[:i]).state is TlsDetection.NEED_MORE, i
    for size in (1, 7, 100, 512):
        split = refragment(hello, size)
        assert inspect_client_hello(split) == inspect_client_hello(hello)
        assert inspect_client_hello(split[: len(split) // 2]).state is TlsDetection.NEED_MORE
    # Bytes after the ClientHello (early data) do not matter.
    assert inspect_client_hello(hello + b"\x17\x03\x03garbage").server_name == "example.com"


def test_plaintext_and_garbage_are_not_tls_and_never_raise() -> None:
    for data in (b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0", b"\x16\x02", b"\x16\x03\x05",
                 b"\x16\x03\x01\x00\x00", b"\x80\x2e\x01\x03\x01",  # SSLv2 hello
                 b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"):  # a ServerHello
        assert inspect_client_hello(data).state is TlsDetection.NOT_TLS, data
    rng = random.Random(7)
    hello = client_hello("example.com", ["h2", "http/1.1"])
    states = set()
    for _ in range(3000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        states.add(inspect_client_hello(noise).state)
        mutated = bytearray(hello)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        states.add(inspect_client_hello(bytes(mutated)).state)
        cut = rng.randrange(len(hello))
        states.add(inspect_client_hello(bytes(mutated[:cut])).state)
    assert states <= set(TlsDetection)


def test_oversized_client_hello_is_too_large() -> None:
    header = b"\x16\x03\x01\x40\x00" + b"\x01" + (20000).to_bytes(3, "big")
    assert inspect_client_hello(header).state is TlsDetection.TOO_LARGE


# --- HTTP inspector --------------------------------------------------------------------------


def capture_request(send) -> bytes:
    """What a real client writes first: ``send(port)`` talks to a socket that records it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        got: list[bytes] = []

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                got.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

        t = threading.Thread(target=accept)
        t.start()
        send(port)
        t.join(5)
    return got[0]


def test_http_inspector_on_real_requests() -> None:
    def http11(port: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("POST", "/reviews/0?x=1", body=b"{}", headers={"Content-Type": "text/json"})
        c.getresponse().read()
        c.close()

    request = capture_request(http11)
    assert inspect_http(request) == (HttpDetection.HTTP, "http/1.1")
    line_end = request.index(b"\n")
    for i in range(1, line_end):
        assert inspect_http(request[:i])[0] is HttpDetection.NEED_MORE, request[:i]

    # A client's first flight: the connection preface and an empty SETTINGS frame.
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert inspect_http(preface) == (HttpDetection.HTTP, "h2c")
    assert inspect_http(preface[:10])[0] is HttpDetection.NEED_MORE

    assert inspect_http(b"GET / HTTP/1.0\r\n\r\n") == (HttpDetection.HTTP, "http/1.0")
    assert inspect_http(b"M-SEARCH * HTTP/1.1\r\n") == (HttpDetection.HTTP, "http/1.1")


def test_http_inspector_rejects_other_protocols_early() -> None:
    for data in (b"\x16\x03\x01", b"SSH-2.0-OpenSSH_9.2\r\n", b"get / HTTP/1.1\r\n",
                 b"FOO / HTTP/1.1\r\n", b"GET /a b HTTP/1.1\r\n", b"GET / HTTX/1.1\r\n",
                 b"\r\nGET / HTTP/1.1\r\n", b"GET / HTTP/1.1x\r\n", b"* OK IMAP4rev1\r\n",
                 b"GET / HTTQ", b"\x00\x00\x00\x08\x04\xd2\x16\x2f"):  # postgres SSLRequest
        assert inspect_http(data)[0] is HttpDetection.NOT_HTTP, data
    rng = random.Random(3)
    for _ in range(2000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        assert inspect_http(noise)[0] in set(HttpDetection)
    assert inspect_http(b"GET /" + b"a" * 70000)[0] is HttpDetection.TOO_LARGE


# --- the listener filter stage over real sockets ------------------------------------------------


def run(coro_fn, timeout: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    uvloop.run(bounded())


class Listener:
    """A listening socket whose accepted connections go through ``inspect``."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]

    async def accept(self) -> socket.socket:
        sock, _ = await asyncio.get_running_loop().sock_accept(self.server)
        return sock

    def close(self) -> None:
        self.server.close()


def test_inspect_reads_sni_and_alpn_of_a_real_tls_client_without_consuming() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener()
        store = StatsStore()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
        client = asyncio.ensure_future(asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=ctx, server_hostname="outbound_.9080_._.reviews"))
        sock = await listener.accept()
        try:
            result = await inspect(sock, loop, (ORIGINAL_DST, TLS, HTTP), 5.0,
                                   stats=InspectorStats(store))
            assert result.verdict is InspectionVerdict.DONE
            conn = result.conn
            assert conn is not None
            assert (conn.dst_ip, conn.dst_port) == ("127.0.0.1", listener.port)
            assert conn.src_ip == "127.0.0.1" and conn.src_port > 0
            assert conn.transport_protocol == "tls"
            assert conn.server_name == "outbound_.9080_._.reviews"
            assert conn.application_protocols == ("istio-peer-exchange", "istio")
            # Nothing was consumed: the ClientHello is still there for the TLS stack.
            sock.setblocking(True)
            sock.settimeout(5)
            assert inspect_client_hello(sock.recv(65536)).state is TlsDetection.TLS
            snap = store.snapshot()
            assert snap.counters["tls_inspector.tls_found"] == 1
            assert snap.counters["tls_inspector.sni_found"] == 1
        finally:
            sock.close()
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)
            listener.close()

    run(scenario)


def test_inspect_waits_for_a_request_line_that_arrives_in_pieces_without_spinning() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener()
        client = socket.create_connection(("127.0.0.1", listener.port))
        sock = await listener.accept()
        try:
            client.sendall(b"GE")

            async def rest() -> None:
                await asyncio.sleep(0.4)
                client.sendall(b"T /productpage HTTP/1.1\r\nHost: x\r\n\r\n")

            sender = asyncio.ensure_future(rest())
            cpu = time.process_time()
            started = time.monotonic()
            result = await inspect(sock, loop, (TLS, HTTP), 5.0)
            waited = time.monotonic() - started
            await sender
            assert result.conn is not None
            assert result.conn.application_protocols == ("http/1.1",)
            assert result.conn.transport_protocol == "raw_buffer"
            assert waited >= 0.35
            # SO_RCVLOWAT: the wait is not a busy loop over the unread bytes.
            assert time.process_time() - cpu < 0.2
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
            assert sock.recv(4096, socket.MSG_PEEK).startswith(b"GET /productpage")
        finally:
            client.close()
            sock.close()
            listener.close()

    run(scenario)


def test_inspect_timeout_continue_or_close_and_remote_close() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener()
        try:
            # A server-speaks-first client sends nothing: timeout, then a TCP chain.
            client = socket.create_connection(("127.0.0.1", listener.port))
            sock = await listener.accept()
            result = await inspect(sock, loop, (TLS, HTTP), 0.2, continue_on_timeout=True)
            assert result.verdict is InspectionVerdict.TIMEOUT_CONTINUED
            assert result.conn is not None and result.conn.application_protocols == ()
            sock.close()
            client.close()

            client = socket.create_connection(("127.0.0.1", listener.port))
            sock = await listener.accept()
            result = await inspect(sock, loop, (TLS, HTTP), 0.2, continue_on_timeout=False)
            assert result.verdict is InspectionVerdict.TIMEOUT and result.conn is None
            sock.close()
            client.close()

            # The peer closes before sending anything.
            client = socket.create_connection(("127.0.0.1", listener.port))
            client.close()
            sock = await listener.accept()
            result = await inspect(sock, loop, (TLS, HTTP), 2.0)
            assert result.verdict is InspectionVerdict.REMOTE_CLOSE and result.conn is None
            sock.close()

            # A short non-HTTP message then a half-close: decided on what arrived.
            client = socket.create_connection(("127.0.0.1", listener.port))
            client.sendall(b"GE")
            client.shutdown(socket.SHUT_WR)
            sock = await listener.accept()
            result = await inspect(sock, loop, (TLS, HTTP), 2.0)
            assert result.verdict is InspectionVerdict.DONE
            assert result.conn is not None and result.conn.application_protocols == ()
            sock.close()
            client.close()
        finally:
            listener.close()

    run(scenario)


def test_filter_disabled_on_a_port_skips_peeking() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener()
        disabled = PortPredicate("port_range", listener.port, listener.port + 1)
        http_off = ListenerFilterConfig(ListenerFilterKind.HTTP_INSPECTOR, "http", disabled)
        client = socket.create_connection(("127.0.0.1", listener.port))
        sock = await listener.accept()
        try:
            started = time.monotonic()
            result = await inspect(sock, loop, (http_off,), None)  # no data ever sent
            assert time.monotonic() - started < 0.5
            assert result.conn is not None and result.conn.dst_port == listener.port
        finally:
            client.close()
            sock.close()
            listener.close()

    run(scenario)
