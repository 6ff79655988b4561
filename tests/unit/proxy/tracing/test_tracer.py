"""Spans end to end in one process: requests through the worker's data path (real loopback
sockets) to an upstream, spans to a collector server, Zipkin v2 JSON and OTLP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from envoy.config.route.v3 import route_components_pb2 as rc

from pistio.proxy.tracing import node as node_module
from pistio.proxy.tracing.exporter import close_exporters
from tests.unit.proxy.http_fixtures import (
    Env,
    eds_cluster,
    fetch,
    load_assignment,
    proxy_env,
    route,
    route_config,
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

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

NODE_ID = "sidecar~10.0.0.7~productpage-v1-123.default~default.svc.cluster.local"
OPERATION = "reviews.default.svc.cluster.local:9080/*"
TRACE = "463ac35c9f6413ad48485a3953bb6124"
PARENT = "a2fb4a1d1a96d312"


@pytest.fixture(autouse=True)
def _node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISTIO_TRACING_FLUSH_INTERVAL_MS", "50")
    monkeypatch.setenv(node_module.NODE_ID_ENV, NODE_ID)
    monkeypatch.setenv(node_module.NODE_CLUSTER_ENV, "productpage.default")
    monkeypatch.setenv(node_module.NODE_ZONE_ENV, "zone-a")
    monkeypatch.setenv(node_module.NODE_IP_ENV, "10.0.0.7")
    node_module.local_node.cache_clear()
    yield
    node_module.local_node.cache_clear()


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[Collector]:
    c = await Collector().start()
    yield c
    await c.close()


async def start(env: Env, collector: Collector, trace, direction: int = OUTBOUND,  # type: ignore[no-untyped-def]
                collector_cluster: str = "zipkin", **listener: object) -> None:
    (reviews,) = await env.start("reviews")
    decorated = route("/reviews", cluster="reviews",
                      decorator=rc.Decorator(operation=OPERATION))
    await env.proxy.apply(  # type: ignore[union-attr]
        [traced_listener("gw", env.port, trace, direction, **listener)],
        [route_config("http", [decorated, route("/", cluster="reviews")])],
        [eds_cluster("reviews"), eds_cluster(collector_cluster)],
        [load_assignment("reviews", [reviews.port]),
         load_assignment(collector_cluster, [collector.port])],
    )


async def test_client_span_without_incoming_context(collector: Collector) -> None:
    async with proxy_env() as env:
        await start(env, collector, tracing(zipkin()))
        r = await fetch(env.port, "/reviews/1?x=1", host="reviews:9080",
                        headers={"user-agent": "curl/8", "end-user": "jason"})
        assert r.status == 200
        seen = r.json()["headers"]
        trace_id, span_id = seen["x-b3-traceid"], seen["x-b3-spanid"]
        assert len(trace_id) == 32 and len(span_id) == 16
        assert "x-b3-parentspanid" not in seen
        assert seen["x-b3-sampled"] == "1"
        assert seen["traceparent"] == f"00-{trace_id}-{span_id}-01"
        (span,) = await collector.wait_for(1, collector.zipkin_spans)
        report = collector.reports[0]
        assert (report.path, report.headers["content-type"], report.headers["host"]) == (
            "/api/v2/spans", "application/json", "zipkin.istio-system:9411")
        assert span["traceId"] == trace_id and span["id"] == span_id
        assert "parentId" not in span
        assert span["kind"] == "CLIENT"
        assert span["name"] == OPERATION
        assert span["localEndpoint"]["serviceName"] == "productpage.default"
        assert span["localEndpoint"]["ipv4"] == "10.0.0.7"
        assert span["remoteEndpoint"] == {"ipv4": "127.0.0.1",
                                          "port": env.servers[0].port}
        assert isinstance(span["timestamp"], int) and span["duration"] >= 1
        tags = span["tags"]
        assert tags["node_id"] == NODE_ID and tags["zone"] == "zone-a"
        assert tags["component"] == "proxy"
        assert tags["guid:x-request-id"] == seen["x-request-id"]
        assert tags["http.url"] == "http://reviews:9080/reviews/1?x=1"
        assert tags["http.method"] == "GET" and tags["http.protocol"] == "HTTP/1.1"
        assert tags["http.status_code"] == "200" and tags["response_flags"] == "-"
        assert tags["upstream_cluster"] == "reviews" == tags["upstream_cluster.name"]
        assert tags["upstream_address"] == f"127.0.0.1:{env.servers[0].port}"
        assert tags["user_agent"] == "curl/8" and tags["downstream_cluster"] == "-"
        assert tags["peer.address"] == "127.0.0.1"
        assert tags["request_size"] == "0" and int(tags["response_size"]) == len(r.body)
        assert tags["istio.canonical_service"] == "reviews" and tags["end-user"] == "jason"
        assert "error" not in tags


async def test_child_of_incoming_b3_context(collector: Collector) -> None:
    trace = tracing(zipkin(), sampling=0.0)
    trace.custom_tags.add(tag="route.name", value="%ROUTE_NAME%-%RESPONSE_CODE%")
    async with proxy_env() as env:
        await start(env, collector, trace, direction=INBOUND)
        r = await fetch(env.port, "/reviews/1", headers={
            "x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "1",
            "x-request-id": "6b5a4e0c-0000-4000-8000-000000000000"})
        seen = r.json()["headers"]
        assert seen["x-b3-traceid"] == TRACE and seen["x-b3-parentspanid"] == PARENT
        assert seen["x-b3-spanid"] != PARENT
        assert seen["x-request-id"] == "6b5a4e0c-0000-4000-8000-000000000000"
        (span,) = await collector.wait_for(1, collector.zipkin_spans)
        assert (span["traceId"], span["parentId"], span["id"]) == (
            TRACE, PARENT, seen["x-b3-spanid"])
        assert span["kind"] == "SERVER" and "shared" not in span
        assert span["name"] == OPERATION  # the inbound route's decorator
        assert span["remoteEndpoint"]["ipv4"] == "127.0.0.1"  # the downstream peer
        assert span["tags"]["end-user"] == "anonymous"  # the custom tag's default
        assert span["tags"]["route.name"] == "--200"  # a formatter tag: no route name ("-")


async def test_traceparent_in_and_shared_span_context(collector: Collector) -> None:
    async with proxy_env() as env:
        await start(env, collector, tracing(zipkin(shared_span_context={"value": True})),
                    direction=INBOUND)
        r = await fetch(env.port, "/reviews/1",
                        headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        seen = r.json()["headers"]
        # a SERVER span sharing the caller's span: same ids go on
        assert (seen["x-b3-traceid"], seen["x-b3-spanid"]) == (TRACE, PARENT)
        assert seen["traceparent"] == f"00-{TRACE}-{PARENT}-01"
        (span,) = await collector.wait_for(1, collector.zipkin_spans)
        assert span["id"] == PARENT and span["shared"] is True and "parentId" not in span
        # the caller's decorator names a server span
        await fetch(env.port, "/reviews/1", headers={"x-envoy-decorator-operation": "caller-op"})
        spans = await collector.wait_for(2, collector.zipkin_spans)
        assert spans[1]["name"] == "caller-op"


async def test_unsampled_requests_propagate_but_export_nothing(collector: Collector) -> None:
    async with proxy_env() as env:
        await start(env, collector, tracing(zipkin(), sampling=0.0), hcm_fields={
            "internal_address_config": {"cidr_ranges": [
                {"address_prefix": "127.0.0.0", "prefix_len": {"value": 8}}]}})
        r = await fetch(env.port, "/reviews/1")
        seen = r.json()["headers"]
        assert seen["x-b3-sampled"] == "0" and len(seen["x-b3-traceid"]) == 32
        assert seen["traceparent"].endswith("-00")
        # an incoming "not sampled" wins over 100 % sampling elsewhere; force-trace forces
        r = await fetch(env.port, "/", headers={"x-b3-sampled": "0"})
        assert r.json()["headers"]["x-b3-sampled"] == "0"
        # force-trace counts on internal requests only (Envoy strips it from external ones)
        r = await fetch(env.port, "/", headers={"x-envoy-force-trace": "true"})
        assert r.json()["headers"]["x-b3-sampled"] == "0"
        r = await fetch(env.port, "/", headers={"x-envoy-force-trace": "true",
                                                "x-forwarded-for": "127.0.0.1"})
        forced = r.json()["headers"]
        assert forced["x-b3-sampled"] == "1"
        (span,) = await collector.wait_for(1, collector.zipkin_spans)
        assert span["id"] == forced["x-b3-spanid"]
        assert span["name"] == "example.com"  # no decorator: the host
        await asyncio.sleep(0.2)
        assert len(collector.zipkin_spans()) == 1


async def test_batches_5xx_errors_and_stats(collector: Collector) -> None:
    async with proxy_env() as env:
        await start(env, collector, tracing(zipkin()))
        for i in range(7):
            await fetch(env.port, "/reviews/x", headers={"x-status": "503" if i == 0 else "200"})
        spans = await collector.wait_for(7, collector.zipkin_spans)
        # min_flush_spans: five in the first report, the rest on the timer
        assert [len(json.loads(r.body)) for r in collector.reports] == [5, 2]
        assert spans[0]["tags"]["error"] == "true"
        assert spans[0]["tags"]["http.status_code"] == "503"
        await asyncio.sleep(0.05)
        proxy = env.proxy
        assert proxy.counter("tracing.zipkin.spans_sent") == 7
        assert proxy.counter("tracing.zipkin.reports_sent") == 2
        assert proxy.counter("tracing.zipkin.timer_flushed") >= 1


async def test_collector_errors_are_counted(collector: Collector) -> None:
    collector.status = 500
    async with proxy_env() as env:
        await start(env, collector, tracing(zipkin()))
        await fetch(env.port, "/reviews/x")
        await collector.wait_for(1, lambda: collector.reports)
        await asyncio.sleep(0.05)
        assert env.proxy.counter("tracing.zipkin.reports_dropped") == 1
        assert env.proxy.counter("tracing.zipkin.reports_sent") == 0


async def test_collector_down_does_not_hurt_requests() -> None:
    from tests.unit.proxy.http_fixtures import free_port

    dead = Collector(port=free_port())  # never started: connections are refused
    async with proxy_env() as env:
        await start(env, dead, tracing(zipkin()))
        for _ in range(5):
            assert (await fetch(env.port, "/reviews/x")).status == 200
        for _ in range(50):
            if env.proxy.counter("tracing.zipkin.reports_failed"):
                break
            await asyncio.sleep(0.02)
        assert env.proxy.counter("tracing.zipkin.reports_failed") == 1


async def test_missing_collector_cluster_is_counted() -> None:
    async with proxy_env() as env:
        await start(env, Collector(port=1), tracing(zipkin(cluster="nowhere")))
        for _ in range(5):
            await fetch(env.port, "/reviews/x")
        await asyncio.sleep(0.05)
        assert env.proxy.counter("tracing.zipkin.reports_skipped_no_cluster") == 1


def _otlp_spans(collector: Collector) -> list[otlp.Span]:
    out = []
    for r in collector.reports:
        req = otlp.ExportTraceServiceRequest.FromString(r.body)
        for rs in req.resource_spans:
            for ss in otlp.scope_spans(rs):
                out.extend(ss.spans)
    return out


async def test_otlp_http_export(collector: Collector) -> None:
    collector.status = 200
    async with proxy_env() as env:
        await start(env, collector, tracing(otel_http()), collector_cluster="otel")
        r = await fetch(env.port, "/reviews/1", headers={"x-b3-traceid": TRACE[16:],
                                                         "x-b3-spanid": PARENT})
        seen = r.json()["headers"]
        (span,) = await collector.wait_for(1, lambda: _otlp_spans(collector))
        report = collector.reports[0]
        assert (report.path, report.headers["content-type"], report.headers["host"]) == (
            "/v1/traces", "application/x-protobuf", "otel.istio-system:4318")
        req = otlp.ExportTraceServiceRequest.FromString(report.body)
        attrs = {a.key: a.value.string_value for a in req.resource_spans[0].resource.attributes}
        assert attrs["service.name"] == "reviews.default"
        # a 64-bit B3 trace id is padded to 16 bytes
        assert span.trace_id == bytes.fromhex("0" * 16 + TRACE[16:])
        assert span.parent_span_id == bytes.fromhex(PARENT)
        assert span.span_id.hex() == seen["x-b3-spanid"]
        assert span.kind == otlp.SPAN_KIND_CLIENT
        assert span.name == OPERATION
        assert span.end_time_unix_nano > span.start_time_unix_nano > 0
        tags = {a.key: a.value.string_value for a in span.attributes}
        assert tags["http.status_code"] == "200" and tags["upstream_cluster"] == "reviews"


async def test_otlp_grpc_export() -> None:
    grpc = pytest.importorskip("grpc")
    received: list[otlp.ExportTraceServiceRequest] = []
    got = asyncio.Event()

    async def export(request, context):  # type: ignore[no-untyped-def]
        received.append(request)
        got.set()
        return otlp.ExportTraceServiceResponse()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=otlp.ExportTraceServiceRequest.FromString,
            response_serializer=otlp.ExportTraceServiceResponse.SerializeToString,
        )})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with proxy_env() as env:
            await start(env, Collector(port=port), tracing(otel_grpc()),
                        collector_cluster="otel")
            r = await fetch(env.port, "/reviews/1")
            seen = r.json()["headers"]
            async with asyncio.timeout(10):
                await got.wait()
            span = otlp.scope_spans(received[0].resource_spans[0])[0].spans[0]
            assert span.trace_id.hex() == seen["x-b3-traceid"]
            assert span.span_id.hex() == seen["x-b3-spanid"]
            for _ in range(50):
                if env.proxy.counter("tracing.opentelemetry.reports_sent"):
                    break
                await asyncio.sleep(0.02)
            assert env.proxy.counter("tracing.opentelemetry.reports_sent") == 1
            close_exporters(env.proxy.clusters)
    finally:
        await server.stop(None)
