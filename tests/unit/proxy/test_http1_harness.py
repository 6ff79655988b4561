"""Shared pieces for the HTTP/1 relay tests (no tests here): a scriptable upstream server, a
relay on an ephemeral port, and a raw-socket client that reads one response at a time.

Everything listens on 127.0.0.1; every coroutine runs under ``run_bounded`` so a hung test
fails in seconds, and every server is closed in ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools
import uvloop

from pistio.proxy.http.codec_options import HttpConnectionOptions
from pistio.proxy.http.relay import Relay, fixed_upstream
from pistio.proxy.upstream.connection_pool import UpstreamHttpOptions

TEST_TIMEOUT = 8.0


def run_bounded(coro_fn: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    uvloop.run(bounded())


@dataclass
class Request:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


class _RequestReader:
    """Parses requests off a stream reader with httptools."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: list[Request] = []
        self.upgraded = b""
        self._cur: Request | None = None

    def on_message_begin(self) -> None:
        self._cur = Request(b"", b"", [], b"")

    def on_url(self, url: bytes) -> None:
        assert self._cur is not None
        self._cur.path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._cur is not None
        self._cur.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._cur is not None
        self._cur.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        assert self._cur is not None
        self._cur.body += body

    def on_message_complete(self) -> None:
        assert self._cur is not None
        self.done.append(self._cur)


Handler = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def ok_response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def echo_path(req: Request, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    """Answers with the request path as body; keeps the connection."""
    w.write(ok_response(req.path, b"Server: upstream-app\r\nConnection: keep-alive\r\n"))
    return True


@dataclass
class Upstream:
    """A scriptable HTTP/1.1 upstream: ``handler`` answers each parsed request and returns
    whether to keep the connection."""

    handler: Handler = echo_path
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed_connections: int = 0
    server: asyncio.AbstractServer | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = _RequestReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                with contextlib.suppress(httptools.HttpParserUpgrade):
                    parser.parser.feed_data(data)
                while parser.done:
                    req = parser.done.pop(0)
                    self.requests.append(req)
                    if not await self.handler(req, reader, writer):
                        return
                    await writer.drain()
        except (ConnectionError, httptools.HttpParserError):
            return
        finally:
            self.closed_connections += 1
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


@contextlib.asynccontextmanager
async def relay_to(
    port: int,
    options: HttpConnectionOptions | None = None,
    upstream_options: UpstreamHttpOptions | None = None,
):
    """A relay on an ephemeral port sending everything to 127.0.0.1:``port``."""
    loop = asyncio.get_running_loop()
    relay = Relay(
        fixed_upstream(("127.0.0.1", port)),
        options or HttpConnectionOptions(server_name=b"istio-envoy"),
        upstream_options,
    )
    server = await loop.create_server(relay.protocol, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield relay
    finally:
        server.close()
        relay.close()


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    chunked: bool = False

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


class Client:
    """A raw HTTP/1.1 client connection that reads responses one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = b""
        self._parser = httptools.HttpResponseParser(self)
        self._done: list[Response] = []
        self._cur: Response | None = None
        self.upgraded_rest = b""

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def on_message_begin(self) -> None:
        self._cur = Response(0, {}, b"")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._cur is not None
        self._cur.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        assert self._cur is not None
        self._cur.status = self._parser.get_status_code()
        self._cur.chunked = b"transfer-encoding" in self._cur.headers

    def on_body(self, body: bytes) -> None:
        assert self._cur is not None
        self._cur.body += body

    def on_message_complete(self) -> None:
        assert self._cur is not None
        self._done.append(self._cur)

    async def response(self, head_only: bool = False) -> Response:
        while not self._done:
            data = await self.reader.read(65536)
            if not data:
                if self._cur is not None and self._cur.status and not self._done:
                    # A close-delimited body ends here.
                    self._done.append(self._cur)
                    break
                raise ConnectionError("connection closed before a response")
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self.upgraded_rest = data[exc.args[0] :]
        return self._done.pop(0)

    async def closed(self, timeout: float = 2.0) -> bool:
        """True when the peer closes the connection (EOF or reset) within ``timeout``."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


async def get(client: Client, path: bytes = b"/", extra: bytes = b"") -> Response:
    client.send(b"GET %s HTTP/1.1\r\nHost: svc\r\n%s\r\n" % (path, extra))
    return await client.response()
