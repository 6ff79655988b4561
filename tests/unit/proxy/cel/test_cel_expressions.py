"""CEL expressions over Envoy's attributes, evaluated by cel-python against a StreamInfo."""

from __future__ import annotations

import datetime

import pytest

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo, StreamInfo
from pistio.proxy.cel import CelError, compile_expression, set_local_node
from pistio.proxy.http.headers import RequestHead


def info(code: int = 404, **headers: str) -> StreamInfo:
    index = {b"host": b"reviews:9080", b"x-request-id": b"req-1", b"user-agent": b"curl/8"}
    index.update({k.replace("_", "-").encode(): v.encode() for k, v in headers.items()})
    head = RequestHead(b"GET", b"/api/v1/ratings?user=1", "1.1", [], index)
    ds = DownstreamConnectionInfo(("10.0.0.1", 9080), ("10.0.0.2", 34567), 7)
    i = StreamInfo(ds, start_time_ns=1_700_000_000_250_000_000)
    i.request_headers = head
    i.protocol = "HTTP/1.1"
    i.response_code = code
    i.last_downstream_tx_byte_sent = i.start_monotonic_ns + 12_500_000  # 12.5 ms
    i.upstream_host = "10.0.0.9:9080"
    i.upstream_cluster = "outbound|9080||reviews.default.svc.cluster.local"
    i.route_name = "default"
    i.bytes_sent = 42
    return i


@pytest.mark.parametrize(("expr", "expected"), [
    ("response.code", 404),
    ("response.code >= 400", True),
    ("response.code in [500, 503]", False),
    ("request.host", "reviews:9080"),
    ("request.method", "GET"),
    ("request.path", "/api/v1/ratings?user=1"),
    ("request.url_path", "/api/v1/ratings"),
    ("request.query", "user=1"),
    ("request.scheme", "http"),
    ("request.id", "req-1"),
    ("request.useragent", "curl/8"),
    ("request.protocol", "HTTP/1.1"),
    ("request.headers['x-user']", "jason"),
    ("request.headers['X-User'] == 'jason'", True),
    ("'x-user' in request.headers", True),
    ("has(request.headers.nope)", False),
    ("request.duration > duration('10ms') && request.duration < duration('13ms')", True),
    ("request.time == timestamp('2023-11-14T22:13:20.250Z')", True),
    ("response.flags == 0", True),
    ("response.size", 42),
    ("connection.id == 7u", True),
    ("connection.mtls", False),
    ("source.address", "10.0.0.2:34567"),
    ("source.port", 34567),
    ("destination.address", "10.0.0.1:9080"),
    ("destination.port == 9080", True),
    ("upstream.address", "10.0.0.9:9080"),
    ("upstream.port", 9080),
    ("xds.cluster_name.startsWith('outbound|9080')", True),
    ("xds.route_name", "default"),
    ("request.headers.exists(k, k == 'x-user')", True),
    ("size(request.headers) >= 4", True),
])
def test_attributes_have_envoys_names_and_types(expr: str, expected: object) -> None:
    value = compile_expression(expr).evaluate(info(x_user="jason"))
    assert value == expected
    assert type(value) is type(expected)  # plain Python values, not CEL wrappers


def test_response_flags_are_a_bit_vector() -> None:
    i = info(503)
    i.response_flags = rf.UPSTREAM_CONNECTION_FAILURE | rf.UPSTREAM_RETRY_LIMIT_EXCEEDED
    assert compile_expression("response.flags").evaluate(i) == i.response_flags
    assert compile_expression(
        f"response.flags % {rf.UPSTREAM_CONNECTION_FAILURE * 2} >= "
        f"{rf.UPSTREAM_CONNECTION_FAILURE}").evaluate(i) is True


def test_missing_attribute_or_type_error_is_none_and_counted_never_raised() -> None:
    program = compile_expression("request.headers['x-absent'] == 'a'")
    before = program.errors
    assert program.evaluate(info()) is None
    assert program.errors == before + 1
    no_response = info(code=0)
    assert compile_expression("response.code >= 400").evaluate(no_response) is None
    assert compile_expression("response.code >= 'a'").evaluate(info()) is None
    assert compile_expression("nope.field").evaluate(info()) is None
    assert compile_expression("connection.tls_version").evaluate(info()) is None


def test_results_follow_each_stream_although_memoized() -> None:
    program = compile_expression("response.code >= 400 && request.headers['x-env'] == 'prod'")
    assert program._paths is not None  # keyed on response.code and one header
    cases = [(200, "prod", False), (404, "prod", True), (503, "dev", False), (503, "prod", True),
             (200, "prod", False)]
    for code, env, expected in cases:
        assert program.evaluate(info(code, x_env=env)) is expected
    # absent header: an error each time (not a cached "false" from another stream)
    assert program.evaluate(info(404)) is None


def test_programs_are_cached_by_text() -> None:
    assert compile_expression("response.code == 200") is compile_expression("response.code == 200")


@pytest.mark.parametrize("text", ["response.code >=", "request.headers[", "a +* b", "foo(", " "])
def test_syntax_errors_name_the_expression_and_the_position(text: str) -> None:
    with pytest.raises(CelError) as err:
        compile_expression(text)
    message = str(err.value)
    assert message.startswith(f"CEL expression {text!r}: ")
    assert "syntax error at line 1, column" in message or "empty expression" in message


def test_extra_identifiers_and_node_metadata() -> None:
    program = compile_expression("peer.app + '/' + request.method")
    assert program.evaluate(info(), {"peer": {"app": "ratings"}}) == "ratings/GET"
    set_local_node({"id": "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local",
                    "metadata": {"NAMESPACE": "ns"}})
    try:
        assert compile_expression("xds.node.metadata.NAMESPACE").evaluate(info()) == "ns"
    finally:
        set_local_node(None)
    assert compile_expression("xds.node.metadata.NAMESPACE").evaluate(info()) is None


def test_metadata_and_filter_state() -> None:
    i = info()
    i.dynamic_metadata = {"envoy.filters.http.rbac": {"shadow_engine_result": "allowed"}}
    i.filter_state = {"wasm.upstream_peer_id": "sidecar~10.0.0.9"}
    assert compile_expression(
        "metadata.filter_metadata['envoy.filters.http.rbac'].shadow_engine_result"
    ).evaluate(i) == "allowed"
    assert compile_expression("filter_state['wasm.upstream_peer_id']").evaluate(i) == \
        "sidecar~10.0.0.9"


def test_timestamps_and_durations_come_back_as_datetime_values() -> None:
    assert compile_expression("request.duration").evaluate(info()) == \
        datetime.timedelta(milliseconds=12.5)
    moment = compile_expression("request.time").evaluate(info())
    assert moment == datetime.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=datetime.UTC)
