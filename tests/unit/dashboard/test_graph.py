"""The graph from a known set of sidecar samples: two scrapes 10 s apart of three proxies,
through the same path the dashboard takes (exposition → window → PromQL → graph)."""

from __future__ import annotations

import pytest

from pistio.dashboard.graph import build_graph, health
from pistio.dashboard.scrape_source import ScrapeSource, sidecar_targets

NS = "default"
SVC = "reviews.default.svc.cluster.local"
PP = {"source_workload": "productpage-v1", "source_workload_namespace": NS,
      "source_app": "productpage", "source_version": "v1"}
OUTSIDE = {"source_workload": "unknown", "source_workload_namespace": "unknown",
           "source_app": "unknown", "source_version": "unknown"}


def to(version: str) -> dict[str, str]:
    return {"destination_service": SVC, "destination_service_name": "reviews",
            "destination_service_namespace": NS, "destination_workload": f"reviews-{version}",
            "destination_workload_namespace": NS, "destination_app": "reviews",
            "destination_version": version}


def line(name: str, labels: dict[str, str], value: float) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{text}}} {value:g}"


def requests(reporter: str, source: dict[str, str], dest: dict[str, str], code: str,
             policy: str, value: float) -> str:
    labels = {"reporter": reporter, **source, **dest, "request_protocol": "http",
              "response_code": code, "response_flags": "-",
              "connection_security_policy": policy}
    return line("istio_requests_total", labels, value)


def buckets(source: dict[str, str], dest: dict[str, str], counts: dict[str, float]) -> list[str]:
    return [line("istio_request_duration_milliseconds_bucket",
                 {"reporter": "source", **source, **dest, "response_code": "200", "le": le}, c)
            for le, c in counts.items()]


def exposition(*lines: str | list[str]) -> str:
    flat: list[str] = []
    for item in lines:
        flat.extend(item if isinstance(item, list) else [item])
    return "\n".join([
        "# TYPE envoy_cluster_upstream_rq_total counter",
        'envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|9080||"} 12',
        "# TYPE istio_requests_total counter",
        *[x for x in flat if x.startswith("istio_requests_total")],
        "# TYPE istio_request_duration_milliseconds histogram",
        *[x for x in flat if x.startswith("istio_request_duration")],
    ]) + "\n"


# Scrape 1 (t=0) then scrape 2 (t=10) of each proxy.
PRODUCTPAGE = [
    exposition(requests("source", PP, to("v1"), "200", "unknown", 100),
               requests("source", PP, to("v2"), "200", "unknown", 50),
               buckets(PP, to("v1"), {"1": 0, "5": 0, "10": 0, "25": 0, "+Inf": 0})),
    exposition(requests("source", PP, to("v1"), "200", "unknown", 200),   # +100: 10 rps
               requests("source", PP, to("v2"), "200", "unknown", 100),   # +50: 5 rps
               requests("source", PP, to("v2"), "503", "unknown", 10),    # new: 1 rps
               # 100 requests: 10 within 5 ms, 90 within 10 ms, all within 25 ms.
               buckets(PP, to("v1"), {"1": 0, "5": 10, "10": 90, "25": 100, "+Inf": 100})),
]
REVIEWS_V1 = [
    exposition(requests("destination", PP, to("v1"), "200", "mutual_tls", 100),
               requests("destination", OUTSIDE, to("v1"), "200", "none", 0)),
    exposition(requests("destination", PP, to("v1"), "200", "mutual_tls", 200),
               requests("destination", OUTSIDE, to("v1"), "200", "none", 20)),  # 2 rps
]
REVIEWS_V2 = [
    exposition(requests("destination", PP, to("v2"), "200", "none", 50)),
    exposition(requests("destination", PP, to("v2"), "200", "none", 100),
               requests("destination", PP, to("v2"), "503", "none", 10)),
]
PODS = {"10.1.0.2:15090": PRODUCTPAGE, "10.1.0.3:15090": REVIEWS_V1,
        "10.1.0.4:15090": REVIEWS_V2}


def pod(name: str, ip: str, injected: bool = True) -> dict:  # type: ignore[type-arg]
    containers = [{"name": "app"}] + ([{"name": "istio-proxy"}] if injected else [])
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"containers": containers},
            "status": {"podIP": ip}}


@pytest.fixture(scope="module")
def graph() -> dict:  # type: ignore[type-arg]
    step = {"n": 0}
    clock = {"t": 0.0}
    targets = sidecar_targets([pod("productpage-v1-a", "10.1.0.2"),
                               pod("reviews-v1-a", "10.1.0.3"),
                               pod("reviews-v2-a", "10.1.0.4"),
                               pod("plain", "10.1.0.9", injected=False)])
    source = ScrapeSource(lambda: targets, window_seconds=60,
                          fetch=lambda address: PODS[address][step["n"]],
                          clock=lambda: clock["t"])
    try:
        first = source.collect()
        assert first.error is None and not first.warnings
        step["n"], clock["t"] = 1, 10.0
        traffic = source.collect()
    finally:
        source.close()
    assert traffic.error is None and not traffic.warnings
    return build_graph(traffic.vectors)


def nodes(graph: dict) -> dict:  # type: ignore[type-arg]
    return {n["id"]: n for n in graph["nodes"]}


def edge(graph: dict, source: str, target: str) -> dict:  # type: ignore[type-arg]
    [found] = [e for e in graph["edges"] if e["source"] == source and e["target"] == target]
    return found


def test_sidecar_targets_skip_pods_without_a_proxy() -> None:
    assert sidecar_targets([pod("a", "10.0.0.1"), pod("b", "10.0.0.2", injected=False)]) == \
        [("default/a", "10.0.0.1:15090")]


def test_nodes_are_versioned_workloads_services_and_unknown(graph: dict) -> None:  # type: ignore[type-arg]
    got = nodes(graph)
    assert {i: n["label"] for i, n in got.items()} == {
        "workload:default:productpage-v1": "productpage v1",
        "workload:default:reviews-v1": "reviews v1",
        "workload:default:reviews-v2": "reviews v2",
        "service:default:reviews": "reviews",
        "unknown": "unknown",
    }
    assert got["service:default:reviews"]["kind"] == "service"
    assert got["workload:default:reviews-v2"]["version"] == "v2"


def test_edge_rates_and_error_percent(graph: dict) -> None:  # type: ignore[type-arg]
    to_service = edge(graph, "workload:default:productpage-v1", "service:default:reviews")
    assert to_service["rps"] == pytest.approx(16.0)
    assert to_service["errorPercent"] == pytest.approx(100 / 16)
    assert to_service["responses"] == {"200": pytest.approx(15.0), "503": pytest.approx(1.0)}
    assert to_service["health"] == "degraded"
    v1 = edge(graph, "service:default:reviews", "workload:default:reviews-v1")
    assert v1["rps"] == pytest.approx(12.0)  # 10 from productpage, 2 from outside
    assert v1["errorPercent"] == 0 and v1["health"] == "healthy"
    v2 = edge(graph, "service:default:reviews", "workload:default:reviews-v2")
    assert v2["rps"] == pytest.approx(6.0)
    assert v2["errorPercent"] == pytest.approx(100 / 6) and v2["health"] == "failure"
    outside = edge(graph, "unknown", "service:default:reviews")
    assert outside["rps"] == pytest.approx(2.0)
    assert len(graph["edges"]) == 4


def test_p99_is_interpolated_within_the_bucket(graph: dict) -> None:  # type: ignore[type-arg]
    # Rank 99 of 100 lies in (10, 25]: 10 + 15 * 9 / 10.
    assert edge(graph, "service:default:reviews", "workload:default:reviews-v1")["p99Ms"] == \
        pytest.approx(23.5)
    assert edge(graph, "workload:default:productpage-v1",
                "service:default:reviews")["p99Ms"] == pytest.approx(23.5)
    assert edge(graph, "service:default:reviews", "workload:default:reviews-v2")["p99Ms"] is None


def test_padlock_from_the_destination_reporter(graph: dict) -> None:  # type: ignore[type-arg]
    v1 = edge(graph, "service:default:reviews", "workload:default:reviews-v1")
    assert v1["mtls"] is True and v1["mtlsPercent"] == pytest.approx(100 * 10 / 12)
    assert edge(graph, "service:default:reviews", "workload:default:reviews-v2")["mtls"] is False
    assert edge(graph, "unknown", "service:default:reviews")["mtls"] is False
    assert edge(graph, "workload:default:productpage-v1", "service:default:reviews")["mtls"]


def test_node_health_from_inbound_errors(graph: dict) -> None:  # type: ignore[type-arg]
    got = nodes(graph)
    assert got["workload:default:reviews-v2"]["errorPercent"] == pytest.approx(100 / 6)
    assert got["workload:default:reviews-v2"]["health"] == "failure"
    assert got["workload:default:reviews-v1"]["health"] == "healthy"
    assert got["workload:default:productpage-v1"]["health"] == "idle"  # nobody calls it


def test_layers_go_from_callers_to_callees(graph: dict) -> None:  # type: ignore[type-arg]
    layer = {i: n["layer"] for i, n in nodes(graph).items()}
    assert layer["workload:default:productpage-v1"] == layer["unknown"] == 0
    assert layer["service:default:reviews"] == 1
    assert layer["workload:default:reviews-v1"] == layer["workload:default:reviews-v2"] == 2
    rows = {nodes(graph)[i]["row"] for i in ("workload:default:reviews-v1",
                                             "workload:default:reviews-v2")}
    assert rows == {0, 1}


def test_cycles_and_tcp_edges() -> None:
    a = {"source_workload": "a", "source_workload_namespace": NS, "source_app": "a",
         "source_version": "v1"}
    b = {"source_workload": "b", "source_workload_namespace": NS, "source_app": "b",
         "source_version": "v1"}

    def dest(name: str) -> dict[str, str]:
        return {"destination_service": f"{name}.default.svc.cluster.local",
                "destination_service_name": name, "destination_service_namespace": NS,
                "destination_workload": name, "destination_workload_namespace": NS,
                "destination_app": name, "destination_version": "v1"}

    def key(d: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(d.items()))

    vectors = {
        "requests": {key({**a, **dest("b"), "response_code": "200"}): 1.0,
                     key({**b, **dest("a"), "response_code": "200"}): 1.0},
        "tcp_sent": {key({**a, **dest("db")}): 300.0},
        "tcp_received": {key({**a, **dest("db")}): 100.0},
    }
    graph = build_graph(vectors)
    layer = {n["id"]: n["layer"] for n in graph["nodes"]}
    assert len(set(layer.values())) >= 3  # a cycle a → b → a still lays out
    tcp = edge(graph, "workload:default:a", "service:default:db")
    assert tcp["protocol"] == "tcp" and tcp["tcpBytesPerSecond"] == 400.0


def test_health_thresholds_are_kialis() -> None:
    assert health(0.0, 1) == "healthy"
    assert health(0.1, 1) == "degraded"
    assert health(10.0, 1) == "degraded"
    assert health(10.5, 1) == "failure"
    assert health(None, 0) == "idle"
