"""B3 (multi and single) and W3C traceparent extraction and injection."""

from __future__ import annotations

import pytest

from pistio.proxy.http.headers import RequestHead
from pistio.proxy.tracing.context import IncomingContext, extract, inject

T128 = "463ac35c9f6413ad48485a3953bb6124"
T64 = "48485a3953bb6124"
S1 = "a2fb4a1d1a96d312"
S2 = "0020000000000001"


def IC(trace: str | None, span: str | None, parent: str | None,  # noqa: N802
       sampled: bool | None) -> IncomingContext:
    """The expected context (ids as the bytes extraction gives)."""
    return IncomingContext(*(None if v is None else v.encode() for v in (trace, span, parent)),
                           sampled)


def idx(**headers: str) -> dict[bytes, bytes]:
    return {k.replace("_", "-").encode(): v.encode() for k, v in headers.items()}


def test_b3_multi_headers() -> None:
    ctx = extract(idx(x_b3_traceid=T128, x_b3_spanid=S1, x_b3_parentspanid=S2, x_b3_sampled="1"))
    assert ctx == IC(T128, S1, S2, True)
    assert extract(idx(x_b3_traceid=T64, x_b3_spanid=S1)) == IC(T64, S1, None, None)
    assert extract(idx(x_b3_traceid=T64, x_b3_spanid=S1, x_b3_sampled="0")).sampled is False
    assert extract(idx(x_b3_traceid=T64, x_b3_spanid=S1, x_b3_sampled="true")).sampled is True
    # debug flag implies sampled; upper-case hex is accepted and normalised
    ctx = extract(idx(x_b3_traceid=T128.upper(), x_b3_spanid=S1, x_b3_flags="1"))
    assert ctx == IC(T128, S1, None, True)


@pytest.mark.parametrize("headers", [
    {"x_b3_traceid": "xyz", "x_b3_spanid": S1},
    {"x_b3_traceid": T128 + "00", "x_b3_spanid": S1},
    {"x_b3_traceid": "0" * 32, "x_b3_spanid": S1},
    {"x_b3_traceid": T128, "x_b3_spanid": "0" * 16},
    {"x_b3_traceid": T128},
    {"x_b3_traceid": T128, "x_b3_spanid": S1, "x_b3_parentspanid": "nothex!!nothex!!"},
    {"b3": f"{T128}"},
    {"b3": f"{T128}-{S1}-x"},
    {"b3": f"{T128}-{S1}-1-{S2}-extra"},
    {"b3": "garbage"},
    {"traceparent": f"00-{T128}-{S1}"},
    {"traceparent": f"ff-{T128}-{S1}-01"},
    {"traceparent": f"00-{'0' * 32}-{S1}-01"},
    {"traceparent": f"00-{T128}-{S1}-01-more"},
    {"traceparent": f"00-{T128.upper()}-{S1}-01"},
])
def test_malformed_contexts_are_ignored(headers: dict[str, str]) -> None:
    assert extract(idx(**headers)) is None


def test_sampling_state_without_ids_is_kept() -> None:
    assert extract(idx(x_b3_sampled="0")) == IC(None, None, None, False)
    assert extract(idx(b3="1")) == IC(None, None, None, True)
    assert extract(idx(b3="d")).sampled is True
    assert extract(idx(b3="0")).sampled is False
    # a bad B3 id with a sampling flag: ids ignored, decision kept
    assert extract(idx(x_b3_traceid="bad", x_b3_spanid=S1, x_b3_sampled="1")) == \
        IC(None, None, None, True)


def test_b3_single_header() -> None:
    assert extract(idx(b3=f"{T128}-{S1}")) == IC(T128, S1, None, None)
    assert extract(idx(b3=f"{T64}-{S1}-1")) == IC(T64, S1, None, True)
    assert extract(idx(b3=f"{T128}-{S1}-0-{S2}")) == IC(T128, S1, S2, False)
    assert extract(idx(b3=f"{T128}-{S1}-d")).sampled is True


def test_traceparent() -> None:
    assert extract(idx(traceparent=f"00-{T128}-{S1}-01")) == IC(T128, S1, None,
                                                                             True)
    assert extract(idx(traceparent=f"00-{T128}-{S1}-00")).sampled is False
    # a later version may append fields
    assert extract(idx(traceparent=f"01-{T128}-{S1}-03-abc")).sampled is True


def test_b3_multi_wins_over_single_and_w3c() -> None:
    ctx = extract(idx(x_b3_traceid=T128, x_b3_spanid=S1, b3=f"{T64}-{S2}",
                      traceparent=f"00-{'1' * 32}-{S2}-01"))
    assert (ctx.trace_id, ctx.span_id) == (T128.encode(), S1.encode())
    ctx = extract(idx(b3=f"{T64}-{S2}", traceparent=f"00-{'1' * 32}-{S1}-01"))
    assert (ctx.trace_id, ctx.span_id) == (T64.encode(), S2.encode())


def _head(**headers: str) -> RequestHead:
    index = idx(**headers)
    fields = [(k.title(), v) for k, v in index.items()]  # original case kept by the codec
    return RequestHead(b"GET", b"/", "1.1", fields, index)


def test_inject_writes_b3_and_traceparent() -> None:
    head = _head(host="a", x_request_id="r")
    inject(head, T128.encode(), S1.encode(), S2.encode(), True)
    assert head.index[b"x-b3-traceid"] == T128.encode()
    assert head.index[b"x-b3-spanid"] == S1.encode()
    assert head.index[b"x-b3-parentspanid"] == S2.encode()
    assert head.index[b"x-b3-sampled"] == b"1"
    assert head.index[b"traceparent"] == f"00-{T128}-{S1}-01".encode()
    assert b"b3" not in head.index
    assert dict(head.fields)[b"traceparent"] == head.index[b"traceparent"]
    assert head.index[b"x-request-id"] == b"r"


def test_inject_replaces_incoming_headers_once() -> None:
    head = _head(host="a", x_b3_traceid=T64, x_b3_spanid=S2, x_b3_sampled="1",
                 x_b3_flags="1", b3=f"{T64}-{S2}", traceparent=f"00-{'1' * 32}-{S2}-01",
                 tracestate="k=v")
    inject(head, T64.encode(), S1.encode(), None, False)
    names = [n.lower() for n, _ in head.fields]
    for name in (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled", b"traceparent", b"b3"):
        assert names.count(name) == 1, name
    assert b"x-b3-parentspanid" not in head.index and b"x-b3-flags" not in head.index
    assert head.index[b"x-b3-sampled"] == b"0"
    # a 64-bit trace id is left-padded in traceparent
    assert head.index[b"traceparent"] == f"00-{'0' * 16}{T64}-{S1}-00".encode()
    assert head.index[b"b3"] == f"{T64}-{S1}-0".encode()
    assert head.index[b"tracestate"] == b"k=v"
    assert extract(head.index) == IC(T64, S1, None, False)
