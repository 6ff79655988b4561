"""15020 merge, injection's Prometheus annotations and the node's file_sd targets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pistio.agent.app_health import AppHealthServer
from pistio.agent.metrics_merge import (
    AppScrape,
    MetricsMerger,
    parse_prometheus_annotations,
)
from pistio.node.pods.inject import inject
from pistio.node.prometheus_targets import pod_targets, write_targets
from tests.unit.proxy.http_fixtures import fetch, free_port


def _pod(annotations: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": "reviews-v1-abc", "namespace": "default",
                         "labels": {"app": "reviews", "version": "v1"},
                         "annotations": dict(annotations or {})},
            "spec": {"containers": [{"name": "reviews", "ports": [{"containerPort": 9080}]}]}}


def _env(out: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in out["spec"]["containers"][-1]["env"]}


def test_injection_merges_app_metrics_as_istio() -> None:
    out = inject(_pod({"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                       "prometheus.io/path": "/m"}), discovery_address="d:1", proxy_argv_prefix=[])
    ann = out["metadata"]["annotations"]
    assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"],
            ann["prometheus.io/path"]) == ("true", "15020", "/stats/prometheus")
    assert _env(out)["ISTIO_PROMETHEUS_ANNOTATIONS"] == \
        '{"scrape":"true","port":"9100","path":"/m"}'
    plain = inject(_pod(), discovery_address="d:1", proxy_argv_prefix=[])
    assert plain["metadata"]["annotations"]["prometheus.io/port"] == "15020"
    assert _env(plain)["ISTIO_PROMETHEUS_ANNOTATIONS"] == '{"scrape":"","port":"","path":""}'


@pytest.mark.parametrize("annotations", [
    {"prometheus.io/scrape": "false"},
    {"prometheus.istio.io/merge-metrics": "false", "prometheus.io/port": "9100"},
])
def test_injection_opt_outs(annotations: dict[str, str]) -> None:
    out = inject(_pod(annotations), discovery_address="d:1", proxy_argv_prefix=[])
    assert out["metadata"]["annotations"] == {**annotations, **{
        k: v for k, v in out["metadata"]["annotations"].items() if k not in annotations
        and not k.startswith("prometheus.io/")}}
    assert "ISTIO_PROMETHEUS_ANNOTATIONS" not in _env(out)
    off = inject(_pod(), discovery_address="d:1", proxy_argv_prefix=[],
                 enable_prometheus_merge=False)
    assert "prometheus.io/port" not in off["metadata"]["annotations"]


def test_prometheus_annotations_env() -> None:
    assert parse_prometheus_annotations('{"scrape":"true","port":"9100","path":""}') == \
        AppScrape(9100, "/metrics")
    assert parse_prometheus_annotations('{"scrape":"","port":"","path":""}') is None
    assert parse_prometheus_annotations(None) is None
    with pytest.raises(ValueError, match="port 'x'"):
        parse_prometheus_annotations('{"scrape":"true","port":"x"}')


@pytest.mark.asyncio
async def test_status_port_merges_proxy_and_app_and_counts_app_failures() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"# TYPE app_hits_total counter\napp_hits_total 42\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(app, "127.0.0.1", 0)
    app_port = server.sockets[0].getsockname()[1]

    async def proxy_text() -> str:
        return '# TYPE istio_requests_total counter\nistio_requests_total{reporter="source"} 3\n'

    merger = MetricsMerger(proxy_text, AppScrape(app_port, "/metrics"))
    status = AppHealthServer({}, metrics=merger.handle)
    port = free_port()
    await status.start("127.0.0.1", port)
    try:
        r = await fetch(port, "/stats/prometheus")
        text = r.body.decode()
        assert r.status == 200
        assert text.index("istio_agent_scrapes_total 1") < text.index(
            'istio_requests_total{reporter="source"} 3') < text.index("app_hits_total 42")
        server.close()
        await server.wait_closed()
        r = await fetch(port, "/stats/prometheus")
        text = r.body.decode()
        assert r.status == 200 and "app_hits_total" not in text
        assert 'istio_agent_scrape_failures_total{type="application"} 1' in text
        assert 'istio_requests_total{reporter="source"} 3' in text
    finally:
        await status.close()


def test_targets_file(tmp_path: Path) -> None:
    injected = inject(_pod(), discovery_address="d:1", proxy_argv_prefix=[])
    other = _pod({"prometheus.io/scrape": "true", "prometheus.io/port": "9100"})
    other["metadata"]["name"] = "a-app"
    groups = pod_targets([(injected, "10.88.0.5", True), (other, "10.88.0.6", True),
                          (_pod({"prometheus.io/scrape": "true", "prometheus.io/port": "1"}),
                           "10.88.0.7", False),
                          (_pod(), "10.88.0.8", True)])
    assert groups == [
        {"targets": ["10.88.0.6:9100"], "labels": {
            "__metrics_path__": "/metrics", "namespace": "default", "pod": "a-app",
            "app": "reviews", "version": "v1"}},
        {"targets": ["10.88.0.5:15020"], "labels": {
            "__metrics_path__": "/stats/prometheus", "namespace": "default",
            "pod": "reviews-v1-abc", "app": "reviews", "version": "v1"}},
    ]
    path = write_targets(tmp_path, groups)
    assert path == tmp_path / "prometheus" / "targets.json"
    assert json.loads(path.read_text()) == groups
    mtime = path.stat().st_mtime_ns
    write_targets(tmp_path, groups)
    assert path.stat().st_mtime_ns == mtime  # unchanged: not rewritten
