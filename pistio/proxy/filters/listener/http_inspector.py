"""Envoy's ``http_inspector`` listener filter: protocol sniffing of plaintext connections.

Istio sends a connection to a port whose protocol is not declared through a listener with two
kinds of chains — HTTP (application protocols ``http/1.1``, ``h2c``) and TCP — and the
inspector decides which, from the first bytes, without consuming them:

- the HTTP/2 connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` → ``h2c``;
- an HTTP/1.x request line ``METHOD SP target SP HTTP/1.1`` → ``http/1.1``; ``HTTP/1.0`` (and
  a version-less HTTP/0.9 line) → ``http/1.0``, which Istio's chains do not match unless its
  HTTP10 feature is on;
- anything else → not HTTP: no application protocol is set and a TCP chain is chosen.

The request line is judged as Envoy's HTTP/1 parser judges it: a method from the parser's list
(standard and WebDAV/extension methods), a target without spaces or control characters, and a
well-formed version before the first ``\\n``. A verdict comes as early as the bytes allow: a
first byte that cannot start a method already means "not HTTP", so server-speaks-first or
binary protocols are not held waiting. Without a verdict after ``MAX_INSPECT_SIZE`` (64 KiB)
Envoy closes the connection (``http_inspector.read_error``).

The inspector does nothing on a connection the TLS inspector found to be TLS.
"""

from __future__ import annotations

import enum

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_INSPECT_SIZE = 64 * 1024
INITIAL_INSPECT_SIZE = 8 * 1024

ALPN_HTTP11 = "http/1.1"
ALPN_HTTP10 = "http/1.0"
ALPN_H2C = "h2c"

# The HTTP/1 parser's methods plus the extension methods Envoy's inspector accepted.
HTTP_METHODS: frozenset[bytes] = frozenset((
    b"DELETE", b"GET", b"HEAD", b"POST", b"PUT", b"CONNECT", b"OPTIONS", b"TRACE", b"COPY",
    b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH", b"UNLOCK", b"BIND",
    b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"M-SEARCH",
    b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE", b"PATCH", b"PURGE", b"MKCALENDAR", b"LINK",
    b"UNLINK", b"SOURCE", b"QUERY", b"BASELINE-CONTROL", b"CHECKIN", b"LABEL", b"MKREDIRECTREF",
    b"MKWORKSPACE", b"ORDERPATCH", b"UNCHECKOUT", b"UPDATE", b"UPDATEREDIRECTREF",
    b"VERSION-CONTROL",
))
_METHOD_PREFIXES: frozenset[bytes] = frozenset(
    m[:i] for m in HTTP_METHODS for i in range(1, len(m) + 1)
)
_MAX_METHOD = max(len(m) for m in HTTP_METHODS)
_DIGITS = frozenset(b"0123456789")
_VISIBLE_ASCII = bytes(range(0x21, 0x7F))


class HttpDetection(enum.Enum):
    NEED_MORE = "need_more"
    NOT_HTTP = "not_http"
    HTTP = "http"
    TOO_LARGE = "too_large"


def inspect_http(data: bytes | bytearray | memoryview) -> tuple[HttpDetection, str]:
    """``(detection, application protocol)`` for the first bytes of a plaintext connection;
    the protocol is ``h2c``, ``http/1.1`` or ``http/1.0`` when the detection is ``HTTP``, else
    empty. Never raises."""
    data = bytes(data[:MAX_INSPECT_SIZE])
    if not data:
        return HttpDetection.NEED_MORE, ""
    n = min(len(data), len(HTTP2_PREFACE))
    if data[:n] == HTTP2_PREFACE[:n]:
        if len(data) < len(HTTP2_PREFACE):
            return HttpDetection.NEED_MORE, ""
        return HttpDetection.HTTP, ALPN_H2C
    return _request_line(data)


def _request_line(data: bytes) -> tuple[HttpDetection, str]:
    space = data.find(b" ", 0, _MAX_METHOD + 1)
    if space < 0:
        head = data[: _MAX_METHOD + 1]
        if len(head) <= _MAX_METHOD and head in _METHOD_PREFIXES:
            return HttpDetection.NEED_MORE, ""
        return HttpDetection.NOT_HTTP, ""
    if data[:space] not in HTTP_METHODS:
        return HttpDetection.NOT_HTTP, ""
    newline = data.find(b"\n", space)
    line = data[space + 1 : newline if newline >= 0 else len(data)]
    if line.endswith(b"\r"):
        line = line[:-1]
    target, sep, version = line.partition(b" ")
    if not _valid_target(target) or not _valid_target(version):
        return HttpDetection.NOT_HTTP, ""
    if newline < 0:
        if sep and not _version_prefix(version):
            return HttpDetection.NOT_HTTP, ""
        if len(data) >= MAX_INSPECT_SIZE:
            return HttpDetection.TOO_LARGE, ""
        return HttpDetection.NEED_MORE, ""
    if not target:
        return HttpDetection.NOT_HTTP, ""
    if not sep:
        return HttpDetection.HTTP, ALPN_HTTP10  # "GET /\r\n": HTTP/0.9
    if len(version) != 8 or not version.startswith(b"HTTP/") or version[6] != 0x2E or (
        version[5] not in _DIGITS or version[7] not in _DIGITS
    ):
        return HttpDetection.NOT_HTTP, ""
    return HttpDetection.HTTP, ALPN_HTTP11 if version == b"HTTP/1.1" else ALPN_HTTP10


def _valid_target(part: bytes) -> bool:
    """No spaces, control characters or DEL (the parser's URL and version alphabet)."""
    return not part.translate(None, _VISIBLE_ASCII)


def _version_prefix(version: bytes) -> bool:
    """Whether a partial version could still become ``HTTP/d.d``."""
    pattern = b"HTTP/0.0"
    for i, b in enumerate(version[:8]):
        want = pattern[i]
        if want == 0x30:
            if b not in _DIGITS:
                return False
        elif b != want:
            return False
    return len(version) <= 8
