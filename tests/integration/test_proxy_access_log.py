"""Access logs with a CEL filter, end to end: a real ``pistio proxy`` process gets a listener
over ADS whose HCM logs in Istio's default TEXT and JSON formats with Istio's Telemetry filter
``response.code >= 400`` (Envoy's ``envoy.access_loggers.extension_filters.cel``); real
requests answered 200, 404 and 503 by the upstream app leave exactly the 404 and 503 lines.
A listener whose expression does not parse is NACKed with the field path and the reason, and
the previous listener keeps serving and logging.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2 as al
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format, struct_pb2

from pistio.proxy.access_log.istio_formats import ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT
from pistio.xds import types as T
from tests.integration.test_proxy_http import ControlPlane, mesh
from tests.unit.proxy.http_fixtures import (
    UpstreamServer,
    eds_cluster,
    fetch,
    http_listener,
    load_assignment,
    pack,
    route,
    route_config,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

# Istio's TEXT format: [start] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS TERMINATION
# "FAILURE" RX TX DURATION UPSTREAM_SERVICE_TIME "XFF" "UA" "REQUEST_ID" "AUTHORITY"
# "UPSTREAM_HOST" CLUSTER UPSTREAM_LOCAL DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI ROUTE
TEXT_LINE = re.compile(
    r'^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(?P<method>\S+) (?P<path>\S+) '
    r'(?P<protocol>\S+)" (?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) '
    r'"(?P<failure>[^"]*)" (?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) (?P<service_time>\S+) '
    r'"(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<upstream_host>[^"]*)" (?P<cluster>\S+) (?P<upstream_local>\S+) '
    r"(?P<downstream_local>\S+) (?P<downstream_remote>\S+) (?P<sni>\S+) (?P<route>\S+)$"
)


def access_log(path: Path, expression: str, json_encoding: bool = False) -> al.AccessLog:
    """An access_log entry as Istio generates it for a Telemetry accessLogging filter."""
    log = file_pb2.FileAccessLog(path=str(path))
    if json_encoding:
        fmt = struct_pb2.Struct()
        json_format.ParseDict(ISTIO_JSON_FORMAT, fmt)
        log.log_format.json_format.CopyFrom(fmt)
    else:
        log.log_format.text_format_source.inline_string = ISTIO_TEXT_FORMAT
    entry = al.AccessLog(name="envoy.access_loggers.file", typed_config=pack(log))
    entry.filter.extension_filter.name = "envoy.access_loggers.extension_filters.cel"
    entry.filter.extension_filter.typed_config.Pack(cel_pb2.ExpressionFilter(
        expression=expression))
    return entry


def logged_listener(port: int, logs: list[al.AccessLog]):  # type: ignore[no-untyped-def]
    listener = http_listener("gateway", port)
    f = listener.filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(hcm)
    hcm.access_log.extend(logs)
    f.typed_config.Pack(hcm)
    return listener


async def read_lines(path: Path, count: int, timeout: float = 8.0) -> list[str]:
    """The file's lines once it has ``count`` of them (workers flush about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def test_cel_filtered_access_logs_in_istio_text_and_json(tmp_path: Path) -> None:
    text_log, json_log = tmp_path / "access.log", tmp_path / "access.json"

    def configure(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
        cp.set(T.CLUSTER, eds_cluster("app"))
        cp.set(T.ENDPOINT, load_assignment("app", [servers["app"].port]))
        cp.set(T.ROUTE, route_config("http", [route("/", cluster="app", name="default")]))
        cp.set(T.LISTENER, logged_listener(port, [
            access_log(text_log, "response.code >= 400"),
            access_log(json_log, "response.code >= 400", json_encoding=True),
        ]))

    servers = await upstreams("app")
    app_port = servers[0].port
    async with mesh(tmp_path, servers, configure, concurrency=2) as (cp, proxy, port):
        ids = {}
        for status in (200, 404, 200, 503, 200):
            request_id = f"req-{status}-{len(ids)}"
            r = await fetch(port, f"/status/{status}", host="app.example:8080",
                            headers={"x-status": str(status), "x-request-id": request_id,
                                     "user-agent": "access-log-test"})
            assert r.status == status
            ids[request_id] = status
        lines = await read_lines(text_log, 2)
        await asyncio.sleep(1.5)  # a stray 200 line would be flushed by now
        lines = text_log.read_text().splitlines()
        assert len(lines) == 2, lines
        parsed = sorted((TEXT_LINE.match(line) for line in lines), key=lambda m: m["code"])
        assert all(parsed), lines
        for m, status in zip(parsed, (404, 503), strict=True):
            assert (m["method"], m["path"], m["protocol"]) == ("GET", f"/status/{status}",
                                                               "HTTP/1.1")
            assert (m["code"], m["flags"], m["details"]) == (str(status), "-", "via_upstream")
            assert ids[m["request_id"]] == status
            assert (m["ua"], m["authority"]) == ("access-log-test", "app.example:8080")
            assert m["upstream_host"] == f"127.0.0.1:{app_port}"
            # The proxy's end of the upstream connection.
            assert m["upstream_local"].startswith("127.0.0.1:"), m["upstream_local"]
            assert m["upstream_local"] != m["upstream_host"]
            assert (m["cluster"], m["route"]) == ("app", "default")
            assert m["downstream_local"] == f"127.0.0.1:{port}"
            assert m["downstream_remote"].startswith("127.0.0.1:")
            assert int(m["tx"]) > 0 and m["rx"] == "0"
            assert m["duration"].isdigit() and m["service_time"].isdigit()

        records = [json.loads(line) for line in await read_lines(json_log, 2)]
        assert sorted(r["response_code"] for r in records) == [404, 503]  # typed: numbers
        for record in records:
            assert record["path"] == f"/status/{record['response_code']}"
            assert ids[record["request_id"]] == record["response_code"]
            assert record["upstream_cluster"] == "app"
            assert record["response_flags"] == "-"
            assert record["upstream_host"] == f"127.0.0.1:{app_port}"
            assert record["response_code_details"] == "via_upstream"
            assert isinstance(record["upstream_service_time"], str)  # %RESP()% is text
            assert set(record) == set(ISTIO_JSON_FORMAT)

        # A bad expression: the listener update is NACKed, naming the field and the reason.
        cp.set(T.LISTENER, logged_listener(port, [access_log(text_log, "response.code >=")]))
        await cp.push()
        error = await lds_error(cp)
        assert ("Listener gateway: filter_chains[0].filters[0].typed_config.access_log[0]"
                ".filter.extension_filter.typed_config.expression: CEL expression "
                "'response.code >=': syntax error at line 1, column") in error
        # ... and the previous listener keeps serving with its filter.
        r = await fetch(port, "/status/500", headers={"x-status": "500"})
        assert r.status == 500
        assert (await fetch(port, "/status/200")).status == 200
        lines = await read_lines(text_log, 3)
        assert [TEXT_LINE.match(line)["code"] for line in lines].count("500") == 1
        await asyncio.sleep(1.5)
        assert len(text_log.read_text().splitlines()) == 3


async def lds_error(cp: ControlPlane, timeout: float = 10.0) -> str:
    """The error_detail of the proxy's last LDS NACK, once it arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for conn in cp.server.registry:  # type: ignore[union-attr]
            watch = conn.watch(T.LISTENER)
            if watch is not None and watch.error:
                return watch.error
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy did not NACK the listener")
