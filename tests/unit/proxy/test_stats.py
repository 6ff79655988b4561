"""Per-worker stats: handles, merging across workers, Envoy's text and Prometheus output."""

from __future__ import annotations

import math
import re

import pytest

from pistio.proxy.stats.families import listener_stat_name
from pistio.proxy.stats.histogram import DEFAULT_BUCKETS, Histogram, HistogramData
from pistio.proxy.stats.prometheus import render_prometheus
from pistio.proxy.stats.query import StatsQuery, StatsQueryError
from pistio.proxy.stats.snapshot import merge_dumps, merge_snapshots
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.stats.tag_extraction import extract_tags, prometheus_name
from pistio.proxy.stats.text_format import render_json, render_text

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"


def worker(requests: int, latency_ms: float) -> StatsStore:
    """A worker store after serving ``requests`` requests to reviews."""
    store = StatsStore()
    cluster = store.cluster(REVIEWS)
    hcm = store.http_connection_manager("outbound_0.0.0.0_9080")
    listener = store.listener(listener_stat_name("0.0.0.0", 15001))
    listener.downstream_cx_total += 1
    listener.downstream_cx_active += 1
    cluster.membership_total = 3
    cluster.membership_healthy = 3
    for _ in range(requests):
        cluster.upstream_rq_total += 1
        cluster.record_response(200)
        cluster.upstream_rq_time.record(latency_ms)
        hcm.downstream_rq_total += 1
        hcm.record_response(200)
        hcm.downstream_rq_time.record(latency_ms + 1)
    cluster.record_response(503)
    return store


def test_handles_are_stable_and_count_on_plain_attributes() -> None:
    store = StatsStore()
    a = store.cluster(REVIEWS)
    assert store.cluster(REVIEWS) is a
    a.upstream_rq_total += 2
    a.upstream_cx_active += 1
    store.counter("custom.thing").value += 5
    snap = store.snapshot()
    assert snap.counters[f"cluster.{REVIEWS}.upstream_rq_total"] == 2
    assert snap.gauges[f"cluster.{REVIEWS}.upstream_cx_active"] == 1
    assert snap.counters[f"cluster.{REVIEWS}.outlier_detection.ejections_enforced_total"] == 0
    assert snap.gauges[f"cluster.{REVIEWS}.circuit_breakers.default.rq_open"] == 0
    assert snap.counters["custom.thing"] == 5
    assert f"cluster.{REVIEWS}.upstream_rq_time" in snap.histograms
    store.remove_cluster(REVIEWS)
    assert f"cluster.{REVIEWS}.upstream_rq_total" not in store.snapshot().counters


def test_response_codes_count_exact_code_and_class() -> None:
    store = StatsStore()
    c = store.cluster(REVIEWS)
    for code in (200, 200, 404, 503, 101, 302):
        c.record_response(code)
    snap = store.snapshot().counters
    p = f"cluster.{REVIEWS}."
    assert snap[p + "upstream_rq_200"] == 2
    assert snap[p + "upstream_rq_2xx"] == 2
    assert snap[p + "upstream_rq_4xx"] == 1 and snap[p + "upstream_rq_404"] == 1
    assert snap[p + "upstream_rq_5xx"] == 1 and snap[p + "upstream_rq_503"] == 1
    assert snap[p + "upstream_rq_1xx"] == 1 and snap[p + "upstream_rq_3xx"] == 1
    assert snap[p + "upstream_rq_completed"] == 6


def test_merge_across_workers_sums_counters_and_picks_gauge_modes() -> None:
    a, b = worker(3, 4), worker(5, 40)
    merged = merge_snapshots([a.snapshot(), b.snapshot()])
    p = f"cluster.{REVIEWS}."
    assert merged.counters[p + "upstream_rq_total"] == 8
    assert merged.counters[p + "upstream_rq_200"] == 8
    assert merged.counters[p + "upstream_rq_503"] == 2
    # Each worker computes membership itself: merged by maximum, not summed.
    assert merged.gauges[p + "membership_total"] == 3
    # Connections active in each worker add up.
    assert merged.gauges["listener.0.0.0.0_15001.downstream_cx_active"] == 2
    h = merged.histograms[p + "upstream_rq_time"]
    assert h.count == 8 and h.sum == 3 * 4 + 5 * 40
    assert h.min == 4 and h.max == 40
    # The inputs are not changed by merging.
    assert a.snapshot().counters[p + "upstream_rq_total"] == 3


def test_worker_dumps_merge_to_the_same_result_as_snapshots() -> None:
    stores = [worker(3, 4), worker(5, 40), worker(0, 1)]
    for s in stores:
        s.counter("loose.counter").value += 1
        s.gauge("loose.max", merge="max").value = 7
        s.gauge("loose.sum").value = 2
        s.histogram("loose.hist", (1, 10)).record(5)
        s.server().concurrency = 2
    by_dump = merge_dumps([s.dump() for s in stores])
    by_snapshot = merge_snapshots([s.snapshot() for s in stores])
    assert by_dump.counters == by_snapshot.counters
    assert by_dump.gauges == by_snapshot.gauges
    assert by_dump.max_gauges == by_snapshot.max_gauges
    assert by_dump.gauges["loose.max"] == 7 and by_dump.gauges["loose.sum"] == 6
    assert by_dump.gauges["server.concurrency"] == 2
    assert set(by_dump.histograms) == set(by_snapshot.histograms)
    for name, h in by_snapshot.histograms.items():
        d = by_dump.histograms[name]
        assert (d.bounds, d.counts, d.sum, d.count) == (h.bounds, h.counts, h.sum, h.count)
    assert render_prometheus(by_dump) == render_prometheus(by_snapshot)
    assert render_text(by_dump) == render_text(by_snapshot)
    # The dump carries no stat names for the families: it is much smaller than the names.
    assert len(stores[0].dump()) < sum(len(n) for n in stores[0].snapshot().counters)


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram()
    assert h.bounds == DEFAULT_BUCKETS and len(DEFAULT_BUCKETS) == 19
    for v in (0.4, 0.5, 3, 7, 7000, 5_000_000):
        h.record(v)
    data = HistogramData.of(h)
    # le semantics: 0.5 falls into the 0.5 bucket; 5e6 overflows.
    assert data.cumulative_counts()[:4] == [2, 2, 3, 4]
    assert data.cumulative_counts()[-1] == 5 and data.count == 6
    same = Histogram()
    for _ in range(10):
        same.record(3)
    q = HistogramData.of(same).quantiles()
    assert q == [3.0] * 10
    assert math.isnan(HistogramData.of(Histogram()).quantile(0.5))
    spread = Histogram()
    for v in range(1, 101):
        spread.record(v)
    qs = HistogramData.of(spread).quantiles()
    assert qs[0] == 1 and qs[-1] == 100
    assert 40 <= qs[2] <= 60 and qs == sorted(qs)


@pytest.mark.parametrize(
    ("name", "extracted", "tags"),
    [
        (
            f"cluster.{REVIEWS}.upstream_rq_total",
            "cluster.upstream_rq_total",
            (("cluster_name", REVIEWS),),
        ),
        (
            f"cluster.{REVIEWS_V2}.upstream_rq_2xx",
            "cluster.upstream_rq",
            (("response_code_class", "2xx"), ("cluster_name", REVIEWS_V2)),
        ),
        (
            "cluster.xds-grpc.upstream_rq_503",
            "cluster.upstream_rq",
            (("response_code", "503"), ("cluster_name", "xds-grpc")),
        ),
        (
            "cluster.BlackHoleCluster.upstream_cx_total",
            "cluster.upstream_cx_total",
            (("cluster_name", "BlackHoleCluster"),),
        ),
        (
            "http.10.244.0.12_9080.downstream_rq_2xx",
            "http.downstream_rq",
            (("response_code_class", "2xx"), ("http_conn_manager_prefix", "10.244.0.12_9080")),
        ),
        # Istio's prefix regex accepts only address-like prefixes: a named one stays in the name.
        (
            "http.outbound_0.0.0.0_9080.downstream_rq_total",
            "http.outbound_0.0.0.0_9080.downstream_rq_total",
            (),
        ),
        (
            "listener.0.0.0.0_15006.downstream_cx_total",
            "listener.downstream_cx_total",
            (("listener_address", "0.0.0.0_15006"),),
        ),
        ("server.live", "server.live", ()),
        ("cluster_manager.cds.update_success", "cluster_manager.cds.update_success", ()),
    ],
)
def test_tag_extraction_follows_istios_stats_tags(name: str, extracted: str, tags: tuple) -> None:
    assert extract_tags(name) == (extracted, tags)


def test_prometheus_exposition_names_tags_and_types() -> None:
    store = worker(2, 4)
    store.server().live = 1
    store.cluster_manager().active_clusters = 4
    store.cluster_manager().cds_update_success += 1
    out = render_prometheus(store.snapshot())
    assert "# TYPE envoy_cluster_upstream_rq_total counter\n" in out
    assert f'envoy_cluster_upstream_rq_total{{cluster_name="{REVIEWS}"}} 2\n' in out
    assert "# TYPE envoy_cluster_upstream_rq counter\n" in out
    assert f'envoy_cluster_upstream_rq{{response_code="200",cluster_name="{REVIEWS}"}} 2\n' in out
    assert (
        f'envoy_cluster_upstream_rq{{response_code_class="2xx",cluster_name="{REVIEWS}"}} 2\n'
        in out
    )
    assert "# TYPE envoy_cluster_membership_total gauge\n" in out
    assert 'envoy_listener_downstream_cx_total{listener_address="0.0.0.0_15001"} 1\n' in out
    assert "envoy_http_outbound_0_0_0_0_9080_downstream_rq_total{} 2\n" in out
    assert "envoy_server_live{} 1\n" in out
    assert "envoy_cluster_manager_active_clusters{} 4\n" in out
    assert "envoy_cluster_manager_cds_update_success{} 1\n" in out
    # Histograms: cumulative buckets with Envoy's bounds printed as %.32g, +Inf, sum, count.
    assert "# TYPE envoy_cluster_upstream_rq_time histogram\n" in out
    prefix = f'envoy_cluster_upstream_rq_time_bucket{{cluster_name="{REVIEWS}",'
    assert f'{prefix}le="0.5"}} 0\n' in out
    assert f'{prefix}le="5"}} 2\n' in out
    assert f'{prefix}le="3600000"}} 2\n' in out
    assert f'{prefix}le="+Inf"}} 2\n' in out
    assert f'envoy_cluster_upstream_rq_time_sum{{cluster_name="{REVIEWS}"}} 8\n' in out
    assert f'envoy_cluster_upstream_rq_time_count{{cluster_name="{REVIEWS}"}} 2\n' in out
    # Each metric's samples are one group after its TYPE line, and groups end with a blank line.
    types = re.findall(r"^# TYPE (\S+) (\S+)$", out, re.M)
    assert len(types) == len({t[0] for t in types})
    blocks = out.strip("\n").split("\n\n")
    assert len(blocks) == len(types)
    for block in blocks:
        lines = block.split("\n")
        metric = lines[0].split()[2]
        assert all(line.startswith(metric) for line in lines[1:])
    # Counters come before gauges, gauges before histograms.
    kinds = [t[1] for t in types]
    assert kinds == sorted(kinds, key=["counter", "gauge", "histogram"].index)


def test_prometheus_label_values_are_escaped() -> None:
    store = StatsStore()
    store.cluster('weird"name\\x').upstream_rq_total += 1
    out = render_prometheus(store.snapshot(), StatsQuery(used_only=True))
    assert 'envoy_cluster_upstream_rq_total{cluster_name="weird\\"name\\\\x"} 1\n' in out


def test_text_format_sorted_values_then_histogram_summaries() -> None:
    store = worker(4, 3)
    text = render_text(store.snapshot())
    lines = text.splitlines()
    numeric = [
        line for line in lines if not line.endswith("No recorded values") and " P0(" not in line
    ]
    assert numeric == sorted(numeric)
    assert f"cluster.{REVIEWS}.upstream_rq_total: 4" in lines
    assert f"cluster.{REVIEWS}.upstream_rq_200: 4" in lines
    assert f"cluster.{REVIEWS}.upstream_cx_connect_ms: No recorded values" in lines
    assert (
        f"cluster.{REVIEWS}.upstream_rq_time: "
        + " ".join(
            f"P{p}(nan,3)" for p in ("0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100")
        )
        in lines
    )
    hist_start = next(
        i for i, line in enumerate(lines) if "No recorded values" in line or " P0(" in line
    )
    assert all(("No recorded values" in ln or " P0(" in ln) for ln in lines[hist_start:])


def test_filter_usedonly_and_type() -> None:
    snap = worker(1, 2).snapshot()
    q = StatsQuery.from_params({"filter": r"upstream_rq_2\d\d$", "usedonly": ""})
    assert render_text(snap, q) == f"cluster.{REVIEWS}.upstream_rq_200: 1\n"
    q = StatsQuery.from_params({"filter": "membership_total", "type": "Counters"})
    assert render_text(snap, q) == ""
    q = StatsQuery.from_params({"filter": "membership_total", "type": "Gauges"})
    assert render_text(snap, q) == f"cluster.{REVIEWS}.membership_total: 3\n"
    q = StatsQuery.from_params({"usedonly": ""})
    assert "No recorded values" not in render_text(snap, q)
    assert "upstream_cx_connect_fail" not in render_prometheus(snap, q)
    with pytest.raises(StatsQueryError, match="Invalid re2 regex"):
        StatsQuery.from_params({"filter": "("})
    with pytest.raises(StatsQueryError):
        StatsQuery.from_params({"type": "Everything"})


def test_stats_json_shape() -> None:
    import json

    doc = json.loads(render_json(worker(2, 3).snapshot(), StatsQuery.from_params({"usedonly": ""})))
    stats = doc["stats"]
    assert {"name": f"cluster.{REVIEWS}.upstream_rq_total", "value": 2} in stats
    hist = stats[-1]["histograms"]
    assert hist["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    computed = {h["name"]: h["values"] for h in hist["computed_quantiles"]}
    assert computed[f"cluster.{REVIEWS}.upstream_rq_time"][5] == {
        "interval": None,
        "cumulative": 3,
    }


def test_prometheus_name_sanitizes() -> None:
    assert prometheus_name("cluster.upstream_rq_total") == "envoy_cluster_upstream_rq_total"
    assert prometheus_name("http.a-b.c:d") == "envoy_http_a_b_c_d"
    assert listener_stat_name("::", 80) == "[__]_80"
