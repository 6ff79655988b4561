"""Istio's standard metrics through the real data path (in-process proxy, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from pistio.proxy.stats.istio_metrics import IstioMetrics
from pistio.proxy.stats.prometheus import render_prometheus
from pistio.proxy.stats.snapshot import merge_dumps
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.telemetry import peer_metadata
from pistio.proxy.telemetry.peer_metadata import encode_peer_metadata, set_local_node
from tests.unit.proxy.http_fixtures import (
    InProcessProxy,
    fetch,
    free_port,
    load_assignment,
    route,
    route_config,
    upstreams,
)
from tests.unit.proxy.telemetry.istio_fixtures import (
    INBOUND,
    OUTBOUND,
    PRODUCTPAGE,
    REVIEWS,
    istio_listener,
    service_cluster,
)

pytestmark = [pytest.mark.timeout(30)]

OUT_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"
IN_CLUSTER = "inbound|9080||"
HOST = "reviews.default.svc.cluster.local"


@pytest_asyncio.fixture
async def mesh() -> AsyncIterator[tuple[InProcessProxy, int, int, object]]:
    """One proxy playing both sidecars: ``out`` (outbound) → ``in`` (inbound) → the app."""
    saved = peer_metadata._local
    set_local_node("sidecar~127.0.0.1~reviews-v2-456.default~default.svc.cluster.local",
                   REVIEWS)
    proxy = InProcessProxy()
    (app,) = await upstreams("app")
    out_port, in_port = free_port(), free_port()
    endpoint = load_assignment(OUT_CLUSTER, [in_port])
    md = struct_pb2.Struct()
    md.update({"workload": "reviews-v2;default;reviews;v2;Kubernetes"})
    endpoint.endpoints[0].lb_endpoints[0].metadata.filter_metadata["istio"].CopyFrom(md)
    try:
        await proxy.apply(
            [istio_listener("out", out_port, OUTBOUND, "out"),
             istio_listener("in", in_port, INBOUND, "in")],
            [route_config("out", [route(cluster=OUT_CLUSTER)]),
             route_config("in", [route(cluster=IN_CLUSTER)])],
            [service_cluster(OUT_CLUSTER, HOST), service_cluster(IN_CLUSTER, HOST)],
            [endpoint, load_assignment(IN_CLUSTER, [app.port])],
        )
        yield proxy, out_port, in_port, app
    finally:
        await proxy.close()
        await app.close()
        peer_metadata._local = saved


def series(proxy: InProcessProxy, metric: str) -> dict[tuple, object]:
    return {labels: v for (m, labels), v in proxy.store.snapshot().labeled.items()
            if m == metric}


REVIEWS_SOURCE = [
    ("source_workload", "reviews-v2"), ("source_canonical_service", "reviews"),
    ("source_canonical_revision", "v2"), ("source_workload_namespace", "default"),
    ("source_principal", "unknown"), ("source_app", "reviews"), ("source_version", "v2"),
    ("source_cluster", "Kubernetes")]
REVIEWS_DESTINATION = [
    ("destination_workload", "reviews-v2"), ("destination_workload_namespace", "default"),
    ("destination_principal", "unknown"), ("destination_app", "reviews"),
    ("destination_version", "v2"), ("destination_service", HOST),
    ("destination_canonical_service", "reviews"), ("destination_canonical_revision", "v2"),
    ("destination_service_name", "reviews"), ("destination_service_namespace", "default"),
    ("destination_cluster", "Kubernetes")]


@pytest.mark.asyncio
async def test_both_reporters_label_both_sides(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, out_port, _, app = mesh
    for _ in range(3):
        r = await fetch(out_port, "/r", host="reviews:9080", body=b"12345", method="POST")
        assert r.status == 200
        # Both exchange headers are consumed by the sidecars, never seen by apps.
        assert "x-envoy-peer-metadata" not in r.headers
    assert not any(k.startswith("x-envoy-peer") for k in app.received[-1].headers)
    r = await fetch(out_port, "/r", host="reviews:9080", headers={"x-status": "503"})
    assert r.status == 503
    await asyncio.sleep(0.05)
    tail = [("request_protocol", "http"), ("response_code", "200"),
            ("grpc_response_status", ""), ("response_flags", "-")]
    got = series(proxy, "istio_requests_total")
    source = tuple([("reporter", "source"), *REVIEWS_SOURCE, *REVIEWS_DESTINATION, *tail,
                    ("connection_security_policy", "unknown")])
    destination = tuple([("reporter", "destination"), *REVIEWS_SOURCE, *REVIEWS_DESTINATION,
                         *tail, ("connection_security_policy", "none")])
    assert got[source] == 3 and got[destination] == 3
    failed = tuple((k, "503") if k == "response_code" else (k, v) for k, v in source)
    assert got[failed] == 1
    sizes = series(proxy, "istio_request_bytes")[source]
    assert (sizes.count, sizes.sum) == (3, 15.0)
    durations = series(proxy, "istio_request_duration_milliseconds")[destination]
    assert durations.count == 3 and durations.bounds[0] == 0.5 and durations.bounds[-1] == 3600000

    text = render_prometheus(proxy.store.snapshot())
    labels = ",".join(f'{k}="{v}"' for k, v in destination)
    assert f"istio_requests_total{{{labels}}} 3\n" in text
    assert "# TYPE istio_requests_total counter\n" in text
    assert "# TYPE istio_request_duration_milliseconds histogram\n" in text
    assert f'istio_request_bytes_bucket{{{labels},le="5"}} 3\n' in text
    assert f'istio_request_bytes_bucket{{{labels},le="1"}} 0\n' in text
    assert f'istio_request_bytes_bucket{{{labels},le="+Inf"}} 3\n' in text
    assert f"istio_request_bytes_sum{{{labels}}} 15\n" in text
    assert f"istio_request_bytes_count{{{labels}}} 3\n" in text


@pytest.mark.asyncio
async def test_inbound_peer_from_headers_and_from_nowhere(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, _, in_port, app = mesh
    r = await fetch(in_port, "/x", host="whatever")
    assert r.status == 200
    assert "x-envoy-peer-metadata" not in r.headers  # not announced to a non-mesh client
    header = encode_peer_metadata(PRODUCTPAGE).decode()
    r = await fetch(in_port, "/x", headers={"x-envoy-peer-metadata": header,
                                            "x-envoy-peer-metadata-id": "sidecar~pp"})
    assert r.headers["x-envoy-peer-metadata-id"].startswith("sidecar~127.0.0.1~reviews-v2")
    assert "x-envoy-peer-metadata" not in app.received[-1].headers
    await asyncio.sleep(0.05)
    got = {dict(k)["source_workload"]: dict(k) for k in series(proxy, "istio_requests_total")}
    unknown = got["unknown"]
    assert (unknown["source_canonical_service"], unknown["source_canonical_revision"],
            unknown["source_workload_namespace"], unknown["source_app"]) == (
        "unknown", "latest", "unknown", "unknown")
    # disable_host_header_fallback on inbound: the service comes from the cluster only.
    assert unknown["destination_service"] == HOST
    pp = got["productpage-v1"]
    assert (pp["source_app"], pp["source_version"], pp["source_canonical_service"],
            pp["source_canonical_revision"], pp["reporter"]) == (
        "productpage", "v1", "productpage", "v1", "destination")


@pytest.mark.asyncio
async def test_overrides_drop_remove_and_cel_dimensions() -> None:
    saved = peer_metadata._local
    set_local_node("n", REVIEWS)
    proxy = InProcessProxy()
    (app,) = await upstreams("app")
    port = free_port()
    stats = {"metrics": [{"name": "request_bytes", "drop": True},
                         {"tags_to_remove": ["source_principal", "destination_principal"]},
                         {"name": "requests_total",
                          "dimensions": {"request_method": "request.method",
                                         "response_code": "string(response.code + 1)"}}]}
    try:
        await proxy.apply([istio_listener("in", port, INBOUND, "in", stats=stats)],
                          [route_config("in", [route(cluster=IN_CLUSTER)])],
                          [service_cluster(IN_CLUSTER, HOST)],
                          [load_assignment(IN_CLUSTER, [app.port])])
        await fetch(port, "/", method="PUT", body=b"x")
        await asyncio.sleep(0.05)
        snap = proxy.store.snapshot().labeled
        names = {m for m, _ in snap}
        assert "istio_request_bytes" not in names and "istio_response_bytes" in names
        (labels,) = [dict(k) for m, k in snap if m == "istio_requests_total"]
        assert "source_principal" not in labels and "destination_principal" not in labels
        assert labels["request_method"] == "PUT" and labels["response_code"] == "201"
        keys = [k for k, _ in next(k for m, k in snap if m == "istio_requests_total")]
        assert keys[-1] == "request_method"  # a new label goes last; overrides keep their place
        assert keys.index("response_code") < keys.index("connection_security_policy")
    finally:
        await proxy.close()
        await app.close()
        peer_metadata._local = saved


def test_worker_dumps_merge() -> None:
    a, b = StatsStore(), StatsStore()
    labels = (("reporter", "source"), ("response_code", "200"))
    for store, n, ms in ((a, 2, 3.0), (b, 5, 700.0)):
        store.istio_metrics().counter("istio_requests_total", labels).value += n
        store.istio_metrics().histogram("istio_request_duration_milliseconds", labels).record(ms)
    merged = merge_dumps([a.dump(), b.dump()])
    assert merged.labeled[("istio_requests_total", labels)] == 7
    h = merged.labeled[("istio_request_duration_milliseconds", labels)]
    assert (h.count, h.sum) == (2, 703.0)
    assert h.cumulative_counts()[:10] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
    text = render_prometheus(merged)
    assert text.count("# TYPE istio_requests_total counter") == 1
    assert 'istio_requests_total{reporter="source",response_code="200"} 7\n' in text
    assert ('istio_request_duration_milliseconds_bucket{reporter="source",response_code="200",'
            'le="0.5"} 0\n') in text
    assert ('istio_request_duration_milliseconds_bucket{reporter="source",response_code="200",'
            'le="3600000"} 2\n') in text


def test_label_values_are_escaped() -> None:
    m = IstioMetrics()
    m.counter("istio_requests_total", (("source_app", 'a"b\\c'),)).value = 1
    store = StatsStore()
    store.istio = m
    assert 'istio_requests_total{source_app="a\\"b\\\\c"} 1' in render_prometheus(store.snapshot())


def test_grpc_status_from_trailers_headers_or_http_status() -> None:
    from pistio.proxy.access_log.formatter import ProxiedResponseHeaders
    from pistio.proxy.access_log.stream_info import StreamInfo
    from pistio.proxy.filters.http.istio_stats import grpc_status

    info = StreamInfo()
    info.response_code = 200
    info.response_headers = ProxiedResponseHeaders([(b"content-type", b"application/grpc")], 0)
    info.response_trailers = ProxiedResponseHeaders([(b"Grpc-Status", b"5")], 0)
    assert grpc_status(info) == "5"
    info.response_trailers = None
    info.response_headers = ProxiedResponseHeaders([(b"grpc-status", b"14")], 0)
    assert grpc_status(info) == "14"  # trailers-only response
    info.response_headers = None
    info.response_code = 503
    assert grpc_status(info) == "14"  # Envoy's HTTP → gRPC mapping
    info.response_code = 0
    assert grpc_status(info) == ""


@pytest.mark.asyncio
async def test_tcp_stats_open_bytes_close() -> None:
    from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    from pistio.proxy.telemetry.plugin_config import STATS_TYPE
    from tests.unit.proxy.http_fixtures import pack
    from tests.unit.proxy.telemetry.istio_fixtures import typed_struct

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(1024):
                writer.write(data.upper() * 2)
                await writer.drain()
        writer.close()

    saved = peer_metadata._local
    set_local_node("n", REVIEWS)
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = InProcessProxy()
    port = free_port()
    listener = listener_pb2.Listener(name="tcp", traffic_direction=INBOUND, filter_chains=[
        listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name="istio.stats",
                                           typed_config=typed_struct(STATS_TYPE, {})),
            listener_components_pb2.Filter(
                name="envoy.filters.network.tcp_proxy",
                typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix="t", cluster=IN_CLUSTER)))])])
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = port
    try:
        await proxy.apply([listener], [], [service_cluster(IN_CLUSTER, HOST)],
                          [load_assignment(IN_CLUSTER, [server.sockets[0].getsockname()[1]])])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        assert await reader.readexactly(10) == b"HELLOHELLO"
        await asyncio.sleep(0.05)
        opened = series(proxy, "istio_tcp_connections_opened_total")
        assert list(opened.values()) == [1]
        assert list(series(proxy, "istio_tcp_connections_closed_total").values()) == [0]
        # As in Istio, a series exists from its first increment: none for closed yet.
        text = render_prometheus(proxy.store.snapshot())
        assert "istio_tcp_connections_opened_total{" in text
        assert "istio_tcp_connections_closed_total" not in text
        labels = dict(next(iter(opened)))
        assert (labels["reporter"], labels["request_protocol"], labels["destination_service"],
                labels["source_workload"], labels["destination_workload"],
                labels["connection_security_policy"], labels["response_flags"]) == (
            "destination", "tcp", HOST, "unknown", "reviews-v2", "none", "-")
        assert "response_code" not in labels
        writer.close()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if any(series(proxy, "istio_tcp_connections_closed_total").values()):
                break
        assert list(series(proxy, "istio_tcp_connections_closed_total").values()) == [1]
        assert list(series(proxy, "istio_tcp_sent_bytes_total").values()) == [10]
        assert list(series(proxy, "istio_tcp_received_bytes_total").values()) == [5]
    finally:
        await proxy.close()
        server.close()
        peer_metadata._local = saved
