"""Envoy's gRPC-Web filter (``envoy.filters.http.grpc_web``): gRPC-Web clients (browsers) to
gRPC servers, following gRPC's PROTOCOL-WEB.md as Envoy's ``GrpcWebFilter`` does.

A request is gRPC-Web when it has a path and its ``content-type`` is exactly
``application/grpc-web``, ``application/grpc-web+proto``, ``application/grpc-web-text`` or
``application/grpc-web-text+proto``; anything else passes through untouched. For a gRPC-Web
request:

- **Request.** ``content-type`` becomes ``application/grpc``, ``content-length`` goes (the body
  is re-framed for the upstream), ``te: trailers`` is set and ``grpc-accept-encoding:
  identity`` added when absent. A ``-text`` body is base64: it is decoded as it streams in
  (whole 4-character groups; padding may end any group), and a body that is not valid base64,
  or does not end on a group boundary, is answered 400 ``Bad gRPC-web request, invalid base64
  data.``. ``accept: application/grpc-web-text[+proto]`` asks for a base64 response.
- **Response.** ``content-type`` becomes ``application/grpc-web+proto`` (or
  ``application/grpc-web-text+proto``), ``content-length`` goes; data frames pass (base64
  encoded one gRPC frame at a time for a text response); the trailers (``grpc-status``,
  ``grpc-message``...) become the body's last frame, flag ``0x80``, ``name:value\\r\\n`` lines
  (base64 too for text). The upstream is whatever the route's cluster speaks; gRPC needs the
  cluster's HTTP/2 protocol options.
- **Non-gRPC responses** — an upstream error page, or a local reply of the proxy (no route,
  no healthy upstream, a fault abort...) — are turned into a gRPC-Web trailers-only response,
  as Envoy does: the HTTP status stays, ``grpc-status`` is mapped from it (Envoy's
  ``httpToGrpcStatus``) unless one is given, the body (up to 16 KiB) becomes the
  percent-encoded ``grpc-message``, and the body is empty.

Envoy's per-service/method ``grpc-web`` stats (``cluster.<name>.grpc-web.<service>.<method>.*``)
are not kept.
"""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from pistio.proxy.http.headers import Fields
from pistio.proxy.http.http2_grpc import GRPC_MESSAGE, GRPC_STATUS, grpc_status_for_http, is_grpc

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream

GRPC_WEB = b"application/grpc-web"
GRPC_WEB_PROTO = b"application/grpc-web+proto"
GRPC_WEB_TEXT = b"application/grpc-web-text"
GRPC_WEB_TEXT_PROTO = b"application/grpc-web-text+proto"
_GRPC_WEB_TYPES = frozenset({GRPC_WEB, GRPC_WEB_PROTO, GRPC_WEB_TEXT, GRPC_WEB_TEXT_PROTO})
_TEXT_TYPES = frozenset({GRPC_WEB_TEXT, GRPC_WEB_TEXT_PROTO})
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
TRAILER_FLAG = 0x80
BAD_BASE64_BODY = b"Bad gRPC-web request, invalid base64 data."
MAX_BUFFERED_PLAINTEXT = 16384  # Envoy's limit on a non-gRPC body turned into grpc-message
_LAST_CHUNK = b"0\r\n\r\n"


def percent_encode(value: bytes) -> bytes:
    """Envoy's ``PercentEncoding::encode`` for ``grpc-message``: bytes outside printable ASCII,
    and ``%``, as ``%XX``."""
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in value):
        return value
    return b"".join(
        bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in value
    )


def _b64decode(data: bytes) -> bytes:
    """Decode whole base64 groups; a group with padding ends a segment and another may follow
    (clients encode message by message). Raises ``binascii.Error``."""
    if b"=" not in data[:-2]:
        return binascii.a2b_base64(data, strict_mode=True)
    out = []
    start = 0
    for i in range(0, len(data), 4):
        if b"=" in data[i:i + 4]:
            out.append(binascii.a2b_base64(data[start:i + 4], strict_mode=True))
            start = i + 4
    if start < len(data):
        out.append(binascii.a2b_base64(data[start:], strict_mode=True))
    return b"".join(out)


class GrpcWebFilter:
    """The filter as configured on a connection manager (``GrpcWeb`` has no fields); the
    per-request state is a ``GrpcWebStream`` on the ``ActiveStream``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        stream = s.stream
        head = stream.head
        content_type = head.index.get(_CONTENT_TYPE)
        if content_type not in _GRPC_WEB_TYPES or not head.target:
            return True
        accept = head.index.get(b"accept")
        state = GrpcWebStream(position, content_type in _TEXT_TYPES, accept in _TEXT_TYPES)
        s.grpc_web = state
        head.remove(_CONTENT_LENGTH)
        head.set(_CONTENT_TYPE, b"application/grpc")
        head.set(b"te", b"trailers")
        if b"grpc-accept-encoding" not in head.index:
            head.set(b"grpc-accept-encoding", b"identity")
        if not stream.request_done and not stream.chunked_in:
            # Without a length the pipeline frames the body in chunks (see connection_manager).
            stream.chunked_in = True
            pending = getattr(stream, "pending", None)
            if pending:
                stream.pending = [p for piece in pending if piece
                                  for p in (b"%x\r\n" % len(piece), piece, b"\r\n")]
        return True

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        state = s.grpc_web
        if state is None:
            return fields
        out = [(n, v) for n, v in fields
               if n.lower() != _CONTENT_TYPE and n.lower() != _CONTENT_LENGTH]
        out.append((_CONTENT_TYPE, state.response_content_type))
        return out


class GrpcWebStream:
    """One gRPC-Web request's translation state."""

    __slots__ = ("position", "text_request", "text_response", "response_content_type",
                 "_chunk_state", "_b64_rest", "_frames", "transforming", "held_head",
                 "_plaintext")

    def __init__(self, position: int, text_request: bool, text_response: bool) -> None:
        self.position = position  # of the filter in the chain
        self.text_request = text_request
        self.text_response = text_response
        self.response_content_type = GRPC_WEB_TEXT_PROTO if text_response else GRPC_WEB_PROTO
        self._chunk_state = 0  # request framing: 0 size line, 1 data, 2 CRLF
        self._b64_rest = b""  # base64 characters short of a whole group
        self._frames = bytearray()  # text response: bytes short of a whole gRPC frame
        self.transforming = False  # a non-gRPC response becoming trailers-only
        self.held_head: tuple[int, Fields] | None = None
        self._plaintext = bytearray()

    # --- request -----------------------------------------------------------------------------------

    def decode_request(self, s: ActiveStream, pieces: list[bytes]) -> list[bytes] | None:
        """A ``-text`` request's body pieces (chunk framed) decoded from base64 and framed
        again; ``None`` when the body is not base64 (a 400 was sent)."""
        out: list[bytes] = []
        state = self._chunk_state
        for piece in pieces:
            if state == 0:
                if piece == _LAST_CHUNK:
                    if self._b64_rest:
                        return self._bad_request(s)
                    out.append(piece)
                    continue
                state = 1
                continue
            if state == 2:
                state = 0
                continue
            state = 2
            data = self._b64_rest + piece if self._b64_rest else piece
            usable = len(data) - len(data) % 4
            self._b64_rest = data[usable:]
            if not usable:
                continue
            try:
                decoded = _b64decode(data[:usable])
            except binascii.Error:
                self._chunk_state = state
                return self._bad_request(s)
            if decoded:
                out += (b"%x\r\n" % len(decoded), decoded, b"\r\n")
        self._chunk_state = state
        return out

    def _bad_request(self, s: ActiveStream) -> None:
        s.send_local_reply(400, BAD_BASE64_BODY, details="grpc_base_64_decode_failed",
                           filter_position=self.position)
        return None

    # --- response ----------------------------------------------------------------------------------

    def response_head(self, status: int, fields: Fields) -> None:
        """Decide, on the upstream's own headers, whether the response must become a
        trailers-only gRPC-Web response (it is neither gRPC nor proto gRPC-Web)."""
        content_type = b""
        has_status = False
        for name, value in fields:
            lname = name.lower()
            if lname == _CONTENT_TYPE:
                content_type = value
            elif lname == GRPC_STATUS:
                has_status = True
        if has_status:
            return  # trailers-only gRPC
        if status == 200:
            media = content_type.split(b";", 1)[0].strip().lower()
            if is_grpc(media) or media in (GRPC_WEB, GRPC_WEB_PROTO):
                return
        self.transforming = True

    def encode_body(self, data: bytes) -> bytes:
        if self.transforming:
            room = MAX_BUFFERED_PLAINTEXT - len(self._plaintext)
            if room > 0:
                self._plaintext += data[:room]
            return b""
        if not self.text_response:
            return data
        frames = self._frames
        frames += data
        out = []
        while len(frames) >= 5:
            end = 5 + int.from_bytes(frames[1:5], "big")
            if len(frames) < end:
                break
            out.append(binascii.b2a_base64(frames[:end], newline=False))
            del frames[:end]
        return b"".join(out)

    def encode_trailers(self, fields: Fields) -> bytes:
        """The trailers as the body's last frame (with what a text response still held)."""
        if self.transforming:
            return b""
        block = b"".join(name.lower() + b":" + value + b"\r\n" for name, value in fields)
        frame = bytes((TRAILER_FLAG,)) + len(block).to_bytes(4, "big") + block
        if not self.text_response:
            return frame
        return self.flush_text() + binascii.b2a_base64(frame, newline=False)

    def flush_text(self) -> bytes:
        """A text response's incomplete last frame, encoded as it is."""
        if not self._frames:
            return b""
        rest = binascii.b2a_base64(bytes(self._frames), newline=False)
        self._frames.clear()
        return rest

    def release(self) -> tuple[int, Fields] | None:
        """At the end of a transformed response: its headers, now trailers-only."""
        held = self.held_head
        if held is None:
            return None
        self.held_head = None
        status, fields = held
        out = [(n, v) for n, v in fields
               if n.lower() not in (GRPC_STATUS, GRPC_MESSAGE, _CONTENT_LENGTH)]
        out.append((GRPC_STATUS, b"%d" % grpc_status_for_http(status)))
        out.append((GRPC_MESSAGE, percent_encode(bytes(self._plaintext))))
        out.append((_CONTENT_LENGTH, b"0"))
        return status, out

    def local_reply(self, status: int, body: bytes | None, fields: Fields) -> tuple[bytes, Fields]:
        """A local reply to a gRPC-Web request: trailers-only gRPC-Web, HTTP status kept
        (``grpc-status`` mapped unless the replier gave one), the body as ``grpc-message``."""
        has_status = has_message = False
        out: Fields = []
        for name, value in fields:
            lname = name.lower()
            if lname in (_CONTENT_TYPE, _CONTENT_LENGTH):
                continue
            if lname == GRPC_STATUS:
                has_status = True
            elif lname == GRPC_MESSAGE:
                has_message = True
            out.append((name, value))
        if not has_status:
            out.append((GRPC_STATUS, b"%d" % grpc_status_for_http(status)))
        if not has_message and body:
            out.append((GRPC_MESSAGE, percent_encode(body[:MAX_BUFFERED_PLAINTEXT])))
        out.append((_CONTENT_TYPE, self.response_content_type))
        return b"", out
