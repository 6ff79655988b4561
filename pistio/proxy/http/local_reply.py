"""Responses the proxy makes itself (Envoy's "local replies"): codec errors, upstream failures.

Envoy's local reply is ``content-type: text/plain`` with the body its caller chose (the
standard reason phrase for codec errors, "upstream connect error or disconnect/reset before
headers. reset reason: ..." for upstream failures), a ``date`` and the listener's ``server``
name; ``connection: close`` when the connection will not carry another request.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from pistio.proxy.http.headers import reason_phrase, status_line

_date_second = -1
_date_line = b""


def date_line() -> bytes:
    """The ``date`` header, formatted at most once per second (RFC 9110 IMF-fixdate)."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_line


def local_reply(
    status: int, body: bytes | None, server_line: bytes, close: bool, head_only: bool = False,
    content_type: bytes | None = None,
) -> bytes:
    """The bytes of a complete HTTP/1.1 local reply. ``body`` None means the reason phrase;
    ``head_only`` answers a HEAD request (length announced, body left out); ``content_type``
    replaces ``text/plain``."""
    if body is None:
        body = reason_phrase(status).encode()
    parts = [
        status_line(status),
        b"content-length: %d\r\ncontent-type: %s\r\n" % (len(body),
                                                           content_type or b"text/plain"),
        date_line(),
        server_line,
    ]
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)
