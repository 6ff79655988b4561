"""Envoy's HTTP/2 server codec for one downstream connection (h2c prior knowledge or ALPN h2).

An ``asyncio.Protocol`` driving the sans-I/O ``h2.connection.H2Connection``. Every HTTP/2
stream becomes an ``Http2Stream`` that the connection manager handles exactly as an HTTP/1.1
request (same ``RequestHead``, same filters, same router): the pipeline only sees the stream
interface the HTTP/1 codec defines (``head``, ``request_done``, ``on_response_*``,
``send_local_reply``...). What HTTP/1 does per connection, HTTP/2 does per stream, so a stream
is also its own ``conn`` for the pipeline: its ``gate`` pauses *that stream's* request body,
its ``reset`` sends RST_STREAM, not a TCP reset.

Flow control (back-pressure): a stream's request DATA is acknowledged to the client (WINDOW
UPDATE) as soon as it is handed on, unless the stream's gate is paused (the upstream's write
buffer is full, or no upstream connection takes the body yet); then the bytes are acknowledged
only when the gate opens, so the client's window closes and it stops sending. Response DATA
is sent within the client's window; what does not fit waits on the stream, and past the
write high-water mark the upstream stops being read. The transport's own write buffer pauses
every stream's upstream the same way.

SETTINGS come from the HCM's ``http2_protocol_options`` with Envoy's defaults:
``max_concurrent_streams`` 2147483647, ``initial_stream_window_size`` and
``initial_connection_window_size`` 256 MiB. A client's RST_STREAM cancels the stream (and its
upstream request: flag DC); its GOAWAY lets open streams finish, then the connection closes.
A protocol error answers GOAWAY and closes.

gRPC: response trailers pass through (``grpc-status``, ``grpc-message``), ``te: trailers`` is
forwarded, and local replies to gRPC requests are trailers-only responses
(``http2_grpc.trailers_only_reply``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from pistio.proxy.http.codec_options import UNDERSCORES_DROP
from pistio.proxy.http.flow_control import (
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
)
from pistio.proxy.http.headers import (
    HOP_BY_HOP,
    RESPONSE_DROPPED,
    Fields,
    RequestHead,
    RequestIdGenerator,
    apply_request_edits,
    reason_phrase,
)
from pistio.proxy.http.http2_connection import (
    GoAwayExtractor,
    Http2ConnectionBase,
    new_h2_connection,
)
from pistio.proxy.http.http2_grpc import is_grpc, trailers_only_reply
from pistio.proxy.http.local_reply import date_line
from pistio.proxy.http.stream_events import ResponseFlag, UpstreamFailure
from pistio.proxy.http.timeouts import DeadlineSweeper

if TYPE_CHECKING:
    from pistio.proxy.http.codec_options import HttpConnectionOptions

_INF = float("inf")
_LAST_CHUNK = b"0\r\n\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Envoy's Http2ProtocolOptions defaults.
DEFAULT_MAX_CONCURRENT_STREAMS = 2147483647
DEFAULT_INITIAL_STREAM_WINDOW = 256 * 1024 * 1024
DEFAULT_INITIAL_CONNECTION_WINDOW = 256 * 1024 * 1024
_H2_DEFAULT_WINDOW = 65535

# Why a stream stopped reading its upstream (bits).
_PEER_WINDOW = 1
_PEER_TRANSPORT = 2


@dataclass(frozen=True, slots=True)
class Http2Settings:
    """``Http2ProtocolOptions`` as a codec applies them (downstream or upstream)."""

    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = DEFAULT_INITIAL_STREAM_WINDOW
    initial_connection_window_size: int = DEFAULT_INITIAL_CONNECTION_WINDOW

    @classmethod
    def of(
        cls,
        max_concurrent_streams: int | None,
        stream_window: int | None = None,
        connection_window: int | None = None,
    ) -> Http2Settings:
        return cls(
            max_concurrent_streams or DEFAULT_MAX_CONCURRENT_STREAMS,
            stream_window or DEFAULT_INITIAL_STREAM_WINDOW,
            connection_window or DEFAULT_INITIAL_CONNECTION_WINDOW,
        )

    def start(self, conn: h2.connection.H2Connection) -> None:
        """Announce the settings and open the connection window beyond the protocol's 64 KiB."""
        conn.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.initial_stream_window_size,
            }
        )
        extra = self.initial_connection_window_size - _H2_DEFAULT_WINDOW
        if extra > 0:
            conn.increment_flow_control_window(extra)


class _StreamGate:
    """The stream's read gate: while any reason holds, received DATA is not acknowledged."""

    __slots__ = ("_stream", "_reasons")

    def __init__(self, stream: Http2Stream) -> None:
        self._stream = stream
        self._reasons = 0

    @property
    def paused(self) -> bool:
        return self._reasons != 0

    def pause(self, reason: int) -> None:
        self._reasons |= reason

    def resume(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if self._reasons == 0:
                self._stream._acknowledge()


class Http2Stream:
    """One HTTP/2 stream: the request for the pipeline, the response back to the client."""

    __slots__ = (
        "h2",
        "conn",
        "stream_id",
        "loop",
        "gate",
        "head",
        "upstream",
        "request_done",
        "response_started",
        "response_done",
        "chunked_in",
        "head_method",
        "sent_at",
        "cancelled",
        "response_flag",
        "status",
        "grpc",
        "server_line",
        "downstream_info",
        "_unacked",
        "_pending_headers",
        "_send",
        "_send_bytes",
        "_end_after",
        "_trailers_after",
        "_peer_paused",
        "_sent_any",
    )

    def __init__(
        self, conn: Http2ServerConnection, stream_id: int, head: RequestHead, request_done: bool
    ) -> None:
        self.h2 = conn
        self.conn = self  # the pipeline's per-"connection" calls are per stream here
        self.stream_id = stream_id
        self.loop = conn.loop
        self.gate = _StreamGate(self)
        self.head = head
        self.upstream: Any = None  # the connection manager's ActiveStream
        self.request_done = request_done
        self.response_started = False
        self.response_done = False
        # Pipeline body pieces use HTTP/1 framing: without a length, the body is chunked.
        self.chunked_in = not request_done and b"content-length" not in head.index
        self.head_method = head.method == b"HEAD"
        self.sent_at = 0.0
        self.cancelled = False
        self.response_flag: ResponseFlag | None = None
        self.status = 0
        self.grpc = is_grpc(head.index.get(b"content-type"))
        self.server_line = conn.server_line
        self.downstream_info = conn.downstream_info
        self._unacked = 0
        self._pending_headers: Fields | None = None
        self._send: deque[bytes] = deque()
        self._send_bytes = 0
        self._end_after = False
        self._trailers_after: Fields | None = None
        self._peer_paused = 0
        self._sent_any = False

    # --- what the pipeline reads on ``conn`` -----------------------------------------------------

    @property
    def transport(self) -> Any:
        return self.h2.transport

    @property
    def write_blocked(self) -> bool:
        return self._peer_paused != 0

    def flush(self) -> None:
        if self._pending_headers is not None:
            headers = self._pending_headers
            self._pending_headers = None
            self.h2.h2c.send_headers(self.stream_id, headers)
        self.h2.flush()

    def reset(self) -> None:
        """An upstream failed after the response began: RST_STREAM (Envoy resets the stream,
        not the connection)."""
        self._close(h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.h2.flush()

    # --- request side, fed by the connection -----------------------------------------------------

    def _request_body(self, data: bytes, flow_length: int) -> None:
        up = self.upstream
        if up is None or self.response_done:
            self.h2.acknowledge(flow_length, self.stream_id)
            return
        if data:
            if self.chunked_in:
                up.out += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                up.out.append(data)
        if self.gate.paused:
            self._unacked += flow_length
        else:
            self.h2.acknowledge(flow_length, self.stream_id)

    def _acknowledge(self) -> None:
        unacked = self._unacked
        if unacked:
            self._unacked = 0
            self.h2.acknowledge(unacked, self.stream_id)
            self.h2.flush()

    def _request_complete(self) -> None:
        if self.request_done:
            return
        self.request_done = True
        up = self.upstream
        if up is None:
            return
        if self.chunked_in:
            up.out.append(_LAST_CHUNK)
        up.on_request_complete()

    # --- response side, written by the pipeline -------------------------------------------------

    def on_response_head(
        self, status: int, fields: Fields, has_length: bool, upgrade: bytes | None
    ) -> None:
        self.response_started = True
        self.status = status
        headers: Fields = [(b":status", b"%d" % status)]
        for name, value in fields:
            lname = name.lower()
            if lname not in RESPONSE_DROPPED:
                headers.append((lname, value))
        headers.append((b"server", self.h2.server_name))
        headers.append(
            (
                b"x-envoy-upstream-service-time",
                b"%d" % int((self.loop.time() - self.sent_at) * 1000),
            )
        )
        # Held until the body, the end or a flush: a trailers-only response (gRPC) must go out
        # as one HEADERS frame with END_STREAM.
        self._pending_headers = headers

    def on_response_body(self, data: bytes) -> None:
        if self.response_done or not data or self.head_method:
            return
        self._send_headers_now()
        if self._send:
            self._send.append(data)
            self._send_bytes += len(data)
            self._check_peer_window()
            return
        self._send_within_window(data)

    def on_response_trailers(self, fields: Fields) -> None:
        if self.response_done:
            return
        trailers = [(n.lower(), v) for n, v in fields]
        if self._pending_headers is not None and not self._sent_any:
            # No body at all: headers then trailers still make a valid gRPC response.
            self._send_headers_now()
        if self._send:
            self._trailers_after = trailers
            return
        self.h2.h2c.send_headers(self.stream_id, trailers, end_stream=True)
        self._response_ended()

    def on_response_complete(self) -> None:
        if self.response_done:
            return
        if self._trailers_after is not None:
            return  # ends when the trailers go out
        if self._send:
            self._end_after = True
            return
        h2c = self.h2.h2c
        if self._pending_headers is not None:
            headers = self._pending_headers
            self._pending_headers = None
            h2c.send_headers(self.stream_id, headers, end_stream=True)
        else:
            h2c.end_stream(self.stream_id)
        self._response_ended()

    def on_upstream_failure(self, failure: UpstreamFailure) -> None:
        self.upstream = None
        if self.response_done or self.cancelled:
            return
        self.response_flag = failure.response_flag
        if not self.response_started:
            self.send_local_reply(503, failure.local_reply_body())
        else:
            self.reset()

    def on_upgraded(self, upstream_transport: Any, early: bytes) -> None:
        # Upgrades are HTTP/1 only (extended CONNECT is not enabled): refuse the stream.
        self.reset()

    def send_local_reply(self, status: int, body: bytes | None = None,
                         content_type: bytes | None = None) -> None:
        """Answer from the proxy. The connection manager passes extra headers by appending
        ``name: value CRLF`` lines to ``server_line`` (the HTTP/1 codec's seam); a
        ``content_type`` replaces ``text/plain`` (a gRPC call always gets a trailers-only
        reply)."""
        if self.response_started or self.cancelled or self.response_done:
            return
        self.response_started = True
        self.status = status
        extra = _extra_fields(self.server_line, self.h2.server_line)
        if self.grpc:
            headers = trailers_only_reply(status, body, extra)
            headers.append((b"server", self.h2.server_name))
            self.h2.h2c.send_headers(self.stream_id, headers, end_stream=True)
        else:
            if body is None:
                body = reason_phrase(status).encode()
            headers = [
                (b":status", b"%d" % status),
                (b"content-length", b"%d" % len(body)),
                (b"content-type", content_type or b"text/plain"),
                (b"date", date_line()[6:-2]),
                (b"server", self.h2.server_name),
                *extra,
            ]
            send_body = bool(body) and not self.head_method
            self.h2.h2c.send_headers(self.stream_id, headers, end_stream=not send_body)
            if send_body:
                self._send_within_window(body, end=True)
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abort_stream()
        if not self._send:
            self._response_ended()
        else:
            self._end_after = True
        self.h2.flush()

    # --- sending within the client's window -------------------------------------------------------

    def _send_headers_now(self) -> None:
        if self._pending_headers is not None:
            headers = self._pending_headers
            self._pending_headers = None
            self.h2.h2c.send_headers(self.stream_id, headers)

    def _send_within_window(self, data: bytes, end: bool = False) -> None:
        h2c = self.h2.h2c
        sid = self.stream_id
        window = h2c.local_flow_control_window(sid)
        frame = h2c.max_outbound_frame_size
        view = memoryview(data)
        pos = 0
        size = len(data)
        self._sent_any = True
        while pos < size and window > 0:
            n = min(size - pos, window, frame)
            h2c.send_data(
                sid,
                view[pos : pos + n].tobytes() if n != size else data,
                end_stream=end and pos + n == size,
            )
            pos += n
            window -= n
        if pos < size:
            self._send.append(data[pos:] if pos else data)
            self._send_bytes += size - pos
            self._check_peer_window()

    def _check_peer_window(self) -> None:
        if self._send_bytes > WRITE_HIGH_WATER and not self._peer_paused & _PEER_WINDOW:
            self.pause_peer(_PEER_WINDOW)

    def drain(self) -> None:
        """The client's window grew: send what waited, then end the response if it ended."""
        send = self._send
        if not send:
            return
        h2c = self.h2.h2c
        sid = self.stream_id
        frame = h2c.max_outbound_frame_size
        try:
            window = h2c.local_flow_control_window(sid)
        except h2.exceptions.StreamClosedError:
            send.clear()
            return
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
        if self._send_bytes < WRITE_LOW_WATER and self._peer_paused & _PEER_WINDOW:
            self.resume_peer(_PEER_WINDOW)
        if not send:
            if self._trailers_after is not None:
                trailers = self._trailers_after
                self._trailers_after = None
                h2c.send_headers(sid, trailers, end_stream=True)
                self._response_ended()
            elif self._end_after:
                self._end_after = False
                if self.response_started and not self.response_done:
                    h2c.end_stream(sid)
                    self._response_ended()

    def pause_peer(self, reason: int) -> None:
        if self._peer_paused == 0:
            up = self.upstream
            if up is not None:
                up.pause_reading_for_peer()
        self._peer_paused |= reason

    def resume_peer(self, reason: int) -> None:
        if self._peer_paused & reason:
            self._peer_paused &= ~reason
            if self._peer_paused == 0:
                up = self.upstream
                if up is not None:
                    up.resume_reading_for_peer()

    # --- ending ------------------------------------------------------------------------------------

    def _response_ended(self) -> None:
        # The pipeline finishes its own stream after on_response_complete.
        self.response_done = True
        self.upstream = None
        self.h2.stream_finished(self)
        if not self.request_done:
            # The response is complete; the rest of the request is not wanted (RFC 9113 §8.1).
            self._close(h2.errors.ErrorCodes.NO_ERROR)

    def _close(self, code: int) -> None:
        self.response_done = True
        self._send.clear()
        self._send_bytes = 0
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2.h2c.reset_stream(self.stream_id, code)
        self.h2.stream_finished(self)

    def _cancelled_by_client(self) -> None:
        self.cancelled = True
        self.response_flag = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION
        self._send.clear()
        self._send_bytes = 0
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abort_stream()


def _extra_fields(line: bytes, base: bytes) -> Fields:
    if len(line) == len(base):
        return []
    out: Fields = []
    for raw in line[len(base) :].split(b"\r\n"):
        if raw:
            name, _, value = raw.partition(b": ")
            out.append((name.lower(), value))
    return out


class Http2ServerConnection(Http2ConnectionBase):
    """The downstream side of an HTTP/2 connection: the h2 state machine and its streams."""

    def __init__(
        self,
        handler: Any,
        options: HttpConnectionOptions,
        settings: Http2Settings,
        sweeper: DeadlineSweeper | None = None,
        request_ids: RequestIdGenerator | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._handler = handler
        self._opts = options
        self._settings = settings
        self._sweeper = sweeper
        self._request_ids = request_ids or RequestIdGenerator()
        self.server_name = options.server_name
        self.server_line = options.server_line
        self.downstream_info: Any = None
        self.h2c = new_h2_connection(client_side=False)
        # A client's GOAWAY (it opens no more streams) must not close h2's state machine:
        # the streams it already opened still get their responses (RFC 9113 §6.8).
        self.goaways = GoAwayExtractor(len(H2_PREFACE))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Http2Stream] = {}
        self.closed = False
        self.write_blocked = False
        self.going_away = False
        self._requests = 0  # streams opened on this connection
        self._duration_timer: asyncio.TimerHandle | None = None
        self.deadline = _INF

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        h2c = self.h2c
        h2c.initiate_connection()
        self._settings.start(h2c)
        self.flush()
        if self._sweeper is not None:
            self._arm_idle()
            self._sweeper.watch(self)
        if self._opts.max_connection_duration > 0:
            self._duration_timer = asyncio.get_running_loop().call_later(
                self._opts.max_connection_duration, self._max_duration_reached)

    def _max_duration_reached(self) -> None:
        """max_connection_duration: GOAWAY; the connection closes once its streams are done."""
        self._duration_timer = None
        if self.closed:
            return
        self._handler.stats.downstream_cx_max_duration_reached += 1  # type: ignore[attr-defined]
        self._go_away(self.h2c.highest_inbound_stream_id)

    def _client_goes_away(self) -> None:
        """The client sent GOAWAY: it opens no more streams; the connection closes once the
        streams it opened are answered (at once when there are none)."""
        self.going_away = True
        if not self.streams:
            self.flush()
            self._close()

    def _go_away(self, last_stream_id: int) -> None:
        """A graceful GOAWAY: streams up to ``last_stream_id`` finish, later ones are refused.
        Written as a raw frame: h2's ``close_connection`` would close its state machine and
        the open streams could not send their responses any more."""
        if self.going_away:
            return
        self.going_away = True
        self.flush()  # what h2 holds goes first
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        if self.transport is not None and not self.closed:
            self.transport.write(frame.serialize())
        if not self.streams:
            self._close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        data, goaways = self.goaways.strip(data)
        try:
            events = self.h2c.receive_data(data) if data else []
        except h2.exceptions.ProtocolError:
            self._protocol_error()
            return
        touched: list[Http2Stream] = []
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is None:
                    self.acknowledge(event.flow_controlled_length, event.stream_id)
                    continue
                stream._request_body(event.data, event.flow_controlled_length)
                touched.append(stream)
                if event.stream_ended is not None:
                    stream._request_complete()
            elif kind is h2.events.RequestReceived:
                self._request(event)
            elif kind is h2.events.StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None and not stream.request_done:
                    stream._request_complete()
                    touched.append(stream)
            elif kind is h2.events.WindowUpdated:
                if event.stream_id == 0:
                    for stream in list(streams.values()):
                        stream.drain()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.drain()
            elif kind is h2.events.StreamReset:
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._cancelled_by_client()
            elif kind is h2.events.RemoteSettingsChanged:
                for stream in list(streams.values()):
                    stream.drain()
            elif kind is h2.events.ConnectionTerminated:
                self.going_away = True
                if not streams:
                    self._close()
                    return
            elif kind is h2.events.TrailersReceived:
                # Request trailers are not forwarded (no HTTP/1 upstream could carry them);
                # they end the request.
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._request_complete()
                    touched.append(stream)
        for stream in touched:
            up = stream.upstream
            if up is not None and up.out:
                up.flush()
        if goaways:  # after the streams opened in the same read
            self._client_goes_away()
            if self.closed:
                return
        self.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.unwatch(self)
        if self._duration_timer is not None:
            self._duration_timer.cancel()
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            if not stream.response_done:
                stream._cancelled_by_client()

    def pause_writing(self) -> None:
        self.write_blocked = True
        for stream in list(self.streams.values()):
            stream.pause_peer(_PEER_TRANSPORT)

    def resume_writing(self) -> None:
        self.write_blocked = False
        for stream in list(self.streams.values()):
            stream.resume_peer(_PEER_TRANSPORT)

    # --- streams -----------------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        if self.going_away:
            self.h2c.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        method = target = authority = b""
        fields: Fields = []
        index: dict[bytes, bytes] = {}
        cookies: list[bytes] = []
        underscores = self._opts.headers_with_underscores
        for name, value in event.headers:
            if name[0] == 58:  # b":"
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if name in HOP_BY_HOP and not (name == b"te" and value == b"trailers"):
                continue
            if name == b"host":
                if not authority:
                    authority = value
                continue
            if underscores and b"_" in name:
                # headers_with_underscores_action: Envoy drops the header or resets the
                # stream (nghttp2's callback failure: INTERNAL_ERROR).
                stats = self._handler.codec_stats["http2"]  # type: ignore[attr-defined]
                if underscores == UNDERSCORES_DROP:
                    stats.dropped_headers_with_underscores += 1
                    continue
                stats.requests_rejected_with_underscores_in_headers += 1
                self.h2c.reset_stream(event.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                return
            fields.append((name, value))
            prev = index.get(name)
            index[name] = value if prev is None else prev + b"," + value
        if cookies:
            # RFC 9113 §8.2.3: crumbs are joined with "; " for an HTTP/1 hop.
            joined = b"; ".join(cookies)
            fields.append((b"cookie", joined))
            index[b"cookie"] = joined
        fields.insert(0, (b"host", authority))
        index[b"host"] = authority
        head = RequestHead(method, target, "2", fields, index)
        opts = self._opts
        apply_request_edits(head, self._request_ids if opts.generate_request_id else None,
                            opts.forwarded_proto)
        ended = event.stream_ended is not None
        stream = Http2Stream(self, event.stream_id, head, ended)
        self.streams[event.stream_id] = stream
        self.deadline = _INF
        if self.write_blocked:
            stream._peer_paused = _PEER_TRANSPORT
        self._handler.on_http2_request(stream)
        up = stream.upstream
        if up is not None and up.out:
            up.flush()
        self._requests += 1
        limit = self._opts.max_requests_per_connection
        if limit and self._requests == limit and not self.going_away:
            # max_requests_per_connection: this stream is the last one.
            self._handler.stats.downstream_cx_max_requests_reached += 1  # type: ignore[attr-defined]
            self._go_away(stream.stream_id)
        elif getattr(self._handler, "draining", False) and not self.going_away:
            # The listener was updated (Envoy's immediate drain): this stream is the last one;
            # GOAWAY sends the client to a new connection under the new config.
            self._go_away(stream.stream_id)

    def stream_finished(self, stream: Http2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not self.streams:
            if self.going_away:
                self.flush()
                self._close()
            elif self._sweeper is not None:
                self._arm_idle()

    # --- output --------------------------------------------------------------------------------------

    def _protocol_error(self) -> None:
        self.h2c.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.flush()
        for stream in list(self.streams.values()):
            stream._cancelled_by_client()
        self.streams.clear()
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- deadlines -----------------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        idle = self._opts.idle_timeout
        self.deadline = self.loop.time() + idle if idle > 0 else _INF

    def on_deadline(self, now: float) -> None:
        self.deadline = _INF
        if self.closed or self.streams:
            return
        # Idle: GOAWAY then close (Envoy's idle_timeout on HTTP/2).
        self.h2c.close_connection(h2.errors.ErrorCodes.NO_ERROR)
        self.flush()
        self._close()
