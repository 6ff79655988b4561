"""Envoy's response flags: why a request ended the way it did, as a bit set.

Every flag has a short name (``UF``), printed by ``%RESPONSE_FLAGS%`` and used in Istio's
``response_flags`` metric label, and a long name (``UpstreamConnectionFailure``) printed by
``%RESPONSE_FLAGS_LONG%``. Several flags can be set on one request (a connection failure that
exhausted its retries is ``UF,URX``); they print joined by ``,`` in Envoy's fixed order, which is
the order of the bits below, and a request without flags prints ``-``.

The bits are plain ``int`` constants so the request path sets a flag with one ``|=``; names are
only produced when a log line or a stat label is rendered, through a small cache because only a
handful of combinations ever occur.
"""

from __future__ import annotations

from typing import NamedTuple


class ResponseFlagName(NamedTuple):
    bit: int
    short: str
    long: str


# Envoy's core response flags in bit order, which is also the printing order.
RESPONSE_FLAGS: tuple[ResponseFlagName, ...] = tuple(
    ResponseFlagName(1 << i, short, long)
    for i, (short, long) in enumerate(
        (
            ("LH", "FailedLocalHealthCheck"),
            ("UH", "NoHealthyUpstream"),
            ("UT", "UpstreamRequestTimeout"),
            ("LR", "LocalReset"),
            ("UR", "UpstreamRemoteReset"),
            ("UF", "UpstreamConnectionFailure"),
            ("UC", "UpstreamConnectionTermination"),
            ("UO", "UpstreamOverflow"),
            ("NR", "NoRouteFound"),
            ("DI", "DelayInjected"),
            ("FI", "FaultInjected"),
            ("RL", "RateLimited"),
            ("UAEX", "UnauthorizedExternalService"),
            ("RLSE", "RateLimitServiceError"),
            ("DC", "DownstreamConnectionTermination"),
            ("URX", "UpstreamRetryLimitExceeded"),
            ("SI", "StreamIdleTimeout"),
            ("IH", "InvalidEnvoyRequestHeaders"),
            ("DPE", "DownstreamProtocolError"),
            ("UMSDR", "UpstreamMaxStreamDurationReached"),
            ("RFCF", "ResponseFromCacheFilter"),
            ("NFCF", "NoFilterConfigFound"),
            ("DT", "DurationTimeout"),
            ("UPE", "UpstreamProtocolError"),
            ("NC", "NoClusterFound"),
            ("OM", "OverloadManagerTerminated"),
            ("DF", "DnsResolutionFailed"),
            ("DO", "DropOverload"),
            ("DR", "DownstreamRemoteReset"),
        )
    )
)

FAILED_LOCAL_HEALTH_CHECK = 1 << 0
NO_HEALTHY_UPSTREAM = 1 << 1
UPSTREAM_REQUEST_TIMEOUT = 1 << 2
LOCAL_RESET = 1 << 3
UPSTREAM_REMOTE_RESET = 1 << 4
UPSTREAM_CONNECTION_FAILURE = 1 << 5
UPSTREAM_CONNECTION_TERMINATION = 1 << 6
UPSTREAM_OVERFLOW = 1 << 7
NO_ROUTE_FOUND = 1 << 8
DELAY_INJECTED = 1 << 9
FAULT_INJECTED = 1 << 10
RATE_LIMITED = 1 << 11
UNAUTHORIZED_EXTERNAL_SERVICE = 1 << 12
RATELIMIT_SERVICE_ERROR = 1 << 13
DOWNSTREAM_CONNECTION_TERMINATION = 1 << 14
UPSTREAM_RETRY_LIMIT_EXCEEDED = 1 << 15
STREAM_IDLE_TIMEOUT = 1 << 16
INVALID_ENVOY_REQUEST_HEADERS = 1 << 17
DOWNSTREAM_PROTOCOL_ERROR = 1 << 18
UPSTREAM_MAX_STREAM_DURATION_REACHED = 1 << 19
RESPONSE_FROM_CACHE_FILTER = 1 << 20
NO_FILTER_CONFIG_FOUND = 1 << 21
DURATION_TIMEOUT = 1 << 22
UPSTREAM_PROTOCOL_ERROR = 1 << 23
NO_CLUSTER_FOUND = 1 << 24
OVERLOAD_MANAGER = 1 << 25
DNS_RESOLUTION_FAILED = 1 << 26
DROP_OVERLOAD = 1 << 27
DOWNSTREAM_REMOTE_RESET = 1 << 28

NONE = "-"

_BY_SHORT = {f.short: f.bit for f in RESPONSE_FLAGS}
_BY_LONG = {f.long: f.bit for f in RESPONSE_FLAGS}
_SHORT_CACHE: dict[int, str] = {0: NONE}
_LONG_CACHE: dict[int, str] = {0: NONE}


def _render(bits: int, long_names: bool) -> str:
    names = [f.long if long_names else f.short for f in RESPONSE_FLAGS if bits & f.bit]
    return ",".join(names) if names else NONE


def to_short_string(bits: int) -> str:
    """``UF,URX`` as ``%RESPONSE_FLAGS%`` prints it; ``-`` when no flag is set."""
    s = _SHORT_CACHE.get(bits)
    if s is None:
        s = _SHORT_CACHE[bits] = _render(bits, False)
    return s


def to_long_string(bits: int) -> str:
    """``UpstreamConnectionFailure,UpstreamRetryLimitExceeded`` (``%RESPONSE_FLAGS_LONG%``)."""
    s = _LONG_CACHE.get(bits)
    if s is None:
        s = _LONG_CACHE[bits] = _render(bits, True)
    return s


def bit_for_name(name: str) -> int:
    """The bit of a flag given its short (``UF``) or long (``UpstreamConnectionFailure``)
    name, as access log filters (``response_flag_filter``) name them; ``KeyError`` if unknown."""
    bit = _BY_SHORT.get(name)
    if bit is None:
        bit = _BY_LONG[name]
    return bit


def from_short_string(text: str) -> int:
    """Parse ``UF,URX`` (or ``-``) back into bits: the inverse of :func:`to_short_string`."""
    if text in ("", NONE):
        return 0
    bits = 0
    for name in text.split(","):
        bits |= bit_for_name(name)
    return bits
