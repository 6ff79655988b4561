"""Downstream ``common_http_protocol_options.max_requests_per_connection`` and
``max_connection_duration`` over real sockets (HTTP/1.1 and HTTP/2), with Envoy's counters
``downstream_cx_max_requests_reached`` and ``downstream_cx_max_duration_reached``."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import hpack
import pytest
import pytest_asyncio
from envoy.config.core.v3 import protocol_pb2
from google.protobuf import duration_pb2, wrappers_pb2
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from tests.unit.proxy.h2_fixtures import H2Client
from tests.unit.proxy.http_fixtures import (
    Env,
    KeepAliveClient,
    proxy_env,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

ROUTES = [route_config("http", [route("/", cluster="app")])]


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


def limits(requests: int = 0, duration_ms: int = 0) -> dict:
    options = protocol_pb2.HttpProtocolOptions()
    if requests:
        options.max_requests_per_connection.CopyFrom(wrappers_pb2.UInt32Value(value=requests))
    if duration_ms:
        options.max_connection_duration.CopyFrom(duration_pb2.Duration(
            nanos=duration_ms * 1_000_000))
    return {"common_http_protocol_options": options}


def counter(env: Env, name: str) -> int:
    return env.proxy.counter(f"http.ingress_http.{name}")  # type: ignore[union-attr]


async def closed_by_peer(client: KeepAliveClient) -> bool:
    assert client.reader is not None
    async with asyncio.timeout(5):
        return await client.reader.read() == b""


async def test_http1_max_requests_per_connection(env: Env) -> None:
    await env.start("app")
    await env.apply(ROUTES, hcm_fields=limits(requests=2))
    client = KeepAliveClient(env.port)
    try:
        first = await client.request("/")
        reader = client.reader
        assert first.status == 200 and first.headers.get("connection") != "close"
        second = await client.request("/")
        assert second.status == 200 and second.headers.get("connection") == "close"
        assert reader is not None and await reader.read() == b""  # the proxy closed it
    finally:
        client.close()
    assert counter(env, "downstream_cx_max_requests_reached") == 1


async def test_http1_max_connection_duration(env: Env) -> None:
    await env.start("app")
    await env.apply(ROUTES, hcm_fields=limits(duration_ms=300))
    client = KeepAliveClient(env.port)
    try:
        assert (await client.request("/")).headers.get("connection") != "close"
        assert await closed_by_peer(client)  # idle when the duration ran out: closed
    finally:
        client.close()
    assert counter(env, "downstream_cx_max_duration_reached") == 1


async def test_http1_duration_drains_a_busy_connection(env: Env) -> None:
    await env.start("app")
    await env.apply(ROUTES, hcm_fields=limits(duration_ms=200))
    client = KeepAliveClient(env.port)
    try:
        # The upstream answers after 400 ms: the duration runs out mid-request.
        r = await client.request("/", headers={"x-delay-ms": "400"})
        assert r.status == 200
        assert await closed_by_peer(client)
    finally:
        client.close()


class RawH2:
    """An HTTP/2 client that sends with h2 but reads frames with hyperframe: h2's state
    machine closes on a GOAWAY and cannot take the responses that may still follow one
    (RFC 9113 §6.8), which is what these tests look at."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2c.initiate_connection()
        self.frames: list[Any] = []
        self.buffer = b""
        self.decoder = hpack.Decoder()  # header blocks decode in frame order
        self.statuses: dict[int, bytes] = {}

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def get(self, headers: dict[str, str] | None = None) -> int:
        sid = self.h2c.get_next_available_stream_id()
        self.h2c.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                    (":authority", "example.com"), (":path", "/"),
                                    *(headers or {}).items()], end_stream=True)
        self.writer.write(self.h2c.data_to_send())
        return sid

    async def read_until(self, done: Any, timeout: float = 5.0) -> None:
        """Read frames until ``done()`` or the end of the connection."""
        async with asyncio.timeout(timeout):
            while not done():
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                self.buffer += chunk
                while len(self.buffer) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                    if len(self.buffer) < 9 + length:
                        break
                    frame.parse_body(memoryview(self.buffer[9:9 + length]))
                    self.buffer = self.buffer[9 + length:]
                    self.frames.append(frame)
                    if isinstance(frame, HeadersFrame):
                        status = dict(self.decoder.decode(frame.data, raw=True))[b":status"]
                        self.statuses[frame.stream_id] = status

    def ended(self, sid: int) -> bool:
        return any(f.stream_id == sid and "END_STREAM" in f.flags for f in self.frames
                   if isinstance(f, (HeadersFrame, DataFrame)))

    def close(self) -> None:
        self.writer.close()


async def raw_h2_exchange(port: int, requests: int) -> RawH2:
    """``requests`` GETs at once on one connection, read until the proxy closes it."""
    client = await RawH2.connect(port)
    try:
        for _ in range(requests):
            client.get()
        await client.read_until(lambda: False)
    finally:
        client.close()
    return client


async def test_http2_max_requests_sends_goaway_and_finishes_the_last_stream(env: Env) -> None:
    await env.start("app")
    await env.apply(ROUTES, hcm_fields=limits(requests=2))
    client = await raw_h2_exchange(env.port, 3)
    frames = client.frames
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaway][:1] == [(3, 0)]
    assert client.statuses == {1: b"200", 3: b"200"}
    # The response of stream 3 comes after the GOAWAY; stream 5 is refused.
    assert frames.index(goaway[0]) < next(i for i, f in enumerate(frames)
                                          if isinstance(f, HeadersFrame) and f.stream_id == 3)
    refused = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in refused] == [
        (5, h2.errors.ErrorCodes.REFUSED_STREAM)]
    assert counter(env, "downstream_cx_max_requests_reached") == 1


async def test_http2_max_connection_duration_sends_goaway(env: Env) -> None:
    await env.start("app")
    await env.apply(ROUTES, hcm_fields=limits(duration_ms=200))
    client = await H2Client.connect(env.port)
    try:
        assert (await client.request("/")).status == 200
        for _ in range(100):  # idle when the duration runs out: GOAWAY, then closed
            if client.transport is not None and client.transport.is_closing():
                break
            await asyncio.sleep(0.02)
        assert client.transport is not None and client.transport.is_closing()
    finally:
        client.close()
    assert counter(env, "downstream_cx_max_duration_reached") == 1


async def test_http2_listener_update_drains_and_answers_the_stream_in_flight(env: Env) -> None:
    """A changed listener drains its HTTP/2 connections (Envoy's immediate drain): the next
    stream is the last one — GOAWAY first, then its response, then the connection closes."""
    await env.start("app")
    await env.apply(ROUTES)
    client = await RawH2.connect(env.port)
    try:
        first = client.get()
        await client.read_until(lambda: client.ended(first))
        assert client.statuses[first] == b"200"
        await env.apply(ROUTES, stat_prefix="changed")  # the listener changes: drain
        slow = client.get({"x-delay-ms": "300"})  # still in flight when the GOAWAY goes out
        await client.read_until(lambda: False)
    finally:
        client.close()
    goaway = next(i for i, f in enumerate(client.frames) if isinstance(f, GoAwayFrame))
    assert client.frames[goaway].last_stream_id == slow
    assert client.statuses[slow] == b"200" and client.ended(slow)
    assert goaway < next(i for i, f in enumerate(client.frames)
                         if isinstance(f, HeadersFrame) and f.stream_id == slow)


async def test_http2_client_goaway_still_gets_the_responses_of_its_streams(env: Env) -> None:
    """A client's GOAWAY says it opens no more streams (RFC 9113 §6.8); the streams it has
    open are answered, then the proxy closes the connection. (h2 alone would close its state
    machine on the GOAWAY and could send nothing more.)"""
    await env.start("app")
    await env.apply(ROUTES)
    client = await RawH2.connect(env.port)
    try:
        slow = client.get({"x-delay-ms": "300"})
        client.h2c.close_connection()  # GOAWAY right behind the request
        client.writer.write(client.h2c.data_to_send())
        await client.read_until(lambda: False)  # until the proxy closes the connection
    finally:
        client.close()
    assert client.statuses == {slow: b"200"} and client.ended(slow)
    assert not [f for f in client.frames if isinstance(f, RstStreamFrame)]
