"""``pistio proxy router`` end to end: a real proxy process (agent + uvloop workers) gets its
config over a real ADS stream and routes real HTTP/1.1 traffic on 127.0.0.1 to upstream test
servers.

The control plane is the xDS transport (``DiscoveryServer``) serving Envoy resources crafted
here with ``StaticGenerator``: a gateway-style listener bound to a loopback port. ``pistio
discovery`` itself does not emit a loopback-reachable HTTP listener yet (gateway listeners are
not generated; sidecar listeners sit behind ``virtualOutbound`` and need the iptables capture
of the local mesh runtime), so it cannot drive these tests; its routes and clusters are
exercised against the same data path in tests/unit/proxy/test_router_generated.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import circuit_breaker_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from pistio.xds import types as T
from pistio.xds.push_request import PushRequest
from pistio.xds.testing import StaticGenerator, XdsHarness
from tests.unit.proxy.http_fixtures import (
    KeepAliveClient,
    UpstreamServer,
    eds_cluster,
    fetch,
    free_port,
    http_listener,
    load_assignment,
    pack,
    route,
    route_config,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

NODE_ID = "router~127.0.0.1~gateway.default~default.svc.cluster.local"


def ms(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=n // 1000, nanos=(n % 1000) * 1_000_000)


def percent(n: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=n)


class ControlPlane:
    """The four xDS tables, served on one ADS server."""

    def __init__(self) -> None:
        self.harness = XdsHarness()
        self.tables = {t: StaticGenerator() for t in (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)}
        self.server = None

    async def start(self) -> int:
        self.server = await self.harness.server(dict(self.tables))
        return self.server.port

    def set(self, type_url: str, *messages) -> None:  # type: ignore[no-untyped-def]
        for m in messages:
            self.tables[type_url].set(m)

    async def push(self) -> None:
        await self.server.push_now(PushRequest())  # type: ignore[union-attr]

    async def close(self) -> None:
        await self.harness.close()


class ProxyProcess:
    def __init__(self, base: Path, xds_port: int, concurrency: int,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.base = base
        self.ready = base / "proxy-ready.json"
        self.log = base / "proxy.log"
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "proxy", "router",
             "--discovery-address", f"127.0.0.1:{xds_port}", "--node-id", NODE_ID,
             "--concurrency", str(concurrency), "--admin-port", "0", "--prometheus-port", "0",
             "--health-port", "0", "--ready-file", str(self.ready), "--log-level", "warning",
             *extra_args],
            stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        self.ports: dict[str, int] = {}

    async def wait_ready(self, listener_port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            self._check(deadline)
            await asyncio.sleep(0.05)
        self.ports = json.loads(self.ready.read_text())
        while True:
            self._check(deadline)
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                r = await fetch(listener_port, "/__ready__", timeout=1)
                if r.status in (200, 404):
                    return
            await asyncio.sleep(0.05)

    def _check(self, deadline: float) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("proxy did not become ready:\n" + self.log.read_text())

    def admin(self, path: str, method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['admin']}{path}",
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path, servers: list[UpstreamServer], configure, concurrency: int,
               extra_args: tuple[str, ...] = ()
               ) -> AsyncIterator[tuple[ControlPlane, ProxyProcess, int]]:
    """Upstreams, control plane and a proxy; everything stopped at the end, even on failure."""
    cp = ControlPlane()
    proxy = None
    port = free_port()
    try:
        configure(cp, port, {s.name: s for s in servers})
        xds_port = await cp.start()
        proxy = ProxyProcess(tmp_path, xds_port, concurrency, extra_args)
        await proxy.wait_ready(port)
        yield cp, proxy, port
    finally:
        if proxy is not None:
            proxy.stop()
        await cp.close()
        for s in servers:
            await s.close()


def _clusters(cp: ControlPlane, servers: dict[str, UpstreamServer]) -> None:
    """One EDS cluster per server, named after it."""
    for name, s in servers.items():
        cp.set(T.CLUSTER, eds_cluster(name))
        cp.set(T.ENDPOINT, load_assignment(name, [s.port]))


def configure_routing(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
    _clusters(cp, servers)
    jason = rc.RouteMatch(prefix="/reviews", headers=[rc.HeaderMatcher(
        name="end-user", string_match=string_pb2.StringMatcher(exact="jason"))])
    split = rc.RouteAction(weighted_clusters=rc.WeightedCluster(clusters=[
        rc.WeightedCluster.ClusterWeight(name="v1", weight={"value": 30}),
        rc.WeightedCluster.ClusterWeight(name="v2", weight={"value": 70})]))
    direct = rc.DirectResponseAction(status=200)
    direct.body.inline_string = "ok"
    cp.set(T.LISTENER, http_listener("gateway", port))
    cp.set(T.ROUTE, route_config("http", [
        route(match=jason, cluster="v2"),
        route("/reviews", cluster="v1"),
        route(match=rc.RouteMatch(prefix="/split"), route=split),
        route("/old", redirect=rc.RedirectAction(path_redirect="/new")),
        route("/health", direct_response=direct),
        route(match=rc.RouteMatch(prefix="/api/"), route=rc.RouteAction(
            cluster="v1", prefix_rewrite="/v1/")),
        route(match=rc.RouteMatch(prefix="/mirror"), route=rc.RouteAction(
            cluster="v1", request_mirror_policies=[
                rc.RouteAction.RequestMirrorPolicy(cluster="shadow")])),
    ]))


async def test_routing_split_redirect_direct_rewrite_mirror(tmp_path: Path) -> None:
    servers = await upstreams("v1", "v2", "shadow")
    async with mesh(tmp_path, servers, configure_routing, concurrency=2) as (cp, proxy, port):
        r = await fetch(port, "/reviews/0")
        assert (r.status, r.json()["server"]) == (200, "v1")
        r = await fetch(port, "/reviews/0", headers={"end-user": "jason"})
        assert (r.status, r.json()["server"]) == (200, "v2")
        assert r.headers["server"] == "istio-envoy"

        counts: collections.Counter[str] = collections.Counter()
        clients = [KeepAliveClient(port) for _ in range(4)]
        try:
            async def run(client: KeepAliveClient) -> None:
                for _ in range(250):
                    counts[(await client.request("/split")).json()["server"]] += 1
            await asyncio.gather(*(run(c) for c in clients))
        finally:
            for c in clients:
                c.close()
        assert sum(counts.values()) == 1000
        assert 230 <= counts["v1"] <= 370, counts  # 30 % of 1000, about ±5 sigma

        r = await fetch(port, "/old/x?y=1", host="shop.example")
        assert (r.status, r.headers["location"]) == (301, "http://shop.example/new?y=1")
        r = await fetch(port, "/health")
        assert (r.status, r.body) == (200, b"ok")
        r = await fetch(port, "/api/items")
        assert r.json()["path"] == "/v1/items"
        assert r.json()["headers"]["x-envoy-original-path"] == "/api/items"
        r = await fetch(port, "/mirror", host="reviews:9080")
        assert r.json()["server"] == "v1"
        shadow = servers[2]
        for _ in range(100):
            if shadow.received:
                break
            await asyncio.sleep(0.02)
        assert shadow.received[0].headers["host"] == "reviews-shadow:9080"

        status, text = proxy.admin("/stats/prometheus")
        assert status == 200
        assert 'envoy_cluster_upstream_rq{response_code="200",cluster_name="v2"}' in text
        status, text = proxy.admin("/stats?filter=cluster.v1.upstream_rq_total")
        # Merged over both workers: the split's v1 share plus /reviews, /api and /mirror.
        assert int(text.split(":")[1]) == counts["v1"] + 3
        status, text = proxy.admin("/clusters")
        assert status == 200 and f"v2::127.0.0.1:{servers[1].port}::health_flags::healthy" in text
        status, text = proxy.admin("/config_dump")
        assert status == 200 and '"name": "gateway"' in text


def configure_resilience(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]
                         ) -> None:
    _clusters(cp, servers)
    cp.set(T.CLUSTER, eds_cluster("pair"))
    cp.set(T.ENDPOINT, load_assignment("pair", [servers["a"].port, servers["b"].port]))
    limits = circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections={"value": 1}, max_pending_requests={"value": 1})])
    cp.set(T.CLUSTER, eds_cluster("limited", circuit_breakers=limits))
    cp.set(T.ENDPOINT, load_assignment("limited", [servers["a"].port]))
    retry = rc.RetryPolicy(retry_on="5xx,connect-failure", num_retries={"value": 2},
                           retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
                               name="envoy.retry_host_predicates.previous_hosts")])
    per_try = rc.RetryPolicy(retry_on="5xx", num_retries={"value": 1}, per_try_timeout=ms(200))
    abort = fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(http_status=503,
                                                           percentage=percent(100)))
    delay = fault_pb2.HTTPFault(delay=common_fault_pb2.FaultDelay(fixed_delay=ms(300),
                                                                   percentage=percent(100)))
    fault = "envoy.filters.http.fault"
    cp.set(T.LISTENER, http_listener("gateway", port))
    cp.set(T.ROUTE, route_config("http", [
        route(match=rc.RouteMatch(prefix="/retry"), route=rc.RouteAction(
            cluster="pair", retry_policy=retry)),
        route(match=rc.RouteMatch(prefix="/per-try"), route=rc.RouteAction(
            cluster="a", timeout=ms(1000), retry_policy=per_try)),
        route(match=rc.RouteMatch(prefix="/timeout"), route=rc.RouteAction(
            cluster="a", timeout=ms(300))),
        route("/abort", cluster="a", typed_per_filter_config={fault: pack(abort)}),
        route("/delay", cluster="a", typed_per_filter_config={fault: pack(delay)}),
        route("/limited", cluster="limited"),
    ]))


async def test_retries_timeouts_faults_circuit_breaker(tmp_path: Path) -> None:
    servers = await upstreams("a", "b")
    async with mesh(tmp_path, servers, configure_resilience, concurrency=1) as (_, proxy, port):
        for _ in range(5):
            r = await fetch(port, "/retry", headers={"x-fail-on": "a"})
            assert (r.status, r.json()["server"]) == (200, "b")

        start = time.monotonic()
        r = await fetch(port, "/per-try", headers={"x-delay-ms": "700"})
        assert (r.status, r.body) == (504, b"upstream request timeout")
        assert 0.35 < time.monotonic() - start < 0.9  # two tries of 200 ms
        start = time.monotonic()
        r = await fetch(port, "/timeout", headers={"x-delay-ms": "1000"})
        assert (r.status, r.body) == (504, b"upstream request timeout")
        assert time.monotonic() - start < 0.8

        r = await fetch(port, "/abort")
        assert (r.status, r.body) == (503, b"fault filter abort")
        start = time.monotonic()
        r = await fetch(port, "/delay")
        assert r.status == 200 and time.monotonic() - start >= 0.29

        results = await asyncio.gather(*(
            fetch(port, "/limited", headers={"x-delay-ms": "400"}) for _ in range(5)))
        statuses = sorted(r.status for r in results)
        assert statuses == [200, 200, 503, 503, 503], statuses
        assert all(r.headers.get("x-envoy-overloaded") == "true"
                   for r in results if r.status == 503)

        _, text = proxy.admin("/stats?filter=upstream_rq_pending_overflow|per_try_timeout")
        assert "cluster.limited.upstream_rq_pending_overflow: 3" in text
        assert "cluster.a.upstream_rq_per_try_timeout: 2" in text


def configure_swap(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
    _clusters(cp, servers)
    cp.set(T.LISTENER, http_listener("gateway", port))
    cp.set(T.ROUTE, route_config("http", [route("/", cluster="v1")]))


async def test_config_change_mid_traffic_and_quit(tmp_path: Path) -> None:
    servers = await upstreams("v1", "v2")
    async with mesh(tmp_path, servers, configure_swap, concurrency=2) as (cp, proxy, port):
        seen: collections.Counter[str] = collections.Counter()
        failures: list[str] = []

        async def load(count: int) -> None:
            client = KeepAliveClient(port)
            try:
                for _ in range(count):
                    r = await client.request("/")
                    if r.status != 200:
                        failures.append(f"{r.status} {r.body[:80]!r}")
                    else:
                        seen[r.json()["server"]] += 1
                    await asyncio.sleep(0.002)
            finally:
                client.close()

        async def swap() -> None:
            await asyncio.sleep(0.2)
            cp.set(T.ROUTE, route_config("http", [route("/", cluster="v2")]))
            await cp.push()

        async with asyncio.timeout(20):
            await asyncio.gather(*(load(150) for _ in range(4)), swap())
            # New connections after the swap see v2 (keep-alive ones too, stream by stream).
            for _ in range(50):
                if (await fetch(port, "/")).json()["server"] == "v2":
                    break
                await asyncio.sleep(0.05)
        assert failures == []
        assert sum(seen.values()) == 600 and seen["v1"] > 0 and seen["v2"] > 0, seen
        assert (await fetch(port, "/")).json()["server"] == "v2"

        status, _ = proxy.admin("/quitquitquit", method="POST")
        assert status == 200
        proxy.proc.wait(10)
        assert proxy.proc.returncode == 0


INBOUND_PORT = free_port()


def configure_drain(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
    """An outbound-style listener on ``port`` and an INBOUND one on ``INBOUND_PORT``."""
    _clusters(cp, servers)
    cp.set(T.LISTENER, http_listener("gateway", port))
    inbound = http_listener("inbound", INBOUND_PORT)
    inbound.traffic_direction = base_pb2.INBOUND
    cp.set(T.LISTENER, inbound)
    cp.set(T.ROUTE, route_config("http", [route("/", cluster="app")]))


async def refused(port: int, attempts: int = 20) -> bool:
    """Every one of ``attempts`` new connections is refused (with two workers sharing the
    port, one still listening would take about half of them)."""
    for _ in range(attempts):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            continue
        writer.close()
        return False
    return True


async def test_drain_listeners_inbound_gracefully_then_all(tmp_path: Path) -> None:
    """Envoy's /drain_listeners in both processes of a --concurrency 2 proxy: graceful
    inbound-only drains its connections (connection: close) for --drain-time-s, then stops
    the inbound listener; a plain drain stops the rest at once; LDS does not revive them."""
    servers = await upstreams("app")
    async with mesh(tmp_path, servers, configure_drain, concurrency=2,
                    extra_args=("--drain-time-s", "1")) as (cp, proxy, port):
        for _ in range(50):  # both processes serve the inbound port
            if (await fetch(INBOUND_PORT, "/")).status == 200:
                break
            await asyncio.sleep(0.1)
        inbound, gateway = KeepAliveClient(INBOUND_PORT), KeepAliveClient(port)
        try:
            assert (await inbound.request("/")).headers.get("connection") != "close"
            assert (await gateway.request("/")).status == 200
            assert proxy.admin("/drain_listeners?inboundonly&graceful", "POST")[0] == 200
            await asyncio.sleep(0.3)
            r = await inbound.request("/")  # served, and the connection is drained
            assert (r.status, r.headers.get("connection")) == (200, "close")
            r = await fetch(INBOUND_PORT, "/")  # new connections still served while draining
            assert (r.status, r.headers.get("connection")) == (200, "close")
            assert (await gateway.request("/")).headers.get("connection") != "close"
            for _ in range(50):
                if await refused(INBOUND_PORT):
                    break
                await asyncio.sleep(0.1)
            assert await refused(INBOUND_PORT)
            assert (await gateway.request("/")).status == 200  # outbound untouched

            assert proxy.admin("/drain_listeners", "POST")[0] == 200
            for _ in range(50):
                if await refused(port):
                    break
                await asyncio.sleep(0.1)
            assert await refused(port)
            assert (await gateway.request("/")).status == 200  # accepted connections go on

            # A listener update does not start stopped listeners again (Envoy's
            # stopListeners).
            changed = http_listener("gateway", port, stat_prefix="changed")
            cp.set(T.LISTENER, changed)
            await cp.push()
            await asyncio.sleep(1.0)
            assert await refused(port) and await refused(INBOUND_PORT)
        finally:
            inbound.close()
            gateway.close()
