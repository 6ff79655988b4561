"""Trace context propagation: B3 (multi and single header) and W3C Trace Context.

Extraction reads, in this order, the first well-formed context among

- B3 multi headers: ``x-b3-traceid`` (16 or 32 hex), ``x-b3-spanid`` (16 hex),
  ``x-b3-parentspanid``, ``x-b3-sampled`` (``1``/``0``, also ``true``/``false``), ``x-b3-flags``
  (``1`` = debug, which implies sampled);
- the single ``b3`` header: ``{traceid}-{spanid}[-{sampled}[-{parentspanid}]]``, or a lone
  sampling state ``0``/``1``/``d``;
- W3C ``traceparent``: ``{version}-{32 hex trace}-{16 hex parent}-{2 hex flags}``, bit 0 of
  the flags = sampled (version ``ff`` and all-zero ids are invalid).

A malformed value is ignored (as if absent): Envoy's Zipkin tracer starts a new trace when the
incoming ids do not parse. A sampling state that comes without ids (``x-b3-sampled: 0`` alone,
``b3: 0``) still counts as the caller's decision.

Injection writes this hop's span into the request sent upstream in both formats, so an
application that propagates either B3 or W3C headers keeps the trace: ``x-b3-traceid``,
``x-b3-spanid``, ``x-b3-parentspanid`` (when the span has a parent), ``x-b3-sampled``,
``traceparent``, and ``b3`` when the request carried one. ``tracestate`` passes through.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pistio.proxy.http.headers import RequestHead

X_B3_TRACEID = b"x-b3-traceid"
X_B3_SPANID = b"x-b3-spanid"
X_B3_PARENTSPANID = b"x-b3-parentspanid"
X_B3_SAMPLED = b"x-b3-sampled"
X_B3_FLAGS = b"x-b3-flags"
B3 = b"b3"
TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"

# Headers injection replaces (b3 only when it was there).
_INJECTED = frozenset({X_B3_TRACEID, X_B3_SPANID, X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_FLAGS,
                       TRACEPARENT, B3})

_TRACE_ID = re.compile(rb"[0-9a-fA-F]{16}(?:[0-9a-fA-F]{16})?")
_SPAN_ID = re.compile(rb"[0-9a-fA-F]{16}")
_TRACEPARENT = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_SAMPLED_VALUES = {b"1": True, b"true": True, b"0": False, b"false": False}
_B3_SAMPLING = {b"1": True, b"d": True, b"0": False}


class IncomingContext(NamedTuple):
    """What the caller sent: ids as lower-case hex ``bytes`` (``trace_id`` is 16 or 32
    digits), or ``None`` for a context that carries only a sampling state. ``sampled`` is
    ``None`` when the caller left the decision to us."""

    trace_id: bytes | None
    span_id: bytes | None
    parent_id: bytes | None
    sampled: bool | None


_NO_IDS_SAMPLED = IncomingContext(None, None, None, True)
_NO_IDS_UNSAMPLED = IncomingContext(None, None, None, False)


def _trace_id(raw: bytes | None) -> bytes | None:
    if raw is None or _TRACE_ID.fullmatch(raw) is None or not raw.strip(b"0"):
        return None
    return raw.lower()


def _span_id(raw: bytes | None) -> bytes | None:
    if raw is None or _SPAN_ID.fullmatch(raw) is None or not raw.strip(b"0"):
        return None
    return raw.lower()


def _state_only(sampled: bool | None) -> IncomingContext | None:
    if sampled is None:
        return None
    return _NO_IDS_SAMPLED if sampled else _NO_IDS_UNSAMPLED


def extract(index: dict[bytes, bytes]) -> IncomingContext | None:
    """The caller's trace context from the request headers (lower-case name → value)."""
    get = index.get
    raw_trace = get(X_B3_TRACEID)
    raw_sampled = get(X_B3_SAMPLED)
    sampled_only: bool | None = None
    if raw_trace is not None or raw_sampled is not None or X_B3_FLAGS in index:
        sampled = _SAMPLED_VALUES.get(raw_sampled.lower()) if raw_sampled is not None else None
        if get(X_B3_FLAGS) == b"1":
            sampled = True
        trace_id = _trace_id(raw_trace)
        span_id = _span_id(get(X_B3_SPANID))
        if trace_id is not None and span_id is not None:
            raw_parent = get(X_B3_PARENTSPANID)
            parent_id = _span_id(raw_parent) if raw_parent is not None else None
            if raw_parent is None or parent_id is not None:
                return IncomingContext(trace_id, span_id, parent_id, sampled)
        sampled_only = sampled
    single = get(B3)
    if single is not None:
        ctx = _parse_b3_single(single)
        if ctx is not None:
            return ctx
    parent = get(TRACEPARENT)
    if parent is not None:
        ctx = _parse_traceparent(parent)
        if ctx is not None:
            return ctx
    return _state_only(sampled_only)


def _parse_b3_single(value: bytes) -> IncomingContext | None:
    parts = value.strip().split(b"-")
    if len(parts) == 1:
        return _state_only(_B3_SAMPLING.get(parts[0]))
    if len(parts) > 4:
        return None
    trace_id = _trace_id(parts[0])
    span_id = _span_id(parts[1])
    if trace_id is None or span_id is None:
        return None
    sampled = None
    if len(parts) >= 3:
        if parts[2] not in _B3_SAMPLING:
            return None
        sampled = _B3_SAMPLING[parts[2]]
    parent_id = None
    if len(parts) == 4:
        parent_id = _span_id(parts[3])
        if parent_id is None:
            return None
    return IncomingContext(trace_id, span_id, parent_id, sampled)


def _parse_traceparent(value: bytes) -> IncomingContext | None:
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace, parent, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if not trace.strip(b"0") or not parent.strip(b"0"):
        return None
    return IncomingContext(trace, parent, None, bool(int(flags, 16) & 1))


def inject(head: RequestHead, trace_id: bytes, span_id: bytes, parent_id: bytes | None,
           sampled: bool) -> None:
    """Write the span's context (lower-case hex ids) into the request forwarded upstream,
    replacing the caller's B3 and ``traceparent`` headers."""
    index = head.index
    had_b3 = False
    if not _INJECTED.isdisjoint(index):
        # One pass over the fields instead of one per replaced header.
        had_b3 = B3 in index
        head.fields = [f for f in head.fields if f[0].lower() not in _INJECTED]
        for name in _INJECTED:
            index.pop(name, None)
    flag = b"1" if sampled else b"0"
    traceparent = b"00-%s%s-%s-0%s" % (b"" if len(trace_id) == 32 else b"0000000000000000",
                                        trace_id, span_id, flag)
    fields = head.fields
    if parent_id is None:
        fields += ((X_B3_TRACEID, trace_id), (X_B3_SPANID, span_id), (X_B3_SAMPLED, flag),
                   (TRACEPARENT, traceparent))
    else:
        fields += ((X_B3_TRACEID, trace_id), (X_B3_SPANID, span_id),
                   (X_B3_PARENTSPANID, parent_id), (X_B3_SAMPLED, flag),
                   (TRACEPARENT, traceparent))
        index[X_B3_PARENTSPANID] = parent_id
    index[X_B3_TRACEID] = trace_id
    index[X_B3_SPANID] = span_id
    index[X_B3_SAMPLED] = flag
    index[TRACEPARENT] = traceparent
    if had_b3:
        single = b"%s-%s-%s" % (trace_id, span_id, flag)
        if parent_id is not None:
            single += b"-" + parent_id
        fields.append((B3, single))
        index[B3] = single
