"""A real ``pistio proxy router`` process (agent + two uvloop workers), fed over ADS, with the
upstream features each worker runs on its own: active health checks, STRICT_DNS and
LOGICAL_DNS clusters resolved through the system resolver (``localhost``), and the gRPC-Web
filter in front of a real gRPC server (grpcio) reached over HTTP/2. The admin's ``/clusters``
shows the workers' hosts and health flags."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.xds import types as T
from tests.integration.test_proxy_http import mesh
from tests.unit.proxy.h2_fixtures import GrpcEcho, h2_cluster
from tests.unit.proxy.http_fixtures import (
    eds_cluster,
    fetch,
    http_listener,
    load_assignment,
    pack,
    route,
    route_config,
    upstreams,
)
from tests.unit.proxy.test_dns_cluster import dns_cluster
from tests.unit.proxy.test_grpc_web import frame, grpc_web_call, parse_frames, trailers_of
from tests.unit.proxy.test_health_check import HcServer, http_hc

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

Cluster = cluster_pb2.Cluster
GRPC_WEB = hcm_pb2.HttpFilter(name="envoy.filters.http.grpc_web",
                              typed_config=pack(grpc_web_pb2.GrpcWeb()))


async def test_health_checks_dns_clusters_and_grpc_web(tmp_path: Path) -> None:
    good, bad = await HcServer("good").start(), await HcServer("bad").start()
    bad.health = 503
    (plain,) = await upstreams("plain")
    echo = GrpcEcho()

    def configure(cp, port, servers) -> None:  # type: ignore[no-untyped-def]
        hc = http_hc(interval=0.1, unhealthy=2, healthy=2)
        cp.set(T.CLUSTER, eds_cluster("hc", health_checks=[hc]),
               dns_cluster("strict", [("localhost", plain.port)], refresh=0.5),
               dns_cluster("logical", [("localhost", plain.port)], kind=Cluster.LOGICAL_DNS),
               h2_cluster("grpc"))
        cp.set(T.ENDPOINT, load_assignment("hc", [good.port, bad.port]),
               load_assignment("grpc", [echo.port]))
        cp.set(T.LISTENER, http_listener("gateway", port, first_filters=[GRPC_WEB]))
        cp.set(T.ROUTE, route_config("http", [
            route("/hc", cluster="hc"), route("/strict", cluster="strict"),
            route("/logical", cluster="logical"), route("/test.Echo/", cluster="grpc")]))

    try:
        async with mesh(tmp_path, [plain], configure, concurrency=2) as (cp, proxy, port):
            # Health checks: the failing host never serves, from the first request on.
            bodies = await asyncio.gather(*(fetch(port, "/hc") for _ in range(20)))
            assert {r.body for r in bodies} == {b"good"} and bad.served == 0
            # DNS clusters: localhost resolved by each worker.
            for path in ("/strict", "/logical"):
                r = await fetch(port, path)
                assert (r.status, r.json()["server"]) == (200, "plain"), path
            # gRPC-Web to a real gRPC server over HTTP/2.
            r = await grpc_web_call(port, "/test.Echo/Unary", frame(b"web"),
                                    "application/grpc-web+proto")
            frames = parse_frames(r.body)
            assert (r.status, frames[0]) == (200, (0, b"echo:web"))
            assert trailers_of(frames)["grpc-status"] == "0"

            async def admin(path: str) -> str:
                # Off the loop: the test's upstreams must keep answering health checks.
                loop = asyncio.get_running_loop()
                status, text = await loop.run_in_executor(None, proxy.admin, path)
                assert status == 200, (path, text)
                return text

            async def clusters_show(*lines: str) -> str:
                """Poll /clusters until every line shows (each worker checks on its own, and
                a flag any worker still sets is shown)."""
                async with asyncio.timeout(20):
                    while True:
                        text = await admin("/clusters")
                        if all(line in text for line in lines):
                            return text
                        await asyncio.sleep(0.05)

            await clusters_show(
                f"hc::127.0.0.1:{bad.port}::health_flags::/failed_active_hc\n",
                f"hc::127.0.0.1:{good.port}::health_flags::healthy\n",
                f"strict::127.0.0.1:{plain.port}::hostname::localhost\n",
                f"logical::127.0.0.1:{plain.port}::health_flags::healthy\n",
            )
            text = await admin("/stats?filter=cluster.hc.health_check")
            stats = dict(line.split(": ") for line in text.splitlines())
            assert int(stats["cluster.hc.health_check.attempt"]) >= 2
            assert int(stats["cluster.hc.health_check.failure"]) >= 1
            assert stats["cluster.hc.health_check.healthy"] == "1"
            text = await admin("/stats/prometheus")
            assert 'envoy_cluster_health_check_healthy{cluster_name="hc"} 1' in text

            # The good host starts failing: the workers take it out; with every host failing
            # the priority panics and traffic goes on (Envoy's panic threshold).
            good.health = 500
            await clusters_show(f"hc::127.0.0.1:{good.port}::health_flags::/failed_active_hc")
            assert (await fetch(port, "/hc")).status == 200
    finally:
        await good.close()
        await bad.close()
        echo.close()
