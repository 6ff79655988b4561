"""Istio's standard metrics between two real ``pistio proxy`` processes.

``productpage``'s sidecar (an outbound listener) calls ``reviews``' sidecar (an inbound
listener) which calls the app, all on 127.0.0.1, each proxy fed by its own ADS server. The
sidecars exchange peer metadata in ``x-envoy-peer-metadata`` headers, so after N requests both
proxies' ``:15090/stats/prometheus`` show ``istio_requests_total`` with both sides labeled, and
reviews' ``:15020/stats/prometheus`` merges the proxy's metrics with the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from pistio.xds import types as T
from pistio.xds.testing import StaticGenerator, XdsHarness
from tests.unit.proxy.http_fixtures import fetch, free_port, load_assignment, route, route_config
from tests.unit.proxy.telemetry.istio_fixtures import (
    INBOUND,
    OUTBOUND,
    istio_listener,
    service_cluster,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

HOST = "reviews.default.svc.cluster.local"
OUT_CLUSTER = f"outbound|9080||{HOST}"
IN_CLUSTER = "inbound|9080||"
APP_METRICS = "# TYPE reviews_app_requests_total counter\nreviews_app_requests_total 7\n"


class ControlPlane:
    def __init__(self) -> None:
        self.harness = XdsHarness()
        self.tables = {t: StaticGenerator() for t in (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)}
        self.port = 0

    def set(self, type_url: str, *messages) -> None:  # type: ignore[no-untyped-def]
        for m in messages:
            self.tables[type_url].set(m)

    async def start(self) -> int:
        server = await self.harness.server(dict(self.tables))
        self.port = server.port
        return server.port

    async def close(self) -> None:
        await self.harness.close()


class Sidecar:
    """``pistio proxy sidecar`` with a workload identity."""

    def __init__(self, base: Path, name: str, xds_port: int, workload: str, app: str,
                 version: str, account: str, env: dict[str, str] | None = None) -> None:
        self.ready = base / f"{name}-ready.json"
        self.log = base / f"{name}.log"
        out = self.log.open("a")
        pod = f"{workload}-5d8f9c-x1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "proxy", "sidecar",
             "--discovery-address", f"127.0.0.1:{xds_port}", "--concurrency", "2",
             "--pod", pod, "--namespace", "default", "--ip", "127.0.0.1",
             "--label", f"app={app}", "--label", f"version={version}",
             "--service-account", account,
             "--admin-port", "0", "--prometheus-port", "0", "--health-port", "0",
             "--status-port", "0", "--ready-file", str(self.ready), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "ISTIO_META_WORKLOAD_NAME": workload, **(env or {})},
        )
        out.close()
        self.ports: dict[str, int] = {}

    async def wait_ready(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            self._check(deadline)
            await asyncio.sleep(0.05)
        self.ports = json.loads(self.ready.read_text())
        while True:
            self._check(deadline)
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                if (await fetch(port, "/__ready__", timeout=1)).status:
                    return
            await asyncio.sleep(0.05)

    def _check(self, deadline: float) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("proxy did not become ready:\n" + self.log.read_text())

    def get(self, port_name: str, path: str) -> str:
        url = f"http://127.0.0.1:{self.ports[port_name]}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels_text, _, value = line[len(metric) + 1:].rpartition("} ")
            labels = dict(part.split("=", 1) for part in labels_text.split('",') if part)
            out.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return out


def counts(text: str) -> dict[frozenset, float]:
    return {frozenset(labels.items()): v for labels, v in samples(text, "istio_requests_total")}


async def test_both_sidecars_report_both_sides(tmp_path: Path) -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = (APP_METRICS if b" /metrics " in head else '{"reviews": []}').encode()
                assert b"x-envoy-peer-metadata" not in head.lower()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        writer.close()

    app_server = await asyncio.start_server(app, "127.0.0.1", 0)
    app_port = app_server.sockets[0].getsockname()[1]
    out_port, in_port = free_port(), free_port()
    cp_a, cp_b = ControlPlane(), ControlPlane()
    endpoint = load_assignment(OUT_CLUSTER, [in_port])
    md = struct_pb2.Struct()
    md.update({"workload": "reviews-v2;default;reviews;v2;Kubernetes"})
    endpoint.endpoints[0].lb_endpoints[0].metadata.filter_metadata["istio"].CopyFrom(md)
    cp_a.set(T.LISTENER, istio_listener("out", out_port, OUTBOUND, "9080"))
    cp_a.set(T.ROUTE, route_config("9080", [route(cluster=OUT_CLUSTER)]))
    cp_a.set(T.CLUSTER, service_cluster(OUT_CLUSTER, HOST))
    cp_a.set(T.ENDPOINT, endpoint)
    cp_b.set(T.LISTENER, istio_listener("in", in_port, INBOUND, "inbound|9080||"))
    cp_b.set(T.ROUTE, route_config("inbound|9080||", [route(cluster=IN_CLUSTER)]))
    cp_b.set(T.CLUSTER, service_cluster(IN_CLUSTER, HOST))
    cp_b.set(T.ENDPOINT, load_assignment(IN_CLUSTER, [app_port]))
    productpage = reviews = None
    try:
        productpage = Sidecar(tmp_path, "productpage", await cp_a.start(), "productpage-v1",
                              "productpage", "v1", "bookinfo-productpage")
        reviews = Sidecar(tmp_path, "reviews", await cp_b.start(), "reviews-v2", "reviews",
                          "v2", "bookinfo-reviews", env={"ISTIO_PROMETHEUS_ANNOTATIONS": json.dumps(
                              {"scrape": "true", "port": str(app_port), "path": "/metrics"})})
        await reviews.wait_ready(in_port)
        await productpage.wait_ready(out_port)
        # Readiness requests went through too: count from here, per label set.
        before_out = counts(productpage.get("prometheus", "/stats/prometheus"))
        before_in = counts(reviews.get("prometheus", "/stats/prometheus"))
        for _ in range(10):
            r = await fetch(out_port, "/reviews/0", host="reviews:9080")
            assert r.status == 200 and "x-envoy-peer-metadata" not in r.headers
        await asyncio.sleep(0.2)

        want_common = {
            "source_workload": "productpage-v1", "source_canonical_service": "productpage",
            "source_canonical_revision": "v1", "source_workload_namespace": "default",
            "source_app": "productpage", "source_version": "v1",
            "source_cluster": "Kubernetes",
            "destination_workload": "reviews-v2", "destination_workload_namespace": "default",
            "destination_app": "reviews", "destination_version": "v2",
            "destination_service": HOST, "destination_service_name": "reviews",
            "destination_service_namespace": "default",
            "destination_canonical_service": "reviews",
            "destination_canonical_revision": "v2", "destination_cluster": "Kubernetes",
            "request_protocol": "http", "response_code": "200", "grpc_response_status": "",
            "response_flags": "-",
        }
        for sidecar, reporter, policy, before in (
                (productpage, "source", "unknown", before_out),
                (reviews, "destination", "none", before_in)):
            text = sidecar.get("prometheus", "/stats/prometheus")
            now = counts(text)
            grown = [(dict(k), v - before.get(k, 0)) for k, v in now.items()
                     if v != before.get(k, 0)]
            assert len(grown) == 1, (grown, text)
            labels, value = grown[0]
            assert value == 10
            assert labels == {**want_common, "reporter": reporter,
                              "source_principal": "unknown", "destination_principal": "unknown",
                              "connection_security_policy": policy}
            assert "# TYPE istio_request_duration_milliseconds histogram" in text
            assert "envoy_cluster_upstream_rq_total" in text  # beside Envoy's own stats

        # The app answers on this loop: fetch without blocking it.
        merged = await asyncio.to_thread(reviews.get, "status", "/stats/prometheus")
        assert "istio_agent_scrapes_total 1" in merged
        assert 'reporter="destination"' in merged and "reviews_app_requests_total 7" in merged
        admin = reviews.get("admin", "/stats/prometheus")
        assert 'istio_requests_total{reporter="destination"' in admin
    finally:
        for s in (productpage, reviews):
            if s is not None:
                s.stop()
        await cp_a.close()
        await cp_b.close()
        app_server.close()
