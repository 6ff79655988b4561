"""Tracing end to end: a real ``pistio proxy`` process (agent + uvloop worker) configured over
ADS with HCM ``tracing``, real HTTP on 127.0.0.1 to an upstream app, and spans reported to
collectors run by the test: a Zipkin v2 JSON server, an OTLP/HTTP server and a grpcio
OTLP/gRPC ``TraceService``.

The proxy has two listeners, as one request crosses two sidecars in the mesh: ``out`` (an
OUTBOUND listener, the caller's sidecar) routes to cluster ``hop`` = the ``in`` listener (an
INBOUND one, the callee's sidecar), which routes to the app. The two spans must link up:
same trace, the SERVER span's parent is the CLIENT span.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc

from pistio.xds import types as T
from tests.integration.test_proxy_http import NODE_ID, ControlPlane, mesh
from tests.unit.proxy.http_fixtures import (
    UpstreamServer,
    eds_cluster,
    fetch,
    free_port,
    load_assignment,
    route,
    route_config,
    upstreams,
)
from tests.unit.proxy.tracing import otlp_schema as otlp
from tests.unit.proxy.tracing.collector import Collector
from tests.unit.proxy.tracing.configs import (
    INBOUND,
    OUTBOUND,
    otel_grpc,
    otel_http,
    traced_listener,
    tracing,
    zipkin,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

OUT_OPERATION = "productpage.default.svc.cluster.local:9080/*"
IN_OPERATION = "inbound|9080|http|productpage.default.svc.cluster.local"
TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def _fast_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    # The proxy process inherits the test's environment.
    monkeypatch.setenv("PISTIO_TRACING_FLUSH_INTERVAL_MS", "100")


def two_hops(provider: Any, collector_port: int, collector_cluster: str
             ) -> Callable[[ControlPlane, int, dict[str, UpstreamServer]], None]:
    """``out`` on the test's port → cluster ``hop`` → ``in`` → the app."""
    in_port = free_port()

    def configure(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
        cp.set(T.CLUSTER, eds_cluster("app"), eds_cluster("hop"),
               eds_cluster(collector_cluster))
        cp.set(T.ENDPOINT, load_assignment("app", [servers["app"].port]),
               load_assignment("hop", [in_port]),
               load_assignment(collector_cluster, [collector_port]))
        cp.set(T.LISTENER,
               traced_listener("out", port, tracing(provider), OUTBOUND,
                               route_config_name="out"),
               traced_listener("in", in_port, tracing(provider), INBOUND,
                               route_config_name="in"))
        cp.set(T.ROUTE,
               route_config("out", [route("/", cluster="hop",
                                          decorator=rc.Decorator(operation=OUT_OPERATION))]),
               route_config("in", [route("/", cluster="app",
                                         decorator=rc.Decorator(operation=IN_OPERATION))]))
    return configure


def in_trace(spans: Callable[[], list[dict[str, Any]]], app_saw: dict[str, str]
             ) -> Callable[[], list[dict[str, Any]]]:
    """The Zipkin spans of the trace the app saw."""
    trace_id = app_saw["x-b3-traceid"]
    return lambda: [s for s in spans() if s["traceId"] == trace_id]


async def wait_for(found: Callable[[], list[Any]], count: int, timeout: float = 15.0
                   ) -> list[Any]:
    async with asyncio.timeout(timeout):
        while len(items := found()) < count:
            await asyncio.sleep(0.05)
    return items


async def test_zipkin_spans_link_across_two_hops(tmp_path: Path) -> None:
    collector = await Collector().start()
    try:
        servers = await upstreams("app")
        configure = two_hops(zipkin(), collector.port, "zipkin")
        async with mesh(tmp_path, servers, configure, concurrency=1) as (_, proxy, port):
            # 1. no incoming context: a new 128-bit trace
            r = await fetch(port, "/productpage?u=normal", host="productpage:9080",
                            headers={"user-agent": "test-client", "end-user": "jason"})
            assert r.status == 200
            app_saw = r.json()["headers"]
            spans = await wait_for(in_trace(collector.zipkin_spans, app_saw), 2)
            by_kind = {s["kind"]: s for s in spans}
            client, server = by_kind["CLIENT"], by_kind["SERVER"]
            assert len(client["traceId"]) == 32
            assert server["traceId"] == client["traceId"] == app_saw["x-b3-traceid"]
            assert "parentId" not in client
            assert server["parentId"] == client["id"]
            # the app sees the inbound hop's span, in B3 and W3C form
            assert app_saw["x-b3-spanid"] == server["id"]
            assert app_saw["x-b3-parentspanid"] == client["id"]
            assert app_saw["x-b3-sampled"] == "1"
            assert app_saw["traceparent"] == f"00-{server['traceId']}-{server['id']}-01"
            # the tracer's service name is the node's service cluster, as /server_info says
            _, server_info = proxy.admin("/server_info")
            node_cluster = json.loads(server_info)["node"]["cluster"]
            for span in (client, server):
                assert span["name"] == OUT_OPERATION
                assert span["localEndpoint"]["serviceName"] == node_cluster
                assert span["tags"]["node_id"] == NODE_ID
                assert span["tags"]["http.url"] == "http://productpage:9080/productpage?u=normal"
                assert span["tags"]["http.status_code"] == "200"
                assert span["tags"]["guid:x-request-id"] == app_saw["x-request-id"]
                assert span["tags"]["user_agent"] == "test-client"
                assert span["tags"]["end-user"] == "jason"
                assert span["tags"]["istio.canonical_service"] == "reviews"
                assert span["tags"]["component"] == "proxy"
            assert client["tags"]["upstream_cluster"] == "hop"
            assert server["tags"]["upstream_cluster"] == "app"
            assert client["duration"] >= server["duration"]
            assert {r.path for r in collector.reports} == {"/api/v2/spans"}

            # 2. the caller's B3 context: this proxy's spans join its trace
            r = await fetch(port, "/productpage", headers={
                "x-b3-traceid": TRACE, "x-b3-spanid": CALLER_SPAN, "x-b3-sampled": "1"})
            app_saw = r.json()["headers"]
            spans = await wait_for(in_trace(collector.zipkin_spans, app_saw), 2)
            by_kind = {s["kind"]: s for s in spans}
            assert by_kind["CLIENT"]["traceId"] == TRACE == by_kind["SERVER"]["traceId"]
            assert by_kind["CLIENT"]["parentId"] == CALLER_SPAN
            assert by_kind["SERVER"]["parentId"] == by_kind["CLIENT"]["id"]
            assert app_saw["x-b3-traceid"] == TRACE

            # 3. the caller said "not sampled": headers go on, no span is reported
            await asyncio.sleep(0.3)  # the flush interval: nothing else is waiting
            collector.reports.clear()
            sent = stat(proxy.admin("/stats")[1], "tracing.zipkin.spans_sent")
            r = await fetch(port, "/productpage", headers={
                "traceparent": f"00-{TRACE[::-1]}-{CALLER_SPAN}-00"})
            app_saw = r.json()["headers"]
            assert app_saw["x-b3-sampled"] == "0" and app_saw["traceparent"].endswith("-00")
            assert app_saw["x-b3-traceid"] == TRACE[::-1]
            await asyncio.sleep(0.5)
            assert collector.reports == []
            status, stats = proxy.admin("/stats")
            assert status == 200
            # (the readiness probe's request was traced too)
            assert stat(stats, "tracing.zipkin.spans_sent") == sent >= 4
            assert stat(stats, "tracing.zipkin.reports_sent") >= 2
            assert stat(stats, "tracing.zipkin.reports_failed") == 0
    finally:
        await collector.close()


def stat(text: str, name: str) -> int:
    """A counter from the admin's ``/stats`` text (0 when absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def _otlp_spans(bodies: list[bytes]) -> list[tuple[str, otlp.Span]]:
    out = []
    for body in bodies:
        req = otlp.ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in otlp.scope_spans(rs):
                out.extend((service["service.name"], s) for s in ss.spans)
    return out


async def test_otlp_http_export(tmp_path: Path) -> None:
    collector = await Collector(status=200).start()
    try:
        servers = await upstreams("app")
        configure = two_hops(otel_http(), collector.port, "otel")
        async with mesh(tmp_path, servers, configure, concurrency=1) as (_, _proxy, port):
            r = await fetch(port, "/productpage")
            app_saw = r.json()["headers"]
            trace_id = bytes.fromhex(app_saw["x-b3-traceid"])
            spans = await wait_for(lambda: [(svc, s) for svc, s in _otlp_spans(
                [r.body for r in collector.reports]) if s.trace_id == trace_id], 2)
            assert {r.headers["content-type"] for r in collector.reports} == {
                "application/x-protobuf"}
            assert {r.path for r in collector.reports} == {"/v1/traces"}
            by_kind = {s.kind: (svc, s) for svc, s in spans}
            svc, client = by_kind[otlp.SPAN_KIND_CLIENT]
            _, server = by_kind[otlp.SPAN_KIND_SERVER]
            assert svc == "reviews.default"
            assert client.trace_id == server.trace_id == bytes.fromhex(app_saw["x-b3-traceid"])
            assert server.parent_span_id == client.span_id
            assert server.span_id.hex() == app_saw["x-b3-spanid"]
            assert client.name == OUT_OPERATION
            attrs = {a.key: a.value.string_value for a in server.attributes}
            assert attrs["upstream_cluster"] == "app" and attrs["http.method"] == "GET"
    finally:
        await collector.close()


async def test_otlp_grpc_export(tmp_path: Path) -> None:
    import grpc

    bodies: list[bytes] = []

    async def export(request: otlp.ExportTraceServiceRequest,
                     context: Any) -> otlp.ExportTraceServiceResponse:
        bodies.append(request.SerializeToString())
        return otlp.ExportTraceServiceResponse()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=otlp.ExportTraceServiceRequest.FromString,
            response_serializer=otlp.ExportTraceServiceResponse.SerializeToString,
        )})])
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        servers = await upstreams("app")
        configure = two_hops(otel_grpc(), grpc_port, "otel")
        async with mesh(tmp_path, servers, configure, concurrency=1) as (_, proxy, port):
            r = await fetch(port, "/productpage")
            app_saw = r.json()["headers"]
            trace_id = bytes.fromhex(app_saw["x-b3-traceid"])
            spans = await wait_for(lambda: [(svc, s) for svc, s in _otlp_spans(bodies)
                                            if s.trace_id == trace_id], 2)
            kinds = {s.kind: s for _, s in spans}
            server_span = kinds[otlp.SPAN_KIND_SERVER]
            assert server_span.span_id.hex() == app_saw["x-b3-spanid"]
            assert server_span.parent_span_id == kinds[otlp.SPAN_KIND_CLIENT].span_id
            _, stats = proxy.admin("/stats")
            assert stat(stats, "tracing.opentelemetry.reports_sent") >= 1
            assert stat(stats, "tracing.opentelemetry.reports_failed") == 0
    finally:
        await server.stop(None)
