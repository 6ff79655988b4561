"""Access log formatting: Envoy's command operators, response flags, Istio's default formats."""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3 import substitution_format_string_pb2
from google.protobuf import struct_pb2

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.formatter import (
    ENVOY_DEFAULT_FORMAT,
    FormatError,
    JsonFormatter,
    TextFormatter,
    from_substitution_format,
)
from pistio.proxy.access_log.istio_formats import ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT
from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo, StreamInfo
from pistio.proxy.http.headers import RequestHead

# 2023-11-14T22:13:20.123456789Z
START_NS = 1_700_000_000_123_456_789
MS = 1_000_000


class Headers:
    """A response header record: lower-case bytes names, as the codecs keep them."""

    def __init__(self, **values: str) -> None:
        self._index = {k.replace("_", "-").encode(): v.encode() for k, v in values.items()}

    def get(self, name: bytes) -> bytes | None:
        return self._index.get(name)


def request_head(target: bytes = b"/productpage", **headers: str) -> RequestHead:
    fields = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    index = {k.lower(): v for k, v in fields}
    return RequestHead(b"GET", target, "1.1", fields, index)


def sample_info() -> StreamInfo:
    """A request through an outbound sidecar, as the HTTP path records it."""
    conn = DownstreamConnectionInfo(("10.244.0.10", 9080), ("10.244.0.7", 47532), connection_id=7)
    info = StreamInfo(conn, start_time_ns=START_NS, start_monotonic_ns=1000 * MS)
    info.request_headers = request_head(
        host="productpage:9080",
        user_agent="curl/8.5.0",
        x_request_id="2f6a3c1e-8f3b-4a52-9a4e-0c3c8e2d1b7a",
    )
    info.response_headers = Headers(x_envoy_upstream_service_time="11", grpc_status="14")
    info.protocol = "HTTP/1.1"
    info.response_code = 200
    info.response_code_details = "via_upstream"
    info.bytes_received = 0
    info.bytes_sent = 1683
    info.last_downstream_rx_byte_received = 1001 * MS
    info.last_upstream_tx_byte_sent = 1002 * MS
    info.first_upstream_rx_byte_received = 1012 * MS + 999_999
    info.last_downstream_tx_byte_sent = 1013 * MS + 500_000
    info.upstream_host = "10.244.0.12:9080"
    info.upstream_cluster = "outbound|9080||productpage.default.svc.cluster.local"
    info.upstream_local_address = ("10.244.0.10", 51234)
    info.route_name = "default"
    info.attempt_count = 1
    return info


def render(fmt: str, info: StreamInfo | None = None, omit: bool = False) -> str:
    return TextFormatter(fmt, omit).format(info or sample_info())


# --- response flags ---------------------------------------------------------------------------


def test_response_flags_print_in_envoys_order_joined_by_commas() -> None:
    assert rf.to_short_string(0) == "-"
    bits = rf.UPSTREAM_RETRY_LIMIT_EXCEEDED | rf.UPSTREAM_CONNECTION_FAILURE
    assert rf.to_short_string(bits) == "UF,URX"
    assert rf.to_long_string(bits) == "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
    everything = sum(f.bit for f in rf.RESPONSE_FLAGS)
    assert rf.to_short_string(everything) == (
        "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,UPE,"
        "NC,OM,DF,DO,DR"
    )


def test_response_flag_names_are_unique_and_parse_back() -> None:
    shorts = [f.short for f in rf.RESPONSE_FLAGS]
    longs = [f.long for f in rf.RESPONSE_FLAGS]
    assert len(set(shorts)) == len(shorts) == len(set(longs))
    assert rf.bit_for_name("UO") == rf.UPSTREAM_OVERFLOW
    assert rf.bit_for_name("NoRouteFound") == rf.NO_ROUTE_FOUND
    # Parsing accepts any order; printing always uses Envoy's.
    for text, canonical in (("-", "-"), ("UH", "UH"), ("DC,UC", "UC,DC"), ("FI,DI", "DI,FI")):
        assert rf.to_short_string(rf.from_short_string(text)) == canonical
    with pytest.raises(KeyError):
        rf.bit_for_name("XX")


def test_stream_event_flags_all_have_bits() -> None:
    from pistio.proxy.http.stream_events import ResponseFlag

    for flag in ResponseFlag:
        assert rf.to_short_string(rf.bit_for_name(flag.value)) == flag.value


# --- operators ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%PROTOCOL%", "HTTP/1.1"),
        ("%RESPONSE_CODE%", "200"),
        ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
        ("%RESPONSE_FLAGS%", "-"),
        ("%RESPONSE_FLAGS_LONG%", "-"),
        ("%BYTES_RECEIVED% %BYTES_SENT%", "0 1683"),
        ("%DURATION%", "13"),
        ("%REQUEST_DURATION%", "1"),
        ("%REQUEST_TX_DURATION%", "2"),
        ("%RESPONSE_DURATION%", "12"),
        ("%RESPONSE_TX_DURATION%", "0"),
        ("%UPSTREAM_HOST%", "10.244.0.12:9080"),
        ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.244.0.12"),
        ("%UPSTREAM_REMOTE_PORT%", "9080"),
        ("%UPSTREAM_CLUSTER%", "outbound|9080||productpage.default.svc.cluster.local"),
        ("%UPSTREAM_CLUSTER_RAW%", "outbound|9080||productpage.default.svc.cluster.local"),
        ("%UPSTREAM_LOCAL_ADDRESS%", "10.244.0.10:51234"),
        ("%UPSTREAM_LOCAL_PORT%", "51234"),
        ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"),
        ("%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1"),
        ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.244.0.10:9080"),
        ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.244.0.10"),
        ("%DOWNSTREAM_LOCAL_PORT%", "9080"),
        ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.244.0.7:47532"),
        ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.244.0.7"),
        ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "10.244.0.7:47532"),
        ("%DOWNSTREAM_PEER_URI_SAN%", "-"),
        ("%REQUESTED_SERVER_NAME%", "-"),
        ("%ROUTE_NAME%", "default"),
        ("%CONNECTION_TERMINATION_DETAILS%", "-"),
        ("%CONNECTION_ID%", "7"),
        ("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)%", "GET /productpage productpage:9080"),
        ("%REQ(X-REQUEST-ID)%", "2f6a3c1e-8f3b-4a52-9a4e-0c3c8e2d1b7a"),
        ("%REQ(user-agent)%", "curl/8.5.0"),
        ("%REQ(USER-AGENT):4%", "curl"),
        ("%REQ(X-FORWARDED-FOR)%", "-"),
        ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/productpage"),
        ("%REQ(X-MISSING?X-ALSO-MISSING)%", "-"),
        ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "11"),
        ("%TRAILER(GRPC-STATUS)%", "-"),
        ("%GRPC_STATUS%", "Unavailable"),
        ("%GRPC_STATUS(SNAKE_STRING)%", "UNAVAILABLE"),
        ("%GRPC_STATUS_NUMBER%", "14"),
        ("%DYNAMIC_METADATA(istio.mixer:status)%", "-"),
        ("%FILTER_STATE(upstream_peer:PLAIN)%", "-"),
        ("%ENVIRONMENT(PISTIO_TEST_SURELY_UNSET_VAR)%", "-"),
        ("100%% done", "100% done"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_operator(fmt: str, expected: str) -> None:
    assert render(fmt) == expected


def test_original_path_wins_over_path_and_truncation_applies_to_the_alternative() -> None:
    info = sample_info()
    info.request_headers = request_head(
        b"/rewritten", host="h", x_envoy_original_path="/original/long"
    )
    assert render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", info) == "/original/long"
    assert render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):5%", info) == "/orig"
    info.request_headers = request_head(b"/rewritten/path", host="h")
    assert render("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):5%", info) == "/rewr"
    assert render("%REQ_WITHOUT_QUERY(:PATH)%", info) == "/rewritten/path"
    info.request_headers = request_head(b"/p?secret=1", host="h")
    assert render("%REQ_WITHOUT_QUERY(:PATH)%", info) == "/p"


def test_missing_values_print_dash_or_nothing_when_omitting() -> None:
    info = StreamInfo(start_time_ns=START_NS, start_monotonic_ns=0)
    fmt = "%UPSTREAM_HOST% %DURATION% %PROTOCOL% %REQ(:METHOD)% %RESPONSE_CODE% %BYTES_SENT%"
    assert render(fmt, info) == "- - - - 0 0"
    assert render(fmt, info, omit=True) == "    0 0"


def test_response_flags_and_termination_details() -> None:
    info = sample_info()
    info.response_code = 503
    info.response_flags = rf.UPSTREAM_CONNECTION_FAILURE | rf.UPSTREAM_RETRY_LIMIT_EXCEEDED
    info.response_code_details = "upstream_reset_before_response_started{connection_failure}"
    info.upstream_transport_failure_reason = "delayed_connect_error:_111"
    assert render("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", info) == (
        "503 UF,URX upstream_reset_before_response_started{connection_failure}"
    )
    assert render("%UPSTREAM_TRANSPORT_FAILURE_REASON%", info) == "delayed_connect_error:_111"


def test_ipv6_addresses_are_bracketed() -> None:
    info = sample_info()
    info.downstream = DownstreamConnectionInfo(("::1", 15006), ("fd00::7", 40000))
    assert render("%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%", info) == (
        "[::1]:15006 [fd00::7]:40000"
    )
    assert render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", info) == "fd00::7"
    info.upstream_host = "[fd00::9]:9080"
    assert render("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT%", info) == (
        "fd00::9 9080"
    )


def test_tls_facts_and_observability_name() -> None:
    info = sample_info()
    info.downstream.requested_server_name = "outbound_.9080_._.reviews.default.svc.cluster.local"
    info.downstream.peer_uri_san = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    info.upstream_cluster_observability_name = "reviews"
    assert render("%REQUESTED_SERVER_NAME% %DOWNSTREAM_PEER_URI_SAN%", info) == (
        "outbound_.9080_._.reviews.default.svc.cluster.local "
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    )
    assert render("%UPSTREAM_CLUSTER%", info) == "reviews"
    assert render("%UPSTREAM_CLUSTER_RAW%", info).startswith("outbound|9080||")


def test_dynamic_metadata_and_filter_state() -> None:
    info = sample_info()
    info.dynamic_metadata = {
        "envoy.filters.http.rbac": {"shadow_engine_result": "denied", "rule": {"n": 2}},
    }
    info.filter_state = {"upstream_peer": "reviews-v2"}
    assert render("%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_engine_result)%", info) == (
        "denied"
    )
    assert render("%DYNAMIC_METADATA(envoy.filters.http.rbac:rule)%", info) == '{"n":2}'
    assert render("%DYNAMIC_METADATA(envoy.filters.http.rbac:rule:n)%", info) == "2"
    assert render("%DYNAMIC_METADATA(envoy.filters.http.rbac:nope)%", info) == "-"
    assert render("%DYNAMIC_METADATA(other)%", info) == "-"
    assert render("%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_engine_result):3%", info) == (
        "den"
    )
    assert render("%FILTER_STATE(upstream_peer:PLAIN)%", info) == "reviews-v2"
    assert render("%FILTER_STATE(upstream_peer:PLAIN):7%", info) == "reviews"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%START_TIME%", "2023-11-14T22:13:20.123Z"),
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2023/11/14T22:13:20+0000"),
        ("%START_TIME(%s)%", "1700000000"),
        ("%START_TIME(%s.%3f)%", "1700000000.123"),
        ("%START_TIME(%s%6f)%", "1700000000123456"),
        ("%START_TIME(%f)%", "123456789"),
        ("%START_TIME(%1f|%9f)%", "1|123456789"),
        ("%START_TIME(%H:%M:%E3S)%", "22:13:20.123"),
        ("%START_TIME(%E6S)%", "20.123456"),
        ("%START_TIME(%E*S)%", "20.123456789"),
        ("%START_TIME(%%f is literal)%", "%f is literal"),
        ("%START_TIME(%Y)% %START_TIME(%s)%", "2023 1700000000"),
    ],
)
def test_start_time_formats(fmt: str, expected: str) -> None:
    assert render(fmt) == expected


def test_start_time_cache_follows_the_second() -> None:
    f = TextFormatter("%START_TIME%")
    info = sample_info()
    assert f.format(info) == "2023-11-14T22:13:20.123Z"
    info.start_time_ns += 1_000_000_000 + 5 * MS
    assert f.format(info) == "2023-11-14T22:13:21.128Z"
    info.start_time_ns -= 2_000_000_000
    assert f.format(info) == "2023-11-14T22:13:19.128Z"


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%NOT_A_COMMAND%", "Not supported field in StreamInfo: NOT_A_COMMAND"),
        ("%REQ%", "REQ requires parameters"),
        ("%REQ()%", "REQ requires parameters"),
        ("%PROTOCOL(x)%", "PROTOCOL does not take any parameters or length"),
        ("%PROTOCOL:3%", "PROTOCOL does not take any parameters or length"),
        ("%START_TIME:3%", "START_TIME does not allow length to be specified."),
        ("%REQ(A?B?C)%", "More than 1 alternative header specified in token: A?B?C"),
        ("50% off", "Couldn't find valid command at position 2"),
        ("%REQ(X", "Couldn't find valid command at position 0"),
        ("%START_TIME(%n)%", "Format string contains newline"),
        ("%GRPC_STATUS(WEIRD)%", "only supports CAMEL_STRING, SNAKE_STRING or NUMBER"),
        ("%FILTER_STATE(:PLAIN)%", "key cannot be empty"),
    ],
)
def test_invalid_formats_are_refused_with_envoys_message(fmt: str, message: str) -> None:
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace("?", r"\?")):
        TextFormatter(fmt)


# --- Istio's default formats ------------------------------------------------------------------


def test_istio_default_text_format_is_istios_string() -> None:
    assert ISTIO_TEXT_FORMAT == (
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
        "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
        '%CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" '
        "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
        '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
        '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
        "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% "
        "%ROUTE_NAME%\n"
    )


def test_istio_default_text_line_for_a_sample_request() -> None:
    line = TextFormatter(ISTIO_TEXT_FORMAT).format(sample_info())
    assert line == (
        '[2023-11-14T22:13:20.123Z] "GET /productpage HTTP/1.1" 200 - via_upstream - "-" '
        '0 1683 13 11 "-" "curl/8.5.0" "2f6a3c1e-8f3b-4a52-9a4e-0c3c8e2d1b7a" '
        '"productpage:9080" "10.244.0.12:9080" '
        "outbound|9080||productpage.default.svc.cluster.local 10.244.0.10:51234 "
        "10.244.0.10:9080 10.244.0.7:47532 - default\n"
    )


def test_istio_default_text_line_for_a_local_reply() -> None:
    info = StreamInfo(
        DownstreamConnectionInfo(("10.244.0.10", 15001), ("10.244.0.10", 40000)),
        start_time_ns=START_NS,
        start_monotonic_ns=0,
    )
    info.request_headers = request_head(b"/nope", host="unknown:80", user_agent="curl/8.5.0")
    info.protocol = "HTTP/1.1"
    info.response_code = 404
    info.response_flags = rf.NO_ROUTE_FOUND
    info.response_code_details = "route_not_found"
    info.last_downstream_tx_byte_sent = 0
    line = TextFormatter(ISTIO_TEXT_FORMAT).format(info)
    assert line == (
        '[2023-11-14T22:13:20.123Z] "GET /nope HTTP/1.1" 404 NR route_not_found - "-" 0 0 0 - '
        '"-" "curl/8.5.0" "-" "unknown:80" "-" - - 10.244.0.10:15001 10.244.0.10:40000 - -\n'
    )


def test_istio_json_format_keeps_types() -> None:
    line = JsonFormatter(ISTIO_JSON_FORMAT).format(sample_info())
    assert line.endswith("\n") and line.count("\n") == 1
    doc = json.loads(line)
    assert list(doc) == list(ISTIO_JSON_FORMAT)
    assert doc["response_code"] == 200
    assert doc["bytes_received"] == 0 and doc["bytes_sent"] == 1683
    assert doc["duration"] == 13
    assert doc["upstream_service_time"] == "11"  # a header is a string
    assert doc["response_flags"] == "-"
    assert doc["x_forwarded_for"] is None
    assert doc["connection_termination_details"] is None
    assert doc["start_time"] == "2023-11-14T22:13:20.123Z"
    assert doc["upstream_cluster"] == "outbound|9080||productpage.default.svc.cluster.local"
    assert doc["downstream_remote_address"] == "10.244.0.7:47532"


def test_json_nested_lists_numbers_mixed_strings_and_omission() -> None:
    fmt = {
        "code": "%RESPONSE_CODE%",
        "summary": "%REQ(:METHOD)% %RESPONSE_CODE% %UPSTREAM_TRANSPORT_FAILURE_REASON%",
        "upstream": {"host": "%UPSTREAM_HOST%", "sni": "%REQUESTED_SERVER_NAME%"},
        "list": ["%BYTES_SENT%", "x", "%ROUTE_NAME%"],
        "version": 2,
        "literal": "constant",
    }
    doc = json.loads(JsonFormatter(fmt).format(sample_info()))
    assert doc == {
        "code": 200,
        "summary": "GET 200 -",
        "upstream": {"host": "10.244.0.12:9080", "sni": None},
        "list": [1683, "x", "default"],
        "version": 2,
        "literal": "constant",
    }
    omitted = json.loads(JsonFormatter(fmt, omit_empty_values=True).format(sample_info()))
    assert omitted["upstream"] == {"host": "10.244.0.12:9080"}
    assert omitted["summary"] == "GET 200 "
    sorted_line = JsonFormatter({"b": "%BYTES_SENT%", "a": "x"}, sort_properties=True)
    assert sorted_line.format(sample_info()) == '{"a":"x","b":1683}\n'
    with pytest.raises(FormatError, match="Only string values"):
        JsonFormatter({"flag": True})


def test_dynamic_metadata_is_typed_in_json() -> None:
    info = sample_info()
    info.dynamic_metadata = {"ns": {"k": {"n": 2}, "s": "v"}}
    doc = json.loads(JsonFormatter({"m": "%DYNAMIC_METADATA(ns:k)%"}).format(info))
    assert doc == {"m": {"n": 2}}


def test_from_substitution_format_proto() -> None:
    SFS = substitution_format_string_pb2.SubstitutionFormatString
    text = SFS()
    text.text_format_source.inline_string = "%RESPONSE_CODE% %PROTOCOL%\n"
    assert from_substitution_format(text).format(sample_info()) == "200 HTTP/1.1\n"

    js = SFS(omit_empty_values=True)
    js.json_format.CopyFrom(struct_pb2.Struct())
    js.json_format.update({"code": "%RESPONSE_CODE%", "sni": "%REQUESTED_SERVER_NAME%"})
    js.json_format_options.sort_properties = True
    assert from_substitution_format(js).format(sample_info()) == '{"code":200}\n'

    default = from_substitution_format(None)
    assert isinstance(default, TextFormatter)
    assert default.format_string == ENVOY_DEFAULT_FORMAT

    istio = SFS()
    istio.text_format_source.inline_string = "%REQ_WITHOUT_QUERY(:PATH)%"
    ext = istio.formatters.add(name="envoy.formatter.req_without_query")
    ext.typed_config.type_url = (
        "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
    )
    assert from_substitution_format(istio).format(sample_info()) == "/productpage"

    cel = SFS()
    cel.text_format_source.inline_string = "%CEL(request.path)%"
    ext = cel.formatters.add(name="envoy.formatter.cel")
    ext.typed_config.type_url = "type.googleapis.com/envoy.extensions.formatter.cel.v3.Cel"
    with pytest.raises(FormatError, match="envoy.formatter.cel"):
        from_substitution_format(cel)
