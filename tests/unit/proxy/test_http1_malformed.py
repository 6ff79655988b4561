"""Malformed and hostile HTTP/1 input: each case gets Envoy's status, then the connection
closes, and a concurrent well-behaved connection never notices."""

from __future__ import annotations

import asyncio

import pytest

from pistio.proxy.http.codec_options import HttpConnectionOptions
from tests.unit.proxy.test_http1_harness import Client, Upstream, get, relay_to, run_bounded

MALFORMED = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    ),
    "duplicate differing content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "duplicate equal content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    "content-length list": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n", 400),
    "bare LF in headers": (b"GET / HTTP/1.1\nHost: a\nX: y\n\n", 400),
    "bare LF after a header": (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    "bare CR in a header value": (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    "invalid chunk size": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk size overflow": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffffff\r\n",
        400,
    ),
    "bare LF in chunk framing": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\r\n\r\n",
        400,
    ),
    "unsupported transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        501,
    ),
    "transfer-encoding list ending in chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    "NUL in a header value": (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
    "missing host": (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    "HTTP/0.9": (b"GET /\r\n\r\n", 400),
    "HTTP/1.0 (accept_http_10 off)": (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", 426),
    "garbage request line": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    "too many headers": (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"x-h%d: v\r\n" % i for i in range(101))
        + b"\r\n",
        431,
    ),
    "headers too large": (
        b"GET / HTTP/1.1\r\nHost: a\r\nx-big: " + b"v" * (61 * 1024) + b"\r\n\r\n",
        431,
    ),
    "one endless header line": (
        b"GET / HTTP/1.1\r\nHost: a\r\nx-big: " + b"v" * (200 * 1024),
        431,
    ),
    "non-websocket upgrade": (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
        403,
    ),
}


async def _expect_refusal(port: int, payload: bytes, status: int) -> None:
    client = await Client.connect(port)
    client.send(payload)
    resp = await asyncio.wait_for(client.response(), 3)
    assert resp.status == status, resp
    assert resp.header(b"connection") == b"close"
    assert await client.closed()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_refused_and_connection_closed(case: str) -> None:
    payload, status = MALFORMED[case]

    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                # A keep-alive neighbour is served before and after the bad connection.
                neighbour = await Client.connect(relay.port)
                assert (await get(neighbour, b"/before")).status == 200
                await _expect_refusal(relay.port, payload, status)
                assert (await get(neighbour, b"/after")).body == b"/after"
                neighbour.close()
                assert [r.path for r in up.requests] == [b"/before", b"/after"]
        finally:
            await up.close()

    run_bounded(scenario)


def test_slowloris_gets_408_after_request_headers_timeout() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        opts = HttpConnectionOptions(request_headers_timeout=0.3)
        try:
            async with relay_to(up.port, opts) as relay:
                neighbour = await Client.connect(relay.port)
                client = await Client.connect(relay.port)
                client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i in range(3):  # trickle a header every 100 ms
                    await asyncio.sleep(0.1)
                    client.send(b"x-drip-%d: 1\r\n" % i)
                resp = await asyncio.wait_for(client.response(), 2)
                assert resp.status == 408
                assert 0.25 <= loop.time() - start < 1.5
                assert await client.closed()
                # A request that completes its headers in time is not affected.
                assert (await get(neighbour)).status == 200
                neighbour.close()
        finally:
            await up.close()

    run_bounded(scenario)


def test_many_hostile_connections_at_once_do_not_disturb_a_good_one() -> None:
    async def scenario() -> None:
        up = Upstream()
        await up.start()
        try:
            async with relay_to(up.port) as relay:
                good = await Client.connect(relay.port)
                cases = list(MALFORMED.values()) * 3
                hostile = [_expect_refusal(relay.port, p, s) for p, s in cases]
                results = await asyncio.gather(
                    *hostile, *(get(good, b"/g%d" % i) for i in range(1)), return_exceptions=True
                )
                assert not [r for r in results if isinstance(r, BaseException)]
                for i in range(5):
                    assert (await get(good, b"/n%d" % i)).body == b"/n%d" % i
                good.close()
        finally:
            await up.close()

    run_bounded(scenario)
