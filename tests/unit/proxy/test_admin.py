"""The admin API (15000), the Prometheus port (15090) and the agent's health port (15021),
over real sockets on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import uvloop
from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from pistio.agent.health import HealthServer, proxy_readiness
from pistio.proxy.admin.clusters import ClusterStatus, HostStatus, Thresholds
from pistio.proxy.admin.logging_levels import LogLevels
from pistio.proxy.admin.prometheus_port import PrometheusServer
from pistio.proxy.admin.server import AdminServer
from pistio.proxy.admin.server_state import ServerState
from pistio.proxy.stats.snapshot import merge_dumps
from pistio.proxy.stats.store import StatsStore

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
TIMEOUT = 10


def run_bounded(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(fn(), TIMEOUT)

    uvloop.run(bounded())


async def fetch(
    port: int, method: str, path: str, body: bytes = b""
) -> tuple[int, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        raw = await reader.read()
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert int(headers["content-length"]) == len(payload)
    return status, headers, payload.decode()


def config_dump_json() -> str:
    dump = config_dump_pb2.ConfigDump()
    clusters = config_dump_shared_pb2.ClustersConfigDump(version_info="v1")
    dc = clusters.dynamic_active_clusters.add(version_info="v1")
    dc.cluster.Pack(cluster_pb2.Cluster(name=REVIEWS, type=cluster_pb2.Cluster.EDS))
    dc = clusters.dynamic_active_clusters.add(version_info="v1")
    dc.cluster.Pack(cluster_pb2.Cluster(name="BlackHoleCluster", type=cluster_pb2.Cluster.STATIC))
    dump.configs.add().Pack(clusters)
    listeners = config_dump_shared_pb2.ListenersConfigDump(version_info="v1")
    dl = listeners.dynamic_listeners.add(name="virtualOutbound")
    dl.active_state.listener.Pack(listener_pb2.Listener(name="virtualOutbound"))
    dump.configs.add().Pack(listeners)
    endpoints = config_dump_shared_pb2.EndpointsConfigDump()
    de = endpoints.dynamic_endpoint_configs.add()
    de.endpoint_config.Pack(endpoint_pb2.ClusterLoadAssignment(cluster_name=REVIEWS))
    dump.configs.add().Pack(endpoints)
    return json_format.MessageToJson(dump, preserving_proto_field_name=True)


def clusters() -> list[ClusterStatus]:
    return [
        ClusterStatus(
            REVIEWS,
            eds_service_name=REVIEWS,
            default_priority=Thresholds(4294967295, 4294967295, 4294967295, 4294967295),
            hosts=[
                HostStatus(
                    "10.244.0.12",
                    9080,
                    stats={"rq_total": 7, "rq_success": 6, "rq_error": 1, "cx_active": 1},
                    region="us-east",
                    zone="a",
                ),
                HostStatus("10.244.0.13", 9080, ("failed_outlier_check",), weight=2),
            ],
        )
    ]


class Harness:
    def __init__(self) -> None:
        self.initialized = True
        self.quits = 0
        self.drains: list[tuple[bool, bool]] = []
        self.workers = [StatsStore(), StatsStore()]
        for i, w in enumerate(self.workers):
            w.cluster(REVIEWS).upstream_rq_total += i + 1
            w.cluster(REVIEWS).upstream_rq_time.record(5)
        self.state = ServerState(
            lambda: self.initialized, node_id="sidecar~10.244.0.10~productpage.default~d"
        )
        self.admin = AdminServer(
            self.state,
            stats=self._stats,
            config_dump=config_dump_json,
            clusters=clusters,
            log_levels=LogLevels(root="pistio.test_admin"),
            on_quit=self._quit,
            on_drain_listeners=lambda inbound, graceful: self.drains.append((inbound, graceful)),
        )

    async def _stats(self):
        # The dumps travel between processes in production; here they are merged in-process.
        return merge_dumps([w.dump() for w in self.workers])

    def _quit(self) -> None:
        self.quits += 1

    async def __aenter__(self) -> int:
        _, port = await self.admin.start("127.0.0.1", 0)
        return port

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()


def test_help_and_unknown_paths() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            for path in ("/", "/help"):
                status, headers, body = await fetch(port, "GET", path)
                assert status == 200 and body.startswith("admin commands are:\n")
                assert "  /quitquitquit (POST): exit the server\n" in body
                assert headers["content-type"].startswith("text/plain")
            status, _, body = await fetch(port, "GET", "/no_such_thing")
            assert status == 404 and body.startswith("invalid path. admin commands are:")

    run_bounded(scenario)


def test_state_changing_endpoints_require_post() -> None:
    async def scenario() -> None:
        h = Harness()
        async with h as port:
            for path in (
                "/quitquitquit",
                "/drain_listeners",
                "/healthcheck/fail",
                "/healthcheck/ok",
                "/logging",
            ):
                status, _, body = await fetch(port, "GET", path)
                assert status == 405, path
                assert body == "Method GET not allowed, POST required."
            assert h.quits == 0 and h.drains == [] and not h.state.health_check_failed

    run_bounded(scenario)


def test_quitquitquit_answers_then_calls_shutdown() -> None:
    async def scenario() -> None:
        h = Harness()
        async with h as port:
            status, _, body = await fetch(port, "POST", "/quitquitquit")
            assert (status, body) == (200, "OK\n")
            await asyncio.sleep(0.05)
            assert h.quits == 1

    run_bounded(scenario)


def test_drain_listeners_passes_its_options() -> None:
    async def scenario() -> None:
        h = Harness()
        async with h as port:
            assert (await fetch(port, "POST", "/drain_listeners"))[0] == 200
            assert (await fetch(port, "POST", "/drain_listeners?inboundonly&graceful"))[0] == 200
            await asyncio.sleep(0.05)
            assert h.drains == [(False, False), (True, True)]

    run_bounded(scenario)


def test_ready_follows_initialization_and_health_check_state() -> None:
    async def scenario() -> None:
        h = Harness()
        h.initialized = False
        async with h as port:
            assert (await fetch(port, "GET", "/ready"))[::2] == (503, "INITIALIZING\n")
            h.initialized = True
            assert (await fetch(port, "GET", "/ready"))[::2] == (200, "LIVE\n")
            assert (await fetch(port, "POST", "/healthcheck/fail"))[::2] == (200, "OK\n")
            assert (await fetch(port, "GET", "/ready"))[::2] == (503, "DRAINING\n")
            info = json.loads((await fetch(port, "GET", "/server_info"))[2])
            assert info["state"] == "DRAINING"
            assert (await fetch(port, "POST", "/healthcheck/ok"))[0] == 200
            assert (await fetch(port, "GET", "/ready"))[::2] == (200, "LIVE\n")

    run_bounded(scenario)


def test_server_info_and_memory() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            status, headers, body = await fetch(port, "GET", "/server_info")
            assert status == 200 and headers["content-type"] == "application/json"
            info = json.loads(body)
            assert info["state"] == "LIVE"
            assert info["node"]["id"] == "sidecar~10.244.0.10~productpage.default~d"
            assert info["uptime_current_epoch"].endswith("s")
            assert info["command_line_options"]["concurrency"] == 1
            status, _, body = await fetch(port, "GET", "/memory")
            memory = json.loads(body)
            assert status == 200 and int(memory["allocated"]) > 0
            assert set(memory) >= {"allocated", "heap_size", "total_physical_bytes"}

    run_bounded(scenario)


def test_config_dump_and_its_parameters() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            status, headers, body = await fetch(port, "GET", "/config_dump")
            assert status == 200 and headers["content-type"] == "application/json"
            types = [c["@type"] for c in json.loads(body)["configs"]]
            assert types == [
                "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            ]
            body = (await fetch(port, "GET", "/config_dump?include_eds"))[2]
            assert len(json.loads(body)["configs"]) == 3

            body = (await fetch(port, "GET", "/config_dump?resource=dynamic_active_clusters"))[2]
            entries = json.loads(body)["configs"]
            assert [e["cluster"]["name"] for e in entries] == [REVIEWS, "BlackHoleCluster"]
            assert entries[0]["@type"] == (
                "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"
            )
            body = (
                await fetch(
                    port,
                    "GET",
                    "/config_dump?resource=dynamic_active_clusters&mask=cluster.name"
                    "&name_regex=reviews",
                )
            )[2]
            assert json.loads(body)["configs"] == [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                    "cluster": {"name": REVIEWS},
                }
            ]
            body = (await fetch(port, "GET", "/config_dump?mask=version_info"))[2]
            assert json.loads(body)["configs"][0] == {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": "v1",
            }
            status, _, _ = await fetch(port, "GET", "/config_dump?resource=no_such_field")
            assert status == 404

    run_bounded(scenario)


def test_clusters_text_and_json() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            status, _, body = await fetch(port, "GET", "/clusters")
            assert status == 200
            lines = body.splitlines()
            p = f"{REVIEWS}::10.244.0.12:9080::"
            assert lines[0] == f"{REVIEWS}::observability_name::{REVIEWS}"
            assert f"{REVIEWS}::default_priority::max_connections::4294967295" in lines
            assert f"{REVIEWS}::high_priority::max_retries::3" in lines
            assert f"{REVIEWS}::added_via_api::true" in lines
            assert f"{REVIEWS}::eds_service_name::{REVIEWS}" in lines
            host_lines = [ln[len(p) :] for ln in lines if ln.startswith(p)]
            assert host_lines == [
                "cx_active::1",
                "cx_connect_fail::0",
                "cx_total::0",
                "rq_active::0",
                "rq_error::1",
                "rq_success::6",
                "rq_timeout::0",
                "rq_total::7",
                "hostname::",
                "health_flags::healthy",
                "weight::1",
                "region::us-east",
                "zone::a",
                "sub_zone::",
                "canary::false",
                "priority::0",
                "success_rate::-1",
                "local_origin_success_rate::-1",
            ]
            assert f"{REVIEWS}::10.244.0.13:9080::health_flags::/failed_outlier_check" in lines
            assert f"{REVIEWS}::10.244.0.13:9080::weight::2" in lines

            status, headers, body = await fetch(port, "GET", "/clusters?format=json")
            doc = json.loads(body)
            status_ = doc["cluster_statuses"][0]
            assert status_["name"] == REVIEWS and status_["added_via_api"] is True
            host = status_["host_statuses"][1]
            assert host["address"]["socket_address"] == {
                "address": "10.244.0.13",
                "port_value": 9080,
            }
            assert host["health_status"]["failed_outlier_check"] is True
            assert host["health_status"]["eds_health_status"] == "HEALTHY"
            stats = {s["name"]: s for s in status_["host_statuses"][0]["stats"]}
            assert stats["rq_total"]["value"] == "7" and stats["cx_active"]["type"] == "GAUGE"

    run_bounded(scenario)


def test_stats_endpoints_merge_workers() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            status, _, body = await fetch(port, "GET", "/stats")
            assert status == 200
            assert f"cluster.{REVIEWS}.upstream_rq_total: 3\n" in body
            assert "server.live: 1\n" in body
            assert f"cluster.{REVIEWS}.upstream_rq_time: P0(nan,5)" in body

            body = (await fetch(port, "GET", "/stats?filter=upstream_rq_total&usedonly"))[2]
            assert body == f"cluster.{REVIEWS}.upstream_rq_total: 3\n"
            status, _, body = await fetch(port, "GET", "/stats?filter=(")
            assert status == 400 and "Invalid re2 regex" in body

            doc = json.loads((await fetch(port, "GET", "/stats?format=json&usedonly"))[2])
            assert {"name": f"cluster.{REVIEWS}.upstream_rq_total", "value": 3} in doc["stats"]

            for path in ("/stats/prometheus", "/stats?format=prometheus"):
                status, headers, body = await fetch(port, "GET", path)
                assert status == 200 and headers["content-type"].startswith("text/plain")
                assert "# TYPE envoy_cluster_upstream_rq_total counter\n" in body
                assert f'envoy_cluster_upstream_rq_total{{cluster_name="{REVIEWS}"}} 3\n' in body
                assert "envoy_server_live{} 1\n" in body
                assert (
                    f'envoy_cluster_upstream_rq_time_count{{cluster_name="{REVIEWS}"}} 2\n' in body
                )
            body = (await fetch(port, "GET", "/stats/prometheus?filter=server\\.live"))[2]
            assert body == "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n\n"

    run_bounded(scenario)


def test_logging_lists_and_changes_levels() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            status, _, body = await fetch(port, "POST", "/logging")
            assert status == 200 and body.startswith("active loggers:\n")
            assert "  http: warning\n" in body and "  router: warning\n" in body
            body = (await fetch(port, "POST", "/logging?level=debug"))[2]
            assert "  http: debug\n" in body and "  upstream: debug\n" in body
            body = (await fetch(port, "POST", "/logging?http=trace"))[2]
            assert "  http: trace\n" in body and "  router: debug\n" in body
            body = (await fetch(port, "POST", "/logging?paths=router:error,pool:off"))[2]
            assert "  router: error\n" in body and "  pool: off\n" in body
            status, _, body = await fetch(port, "POST", "/logging?level=loud")
            assert status == 404 and body.startswith("usage: /logging?<name>=<level>")
            status, _, body = await fetch(port, "POST", "/logging?nosuchlogger=info")
            assert status == 404 and "  http: trace\n" in body

    run_bounded(scenario)


def test_keep_alive_and_pipelined_requests() -> None:
    async def scenario() -> None:
        async with Harness() as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                first = await reader.readuntil(b"\r\n\r\n")
                assert first.startswith(b"HTTP/1.1 200 OK\r\n")
                length = int(first.split(b"content-length: ")[1].split(b"\r\n")[0])
                assert await reader.readexactly(length) == b"LIVE\n"
                second = await reader.readuntil(b"\r\n\r\n")
                assert second.startswith(b"HTTP/1.1 404 Not Found\r\n")
                length = int(second.split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                # The connection stays open for another request.
                writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                rest = await reader.read()
                assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"LIVE\n")
            finally:
                writer.close()

    run_bounded(scenario)


def test_prometheus_port_serves_only_the_exposition() -> None:
    async def scenario() -> None:
        h = Harness()
        prom = PrometheusServer(h.admin)
        _, port = await prom.start("127.0.0.1", 0)
        try:
            status, _, body = await fetch(port, "GET", "/stats/prometheus")
            assert status == 200
            assert f'envoy_cluster_upstream_rq_total{{cluster_name="{REVIEWS}"}} 3\n' in body
            assert (await fetch(port, "GET", "/stats"))[0] == 404
            assert (await fetch(port, "POST", "/quitquitquit"))[0] == 404
            assert h.quits == 0
        finally:
            await prom.close()

    run_bounded(scenario)


def test_health_port_ready_after_initial_config() -> None:
    async def scenario() -> None:
        received = False
        state = ServerState(lambda: received)
        health = HealthServer(proxy_readiness(lambda: received, state))
        _, port = await health.start("127.0.0.1", 0)
        try:
            status, _, body = await fetch(port, "GET", "/healthz/ready")
            assert status == 503 and "config not received from XDS server" in body
            received = True
            assert (await fetch(port, "GET", "/healthz/ready"))[:1] == (200,)
            state.health_check_failed = True
            status, _, body = await fetch(port, "GET", "/healthz/ready")
            assert status == 503 and body == "server is not live, current state is: DRAINING\n"
            assert (await fetch(port, "GET", "/other"))[0] == 404
        finally:
            await health.close()

    run_bounded(scenario)


def test_a_failing_provider_gives_500_and_the_server_keeps_serving() -> None:
    async def scenario() -> None:
        def broken() -> str:
            raise RuntimeError("no config yet")

        admin = AdminServer(ServerState(lambda: True), config_dump=broken)
        _, port = await admin.start("127.0.0.1", 0)
        try:
            status, _, body = await fetch(port, "GET", "/config_dump")
            assert status == 500 and "no config yet" in body
            assert (await fetch(port, "GET", "/ready"))[0] == 200
        finally:
            await admin.close()

    run_bounded(scenario)
