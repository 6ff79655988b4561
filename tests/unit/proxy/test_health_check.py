"""Active health checking (``Cluster.health_checks``): compilation and NACKs, the session
state machine, and real checks over loopback sockets through an in-process proxy."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
from collections.abc import Callable

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.type.v3 import range_pb2

from pistio.proxy.config.cluster_config import compile_cluster
from pistio.proxy.config.endpoints import EndpointConfig, compile_load_assignment
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.health_check import HealthCheckConfig, HttpHealthCheckConfig
from pistio.proxy.stats.families import ClusterStats, HealthCheckStats
from pistio.proxy.upstream.health_check import HealthChecker, Transition, _http_request, _Result
from pistio.proxy.upstream.host import Host
from pistio.proxy.upstream.load_balancer import LoadBalancer
from tests.unit.proxy.http_fixtures import (
    Env,
    InProcessProxy,
    KeepAliveClient,
    eds_cluster,
    fetch,
    http_listener,
    load_assignment,
    proxy_env,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

HealthCheck = health_check_pb2.HealthCheck
Cluster = cluster_pb2.Cluster


def td(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def http_hc(path: str = "/healthz", interval: float = 0.05, timeout: float = 1.0,
            unhealthy: int = 2, healthy: int = 2, **fields) -> HealthCheck:
    hc = HealthCheck(http_health_check=HealthCheck.HttpHealthCheck(path=path), **fields)
    hc.timeout.FromTimedelta(td(timeout))
    hc.interval.FromTimedelta(td(interval))
    hc.no_traffic_interval.FromTimedelta(td(interval))
    hc.unhealthy_threshold.value = unhealthy
    hc.healthy_threshold.value = healthy
    return hc


def tcp_hc(send: bytes = b"", receive: tuple[bytes, ...] = (), interval: float = 0.05,
           timeout: float = 0.5, unhealthy: int = 1) -> HealthCheck:
    tcp = HealthCheck.TcpHealthCheck()
    if send:
        tcp.send.text = send.hex()
    for r in receive:
        tcp.receive.add().binary = r
    hc = HealthCheck(tcp_health_check=tcp)
    hc.timeout.FromTimedelta(td(timeout))
    hc.interval.FromTimedelta(td(interval))
    hc.no_traffic_interval.FromTimedelta(td(interval))
    hc.unhealthy_threshold.value = unhealthy
    hc.healthy_threshold.value = 1
    return hc


# --- compilation ------------------------------------------------------------------------------------


async def test_compiles_envoy_defaults_and_intervals():
    hc = http_hc(interval=2, timeout=1)
    hc.ClearField("no_traffic_interval")
    hc.unhealthy_interval.FromTimedelta(td(7))
    hc.http_health_check.expected_statuses.add(start=200, end=300)
    hc.http_health_check.request_headers_to_add.add(
        header=base_pb2.HeaderValue(key="X-Probe", value="1"))
    c = eds_cluster("svc", health_checks=[hc])
    cfg = compile_cluster(c).health_check
    assert cfg is not None and cfg.http is not None
    assert (cfg.interval, cfg.timeout, cfg.no_traffic_interval) == (2.0, 1.0, 60.0)
    assert cfg.no_traffic_healthy_interval == 60.0
    assert (cfg.unhealthy_interval, cfg.unhealthy_edge_interval) == (7.0, 7.0)
    assert cfg.healthy_edge_interval == 2.0 and cfg.reuse_connection
    assert cfg.http.expected(250) and not cfg.http.expected(300)
    assert cfg.http.request_headers == (("x-probe", "1", "append"),)
    request = _http_request(cfg, "svc").decode()
    assert request.startswith("GET /healthz HTTP/1.1\r\nhost: svc\r\nuser-agent: Envoy/HC\r\n")
    assert "x-probe: 1\r\n" in request
    assert compile_cluster(eds_cluster("plain")).health_check is None


def nack(c: Cluster) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_cluster(c)
    return err.value.problems


async def test_unsupported_health_checks_are_nacked_precisely():
    grpc = http_hc()
    grpc.ClearField("http_health_check")
    grpc.grpc_health_check.service_name = "x"
    assert nack(eds_cluster("a", health_checks=[grpc])) == [
        "Cluster a: health_checks[0].grpc_health_check: field not supported by pistio"]
    h2 = http_hc()
    h2.http_health_check.codec_client_type = 1
    h2.event_log_path = "/tmp/hc.log"
    h2.http_health_check.receive.add().text = "4f4b"
    assert sorted(nack(eds_cluster("b", health_checks=[h2]))) == [
        "Cluster b: health_checks[0].event_log_path: field not supported by pistio",
        "Cluster b: health_checks[0].http_health_check.codec_client_type: only HTTP1 health "
        "checks are supported",
        "Cluster b: health_checks[0].http_health_check.receive: field not supported by pistio",
    ]
    missing = HealthCheck(tcp_health_check=HealthCheck.TcpHealthCheck())
    assert sorted(nack(eds_cluster("c", health_checks=[missing]))) == [
        "Cluster c: health_checks[0].healthy_threshold: required",
        "Cluster c: health_checks[0].interval: required, and must be greater than 0",
        "Cluster c: health_checks[0].timeout: required, and must be greater than 0",
        "Cluster c: health_checks[0].unhealthy_threshold: required",
    ]
    assert nack(eds_cluster("d", health_checks=[http_hc(), tcp_hc()])) == [
        "Cluster d: health_checks: only one health check per cluster is supported"]
    bad_range = http_hc()
    bad_range.http_health_check.expected_statuses.add(start=300, end=200)
    assert nack(eds_cluster("e", health_checks=[bad_range])) == [
        "Cluster e: health_checks[0].http_health_check.expected_statuses[0]: must be a range "
        "[start, end) within [100, 600)"]
    passthrough = Cluster(name="f", type=Cluster.ORIGINAL_DST, lb_policy=Cluster.CLUSTER_PROVIDED,
                          health_checks=[tcp_hc()])
    assert nack(passthrough) == [
        "Cluster f: health_checks: ORIGINAL_DST clusters cannot be health checked"]


# --- the session state machine (Envoy's handleSuccess / setUnhealthy) --------------------------------


class _Loop:
    """Enough of an event loop for sessions that are driven by hand."""

    def __init__(self) -> None:
        self.timers: list[float] = []

    def call_later(self, delay: float, callback: Callable, *args) -> _Timer:
        self.timers.append(delay)
        return _Timer()

    def call_soon(self, callback: Callable, *args) -> _Timer:
        return _Timer()


class _Timer:
    def cancel(self) -> None:
        pass


def _checker(config: HealthCheckConfig, mark_pending: bool = False,
             traffic: bool = True) -> tuple[HealthChecker, list, Host]:
    results: list = []
    cluster_stats = ClusterStats("svc")
    cluster_stats.upstream_rq_total = 1 if traffic else 0
    checker = HealthChecker(_Loop(), "svc", config, HealthCheckStats("svc"), cluster_stats,  # type: ignore[arg-type]
                            lambda h, t, p: results.append((t, p)), mark_pending=mark_pending,
                            rng=random.Random(1))
    host = Host(EndpointConfig("127.0.0.1", 1))
    checker.set_hosts([host])
    return checker, results, host


def _config(**kw) -> HealthCheckConfig:
    base = dict(timeout=1.0, interval=10.0, unhealthy_threshold=3, healthy_threshold=2,
                no_traffic_interval=60.0, no_traffic_healthy_interval=60.0,
                unhealthy_interval=20.0, unhealthy_edge_interval=5.0, healthy_edge_interval=2.0,
                http=HttpHealthCheckConfig("/h", retriable_statuses=((429, 430),)))
    base.update(kw)
    return HealthCheckConfig(**base)  # type: ignore[arg-type]


async def test_first_success_is_immediate_then_thresholds_apply():
    checker, results, host = _checker(_config())
    session = checker.sessions[host]
    assert host.hc_failed and checker.awaiting_first == {host}
    session._success(False)
    assert not host.hc_failed and results[-1] == (Transition.CHANGED, True)
    assert checker.awaiting_first == set() and checker.stats.healthy == 1
    # Network failures and retriable statuses count to unhealthy_threshold (3)...
    session._failure(_Result.NETWORK)
    session._failure(_Result.RETRIABLE)
    assert not host.hc_failed and results[-1][0] is Transition.CHANGE_PENDING
    session._failure(_Result.NETWORK)
    assert host.hc_failed and host.hc_timeout and results[-1][0] is Transition.CHANGED
    assert checker.stats.healthy == 0 and checker.stats.network_failure == 2
    # ... back up after healthy_threshold (2) successes in a row.
    session._success(False)
    assert host.hc_failed and results[-1][0] is Transition.CHANGE_PENDING
    session._success(False)
    assert not host.hc_failed and not host.hc_timeout
    # An unexpected status fails at once.
    session._failure(_Result.FAILURE)
    assert host.hc_failed and not host.hc_timeout
    assert checker.stats.failure == 4 and checker.stats.success == 3


async def test_degraded_and_pending_flags():
    checker, results, host = _checker(_config(), mark_pending=True)
    session = checker.sessions[host]
    assert host.hc_pending and host.health_flags == ("failed_active_hc", "pending_active_hc")
    session._failure(_Result.NETWORK)  # the first check failing still ends "pending"
    assert not host.hc_pending and results[-1][0] is Transition.CHANGED
    session._success(True)
    session._success(True)
    assert host.hc_degraded and not host.hc_failed
    assert host.degraded and not host.healthy and checker.stats.degraded == 1
    session._success(False)
    assert not host.hc_degraded and host.healthy and results[-1][0] is Transition.CHANGED


async def test_next_check_intervals_follow_envoy():
    checker, _, _ = _checker(_config())
    assert checker.next_interval(True, Transition.UNCHANGED) == 10.0
    assert checker.next_interval(True, Transition.CHANGE_PENDING) == 2.0
    assert checker.next_interval(False, Transition.CHANGED) == 20.0
    assert checker.next_interval(False, Transition.CHANGE_PENDING) == 5.0
    quiet, _, _ = _checker(_config(no_traffic_healthy_interval=90.0), traffic=False)
    assert quiet.next_interval(True, Transition.UNCHANGED) == 90.0
    assert quiet.next_interval(True, Transition.CHANGE_PENDING) == 60.0
    assert quiet.next_interval(False, Transition.CHANGED) == 60.0
    jittery, _, _ = _checker(_config(interval_jitter=1.0, interval_jitter_percent=50))
    values = {jittery.next_interval(True, Transition.UNCHANGED) for _ in range(200)}
    assert min(values) >= 10.0 and max(values) < 16.0 and len(values) > 50


# --- real checks over loopback -------------------------------------------------------------------------


class HcServer:
    """An HTTP/1.1 upstream that answers ``/healthz`` with ``health`` (plus ``x-envoy-degraded``
    when ``degraded``) and anything else with 200 and its name; it records the checks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health = 200
        self.degraded = False
        self.checks: list[dict[str, str]] = []
        self.served = 0
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> HcServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                if path == "/healthz":
                    self.checks.append(headers)
                    status, extra = self.health, b""
                    if self.degraded:
                        extra = b"x-envoy-degraded: true\r\n"
                    body = b"hc"
                else:
                    self.served += 1
                    status = int(headers.get("x-status", "200"))
                    extra, body = b"", self.name.encode()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s"
                             % (status, len(body), extra, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.writers):
            w.close()


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate`` holds (outcomes, never durations, are asserted)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def _start(env: Env, *names: str) -> list[HcServer]:
    env.proxy = InProcessProxy()
    servers = [await HcServer(n).start() for n in names]
    env.servers = servers
    return servers


def _flags(env: Env, cluster: str) -> dict[int, list[str]]:
    return {entry[1]: entry[3] for entry in env.proxy.clusters.host_status_dump()[cluster]}


async def _apply(env: Env, cluster: Cluster, ports: list[int]) -> None:
    await env.proxy.apply(
        [http_listener("gw", env.port)],
        [route_config("http", [route("/", cluster=cluster.name)])],
        [cluster], [load_assignment(cluster.name, ports)])


async def test_failing_host_is_excluded_from_the_first_request_on(env: Env):
    good, bad = await _start(env, "good", "bad")
    bad.health = 503
    hc = http_hc(unhealthy=3, healthy=3)
    hc.http_health_check.host = "probe.example"
    hc.http_health_check.request_headers_to_add.add(
        header=base_pb2.HeaderValue(key="x-probe", value="yes"))
    await _apply(env, eds_cluster("svc", health_checks=[hc]), [good.port, bad.port])
    # Requests sent at once wait for the first round of checks: none reaches the bad host.
    responses = await asyncio.gather(*(fetch(env.port, "/") for _ in range(20)))
    assert {r.body for r in responses} == {b"good"} and bad.served == 0
    flags = _flags(env, "svc")
    assert flags == {good.port: [], bad.port: ["failed_active_hc"]}
    check = good.checks[0]
    assert (check["host"], check["user-agent"], check["x-probe"]) == (
        "probe.example", "Envoy/HC", "yes")
    assert env.proxy.counter("cluster.svc.health_check.attempt") >= 2
    snap = env.proxy.store.snapshot()
    assert snap.gauges["cluster.svc.health_check.healthy"] == 1
    assert snap.counters["cluster.svc.health_check.failure"] >= 1


async def test_host_goes_unhealthy_and_comes_back(env: Env):
    a, b = await _start(env, "a", "b")
    await _apply(env, eds_cluster("svc", health_checks=[http_hc(healthy=2)]), [a.port, b.port])
    await until(lambda: _flags(env, "svc") == {a.port: [], b.port: []})
    a.health = 500  # not an expected status: unhealthy on the next check
    await until(lambda: _flags(env, "svc")[a.port] == ["failed_active_hc"])
    assert {(await fetch(env.port, "/")).body for _ in range(6)} == {b"b"}
    a.health = 200
    successes = env.proxy.counter("cluster.svc.health_check.success")
    await until(lambda: _flags(env, "svc")[a.port] == [])
    assert env.proxy.counter("cluster.svc.health_check.success") >= successes + 2
    a.degraded = True
    await until(lambda: _flags(env, "svc")[a.port] == ["degraded_active_hc"])
    # Degraded hosts form the load balancer's second tier (what healthy ones cannot take).
    state = env.proxy.clusters.get("svc").lb.priority_states[0]
    assert [h.port for h in state.degraded] == [a.port]
    assert [h.port for h in state.healthy] == [b.port]
    # Checks reuse one kept-alive connection per host.
    assert a.connections == 1 and len(a.checks) > 4


async def test_tcp_connect_and_payload_checks(env: Env):
    (up,) = await _start(env, "up")
    closed = _closed_port()
    await _apply(env, eds_cluster("tcp", health_checks=[tcp_hc(unhealthy=2)]),
                 [up.port, closed])
    await until(lambda: _flags(env, "tcp") == {
        up.port: [], closed: ["failed_active_hc", "active_hc_timeout"]})
    assert env.proxy.counter("cluster.tcp.health_check.network_failure") >= 1

    pongs: list[bytes] = []

    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                line = await reader.readexactly(4)
                pongs.append(line)
                writer.write(b"PO" if line == b"PING" else b"??")
                await asyncio.sleep(0.01)  # the expected bytes arrive in two pieces
                writer.write(b"NG" if line == b"PING" else b"??")
        writer.close()

    server = await asyncio.start_server(pong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await _apply(env, eds_cluster("tcp", health_checks=[
            tcp_hc(send=b"PING", receive=(b"PO", b"NG"), unhealthy=1)]), [port, up.port])
        # up answers HTTP garbage to PING until the timeout: a network failure.
        await until(lambda: _flags(env, "tcp") == {
            port: [], up.port: ["failed_active_hc", "active_hc_timeout"]})
        assert pongs[0] == b"PING"
    finally:
        server.close()


def _closed_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


async def test_new_hosts_pending_and_removed_hosts_kept_while_healthy(env: Env):
    a, b, c = await _start(env, "a", "b", "c")
    cluster = eds_cluster("svc", health_checks=[http_hc(healthy=1)])
    cluster.common_lb_config.ignore_new_hosts_until_first_hc = True
    await _apply(env, cluster, [a.port])
    await until(lambda: _flags(env, "svc") == {a.port: []})
    c.health = 503  # never passes: stays pending and out of balancing
    await _apply(env, cluster, [a.port, b.port, c.port])
    await until(lambda: _flags(env, "svc") == {a.port: [], b.port: [],
                                               c.port: ["failed_active_hc"]})
    runtime = env.proxy.clusters.get("svc")
    assert not any(h.hc_pending for h in runtime.lb.hosts)
    # EDS drops a (still passing): kept, flagged, until it fails a check.
    await _apply(env, cluster, [b.port, c.port])
    assert _flags(env, "svc")[a.port] == ["pending_dynamic_removal"]
    assert {h.port for h in runtime.lb.hosts} == {a.port, b.port, c.port}
    a.health = 503
    await until(lambda: a.port not in _flags(env, "svc"))
    # ... unless the cluster says ignore_health_on_host_removal.
    cluster.ignore_health_on_host_removal = True
    await _apply(env, cluster, [b.port, c.port])
    runtime = env.proxy.clusters.get("svc")
    await until(lambda: _flags(env, "svc") == {b.port: [], c.port: ["failed_active_hc"]})
    await _apply(env, cluster, [c.port])
    assert set(_flags(env, "svc")) == {c.port}


async def test_pending_hosts_are_excluded_until_checked():
    cfg = compile_cluster(eds_cluster("x"))
    lb = LoadBalancer(cfg.lb, compile_load_assignment(load_assignment("x", [1, 2])))
    first, second = lb.hosts
    second.hc_failed = second.hc_pending = True
    lb.refresh()
    # The pending host counts nowhere: the priority is fully healthy, no panic.
    assert lb.priority_states[0].hosts == (first,) and not lb.priority_states[0].panic
    assert {lb.choose_host() for _ in range(10)} == {first}
    second.hc_pending = False
    lb.refresh()
    assert lb.priority_states[0].hosts == (first, second)


async def test_successful_check_uneject_and_connection_close(env: Env):
    (a,) = await _start(env, "a")
    cluster = eds_cluster("svc", health_checks=[http_hc(interval=0.3, healthy=1)],
                          close_connections_on_host_health_failure=True)
    cluster.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection(
        consecutive_5xx={"value": 1}, max_ejection_percent={"value": 100}))
    cluster.outlier_detection.base_ejection_time.FromTimedelta(td(300))
    await _apply(env, cluster, [a.port])
    await until(lambda: _flags(env, "svc") == {a.port: []})
    assert (await fetch(env.port, "/", headers={"x-status": "500"})).status == 500
    assert _flags(env, "svc")[a.port] == ["failed_outlier_check"]
    await until(lambda: _flags(env, "svc")[a.port] == [])  # the next check un-ejects
    # A keep-alive connection in the pool is closed when the host fails its checks.
    client = KeepAliveClient(env.port)
    try:
        assert (await client.request("/")).status == 200
        pooled = a.connections
        a.health = 503
        await until(lambda: _flags(env, "svc")[a.port] == ["failed_active_hc"])
        assert (await client.request("/")).status == 200  # panic: still the only host
        assert a.connections == pooled + 1  # a new connection (the old one was closed)
    finally:
        client.close()


async def test_retriable_statuses_compile():
    hc = http_hc()
    hc.http_health_check.retriable_statuses.append(range_pb2.Int64Range(start=429, end=430))
    cfg = compile_cluster(eds_cluster("r", health_checks=[hc])).health_check
    assert cfg.http.retriable(429) and not cfg.http.retriable(430)
