"""Envoy's HTTP/2 client codec: one upstream connection carrying many streams at once.

``Http2ClientConnection`` is an ``asyncio.Protocol`` driving a client-side
``h2.connection.H2Connection``; each routed request attempt gets an ``Http2ClientStream``,
which is what the router sees as the attempt's ``upstream`` (the same methods the HTTP/1.1
client connection offers: ``out``/``flush`` for body pieces, ``on_request_complete``,
``abort_stream``, ``pause_reading_for_peer``/``resume_reading_for_peer``).

- Request headers become HTTP/2 pseudo-headers (``:authority`` from Host, ``:scheme``
  http); hop-by-hop headers are dropped, ``te: trailers`` kept.
- Request body pieces arrive in the pipeline's HTTP/1 framing; chunk framing (the downstream
  codec's, one size line + data + CRLF per piece) is taken off again.
- The body is sent within the stream's and connection's send windows; what does not fit
  waits, and past the write high-water mark the downstream stops being read.
- Response DATA is acknowledged as it is handed downstream, unless the downstream asked to
  pause; then the upstream's window closes (back-pressure).
- Trailers (gRPC's ``grpc-status``) are passed on; RST_STREAM is a remote reset (UR), a
  lost connection a connection termination (UC). A GOAWAY fails the streams above its
  last stream id (they were never processed) and sends new streams to a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from pistio.proxy.http.flow_control import PEER_WRITE_BLOCKED, WRITE_HIGH_WATER, WRITE_LOW_WATER
from pistio.proxy.http.headers import HOP_BY_HOP, RESPONSE_DROPPED, Fields
from pistio.proxy.http.http2_connection import (
    GoAwayExtractor,
    Http2ConnectionBase,
    new_h2_connection,
)
from pistio.proxy.http.stream_events import UpstreamFailure

if TYPE_CHECKING:
    from pistio.proxy.http.http2_downstream import Http2Settings
    from pistio.proxy.upstream.connection_pool_h2 import Http2ConnectionPool

_REQUEST_DROPPED = HOP_BY_HOP | {b"host"}


class Http2ClientStream:
    """One request attempt on an upstream HTTP/2 connection."""

    __slots__ = (
        "conn",
        "stream_id",
        "attempt",
        "down",
        "out",
        "_chunk_state",
        "_send",
        "_send_bytes",
        "_end_pending",
        "_ended",
        "_unacked",
        "_paused",
        "_blocking_down",
        "done",
        "_has_length",
    )

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.conn.local_address

    def __init__(self, conn: Http2ClientConnection, attempt: Any) -> None:
        self.conn = conn
        self.stream_id = 0
        self.attempt = attempt
        self.down = attempt.conn  # the downstream's read gate and flush
        self.out: list[bytes] = []
        # Chunk framing position: 0 size line, 1 data, 2 CRLF (one list item each).
        self._chunk_state = 0 if attempt.chunked_in else -1
        self._send: deque[bytes] = deque()
        self._send_bytes = 0
        self._end_pending = False
        self._ended = False
        self._unacked = 0
        self._paused = False
        self._blocking_down = False
        self.done = False
        self._has_length = False

    # --- request side (the router's calls) -----------------------------------------------------

    def start(self) -> None:
        attempt = self.attempt
        head = attempt.head
        h2c = self.conn.h2c
        sid = self.stream_id = h2c.get_next_available_stream_id()
        headers: Fields = [
            (b":method", head.method),
            (b":scheme", b"http"),
            (b":authority", head.authority),
            (b":path", head.target),
        ]
        for name, value in head.fields:
            lname = name.lower()
            if lname in _REQUEST_DROPPED and not (lname == b"te" and value == b"trailers"):
                continue
            headers.append((lname, value))
        pending = attempt.take_pending() if attempt.pending else []
        end = attempt.request_done and not pending
        h2c.send_headers(sid, headers, end_stream=end)
        self._ended = end
        attempt.sent_at = self.conn.loop.time()
        if pending:
            self.out += pending
            self.flush()
            if attempt.request_done:
                self.on_request_complete()
        if getattr(self.down, "write_blocked", False):
            self.pause_reading_for_peer()

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            if not self.done:
                for piece in out:
                    self._body_piece(piece)
        self.conn.flush()

    def _body_piece(self, piece: bytes) -> None:
        state = self._chunk_state
        if state >= 0:
            # The downstream HTTP/1 codec appends (size line, data, CRLF) per chunk and
            # b"0\r\n\r\n" at the end; only the data items carry the body.
            if state == 0:
                self._chunk_state = 1 if piece != b"0\r\n\r\n" else 0
                return
            if state == 2:
                self._chunk_state = 0
                return
            self._chunk_state = 2
        if not piece:
            return
        if self._send:
            self._send.append(piece)
            self._send_bytes += len(piece)
            self._check_down()
            return
        self._send_within_window(piece)

    def _send_within_window(self, data: bytes) -> None:
        h2c = self.conn.h2c
        sid = self.stream_id
        window = h2c.local_flow_control_window(sid)
        frame = h2c.max_outbound_frame_size
        pos = 0
        size = len(data)
        while pos < size and window > 0:
            n = min(size - pos, window, frame)
            h2c.send_data(sid, data[pos : pos + n] if n != size else data)
            pos += n
            window -= n
        if pos < size:
            self._send.append(data[pos:] if pos else data)
            self._send_bytes += size - pos
            self._check_down()

    def _check_down(self) -> None:
        if self._send_bytes > WRITE_HIGH_WATER and not self._blocking_down:
            self._blocking_down = True
            self.down.gate.pause(PEER_WRITE_BLOCKED)

    def drain(self) -> None:
        """The upstream's window grew: send what waited."""
        send = self._send
        if not send or self.done:
            return
        h2c = self.conn.h2c
        sid = self.stream_id
        frame = h2c.max_outbound_frame_size
        window = h2c.local_flow_control_window(sid)
        while send and window > 0:
            data = send[0]
            n = min(len(data), window, frame)
            if n == len(data):
                send.popleft()
                h2c.send_data(sid, data)
            else:
                h2c.send_data(sid, data[:n])
                send[0] = data[n:]
            self._send_bytes -= n
            window -= n
        if self._send_bytes < WRITE_LOW_WATER and self._blocking_down:
            self._blocking_down = False
            self.down.gate.resume(PEER_WRITE_BLOCKED)
        if not send and self._end_pending:
            self._end_pending = False
            self._end()

    def on_request_complete(self) -> None:
        if self.done or self._ended:
            return
        if self.out:
            self.flush()
        if self._send:
            self._end_pending = True
            return
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.conn.h2c.end_stream(self.stream_id)
            self.conn.flush()

    def abort_stream(self) -> None:
        """The router gave up on the attempt: RST_STREAM(CANCEL); the connection stays."""
        if self.done:
            return
        self._finish()
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.conn.h2c.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        self.conn.flush()

    def pause_reading_for_peer(self) -> None:
        self._paused = True

    def resume_reading_for_peer(self) -> None:
        if self._paused:
            self._paused = False
            if self._unacked and not self.done:
                self.conn.acknowledge(self._unacked, self.stream_id)
                self._unacked = 0
                self.conn.flush()

    # --- response side (the connection's events) ------------------------------------------------

    def on_headers(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        status = 0
        fields: Fields = []
        has_length = ended
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[0] != 58 and name not in RESPONSE_DROPPED:
                if name == b"content-length":
                    has_length = True
                fields.append((name, value))
        self._has_length = has_length
        self.attempt.on_response_head(status, fields, has_length, None)

    def on_data(self, data: bytes, flow_length: int) -> None:
        self.attempt.on_response_body(data)
        if self._paused:
            self._unacked += flow_length
        else:
            self.conn.acknowledge(flow_length, self.stream_id)

    def on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        on_trailers = getattr(self.attempt, "on_response_trailers", None)
        if on_trailers is not None:
            on_trailers(headers)

    def on_end(self) -> None:
        if self.done:
            return
        self._finish()
        self.attempt.on_response_complete()

    def on_failure(self, failure: UpstreamFailure) -> None:
        if self.done:
            return
        self._finish()
        self.attempt.on_upstream_failure(failure)

    def _finish(self) -> None:
        self.done = True
        self._send.clear()
        self._send_bytes = 0
        if self._blocking_down:
            self._blocking_down = False
            self.down.gate.resume(PEER_WRITE_BLOCKED)
        self.conn.stream_finished(self)


class Http2ClientConnection(Http2ConnectionBase):
    """An upstream HTTP/2 connection owned by a pool; streams multiplexed on it."""

    def __init__(self, pool: Http2ConnectionPool, settings: Http2Settings) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.settings = settings
        self.h2c = new_h2_connection(client_side=True)
        self.goaways = GoAwayExtractor()  # h2 must not see them (see GoAwayExtractor)
        self.transport: asyncio.Transport | None = None
        self.local_address: tuple[str, int] | None = None
        self.streams: dict[int, Http2ClientStream] = {}
        self.closed = False
        self.going_away = False
        self.requests = 0
        self.idle_since = 0.0

    @property
    def capacity(self) -> int:
        """How many more streams this connection may open now."""
        if self.closed or self.going_away:
            return 0
        limit = min(
            self.h2c.remote_settings.max_concurrent_streams, self.pool.max_concurrent_streams
        )
        return limit - len(self.streams)

    def attach(self, attempt: Any) -> Http2ClientStream:
        stream = Http2ClientStream(self, attempt)
        attempt.upstream = stream
        self.requests += 1
        stream.start()
        self.streams[stream.stream_id] = stream
        return stream

    def stream_finished(self, stream: Http2ClientStream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None:
            self.pool.stream_finished(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                try:
                    self.h2c.close_connection()
                    self.transport.write(self.h2c.data_to_send())
                except h2.exceptions.ProtocolError:
                    pass
                self.transport.close()

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.local_address = transport.get_extra_info("sockname")
        self.h2c.initiate_connection()
        self.settings.start(self.h2c)
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        data, goaways = self.goaways.strip(data)
        try:
            events = self.h2c.receive_data(data) if data else []
        except h2.exceptions.ProtocolError:
            self._fail_all(UpstreamFailure.PROTOCOL_ERROR)
            return
        streams = self.streams
        downs: list[Any] = []
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is None:
                    self.acknowledge(event.flow_controlled_length, event.stream_id)
                    continue
                stream.on_data(event.data, event.flow_controlled_length)
                downs.append(stream.down)
                if event.stream_ended is not None:
                    stream.on_end()
            elif kind is h2.events.ResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    ended = event.stream_ended is not None
                    stream.on_headers(event.headers, ended)
                    downs.append(stream.down)
                    if ended:
                        stream.on_end()
            elif kind is h2.events.TrailersReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_trailers(event.headers)
                    stream.on_end()
                    downs.append(stream.down)
            elif kind is h2.events.StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_end()
                    downs.append(stream.down)
            elif kind is h2.events.StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_failure(UpstreamFailure.REMOTE_RESET)
                    downs.append(stream.down)
            elif kind is h2.events.WindowUpdated:
                if event.stream_id == 0:
                    for stream in list(streams.values()):
                        stream.drain()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.drain()
            elif kind is h2.events.RemoteSettingsChanged:
                for stream in list(streams.values()):
                    stream.drain()
                self.pool.capacity_changed(self)
        # GOAWAYs never reach h2 (GoAwayExtractor), so it reports no ConnectionTerminated;
        # handled after this read's frames: the streams they let finish may have just ended.
        for last_stream_id, _code in goaways:
            self._go_away(last_stream_id, downs)
        self.flush()
        seen: set[int] = set()
        for down in downs:
            if id(down) not in seen:
                seen.add(id(down))
                down.flush()

    def _go_away(self, last_stream_id: int, downs: list[Any]) -> None:
        self.going_away = True
        self.pool.connection_going_away(self)
        for sid, stream in list(self.streams.items()):
            if sid > last_stream_id:
                # Never processed by the upstream: Envoy resets these as refused streams.
                stream.on_failure(UpstreamFailure.REMOTE_RESET)
                downs.append(stream.down)
        if not self.streams:
            self.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(UpstreamFailure.CONNECTION_TERMINATION)
        self.pool.discard(self)

    def _fail_all(self, failure: UpstreamFailure) -> None:
        self.closed = True
        self.pool.discard(self)
        downs = []
        for stream in list(self.streams.values()):
            downs.append(stream.down)
            stream.on_failure(failure)
        self.streams.clear()
        if self.transport is not None:
            self.transport.abort()
        for down in downs:
            down.flush()
