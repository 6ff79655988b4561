"""Envoy's HTTP/1.1 client codec: one pooled keep-alive connection to an upstream host.

The connection carries one request at a time (Envoy does not pipeline upstream). While a
downstream stream is attached, the request head and body pieces are queued on ``out`` and
written in one system call per read on the other side; the response is parsed by httptools
and encoded straight into the downstream connection. After a complete response to a complete
request, with keep-alive on both sides, the connection returns to its pool.

Failures are reported to the stream as ``UpstreamFailure`` values: the connection closing
before the response ends (connection termination, UC), an unparsable response (protocol
error, UPE). A response that ends by closing the connection (no length, not chunked) is
complete when the connection closes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from pistio.proxy.http.flow_control import PEER_WRITE_BLOCKED, WRITE_HIGH_WATER, WRITE_LOW_WATER
from pistio.proxy.http.headers import RESPONSE_DROPPED, Fields
from pistio.proxy.http.stream_events import UpstreamFailure

if TYPE_CHECKING:
    from pistio.proxy.http.http1_downstream import Http1ServerConnection, Http1Stream
    from pistio.proxy.upstream.connection_pool import Http1ConnectionPool


class Http1ClientConnection(asyncio.Protocol):
    """An upstream HTTP/1.1 connection owned by a pool; carries one stream at a time."""

    def __init__(self, pool: Http1ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        # The connection's own address (%UPSTREAM_LOCAL_ADDRESS%), read once per connection.
        self.local_address: tuple[str, int] | None = None
        self.out: list[bytes] = []
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._stream: Http1Stream | None = None
        self._down: Http1ServerConnection | None = None
        self._request_done = False
        self._reusable = False
        self._response_started = False
        self._keep_alive = False
        self._until_close = False
        self._skip_informational = False
        self._renew_parser = False
        self._fields: Fields = []
        self._has_length = False
        self._chunked = False
        self._upgrade: bytes | None = None
        self._raw_peer: asyncio.Transport | None = None
        self._reading_paused = False
        self._blocking_down = False

    # --- attaching a stream ------------------------------------------------------------------

    def attach(self, stream: Http1Stream) -> None:
        """Start sending ``stream``'s request; the caller flushes ``out``."""
        self._stream = stream
        self._down = stream.conn
        stream.upstream = self
        self.requests += 1
        head = stream.head
        parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
        for name, value in head.fields:
            parts += (name, b": ", value, b"\r\n")
        if head.upgrade is not None:
            parts.append(b"connection: upgrade\r\nupgrade: %s\r\n\r\n" % head.index[b"upgrade"])
        elif stream.chunked_in:
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.out.append(b"".join(parts))
        if stream.pending:
            self.out += stream.take_pending()
        self._request_done = stream.request_done
        limit = self.pool.options.max_requests_per_connection
        self._reusable = head.upgrade is None and (limit == 0 or self.requests < limit)
        self._response_started = False
        self._until_close = False
        stream.sent_at = self.loop.time()
        if stream.conn.write_blocked:
            self.pause_reading_for_peer()

    def on_request_complete(self) -> None:
        self._request_done = True

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            if not self.closed:
                if len(out) == 1:
                    self.transport.write(out[0])  # type: ignore[union-attr]
                else:
                    self.transport.writelines(out)  # type: ignore[union-attr]

    def abort_stream(self) -> None:
        """The downstream gave up on the stream: the connection's state is unknown, drop it."""
        self._stream = None
        self._release_down()
        self.out = []
        self.closed = True
        self.pool.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- flow control ------------------------------------------------------------------------

    def pause_reading_for_peer(self) -> None:
        """The downstream cannot take more response bytes: stop reading them."""
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading_for_peer(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def pause_writing(self) -> None:
        down = self._down
        if down is not None:
            self._blocking_down = True
            down.gate.pause(PEER_WRITE_BLOCKED)

    def resume_writing(self) -> None:
        if self._blocking_down:
            self._blocking_down = False
            down = self._down
            if down is not None:
                down.gate.resume(PEER_WRITE_BLOCKED)

    def _release_down(self) -> None:
        if self._blocking_down:
            self._blocking_down = False
            if self._down is not None:
                self._down.gate.resume(PEER_WRITE_BLOCKED)
        self._down = None

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.local_address = transport.get_extra_info("sockname")

    def data_received(self, data: bytes) -> None:
        if self._raw_peer is not None:
            self._raw_peer.write(data)
            return
        if self._stream is None:
            # Bytes from an idle upstream belong to no request: the connection is unusable.
            self.abort_stream()
            return
        down = self._down
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0] :])
        except httptools.HttpParserError:
            self._fail(UpstreamFailure.PROTOCOL_ERROR)
        if self._renew_parser:
            # A response to HEAD announces a length it does not send; llhttp would wait for it.
            self._renew_parser = False
            self._parser = httptools.HttpResponseParser(self)
        if down is not None:
            if self._stream is None:
                self.pool.writes.add(down)  # the exchange is over: write at the turn's end
            else:
                down.flush()  # a body streams on: back-pressure stays immediate

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        raw_peer = self._raw_peer
        if raw_peer is not None:
            self._raw_peer = None
            raw_peer.close()
            return
        stream = self._stream
        if stream is None:
            return
        down = self._down
        if self._until_close and self._response_started:
            self._stream = None
            self._release_down()
            stream.on_response_complete()
        else:
            self._fail(UpstreamFailure.CONNECTION_TERMINATION)
        if down is not None:
            down.flush()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._fields = []
        self._has_length = False
        self._chunked = False
        self._upgrade = None

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in RESPONSE_DROPPED:
            if lname == b"transfer-encoding":
                self._chunked = True
            elif lname == b"upgrade":
                self._upgrade = value
            return
        if lname == b"content-length":
            self._has_length = True
        # Envoy's HTTP/1 codec writes header names in lower case (header_key_format default).
        self._fields.append((lname, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue was already answered by the proxy; other 1xx are dropped (Envoy).
            self._skip_informational = True
            return
        stream = self._stream
        if stream is None:
            return
        self._keep_alive = parser.should_keep_alive()
        self._response_started = True
        if status == 101:
            # Not a complete exchange: llhttp reports the message complete, then the upgrade.
            self._skip_informational = True
            stream.on_response_head(101, self._fields, True, self._upgrade or b"websocket")
            return
        no_body = status == 204 or status == 304 or stream.head_method
        self._until_close = not (self._has_length or self._chunked or no_body)
        stream.on_response_head(status, self._fields, self._has_length or no_body, None)
        if stream.head_method:
            self._renew_parser = True
            self._message_complete()

    def on_body(self, body: bytes) -> None:
        stream = self._stream
        if stream is not None:
            stream.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._skip_informational:
            self._skip_informational = False
            return
        if self._stream is not None:
            self._message_complete()

    def _message_complete(self) -> None:
        stream = self._stream
        assert stream is not None
        self._stream = None
        reusable = self._reusable and self._keep_alive and self._request_done
        self._response_started = False
        self._release_down()
        # Release before finishing the stream: a pipelined request dispatched from inside
        # ``on_response_complete`` can then reuse this very connection.
        if reusable:
            self.resume_reading_for_peer()
            self.pool.release(self)
        else:
            self.close()
            self.pool.discard(self)
        stream.on_response_complete()

    # --- failures and upgrades -----------------------------------------------------------------

    def _fail(self, failure: UpstreamFailure) -> None:
        stream = self._stream
        self._stream = None
        self._release_down()
        self.out = []
        self.pool.discard(self)
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        if stream is not None:
            stream.on_upstream_failure(failure)

    def _upgraded(self, early: bytes) -> None:
        stream = self._stream
        if stream is None or stream.conn.transport is None:
            self.abort_stream()
            return
        self.pool.discard(self)
        self._raw_peer = stream.conn.transport
        stream.on_upgraded(self.transport, early)  # type: ignore[arg-type]
