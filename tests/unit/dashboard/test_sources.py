"""Where the numbers come from: a Prometheus's HTTP API, or the node's sidecars; and what
the dashboard says when either is not there."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from pistio.dashboard.exposition import parse_istio_series
from pistio.dashboard.prometheus_source import PrometheusSource
from pistio.dashboard.promql import QUERIES, render_all
from pistio.dashboard.scrape_source import ScrapeSource, http_fetch
from pistio.node.api import NodeUnavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakePrometheus(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        query = parse_qs(urlparse(self.path).query)["query"][0]
        FakePrometheus.seen.append(query)
        if query.startswith("sum(rate(istio_requests_total{reporter=\"source\"}"):
            result = [{"metric": {"source_workload": "curl", "destination_service":
                                  "httpbin.default.svc.cluster.local",
                                  "destination_service_name": "httpbin",
                                  "destination_service_namespace": "default",
                                  "response_code": "200"}, "value": [1.0, "2.5"]}]
            body = {"status": "success", "data": {"resultType": "vector", "result": result}}
            code = 200
        elif query.startswith("histogram_quantile"):
            body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
            code = 400
        else:
            body = {"status": "success", "data": {"resultType": "vector", "result": []}}
            code = 200
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    FakePrometheus.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_source_runs_every_query_and_reads_vectors(prometheus: str) -> None:
    source = PrometheusSource(prometheus, "1m")
    try:
        traffic = source.collect()
    finally:
        source.close()
    assert sorted(FakePrometheus.seen) == sorted(render_all("1m").values())
    assert traffic.error is None
    [(labels, value)] = traffic.vectors["requests"].items()
    assert value == 2.5 and ("source_workload", "curl") in labels
    # A refused query is a warning naming it, with Prometheus's own message.
    assert "p99_to_service: query failed: parse error" in traffic.warnings
    assert set(traffic.vectors) == set(QUERIES)


def test_prometheus_unreachable_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    source = PrometheusSource(url, "1m")
    try:
        traffic = source.collect()
    finally:
        source.close()
    assert traffic.error is not None
    assert traffic.error.startswith(f"cannot reach Prometheus at {url}: ")
    assert "refused" in traffic.error.lower()


def test_no_node_is_one_clear_error() -> None:
    def no_node() -> list[tuple[str, str]]:
        raise NodeUnavailable("the node is not running (/x/node.sock: No such file or directory)")

    source = ScrapeSource(no_node, 60)
    try:
        traffic = source.collect()
    finally:
        source.close()
    assert traffic.error == ("the node is not running (/x/node.sock: No such file or "
                             "directory); start it with `pistio up`, or give --prometheus URL")


def test_a_sidecar_that_does_not_answer_is_a_warning() -> None:
    address = f"127.0.0.1:{closed_port()}"
    source = ScrapeSource(lambda: [("default/a", address)], 60, fetch=http_fetch)
    try:
        traffic = source.collect()
    finally:
        source.close()
    assert traffic.error is None
    [warning] = traffic.warnings
    assert warning.startswith(f"scrape of default/a ({address}) failed: ")


def test_exposition_keeps_only_the_queried_istio_series() -> None:
    text = "\n".join([
        "# TYPE envoy_server_live gauge", "envoy_server_live{} 1",
        "# TYPE istio_requests_total counter",
        'istio_requests_total{reporter="source",response_code="200"} 7',
        "# TYPE istio_request_bytes histogram",
        'istio_request_bytes_bucket{reporter="source",le="+Inf"} 3',
        "# TYPE istio_request_duration_milliseconds histogram",
        'istio_request_duration_milliseconds_bucket{reporter="source",le="0.5"} 1',
        'istio_request_duration_milliseconds_sum{reporter="source"} 0.3',
    ]) + "\n"
    series = parse_istio_series(text, "10.0.0.7:15090")
    assert series == {
        ("istio_requests_total", (("instance", "10.0.0.7:15090"), ("reporter", "source"),
                                  ("response_code", "200"))): 7.0,
        ("istio_request_duration_milliseconds_bucket",
         (("instance", "10.0.0.7:15090"), ("le", "0.5"), ("reporter", "source"))): 1.0,
    }
