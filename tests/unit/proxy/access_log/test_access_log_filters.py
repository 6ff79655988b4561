"""Envoy's AccessLogFilter compiled by pistio: each filter's verdict, and the NACKs."""

from __future__ import annotations

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2 as al
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, json_format

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.filters import (
    CelFilter,
    check_access_logger,
    compile_access_log_filter,
)
from pistio.proxy.access_log.stream_info import StreamInfo
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.http.headers import RequestHead


def pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def stream(code: int = 200, duration_ms: int = 5, flags: int = 0, request_id: str = "r-1",
           **headers: str) -> StreamInfo:
    index = {b"x-request-id": request_id.encode(),
             **{k.replace("_", "-").encode(): v.encode() for k, v in headers.items()}}
    i = StreamInfo()
    i.request_headers = RequestHead(b"GET", b"/", "1.1", [], index)
    i.response_code = code
    i.response_flags = flags
    i.last_downstream_tx_byte_sent = i.start_monotonic_ns + duration_ms * 1_000_000
    return i


def flt(spec: dict) -> al.AccessLogFilter:
    return json_format.ParseDict(spec, al.AccessLogFilter())


def cel(expression: str) -> al.AccessLogFilter:
    return al.AccessLogFilter(extension_filter=al.ExtensionFilter(
        name="envoy.access_loggers.extension_filters.cel",
        typed_config=pack(cel_pb2.ExpressionFilter(expression=expression))))


def verdicts(f: al.AccessLogFilter, *streams: StreamInfo) -> list[bool]:
    compiled = compile_access_log_filter(f, "filter")
    return [compiled.matches(s) for s in streams]


def test_cel_expression_filter_logs_only_when_true() -> None:
    f = cel("response.code >= 400")
    assert isinstance(compile_access_log_filter(f, "filter"), CelFilter)
    assert verdicts(f, stream(200), stream(404), stream(503), stream(0)) == \
        [False, True, True, False]  # no response: response.code is absent, an error: false


def test_cel_filter_on_a_header_and_a_non_boolean_result() -> None:
    assert verdicts(cel("request.headers['x-debug'] == 'on'"),
                    stream(x_debug="on"), stream(x_debug="off"), stream()) == [True, False, False]
    assert verdicts(cel("response.code"), stream(500)) == [False]  # only `true` logs


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("GE", 400, [False, True, True]),
    ("EQ", 404, [False, True, False]),
    ("NE", 200, [False, True, True]),
    ("LE", 404, [True, True, False]),
])
def test_status_code_filter(op: str, value: int, expected: list[bool]) -> None:
    f = flt({"statusCodeFilter": {"comparison": {"op": op, "value": {
        "defaultValue": value, "runtimeKey": "access_log.status"}}}})
    assert verdicts(f, stream(200), stream(404), stream(503)) == expected


def test_duration_filter_compares_milliseconds() -> None:
    f = flt({"durationFilter": {"comparison": {"op": "GE", "value": {"defaultValue": 100,
                                                                     "runtimeKey": "k"}}}})
    assert verdicts(f, stream(duration_ms=99), stream(duration_ms=100)) == [False, True]


def test_response_flag_filter_named_and_any() -> None:
    named = flt({"responseFlagFilter": {"flags": ["UF", "NoRouteFound"]}})
    anyflag = flt({"responseFlagFilter": {}})
    streams = (stream(flags=rf.UPSTREAM_CONNECTION_FAILURE), stream(flags=rf.NO_ROUTE_FOUND),
               stream(flags=rf.UPSTREAM_REQUEST_TIMEOUT), stream())
    assert verdicts(named, *streams) == [True, True, False, False]
    assert verdicts(anyflag, *streams) == [True, True, True, False]


def test_and_or_not_health_check() -> None:
    f = flt({"andFilter": {"filters": [
        {"notHealthCheckFilter": {}},
        {"orFilter": {"filters": [
            {"statusCodeFilter": {"comparison": {"op": "GE", "value": {"defaultValue": 500,
                                                                        "runtimeKey": "k"}}}},
            {"responseFlagFilter": {"flags": ["NR"]}},
        ]}},
    ]}})
    assert verdicts(f, stream(200), stream(404, flags=rf.NO_ROUTE_FOUND), stream(503)) == \
        [False, True, True]


def test_header_filter() -> None:
    f = al.AccessLogFilter(header_filter=al.HeaderFilter(header=rc.HeaderMatcher(
        name="x-canary", present_match=True)))
    assert verdicts(f, stream(x_canary="1"), stream()) == [True, False]


def test_grpc_status_filter_reads_grpc_status_or_maps_the_http_code() -> None:
    f = flt({"grpcStatusFilter": {"statuses": ["UNAVAILABLE", "UNIMPLEMENTED"]}})
    excl = flt({"grpcStatusFilter": {"statuses": ["OK"], "exclude": True}})
    ok = stream(200)
    ok.response_trailers = {b"grpc-status": b"0"}
    assert verdicts(f, stream(503), stream(404), ok) == [True, True, False]
    assert verdicts(excl, ok, stream(503)) == [False, True]


def test_runtime_filter_samples_by_request_id_consistently() -> None:
    half = flt({"runtimeFilter": {"runtimeKey": "k", "percentSampled": {
        "numerator": 50, "denominator": "HUNDRED"}}})
    compiled = compile_access_log_filter(half, "filter")
    streams = [stream(request_id=f"id-{n}") for n in range(400)]
    first = [compiled.matches(s) for s in streams]
    assert first == [compiled.matches(s) for s in streams]  # same id, same verdict
    assert 120 < sum(first) < 280
    never = flt({"runtimeFilter": {"runtimeKey": "k", "percentSampled": {"numerator": 0}}})
    always = al.AccessLogFilter(runtime_filter=al.RuntimeFilter(
        runtime_key="k", percent_sampled=percent_pb2.FractionalPercent(numerator=100),
        use_independent_randomness=True))
    assert not any(verdicts(never, *streams[:50]))
    assert all(verdicts(always, *streams[:50]))


@pytest.mark.parametrize(("f", "message"), [
    (cel("response.code >="),
     "filter.extension_filter.typed_config.expression: CEL expression 'response.code >=': "
     "syntax error at line 1, column"),
    (flt({"traceableFilter": {}}),
     "filter.traceable_filter: access log filter not supported by pistio"),
    (al.AccessLogFilter(response_flag_filter=al.ResponseFlagFilter(flags=["XX"])),
     "filter.response_flag_filter.flags[0]: unknown response flag 'XX'"),
    (al.AccessLogFilter(extension_filter=al.ExtensionFilter(
        name="x.custom", typed_config=pack(file_pb2.FileAccessLog()))),
     "filter.extension_filter: access log extension filter 'x.custom' "
     "(type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog) is not "
     "supported by pistio"),
    (al.AccessLogFilter(and_filter=al.AndFilter(filters=[
         al.AccessLogFilter(not_health_check_filter=al.NotHealthCheckFilter()), cel("a +")])),
     "filter.and_filter.filters[1].extension_filter.typed_config.expression: "
     "CEL expression 'a +'"),
    (al.AccessLogFilter(), "filter: an access log filter needs one filter_specifier"),
])
def test_bad_filters_are_refused_with_their_path(f: al.AccessLogFilter, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_access_log_filter(f, "filter")
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_cel_config_field_is_refused() -> None:
    expr = cel_pb2.ExpressionFilter(expression="true")
    expr.cel_config.SetInParent()
    expr.cel_config.enable_string_conversion = True
    f = al.AccessLogFilter(extension_filter=al.ExtensionFilter(
        name="envoy.access_loggers.extension_filters.cel", typed_config=pack(expr)))
    with pytest.raises(ConfigError, match="typed_config.cel_config: field not supported"):
        compile_access_log_filter(f, "filter")


def test_logger_types_and_formats_are_checked() -> None:
    good = al.AccessLog(name="envoy.access_loggers.file",
                        typed_config=pack(file_pb2.FileAccessLog(path="/dev/stdout")))
    assert check_access_logger(good, "log") == []
    bad_format = file_pb2.FileAccessLog(path="/dev/stdout")
    bad_format.log_format.text_format_source.inline_string = "%NOPE%"
    problems = check_access_logger(al.AccessLog(name="f", typed_config=pack(bad_format)), "log")
    assert problems == ["log.typed_config.log_format: Not supported field in StreamInfo: NOPE"]
    other = al.AccessLog(name="envoy.access_loggers.http_grpc",
                         typed_config=pack(cel_pb2.ExpressionFilter()))
    assert check_access_logger(other, "log") == [
        "log: access logger 'envoy.access_loggers.http_grpc' (type.googleapis.com/"
        "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter) is not supported "
        "by pistio"]
    assert check_access_logger(al.AccessLog(name="envoy.access_loggers.file", typed_config=pack(
        file_pb2.FileAccessLog())), "log") == ["log.typed_config.path: required"]


# --- through the listener compiler and a running HCM ----------------------------------------


def _with_filter(listener, log_filter: al.AccessLogFilter):
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    f = listener.filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(hcm)
    hcm.access_log[0].filter.CopyFrom(log_filter)
    f.typed_config.Pack(hcm)
    return listener


def test_listener_with_a_bad_expression_is_nacked_with_the_field_path(tmp_path) -> None:
    from pistio.proxy.config.listener_config import compile_listener
    from tests.unit.proxy.http_fixtures import http_listener

    bad = _with_filter(http_listener("gw", 1, access_log_path=str(tmp_path / "a.log")),
                       cel("response.code >= 400 &&"))
    with pytest.raises(ConfigError) as err:
        compile_listener(bad)
    assert err.value.problems == [
        "Listener gw: filter_chains[0].filters[0].typed_config.access_log[0].filter"
        ".extension_filter.typed_config.expression: CEL expression 'response.code >= 400 &&': "
        "syntax error at line 1, column 22"]
    good = _with_filter(http_listener("gw", 1, access_log_path=str(tmp_path / "a.log")),
                        cel("response.code >= 400"))
    config = compile_listener(good)
    assert isinstance(config.filter_chains[0].http.access_logs[0].filter, CelFilter)


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_hcm_writes_only_the_lines_the_filter_accepts(tmp_path) -> None:
    from pistio.proxy.http.connection_manager import AccessLogFile
    from tests.unit.proxy.http_fixtures import (
        eds_cluster,
        fetch,
        http_listener,
        load_assignment,
        proxy_env,
        route,
        route_config,
    )

    log = tmp_path / "access.log"
    async with proxy_env() as env:
        (app,) = await env.start("app")
        listener = _with_filter(http_listener("gw", env.port, access_log_path=str(log)),
                                cel("response.code >= 400"))
        await env.proxy.apply([listener], [route_config("http", [route("/", cluster="app")])],
                              [eds_cluster("app")], [load_assignment("app", [app.port])])
        for status in (200, 404, 200, 503):
            r = await fetch(env.port, f"/s{status}", headers={"x-status": str(status)})
            assert r.status == status
        AccessLogFile.flush_all()
    lines = log.read_text().splitlines()
    assert [line.split('"')[1] for line in lines] == ["GET /s404 HTTP/1.1", "GET /s503 HTTP/1.1"]


@pytest.mark.asyncio
async def test_tcp_proxy_access_log_applies_its_filter(tmp_path) -> None:
    from envoy.config.core.v3 import address_pb2
    from envoy.config.listener.v3 import listener_components_pb2 as lc
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    from pistio.proxy.config.listener_config import compile_listener
    from pistio.proxy.http.connection_manager import AccessLogFile
    from pistio.proxy.server.listener_manager import _access_logger

    log = tmp_path / "tcp.log"
    entry = al.AccessLog(name="envoy.access_loggers.file", typed_config=pack(
        file_pb2.FileAccessLog(path=str(log), format="%RESPONSE_FLAGS% %UPSTREAM_HOST%\n")))
    entry.filter.CopyFrom(cel("response.flags != 0 || upstream.port == 9999"))
    tcp = tcp_proxy_pb2.TcpProxy(stat_prefix="t", cluster="c", access_log=[entry])
    listener = listener_pb2.Listener(
        name="tcp", address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="127.0.0.1", port_value=1)),
        filter_chains=[lc.FilterChain(filters=[lc.Filter(
            name="envoy.filters.network.tcp_proxy", typed_config=pack(tcp))])])
    write = _access_logger(compile_listener(listener).filter_chains[0])
    assert write is not None
    for flags, host in ((0, "10.0.0.1:80"), (rf.UPSTREAM_CONNECTION_FAILURE, "10.0.0.2:80"),
                        (0, "10.0.0.3:9999")):
        i = StreamInfo()
        i.response_flags, i.upstream_host = flags, host
        write(i)
    AccessLogFile.flush_all()
    assert log.read_text().splitlines() == ["UF 10.0.0.2:80", "- 10.0.0.3:9999"]
