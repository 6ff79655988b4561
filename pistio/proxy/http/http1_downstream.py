"""Envoy's HTTP/1.1 server codec and connection manager for one downstream connection.

An ``asyncio.Protocol`` driven by httptools (llhttp) callbacks. Each request becomes an
``Http1Stream``: its head goes to the stream handler (the router) as soon as the headers are
complete, its body streams on as it arrives, and the response the handler produces is encoded
back with HTTP/1.1 framing. Requests on one connection are answered in order (keep-alive and
pipelining); a pipelined request waits, with reading paused, until the one before it is done.

What Envoy's codec rejects, this codec rejects the same way, then closes the connection (a
connection whose framing is in doubt cannot carry another request):

- both Content-Length and Transfer-Encoding, or two Content-Length headers even when equal
  (Envoy's Balsa and http-parser codecs both refuse them): 400;
- a Transfer-Encoding other than exactly ``chunked``: 501 Not Implemented;
- an invalid chunk size, an invalid header name or value character: 400;
- obs-fold (a header line continued with leading whitespace): 400. Envoy's codecs unfold such
  lines instead; RFC 9112 §5.2 allows either, and a sidecar gains nothing from accepting them;
- a bare LF as a line terminator: 400. Envoy's codecs accept a lone LF at the end of the start
  line and header lines (RFC 9112 §2.2 "MAY"); llhttp, like Node.js since 2023, refuses it,
  and its only leniency switch would accept a lone LF inside chunked framing too, which is the
  smuggling vector, so we stay strict;
- headers over ``max_request_headers_kb`` or ``max_headers_count``: 431;
- no complete headers within ``request_headers_timeout``: 408;
- HTTP/1.0 unless ``accept_http_10`` (Istio's default is off): 426; HTTP/0.9: 400;
- an HTTP/1.1 request without Host: 400.

``Expect: 100-continue`` is answered by the proxy itself (Envoy's default,
``proxy_100_continue: false``) and not forwarded. ``Upgrade: websocket`` is forwarded; after
the upstream's 101 both connections become a raw byte relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Protocol

import httptools

from pistio.proxy.http.codec_options import UNDERSCORES_DROP, HttpConnectionOptions
from pistio.proxy.http.flow_control import (
    PIPELINED_REQUEST_WAITING,
    UPSTREAM_CONNECTING,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    ReadGate,
)
from pistio.proxy.http.headers import (
    HOP_BY_HOP,
    Fields,
    RequestHead,
    RequestIdGenerator,
    apply_request_edits,
    status_line,
)
from pistio.proxy.http.local_reply import local_reply
from pistio.proxy.http.stream_events import ResponseFlag, UpstreamFailure
from pistio.proxy.http.timeouts import DeadlineSweeper

if TYPE_CHECKING:
    from pistio.proxy.http.http1_upstream import Http1ClientConnection

log = logging.getLogger(__name__)

_INF = float("inf")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_UPGRADE_TYPES = frozenset({b"websocket"})


class StreamHandler(Protocol):
    """Receives each request once its headers are complete (the router's seat)."""

    def on_request(self, stream: Http1Stream) -> None: ...


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with a local reply."""

    def __init__(self, status: int, body: bytes | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Http1Stream:
    """One request/response exchange on a downstream HTTP/1 connection.

    The request side is read by the upstream connection (``head``, then the framed body
    pieces); the response side is written by it through the ``on_response_*`` methods, which
    encode straight into the downstream connection's output list.
    """

    __slots__ = (
        "conn",
        "head",
        "upstream",
        "pending",
        "pending_bytes",
        "request_done",
        "response_started",
        "response_done",
        "chunked_in",
        "chunked_out",
        "close_after",
        "http10",
        "head_method",
        "expect_continue",
        "sent_at",
        "cancelled",
        "response_flag",
        "status",
        "upgrade",
    )

    def __init__(self, conn: Http1ServerConnection, head: RequestHead, chunked_in: bool) -> None:
        self.conn = conn
        self.head = head
        self.upstream: Http1ClientConnection | None = None
        # Framed request body pieces received before an upstream connection was attached.
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.chunked_in = chunked_in
        self.chunked_out = False
        self.close_after = False
        self.http10 = False
        self.head_method = False
        self.expect_continue = False
        self.sent_at = 0.0
        # The downstream went away: an upstream connection that arrives late goes to the pool.
        self.cancelled = False
        self.response_flag: ResponseFlag | None = None
        self.status = 0
        self.upgrade = False

    # --- request side, fed by the downstream parser ------------------------------------------

    def _request_body(self, data: bytes) -> None:
        up = self.upstream
        out = up.out if up is not None else self.pending
        if self.chunked_in:
            out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            out.append(data)
        if up is None:
            self.pending_bytes += len(data)
            if self.pending_bytes > WRITE_HIGH_WATER:
                self.conn.gate.pause(UPSTREAM_CONNECTING)

    def _request_complete(self) -> None:
        if self.request_done:
            return  # known complete at the headers (no body)
        self.request_done = True
        if self.chunked_in:
            up = self.upstream
            if up is not None:
                up.out.append(_LAST_CHUNK)
            else:
                self.pending.append(_LAST_CHUNK)
        up = self.upstream
        if up is not None:
            up.on_request_complete()

    def take_pending(self) -> list[bytes]:
        """The body pieces buffered while no upstream was attached; reading resumes."""
        pending = self.pending
        if pending:
            self.pending = []
            self.pending_bytes = 0
            self.conn.gate.resume(UPSTREAM_CONNECTING)
        return pending

    # --- response side, written by the upstream connection -----------------------------------

    def on_response_head(
        self, status: int, fields: Fields, has_length: bool, upgrade: bytes | None
    ) -> None:
        conn = self.conn
        self.response_started = True
        self.status = status
        parts = [status_line(status)]
        for name, value in fields:
            parts += (name, b": ", value, b"\r\n")
        parts.append(conn.server_line)
        parts.append(
            b"x-envoy-upstream-service-time: %d\r\n" % int((conn.loop.time() - self.sent_at) * 1000)
        )
        if upgrade is not None:
            parts.append(b"connection: upgrade\r\nupgrade: %s\r\n\r\n" % upgrade)
            conn.out.append(b"".join(parts))
            return
        if not has_length and status >= 200 and status != 204 and status != 304:
            if self.head_method:
                pass
            elif self.http10:
                # An HTTP/1.0 client reads the body to the end of the connection.
                self.close_after = True
            else:
                self.chunked_out = True
                parts.append(b"transfer-encoding: chunked\r\n")
        if self.close_after:
            parts.append(b"connection: close\r\n\r\n")
        elif self.http10:
            parts.append(b"connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        conn.out.append(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        if self.chunked_out:
            if data:
                self.conn.out += (b"%x\r\n" % len(data), data, b"\r\n")
        elif not self.head_method:
            self.conn.out.append(data)

    def on_response_complete(self) -> None:
        if self.chunked_out:
            self.conn.out.append(_LAST_CHUNK)
        self.response_done = True
        self.upstream = None
        self.conn._stream_finished(self)

    def on_upstream_failure(self, failure: UpstreamFailure) -> None:
        """The upstream request failed: a 503 if nothing was sent yet, else a reset."""
        self.upstream = None
        if self.response_done or self.cancelled:
            return
        self.response_flag = failure.response_flag
        if not self.response_started:
            self.send_local_reply(503, failure.local_reply_body())
        else:
            self.conn.reset()

    def on_upgraded(self, upstream_transport: asyncio.Transport, early: bytes) -> None:
        """The upstream accepted the upgrade (101 already encoded): relay raw bytes now."""
        self.conn._become_raw(upstream_transport, early)

    def send_local_reply(self, status: int, body: bytes | None = None,
                         content_type: bytes | None = None) -> None:
        """Answer the request from the proxy (no route, upstream failure, fault...)."""
        if self.response_started or self.cancelled:
            return
        conn = self.conn
        self.response_started = True
        self.status = status
        if not self.request_done:
            # The rest of the request body would be read as the next request.
            self.close_after = True
        conn.out.append(
            local_reply(status, body, conn.server_line, self.close_after, self.head_method,
                        content_type)
        )
        self.response_done = True
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abort_stream()
        conn._stream_finished(self)
        if not conn.feeding:
            conn.flush()


class Http1ServerConnection(asyncio.Protocol):
    """The downstream side of an HTTP/1.1 connection (codec + connection manager)."""

    def __init__(
        self,
        handler: StreamHandler,
        options: HttpConnectionOptions,
        sweeper: DeadlineSweeper | None = None,
        request_ids: RequestIdGenerator | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._opts = options
        self._sweeper = sweeper
        self._request_ids = request_ids or RequestIdGenerator()
        self.server_line = options.server_line
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.gate: ReadGate = None  # type: ignore[assignment]  # set in connection_made
        self.out: list[bytes] = []
        self.feeding = False
        self.closed = False
        self.write_blocked = False
        # The stream whose response is being produced; streams received after it.
        self.active: Http1Stream | None = None
        self._waiting: deque[Http1Stream] = deque()
        # The stream whose request is being parsed (may be queued behind ``active``).
        self._rx: Http1Stream | None = None
        # Per-request parse state.
        self._url = b""
        self._fields: Fields = []
        self._index: dict[bytes, bytes] = {}
        self._in_headers = False
        self._header_bytes = 0
        self._header_count = 0
        self._raw_header_bytes = 0
        self._max_header_bytes = options.max_request_headers_bytes
        self._max_headers = options.max_headers_count
        self._underscores = options.headers_with_underscores
        # max_requests_per_connection / max_connection_duration: counted and checked per
        # request only when one is set.
        self._limits = bool(options.max_requests_per_connection
                            or options.max_connection_duration)
        self._requests = 0  # requests received on this connection
        self._expired = False  # max_connection_duration reached: drain
        self._duration_timer: asyncio.TimerHandle | None = None
        self._reject: _Reject | None = None
        # After a 101: the upstream transport that receives every downstream byte.
        self._raw_peer: asyncio.Transport | None = None
        self._upgrade_stream: Http1Stream | None = None
        self.deadline = _INF
        self._headers_deadline = False

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.gate = ReadGate(transport)  # type: ignore[arg-type]
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        if self._sweeper is not None:
            self._arm_idle()
            self._sweeper.watch(self)
        if self._opts.max_connection_duration > 0:
            self._duration_timer = self.loop.call_later(self._opts.max_connection_duration,
                                                        self._max_duration_reached)

    def data_received(self, data: bytes) -> None:
        if self._raw_peer is not None:
            self._raw_peer.write(data)
            return
        if self._upgrade_stream is not None:
            self._upgrade_early_bytes(data)
            return
        if self.closed:
            return
        self.feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._begin_upgrade(data[exc.args[0] :])
        except httptools.HttpParserCallbackError:
            reject = self._reject
            if reject is None:
                log.exception("HTTP/1 stream handling failed")
                reject = _Reject(500)
            self._protocol_error(reject.status, reject.body)
        except httptools.HttpParserError as exc:
            self._protocol_error(_status_for_parser_error(exc))
        finally:
            self.feeding = False
        if self._in_headers and not self.closed:
            # llhttp holds an unfinished header line itself; bound it by raw bytes.
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > 2 * self._opts.max_request_headers_bytes:
                self._protocol_error(431)
        self.flush()
        active = self.active
        if active is not None:
            up = active.upstream
            if up is not None and up.out:
                up.flush()

    def eof_received(self) -> bool | None:
        # Envoy does not half-close downstream connections: a client's FIN closes the
        # connection and resets its active stream (response flag DC).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.unwatch(self)
        if self._duration_timer is not None:
            self._duration_timer.cancel()
        raw_peer = self._raw_peer
        if raw_peer is not None:
            self._raw_peer = None
            raw_peer.close()
        for stream in (self.active, self._upgrade_stream, *self._waiting):
            if stream is None or stream.response_done:
                continue
            stream.cancelled = True
            stream.response_flag = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION
            up = stream.upstream
            if up is not None:
                stream.upstream = None
                up.abort_stream()
        self.active = None
        self._waiting.clear()

    def pause_writing(self) -> None:
        self.write_blocked = True
        active = self.active or self._upgrade_stream
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading_for_peer()

    def resume_writing(self) -> None:
        self.write_blocked = False
        active = self.active or self._upgrade_stream
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading_for_peer()

    # --- output ----------------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.out
        if out and not self.closed:
            if len(out) == 1:
                self.transport.write(out[0])  # type: ignore[union-attr]
            else:
                self.transport.writelines(out)  # type: ignore[union-attr]
            self.out = []
        elif out:
            self.out = []

    def reset(self) -> None:
        """Abort the connection (an upstream failed after the response began)."""
        self.out = []
        if self.transport is not None:
            self.transport.abort()

    def _close_after_flush(self) -> None:
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_headers = True
        self._url = b""
        self._fields = []
        self._index = {}
        self._header_bytes = 0
        self._header_count = 0
        self._raw_header_bytes = 0
        if self._opts.request_headers_timeout > 0:
            self.deadline = self.loop.time() + self._opts.request_headers_timeout
            self._headers_deadline = True
        else:
            self.deadline = _INF

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._max_header_bytes:
            self._fail(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_headers:
            return  # request trailers: Envoy drops them on HTTP/1 unless enabled
        if self._underscores and b"_" in name and self._underscore(name):
            return
        lname = name.lower()
        index = self._index
        prev = index.get(lname)
        index[lname] = value if prev is None else prev + b"," + value
        if lname not in HOP_BY_HOP or (lname == b"te" and value.lower() == b"trailers"):
            self._fields.append((name, value))
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._max_header_bytes or self._header_count > self._max_headers:
            self._fail(431)

    def _underscore(self, name: bytes) -> bool:
        """headers_with_underscores_action for a header name with '_': True to drop it;
        REJECT_REQUEST answers 400 and closes (Envoy's ``http1.unexpected_underscore``)."""
        stats = self._handler.codec_stats["http1"]  # type: ignore[attr-defined]
        if self._underscores == UNDERSCORES_DROP:
            stats.dropped_headers_with_underscores += 1
            return True
        stats.requests_rejected_with_underscores_in_headers += 1
        self._fail(400)
        return False  # not reached: _fail raises

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._headers_deadline = False
        self.deadline = _INF
        parser = self._parser
        index = self._index
        version = parser.get_http_version()
        te = index.get(b"transfer-encoding")
        if te is not None and te.lower() != b"chunked":
            self._fail(501)
        if version != "1.1":
            if version != "1.0":
                self._fail(400)
            if not self._opts.accept_http_10:
                self._fail(426)
            if b"host" not in index:
                if not self._opts.default_host_for_http_10:
                    self._fail(400)
                index[b"host"] = self._opts.default_host_for_http_10
                self._fields.append((b"host", self._opts.default_host_for_http_10))
        elif b"host" not in index:
            self._fail(400)
        method = parser.get_method()
        upgrade = None
        if parser.should_upgrade():
            upgrade = index.get(b"upgrade", b"").lower()
            if method == b"CONNECT" or upgrade not in _UPGRADE_TYPES:
                # No CONNECT or other upgrade is configured on a sidecar's connection manager.
                self._fail(403)
        head = RequestHead(method, self._url, version, self._fields, index, upgrade)
        stream = Http1Stream(self, head, te is not None)
        stream.http10 = version == "1.0"
        stream.head_method = method == b"HEAD"
        # A draining connection manager (its listener was updated) closes after this response
        # so the client reconnects under the new config (Envoy's immediate drain).
        stream.close_after = not parser.should_keep_alive() or getattr(self._handler,
                                                                       "draining", False)
        if self._limits:
            self._count_request(stream)
        if upgrade is not None:
            # After a refused upgrade the bytes that followed the head are not HTTP.
            stream.upgrade = True
            stream.close_after = True
            stream.request_done = True
        elif te is None:
            # No body follows: the request ends with its headers ("end_stream" in Envoy).
            cl = index.get(b"content-length")
            stream.request_done = cl is None or int(cl) == 0
        expect = index.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue":
            stream.expect_continue = True
            head.remove(b"expect")
        opts = self._opts
        apply_request_edits(head, self._request_ids if opts.generate_request_id else None,
                            opts.forwarded_proto)
        self._rx = stream
        if self.active is None:
            self._dispatch(stream)
        else:
            self._waiting.append(stream)
            self.gate.pause(PIPELINED_REQUEST_WAITING)

    def on_body(self, body: bytes) -> None:
        stream = self._rx
        if stream is not None:
            stream._request_body(body)

    def on_message_complete(self) -> None:
        stream = self._rx
        if stream is not None:
            self._rx = None
            stream._request_complete()

    def _count_request(self, stream: Http1Stream) -> None:
        """max_requests_per_connection: the last request's response closes the connection;
        after max_connection_duration every response does."""
        self._requests += 1
        limit = self._opts.max_requests_per_connection
        if limit and self._requests >= limit:
            if self._requests == limit:
                self._handler.stats.downstream_cx_max_requests_reached += 1  # type: ignore[attr-defined]
            stream.close_after = True
        elif self._expired:
            stream.close_after = True

    def _max_duration_reached(self) -> None:
        """max_connection_duration: close now if idle, else after the response in progress."""
        self._duration_timer = None
        if self.closed:
            return
        self._handler.stats.downstream_cx_max_duration_reached += 1  # type: ignore[attr-defined]
        self._expired = True
        active = self.active
        if active is None and not self._in_headers:
            self._close_after_flush()
        elif active is not None:
            active.close_after = True

    def _fail(self, status: int, body: bytes | None = None) -> None:
        self._reject = _Reject(status, body)
        raise self._reject

    # --- streams ---------------------------------------------------------------------------------

    def _dispatch(self, stream: Http1Stream) -> None:
        self.active = stream
        if stream.expect_continue and not stream.request_done:
            self.out.append(_CONTINUE)
        self._handler.on_request(stream)
        up = stream.upstream
        if up is not None:
            if self.write_blocked:
                up.pause_reading_for_peer()
            if not self.feeding:
                up.flush()

    def _stream_finished(self, stream: Http1Stream) -> None:
        if stream is not self.active:
            return
        self.active = None
        if stream.close_after or not stream.request_done:
            # The rest of an unfinished request would be read as the next one: close once
            # the response is written (Envoy drains HTTP/1 connections the same way).
            self._close_after_flush()
            return
        if self._waiting:
            nxt = self._waiting.popleft()
            if not self._waiting:
                self.gate.resume(PIPELINED_REQUEST_WAITING)
            self._dispatch(nxt)
        elif self._sweeper is not None:
            self._arm_idle()

    def _protocol_error(self, status: int, body: bytes | None = None) -> None:
        """A malformed or refused request: answer (unless a response is under way) and close."""
        self._in_headers = False
        active = self.active
        if active is None or not active.response_started:
            self.out.append(local_reply(status, body, self.server_line, True))
            if active is not None:
                active.response_started = True
                active.response_done = True
                active.response_flag = ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR
                up = active.upstream
                if up is not None:
                    active.upstream = None
                    up.abort_stream()
            self._close_after_flush()
        else:
            self.reset()
        self.closed = True

    # --- deadlines -----------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        idle = self._opts.idle_timeout
        self.deadline = self.loop.time() + idle if idle > 0 else _INF

    def on_deadline(self, now: float) -> None:
        self.deadline = _INF
        if self.closed:
            return
        if self._headers_deadline and self._in_headers:
            self._protocol_error(408)
        elif self.active is None and not self._waiting and self._upgrade_stream is None:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # --- upgrades ------------------------------------------------------------------------------

    def _begin_upgrade(self, early: bytes) -> None:
        """The request asked to switch protocols; bytes after its head are not HTTP."""
        stream = self.active
        if stream is None or stream.head.upgrade is None:
            # A pipelined upgrade behind another request: not supported, as in Envoy.
            self._protocol_error(400)
            return
        self._upgrade_stream = stream
        self.deadline = _INF
        if early:
            self._upgrade_early_bytes(early)

    def _upgrade_early_bytes(self, data: bytes) -> None:
        stream = self._upgrade_stream
        assert stream is not None
        up = stream.upstream
        if up is not None:
            up.out.append(data)
            up.flush()
        else:
            stream.pending.append(data)
            stream.pending_bytes += len(data)
            if stream.pending_bytes > WRITE_HIGH_WATER:
                self.gate.pause(UPSTREAM_CONNECTING)

    def _become_raw(self, upstream_transport: asyncio.Transport, early: bytes) -> None:
        self._raw_peer = upstream_transport
        self.active = None
        if early:
            self.out.append(early)


def _status_for_parser_error(exc: httptools.HttpParserError) -> int:
    # llhttp refuses a Transfer-Encoding it cannot frame; Envoy answers that with 501.
    if "Transfer-Encoding" in str(exc) and "Content-Length" not in str(exc):
        return 501
    return 400
