"""The request head and the header edits a sidecar makes, as Envoy's connection manager does.

Envoy's HTTP connection manager edits every request before routing and every response before
encoding (Envoy docs, "HTTP header manipulation" and "HTTP headers: x-request-id,
x-forwarded-proto, x-envoy-*"):

- hop-by-hop headers (connection, keep-alive, proxy-connection, transfer-encoding, upgrade, and
  te unless it is exactly ``trailers``) are never forwarded; the codec re-frames the body;
- ``x-request-id`` is generated (a random UUID4) when the request has none;
- ``x-forwarded-proto`` is set to the downstream scheme when absent (a sidecar does not use the
  remote address, so an existing value is trusted and kept);
- the router adds ``x-envoy-expected-rq-timeout-ms`` when a route timeout applies, and
  ``x-envoy-decorator-operation`` when a route decorator is propagated;
- responses get ``x-envoy-upstream-service-time`` (milliseconds from the upstream request to its
  response headers) and ``server`` overwritten with the listener's server name
  (``server_header_transformation: OVERWRITE``; Istio names inbound sidecars ``istio-envoy``).

Header names keep the case the client sent; lookups go through a lower-cased index built once
while parsing. Values are bytes: nothing on this path decodes text.
"""

from __future__ import annotations

import binascii
import os
from http import HTTPStatus

# Never forwarded in either direction; the codec writes its own framing and connection headers.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
# Response headers the proxy replaces rather than forwards (server: OVERWRITE). The proxy writes its own Server and upstream service time; an upstream's (another proxy's,
# say) are replaced, as Envoy sets these headers rather than appending them.
RESPONSE_DROPPED = HOP_BY_HOP | {b"server", b"x-envoy-upstream-service-time"}

X_REQUEST_ID = b"x-request-id"
X_FORWARDED_PROTO = b"x-forwarded-proto"
X_ENVOY_EXPECTED_RQ_TIMEOUT_MS = b"x-envoy-expected-rq-timeout-ms"
# A downstream's override of the route timeout and the per-try timeout (removed when read).
X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS = b"x-envoy-upstream-rq-timeout-ms"
X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS = b"x-envoy-upstream-rq-per-try-timeout-ms"
X_ENVOY_UPSTREAM_SERVICE_TIME = b"x-envoy-upstream-service-time"
X_ENVOY_DECORATOR_OPERATION = b"x-envoy-decorator-operation"
X_ENVOY_ORIGINAL_PATH = b"x-envoy-original-path"
X_CLIENT_TRACE_ID = b"x-client-trace-id"

Fields = list[tuple[bytes, bytes]]


class RequestHead:
    """A request's start line and headers as parsed from the downstream.

    ``fields`` are the forwardable headers in arrival order and original case (hop-by-hop ones
    already left out); ``index`` maps every lower-cased header name to its value, duplicates
    joined with ``,`` as RFC 9110 allows for list-valued fields. ``target`` is the raw
    request-target (path and query, or an absolute URI) exactly as received.
    """

    __slots__ = ("method", "target", "version", "fields", "index", "upgrade")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: str,
        fields: Fields,
        index: dict[bytes, bytes],
        upgrade: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.fields = fields
        self.index = index
        # The protocol named by ``Upgrade`` when the request asks to switch (websocket).
        self.upgrade = upgrade

    @property
    def authority(self) -> bytes:
        """The Host header (HTTP/1's ``:authority``), empty when absent."""
        return self.index.get(b"host", b"")

    def get(self, lower_name: bytes) -> bytes | None:
        return self.index.get(lower_name)

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every occurrence of a header (``name`` lower-case) with one value."""
        if name in self.index:
            self.fields = [(n, v) for n, v in self.fields if n.lower() != name]
        self.fields.append((name, value))
        self.index[name] = value

    def add(self, name: bytes, value: bytes) -> None:
        """Append a header (``name`` lower-case), keeping existing values."""
        self.fields.append((name, value))
        prev = self.index.get(name)
        self.index[name] = value if prev is None else prev + b"," + value

    def remove(self, name: bytes) -> None:
        if self.index.pop(name, None) is not None:
            self.fields = [(n, v) for n, v in self.fields if n.lower() != name]


class RequestIdGenerator:
    """Random UUID4 request ids as bytes, made 256 at a time from one ``os.urandom`` read.

    ``str(uuid.uuid4())`` costs about 2.6 µs here and formatting one id from a random block
    about 0.7 µs. A batch does its work in C over the whole block: two ``translate`` calls set
    the version and variant bits of every id, one ``hexlify`` encodes it, and 32 strided slice
    assignments lay the hex digits out between the dashes; taking an id is a list pop. The
    version nibble is 4 and the variant bits are 10, as RFC 9562 requires.
    """

    __slots__ = ("_ids",)

    _IDS_PER_READ = 256
    # byte 6: version 4 in the high nibble; byte 8: variant 10 in the two high bits.
    _VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
    _VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
    # hex digit j of an id -> its place in ``8-4-4-4-12`` (a dash before digits 8, 12, 16, 20).
    _PLACES = tuple((j, j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20)) for j in range(32))
    _LINE = b"-" * 36 + b"\n"  # one id: the dashes stay where no digit lands

    def __init__(self) -> None:
        self._ids: list[bytes] = []

    def __call__(self) -> bytes:
        ids = self._ids
        if not ids:
            ids = self._ids = self._batch()
        return ids.pop()

    def _batch(self) -> list[bytes]:
        n = self._IDS_PER_READ
        raw = bytearray(os.urandom(16 * n))
        raw[6::16] = raw[6::16].translate(self._VERSION)
        raw[8::16] = raw[8::16].translate(self._VARIANT)
        digits = binascii.hexlify(raw)
        out = bytearray(self._LINE * n)
        for src, dst in self._PLACES:
            out[dst::37] = digits[src::32]
        return bytes(out[:-1]).split(b"\n")


def apply_request_edits(
    head: RequestHead, new_request_id: RequestIdGenerator | None, forwarded_proto: bytes = b"http"
) -> None:
    """The connection manager's per-request edits that do not depend on the route or on who
    sent the request (``None``: ``generate_request_id: false``)."""
    index = head.index
    if new_request_id is not None and X_REQUEST_ID not in index:
        rid = new_request_id()
        head.fields.append((X_REQUEST_ID, rid))
        index[X_REQUEST_ID] = rid
    if X_FORWARDED_PROTO not in index:
        head.fields.append((X_FORWARDED_PROTO, forwarded_proto))
        index[X_FORWARDED_PROTO] = forwarded_proto


def set_expected_timeout(head: RequestHead, timeout_ms: int) -> None:
    """What the router tells the upstream about the time it will wait (route timeout or
    per-try timeout); Envoy omits it when the timeout is disabled (0)."""
    if timeout_ms > 0:
        head.set(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, b"%d" % timeout_ms)


def set_decorator_operation(head: RequestHead, operation: bytes) -> None:
    """A route decorator's operation, propagated so the upstream's span has the same name."""
    head.set(X_ENVOY_DECORATOR_OPERATION, operation)


def upstream_service_time_line(milliseconds: float) -> bytes:
    return b"x-envoy-upstream-service-time: %d\r\n" % int(milliseconds)


def serialize_fields(fields: Fields, out: list[bytes]) -> None:
    """Append ``name: value CRLF`` for each header to an output list joined once later."""
    for name, value in fields:
        out += (name, b": ", value, b"\r\n")


def _status_lines() -> dict[int, bytes]:
    return {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


_STATUS_LINES = _status_lines()


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <standard reason>``: Envoy sends the standard reason phrase, never
    the upstream's."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
