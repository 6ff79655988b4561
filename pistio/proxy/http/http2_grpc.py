"""gRPC over the proxy: what Envoy does differently when a request is a gRPC call.

- A request is gRPC when its ``content-type`` is ``application/grpc``, possibly followed by
  ``+codec`` or ``;parameters`` (Envoy's ``Grpc::Common::isGrpcRequestHeaders``; gRPC-Web is
  not gRPC).
- A local reply to a gRPC request is a *trailers-only* response (one HEADERS frame with
  END_STREAM): ``:status 200``, ``content-type: application/grpc``, ``grpc-status`` mapped
  from the HTTP status the proxy chose, and the reply body as ``grpc-message`` (Envoy's
  ``sendLocalReply`` with ``is_grpc``). The mapping is Envoy's ``httpToGrpcStatus``, itself
  gRPC's published HTTP→gRPC table: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
  404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN. A caller may impose
  the status (the stream-duration timeout says DEADLINE_EXCEEDED) by passing ``grpc-status``
  among the reply's headers.
- ``grpc-timeout`` (``<digits><unit>``, unit one of H M S m u n) bounds the call when the route's
  ``max_stream_duration.grpc_timeout_header_max`` is set (0: no cap), less
  ``grpc_timeout_header_offset``.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

from pistio.proxy.http.headers import Fields

GRPC_CONTENT_TYPE = b"application/grpc"
GRPC_STATUS = b"grpc-status"
GRPC_MESSAGE = b"grpc-message"
GRPC_TIMEOUT = b"grpc-timeout"

# gRPC status codes (google.rpc.Code) the proxy produces or retries on.
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_HTTP_TO_GRPC = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}

_TIMEOUT_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def is_grpc(content_type: bytes | None) -> bool:
    """Envoy's ``Grpc::Common::hasGrpcContentType``: ``application/grpc`` exactly, or followed
    by ``+`` (a codec) or ``;`` (parameters); ``application/grpc-web`` is not gRPC."""
    if content_type is None or not content_type.startswith(GRPC_CONTENT_TYPE):
        return False
    return len(content_type) == 16 or content_type[16] in b"+;"


def grpc_status_for_http(status: int) -> int:
    """Envoy's ``Grpc::Utility::httpToGrpcStatus``."""
    return _HTTP_TO_GRPC.get(status, UNKNOWN)


def parse_grpc_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` in seconds; None when malformed (then it is ignored, as in Envoy).
    The gRPC spec allows at most 8 digits."""
    if len(value) < 2 or len(value) > 9:
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    digits = value[:-1]
    if unit is None or not digits.isdigit():
        return None
    return int(digits) * unit


_MAX_TIMEOUT_VALUE = 99_999_999  # grpc-timeout carries at most 8 digits


def format_grpc_timeout(milliseconds: int) -> bytes:
    """Envoy's ``toGrpcTimeout``: milliseconds, in a larger unit when 8 digits are too few."""
    value, units, unit = milliseconds, b"mSMH", 0
    if value > _MAX_TIMEOUT_VALUE:
        value //= 1000
        unit = 1
    while value > _MAX_TIMEOUT_VALUE:
        if unit == 3:
            value = _MAX_TIMEOUT_VALUE
        else:
            value //= 60
            unit += 1
    return b"%d" % value + units[unit:unit + 1]


def trailers_only_reply(status: int, body: bytes | None, extra: Fields) -> Fields:
    """The single HEADERS block of a gRPC local reply (``extra`` may carry ``grpc-status``)."""
    code: bytes | None = None
    rest: Fields = []
    for name, value in extra:
        if name == GRPC_STATUS:
            code = value
        else:
            rest.append((name, value))
    if code is None:
        code = b"%d" % grpc_status_for_http(status)
    fields: Fields = [
        (b":status", b"200"),
        (b"content-type", GRPC_CONTENT_TYPE),
        (GRPC_STATUS, code),
    ]
    if body:
        # grpc-message is percent-encoded (gRPC's HTTP/2 protocol description).
        fields.append((GRPC_MESSAGE, quote_from_bytes(body, safe=" ").encode()))
    fields += rest
    return fields


def grpc_status_of(fields: Fields) -> int | None:
    """The ``grpc-status`` in a header block (a trailers-only response), if any."""
    size = len(GRPC_STATUS)
    for name, value in fields:
        if len(name) == size and name.lower() == GRPC_STATUS:
            return int(value) if value.isdigit() else None
    return None
