"""A small HTTP/1.1 server for the proxy's local control endpoints (admin 15000, Prometheus
15090, agent health 15021).

These ports carry a few requests per second from ``curl``, Prometheus and kubelet probes, not
data-plane traffic, so the server is simple: ``httptools`` parses, requests on a connection are
answered one at a time in order (pipelining works, keep-alive is honoured), every response has a
``Content-Length``. A handler receives a :class:`Request` and returns a :class:`Response`,
directly or as an awaitable; a handler that raises produces a 500 with the error text.

An action that must happen after its response is on the wire (``/quitquitquit`` stopping the
server that answers it) goes in :attr:`Response.after_send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl

import httptools

log = logging.getLogger("pistio.proxy.admin")

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
HTML = "text/html; charset=UTF-8"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = TEXT
    after_send: Callable[[], object] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], "Response | Awaitable[Response]"]
Router = Callable[[Request], "Response | Awaitable[Response]"]


def route_table(routes: Mapping[str, Handler], not_found: Handler | None = None) -> Router:
    """A router dispatching on the exact path."""

    def dispatch(request: Request) -> Response | Awaitable[Response]:
        handler = routes.get(request.path)
        if handler is None:
            if not_found is not None:
                return not_found(request)
            return Response(404, "Not Found\n")
        return handler(request)

    return dispatch


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task | None = None
        self._closing = False

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_raw(400, b"Bad Request\n", TEXT, keep_alive=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._closing = True
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        query = url.query.decode("latin-1") if url.query else ""
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=url.path.decode("latin-1") if url.path else "/",
            params=dict(parse_qsl(query, keep_blank_values=True)),
            headers=self._headers,
            body=b"".join(self._body),
        )
        self._queue.append((request, self._parser.should_keep_alive()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    # --- request processing
    async def _serve(self) -> None:
        while self._queue and not self._closing:
            request, keep_alive = self._queue.popleft()
            try:
                result = self._server._router(request)
                response = await result if inspect.isawaitable(result) else result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken handler must not take the server down
                log.exception("admin handler for %s failed", request.path)
                response = Response(500, f"{type(exc).__name__}: {exc}\n")
            body = response.body.encode() if isinstance(response.body, str) else response.body
            if request.method == "HEAD":
                body = b""
            self._write_raw(
                response.status, body, response.content_type, keep_alive, response.headers
            )
            if response.after_send is not None:
                # Run once the bytes are handed to the transport, outside this task.
                asyncio.get_running_loop().call_soon(_run_callback, response.after_send)
            if not keep_alive:
                return

    def _write_raw(
        self,
        status: int,
        body: bytes,
        content_type: str,
        keep_alive: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        head = [
            _status_line(status),
            f"content-type: {content_type}\r\n".encode(),
            f"content-length: {len(body)}\r\n".encode(),
            b"cache-control: no-cache, max-age=0\r\n",
            b"x-content-type-options: nosniff\r\n",
        ]
        for name, value in extra or ():
            head.append(f"{name}: {value}\r\n".encode())
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        transport.write(b"".join(head) + body)
        if not keep_alive:
            self._closing = True
            transport.close()


def _run_callback(callback: Callable[[], object]) -> None:
    result = callback()
    if inspect.isawaitable(result):
        asyncio.ensure_future(result)


class HttpServer:
    """Serve a router on one TCP address; :meth:`start` binds, :meth:`close` stops and drops
    open connections."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        sockets = self._server.sockets
        if not sockets or sockets[0] is None:
            # uvloop reports a failed listen() (the port taken between bind and listen) by
            # closing the server instead of raising: raise what asyncio would have.
            self._server.close()
            self._server = None
            raise OSError(errno.EADDRINUSE, f"cannot listen on {host}:{port}")
        sockname = sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            if conn._transport is not None:
                conn._transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None
