"""Envoy's ``tls_inspector`` listener filter: is the connection TLS, and if so which server name
(SNI) and application protocols (ALPN) does its ClientHello ask for?

The filter chain match needs these before any byte is consumed: an outbound listener picks a
``tls`` chain for ``*.example.com`` by SNI, an inbound listener picks its mTLS chain by
transport protocol ``tls`` and ALPN ``istio-peer-exchange``/``istio``. The listener peeks
(``MSG_PEEK``) and hands the bytes seen so far to :func:`inspect_client_hello`, which parses the
TLS records itself; it never raises, whatever the bytes are:

- ``NEED_MORE``: a well-formed prefix of a ClientHello; peek again when more bytes arrive;
- ``NOT_TLS``: anything else (plaintext, an SSLv2 hello, a malformed ClientHello). The
  connection carries on as ``raw_buffer``, as Envoy does when its TLS parser fails before the
  ClientHello is complete (``tls_inspector.tls_not_found``);
- ``TLS``: a complete ClientHello; ``server_name`` (empty if absent) and ``alpn`` are set and
  the transport protocol becomes ``tls``;
- ``TOO_LARGE``: the ClientHello is larger than ``max_client_hello_size`` (BoringSSL's 16 KiB
  limit, Envoy's default): Envoy closes the connection (``client_hello_too_large``).

The ClientHello may be fragmented over several handshake records; fragments are joined. ALPN
that does not parse is ignored (the TLS stack will reject it later), as in Envoy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# BoringSSL's limit on a ClientHello, Envoy's default and maximum ``max_client_hello_size``.
MAX_CLIENT_HELLO_SIZE = 16 * 1024
# As in Envoy, the limit also bounds the raw bytes peeked (record headers included): no verdict
# within this many bytes is ``TOO_LARGE``.
MAX_PEEK_BYTES = MAX_CLIENT_HELLO_SIZE

_HANDSHAKE_RECORD = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_MAX_RECORD_LENGTH = 16384 + 2048  # TLSPlaintext.length limit (with TLS 1.2's expansion slack)


class TlsDetection(enum.Enum):
    NEED_MORE = "need_more"
    NOT_TLS = "not_tls"
    TLS = "tls"
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class TlsInspection:
    state: TlsDetection
    server_name: str = ""
    alpn: tuple[str, ...] = ()


NEED_MORE = TlsInspection(TlsDetection.NEED_MORE)
NOT_TLS = TlsInspection(TlsDetection.NOT_TLS)
TOO_LARGE = TlsInspection(TlsDetection.TOO_LARGE)


def inspect_client_hello(
    data: bytes | bytearray | memoryview, max_size: int = MAX_CLIENT_HELLO_SIZE
) -> TlsInspection:
    """Classify the first bytes of a connection (see the module docstring). Never raises."""
    try:
        return _inspect(bytes(data), max_size)
    except (IndexError, ValueError, UnicodeDecodeError):  # pragma: no cover - defensive
        return NOT_TLS


def _inspect(data: bytes, max_size: int) -> TlsInspection:
    if not data:
        return NEED_MORE
    if data[0] != _HANDSHAKE_RECORD:
        return NOT_TLS
    # Reassemble the handshake message from consecutive handshake records.
    message = bytearray()
    pos = 0
    needed: int | None = None  # total handshake message length incl. its 4-byte header
    while True:
        if len(data) - pos < 5:
            if len(data) > pos and not _plausible_record_prefix(data[pos:]):
                return NOT_TLS
            return NEED_MORE
        if data[pos] != _HANDSHAKE_RECORD or data[pos + 1] != 3 or data[pos + 2] > 4:
            return NOT_TLS
        length = (data[pos + 3] << 8) | data[pos + 4]
        if length == 0 or length > _MAX_RECORD_LENGTH:
            return NOT_TLS
        fragment = data[pos + 5 : pos + 5 + length]
        message += fragment
        if needed is None and len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                return NOT_TLS
            body = (message[1] << 16) | (message[2] << 8) | message[3]
            if body > max_size:
                return TOO_LARGE
            needed = 4 + body
        if needed is not None and len(message) >= needed:
            return _parse_client_hello(bytes(message[4:needed]))
        if len(fragment) < length:
            return NEED_MORE  # the rest of this record has not arrived
        pos += 5 + length


def _plausible_record_prefix(prefix: bytes) -> bool:
    """Whether up to 4 bytes could start a handshake record header."""
    if prefix[0] != _HANDSHAKE_RECORD:
        return False
    if len(prefix) > 1 and prefix[1] != 3:
        return False
    return not (len(prefix) > 2 and prefix[2] > 4)


def _parse_client_hello(body: bytes) -> TlsInspection:
    """``ClientHello`` (RFC 8446 §4.1.2): version, random, session id, cipher suites,
    compression methods, then extensions (absent in very old clients)."""
    n = len(body)
    pos = 2 + 32  # legacy_version, random
    if pos + 1 > n:
        return NOT_TLS
    pos += 1 + body[pos]  # legacy_session_id <0..32>
    if pos + 2 > n:
        return NOT_TLS
    suites = (body[pos] << 8) | body[pos + 1]
    if suites < 2 or suites % 2:
        return NOT_TLS
    pos += 2 + suites
    if pos + 1 > n:
        return NOT_TLS
    pos += 1 + body[pos]  # legacy_compression_methods
    if pos > n:
        return NOT_TLS
    if pos == n:
        return TlsInspection(TlsDetection.TLS)
    if pos + 2 > n:
        return NOT_TLS
    end = pos + 2 + ((body[pos] << 8) | body[pos + 1])
    if end != n:
        return NOT_TLS
    pos += 2
    server_name = ""
    alpn: tuple[str, ...] = ()
    while pos < end:
        if pos + 4 > end:
            return NOT_TLS
        ext_type = (body[pos] << 8) | body[pos + 1]
        ext_len = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        if pos + ext_len > end:
            return NOT_TLS
        ext = body[pos : pos + ext_len]
        pos += ext_len
        if ext_type == _EXT_SERVER_NAME:
            name = _server_name(ext)
            if name is None:
                return NOT_TLS  # BoringSSL rejects a malformed server_name extension
            server_name = name
        elif ext_type == _EXT_ALPN:
            alpn = _alpn(ext)
    return TlsInspection(TlsDetection.TLS, server_name, alpn)


def _server_name(ext: bytes) -> str | None:
    """``ServerNameList`` (RFC 6066 §3): the first ``host_name`` entry."""
    if len(ext) < 2:
        return None
    end = 2 + ((ext[0] << 8) | ext[1])
    if end != len(ext):
        return None
    pos = 2
    while pos + 3 <= end:
        kind = ext[pos]
        length = (ext[pos + 1] << 8) | ext[pos + 2]
        pos += 3
        if pos + length > end:
            return None
        if kind == 0:
            raw = ext[pos : pos + length]
            if not raw or b"\x00" in raw:
                return None
            try:
                return raw.decode("ascii")
            except UnicodeDecodeError:
                return None
        pos += length
    return "" if pos == end else None


def _alpn(ext: bytes) -> tuple[str, ...]:
    """``ProtocolNameList`` (RFC 7301 §3.1); malformed lists are ignored (empty)."""
    if len(ext) < 4:
        return ()
    end = 2 + ((ext[0] << 8) | ext[1])
    if end != len(ext):
        return ()
    out = []
    pos = 2
    while pos < end:
        length = ext[pos]
        pos += 1
        if length == 0 or pos + length > end:
            return ()
        out.append(ext[pos : pos + length].decode("latin-1"))
        pos += length
    return tuple(out)
