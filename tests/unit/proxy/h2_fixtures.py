"""HTTP/2 test pieces: an h2c upstream server, an h2c client (both on the ``h2`` library),
a raw-bytes gRPC echo server on grpcio, and clusters that speak HTTP/2 upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from hyperframe.frame import GoAwayFrame

from tests.unit.proxy.http_fixtures import eds_cluster, pack

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def h2_cluster(name: str, use_downstream: bool = False, **h2_options: Any) -> Any:
    """An EDS cluster whose upstream protocol is HTTP/2 (explicit, or the downstream's)."""
    opts = hpo.HttpProtocolOptions()
    h2opts = protocol_pb2.Http2ProtocolOptions()
    for key, value in h2_options.items():
        getattr(h2opts, key).value = value
    if use_downstream:
        opts.use_downstream_protocol_config.http2_protocol_options.CopyFrom(h2opts)
    else:
        opts.explicit_http_config.http2_protocol_options.CopyFrom(h2opts)
    c = eds_cluster(name)
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(pack(opts))
    return c


# --- an h2c upstream server ------------------------------------------------------------------------


@dataclass
class H2Request:
    conn_id: int
    headers: dict[str, str]
    body: bytes = b""


class _H2ServerProtocol(asyncio.Protocol):
    def __init__(self, server: H2UpstreamServer) -> None:
        self.server = server
        self.conn_id = server.connections
        server.connections += 1
        self.h2c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, H2Request] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.pumps: dict[int, int] = {}  # stream → bytes still to stream (x-stream-bytes)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.transports.add(transport)
        self.h2c.initiate_connection()
        transport.write(self.h2c.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.transports.discard(self.transport)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2c.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.abort()  # type: ignore[union-attr]  # not HTTP/2 (an HTTP/1 hop)
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = H2Request(self.conn_id, dict(event.headers))
                if event.stream_ended is not None:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id].body += event.data
                self.h2c.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
                if event.stream_ended is not None:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.requests:
                    self._respond(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.server.resets.append(event.stream_id)
                self.pumps.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                for sid in list(self.pumps):
                    self._pump(sid)
        self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]

    def _respond(self, sid: int) -> None:
        req = self.requests.pop(sid, None)
        if req is None:
            return
        self.server.received.append(req)
        task = asyncio.get_running_loop().create_task(self._answer(sid, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, sid: int, req: H2Request) -> None:
        if "x-hang" in req.headers:
            await asyncio.sleep(3600)
        if "x-delay-ms" in req.headers:
            await asyncio.sleep(int(req.headers["x-delay-ms"]) / 1000)
        if "x-stream-bytes" in req.headers:
            self.h2c.send_headers(sid, [(":status", "200")])
            self.pumps[sid] = int(req.headers["x-stream-bytes"])
            self._pump(sid)
            self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]
            return
        if "x-goaway-first" in req.headers:
            # A graceful shutdown as gRPC servers and Envoy do it: GOAWAY naming this stream
            # as the last one, then its response (a raw frame: h2's close_connection would
            # stop this side from sending the response).
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = sid
            self.transport.write(self.h2c.data_to_send() + goaway.serialize())  # type: ignore[union-attr]
        body = json.dumps({"server": self.server.name, "conn": req.conn_id,
                           "headers": req.headers, "body": req.body.decode("latin-1")}).encode()
        status = req.headers.get("x-status", "200")
        self.h2c.send_headers(sid, [(":status", status), ("content-type", "application/json"),
                                    ("content-length", str(len(body)))])
        frame = self.h2c.max_outbound_frame_size
        for pos in range(0, len(body), frame):  # the proxy's windows are 256 MiB
            self.h2c.send_data(sid, body[pos:pos + frame])
        if "x-trailer" not in req.headers:
            self.h2c.end_stream(sid)
        if "x-goaway" in req.headers:
            self.h2c.close_connection(last_stream_id=sid)
        if "x-trailer" in req.headers:
            self.h2c.send_headers(sid, [("x-trailer", req.headers["x-trailer"])],
                                  end_stream=True)
        self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]

    def _pump(self, sid: int) -> None:
        """Send as much of the streamed body as the proxy's windows allow."""
        left = self.pumps.get(sid, 0)
        frame = self.h2c.max_outbound_frame_size
        while left > 0:
            n = min(left, frame, self.h2c.local_flow_control_window(sid))
            if n <= 0:
                break
            self.h2c.send_data(sid, b"z" * n)
            self.server.streamed += n
            left -= n
        if left <= 0 and sid in self.pumps:
            del self.pumps[sid]
            self.h2c.end_stream(sid)
        else:
            self.pumps[sid] = left


@dataclass
class H2UpstreamServer:
    name: str
    port: int = 0
    connections: int = 0
    received: list[H2Request] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    streamed: int = 0  # bytes sent by x-stream-bytes responses
    transports: set[Any] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None

    async def start(self) -> H2UpstreamServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _H2ServerProtocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.transports):
            t.abort()


# --- an h2c client ---------------------------------------------------------------------------------


@dataclass
class H2Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    done: asyncio.Future[None] | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class H2Client(asyncio.Protocol):
    """Prior-knowledge h2c client; ``auto_ack=False`` never returns flow-control credit."""

    def __init__(self, auto_ack: bool = True, window: int | None = None) -> None:
        self.h2c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.auto_ack = auto_ack
        self.window = window
        self.transport: asyncio.Transport | None = None
        self.responses: dict[int, H2Response] = {}
        self.received_bytes = 0

    @classmethod
    async def connect(cls, port: int, **kw: Any) -> H2Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: cls(**kw), "127.0.0.1", port)
        return client

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2c.initiate_connection()
        if self.window is not None:
            self.h2c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.window})
        transport.write(self.h2c.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        for r in self.responses.values():
            if r.done is not None and not r.done.done():
                r.done.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        for event in self.h2c.receive_data(data):
            sid = getattr(event, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(event, h2.events.ResponseReceived) and r is not None:
                hs = dict(event.headers)
                r.status = int(hs.pop(":status"))
                r.headers = hs
            elif isinstance(event, h2.events.DataReceived) and r is not None:
                r.body += event.data
                self.received_bytes += len(event.data)
                if self.auto_ack:
                    self.h2c.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.TrailersReceived) and r is not None:
                r.trailers = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded) and r is not None:
                if not r.done.done():  # type: ignore[union-attr]
                    r.done.set_result(None)  # type: ignore[union-attr]
            elif isinstance(event, h2.events.StreamReset) and r is not None:
                r.reset = event.error_code
                if not r.done.done():  # type: ignore[union-attr]
                    r.done.set_result(None)  # type: ignore[union-attr]
        self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]

    def start(self, path: str = "/", method: str = "GET", headers: dict[str, str] | None = None,
              body: bytes | None = None, authority: str = "example.com",
              end: bool = True) -> int:
        sid = self.h2c.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", "http"), (":authority", authority),
              (":path", path), *(headers or {}).items()]
        self.h2c.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            self.h2c.send_data(sid, body, end_stream=end)
        self.responses[sid] = H2Response(done=asyncio.get_running_loop().create_future())
        self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]
        return sid

    def reset(self, sid: int) -> None:
        self.h2c.reset_stream(sid)
        self.transport.write(self.h2c.data_to_send())  # type: ignore[union-attr]

    async def response(self, sid: int, timeout: float = 5.0) -> H2Response:
        r = self.responses[sid]
        async with asyncio.timeout(timeout):
            await r.done  # type: ignore[misc]
        return r

    async def request(self, *args: Any, timeout: float = 5.0, **kw: Any) -> H2Response:
        return await self.response(self.start(*args, **kw), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- a gRPC echo server (grpcio, raw bytes, no generated code) ------------------------------------


class GrpcEcho:
    """``/test.Echo/Unary`` answers ``echo:<request>`` (or aborts with the status the
    ``x-code`` metadata names); ``/test.Echo/Stream`` streams N messages of N bytes."""

    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.calls = 0
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        md = dict(context.invocation_metadata())
        if "x-fail-first" in md and self.calls == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if "x-code" in md:
            context.abort(grpc.StatusCode[md["x-code"]], "failed on purpose")
        if "x-sleep-ms" in md:
            import time

            time.sleep(int(md["x-sleep-ms"]) / 1000)
        context.set_trailing_metadata((("x-served-by", "echo"),))
        return b"echo:" + request

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        count, size = (int(x) for x in request.split(b"x"))
        for i in range(count):
            yield (b"%08d" % i) + b"." * (size - 8)

    def close(self) -> None:
        self.server.stop(None).wait(5)
