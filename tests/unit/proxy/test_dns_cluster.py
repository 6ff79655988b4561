"""``STRICT_DNS`` and ``LOGICAL_DNS`` clusters resolved at run time: address selection by
``dns_lookup_family``, refresh and failure handling with a scripted resolver, and real
resolution of ``localhost`` through the system resolver with traffic over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
from collections.abc import Callable

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2

from pistio.proxy.config.cluster_config import compile_cluster
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.stats.families import ClusterStats
from pistio.proxy.upstream import dns as dns_module
from pistio.proxy.upstream.dns import DnsResolver, select_addresses
from tests.unit.proxy.http_fixtures import (
    Env,
    InProcessProxy,
    fetch,
    http_listener,
    proxy_env,
    route,
    route_config,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

Cluster = cluster_pb2.Cluster
V4, V6 = socket.AF_INET, socket.AF_INET6


def dns_cluster(name: str, endpoints: list[tuple[str, int]], kind: int = Cluster.STRICT_DNS,
                family: int = Cluster.V4_ONLY, refresh: float | None = None,
                **fields) -> Cluster:
    c = Cluster(name=name, type=kind, dns_lookup_family=family, **fields)
    c.connect_timeout.FromTimedelta(datetime.timedelta(seconds=1))
    if refresh is not None:
        c.dns_refresh_rate.FromTimedelta(datetime.timedelta(seconds=refresh))
    c.load_assignment.cluster_name = name
    group = c.load_assignment.endpoints.add()
    for address, port in endpoints:
        sock = group.lb_endpoints.add().endpoint.address.socket_address
        sock.address, sock.port_value = address, port
    return c


async def test_lookup_family_selects_addresses():
    found = [(V6, "::1"), (V4, "127.0.0.1"), (V4, "127.0.0.2"), (V4, "127.0.0.1")]
    assert select_addresses(Cluster.V4_ONLY, found) == ("127.0.0.1", "127.0.0.2")
    assert select_addresses(Cluster.V6_ONLY, found) == ("::1",)
    assert select_addresses(Cluster.AUTO, found) == ("::1",)
    assert select_addresses(Cluster.AUTO, found[1:]) == ("127.0.0.1", "127.0.0.2")
    assert select_addresses(Cluster.V4_PREFERRED, found) == ("127.0.0.1", "127.0.0.2")
    assert select_addresses(Cluster.V4_PREFERRED, found[:1]) == ("::1",)
    assert select_addresses(Cluster.ALL, found) == ("127.0.0.1", "127.0.0.2", "::1")


async def test_dns_fields_compile_and_bad_values_are_nacked():
    c = dns_cluster("d", [("example.org", 80)], refresh=0.5, respect_dns_ttl=True)
    c.dns_failure_refresh_rate.base_interval.FromTimedelta(datetime.timedelta(seconds=1))
    c.dns_jitter.FromTimedelta(datetime.timedelta(seconds=2))
    cfg = compile_cluster(c)
    assert (cfg.dns_refresh_rate, cfg.dns_failure_refresh_base, cfg.dns_failure_refresh_max,
            cfg.dns_jitter, cfg.respect_dns_ttl) == (0.5, 1.0, 10.0, 2.0, True)
    c.dns_refresh_rate.FromTimedelta(datetime.timedelta(microseconds=500))
    c.dns_resolvers.add().socket_address.address = "8.8.8.8"
    with pytest.raises(ConfigError) as err:
        compile_cluster(c)
    assert sorted(err.value.problems) == [
        "Cluster d: dns_refresh_rate: must be greater than 1ms",
        "Cluster d: dns_resolvers: field not supported by pistio",
    ]


class ScriptedResolver:
    """Answers from a table that tests change; a name mapped to an exception raises it."""

    def __init__(self, table: dict[str, object]) -> None:
        self.table = table
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, name: str, family: int) -> list[tuple[int, str]]:
        self.calls.append(name)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.table[name]
        if isinstance(answer, Exception):
            raise answer
        return [(V6 if ":" in a else V4, a) for a in answer]  # type: ignore[union-attr]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_strict_dns_hosts_refresh_and_keep_last_good_on_failure():
    c = dns_cluster("s", [("a.test", 80), ("10.0.0.9", 81), ("b.test", 82)], refresh=0.01)
    cfg = compile_cluster(c)
    resolver = ScriptedResolver({"a.test": ["10.0.0.1", "10.0.0.2"], "b.test": ["10.0.0.3"]})
    seen: list = []
    stats = ClusterStats("s")
    dns = DnsResolver(asyncio.get_running_loop(), cfg, cfg.load_assignment, seen.append,
                      stats, resolve=resolver)
    # Before anything resolves only the IP literal is a host.
    assert [(e.address, e.port) for e in dns.assignment().endpoints] == [("10.0.0.9", 81)]
    dns.start()
    try:
        await until(lambda: dns.resolved_once and stats.update_success >= 2)
        endpoints = dns.assignment().endpoints
        assert [(e.address, e.port, e.hostname) for e in endpoints] == [
            ("10.0.0.1", 80, "a.test"), ("10.0.0.2", 80, "a.test"), ("10.0.0.9", 81, ""),
            ("10.0.0.3", 82, "b.test")]
        resolver.table["a.test"] = OSError("resolver down")
        failures = stats.update_failure
        await until(lambda: stats.update_failure > failures + 1)
        assert [e.address for e in dns.assignment().endpoints][:2] == ["10.0.0.1", "10.0.0.2"]
        resolver.table["a.test"] = ["10.0.0.7"]
        await until(lambda: dns.assignment().endpoints[0].address == "10.0.0.7")
        assert stats.update_no_rebuild > 0  # b.test answered the same again
    finally:
        dns.close()


async def test_logical_dns_keeps_one_host_whose_address_changes(env: Env):
    from pistio.proxy.runtime.cluster_manager import ClusterRuntime
    from pistio.proxy.runtime.snapshot import ActiveCluster
    from pistio.proxy.stats.store import StatsStore

    cfg = compile_cluster(dns_cluster("l", [("svc.test", 80)], kind=Cluster.LOGICAL_DNS,
                                      refresh=0.01))
    store = StatsStore()
    runtime = ClusterRuntime(ActiveCluster(cfg, cfg.load_assignment),
                             loop=asyncio.get_running_loop(), store=store)
    resolver = ScriptedResolver({"svc.test": ["10.1.0.1", "10.1.0.2"]})
    runtime.dns.resolve = resolver  # type: ignore[union-attr]
    try:
        assert runtime.initializing and runtime.lb.hosts == ()
        await until(lambda: not runtime.initializing)
        (host,) = runtime.lb.hosts
        assert (host.address, host.port, host.config.hostname) == ("10.1.0.1", 80, "svc.test")
        resolver.table["svc.test"] = ["10.1.0.5", "10.1.0.1"]
        await until(lambda: host.address == "10.1.0.5")
        assert runtime.lb.hosts == (host,) and host.key == "10.1.0.5:80"
        assert runtime.lb.choose_host() is host
    finally:
        runtime.close()


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


async def _serve(env: Env, cluster: Cluster) -> None:
    await env.proxy.apply([http_listener("gw", env.port)],  # type: ignore[union-attr]
                          [route_config("http", [route("/", cluster=cluster.name)])], [cluster])


async def test_strict_and_logical_dns_through_the_proxy_with_localhost(env: Env):
    env.proxy = InProcessProxy()
    env.servers = await upstreams("up")
    port = env.servers[0].port
    await _serve(env, dns_cluster("strict", [("localhost", port)], refresh=0.05))
    r = await fetch(env.port, "/")  # waits for the first resolution, then goes upstream
    assert (r.status, r.json()["server"]) == (200, "up")
    dump = env.proxy.clusters.host_status_dump()
    assert [(h[0], h[1], h[2]) for h in dump["strict"]] == [("127.0.0.1", port, "localhost")]
    assert env.proxy.counter("cluster.strict.update_success") >= 1
    assert env.proxy.counter("cluster.strict.upstream_cx_none_healthy") == 0

    await _serve(env, dns_cluster("logical", [("localhost", port)], kind=Cluster.LOGICAL_DNS))
    r = await fetch(env.port, "/")
    assert (r.status, r.json()["server"]) == (200, "up")
    assert [h[0] for h in env.proxy.clusters.host_status_dump()["logical"]] == ["127.0.0.1"]


async def test_auto_host_rewrite_sends_the_dns_name(env: Env):
    """A route's auto_host_rewrite replaces the host header with the chosen host's DNS name
    (with append_x_forwarded_host, the original goes to x-forwarded-host)."""
    from envoy.config.route.v3 import route_components_pb2 as rc

    env.proxy = InProcessProxy()
    env.servers = await upstreams("up")
    port = env.servers[0].port
    cluster = dns_cluster("strict", [("localhost", port)])
    action = rc.RouteAction(cluster="strict", append_x_forwarded_host=True)
    action.auto_host_rewrite.value = True
    await env.proxy.apply(
        [http_listener("gw", env.port)],
        [route_config("http", [route(match=rc.RouteMatch(prefix="/"), route=action)])],
        [cluster])
    r = await fetch(env.port, "/", host="shop.example")
    assert r.status == 200
    got = env.servers[0].received[-1].headers
    assert (got["host"], got["x-forwarded-host"]) == ("localhost", "shop.example")


async def test_all_families_make_a_host_per_address(env: Env):
    if not _has_ipv6_localhost():
        pytest.skip("localhost has no IPv6 loopback address here")
    env.proxy = InProcessProxy()
    server = await asyncio.start_server(_hello, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server6 = await asyncio.start_server(_hello, "::1", port)
    try:
        await _serve(env, dns_cluster("both", [("localhost", port)], family=Cluster.ALL))
        assert (await fetch(env.port, "/")).status == 200
        hosts = [h[0] for h in env.proxy.clusters.host_status_dump()["both"]]
        assert hosts == ["127.0.0.1", "::1"]
        seen = set()
        for _ in range(10):
            r = await fetch(env.port, "/")
            seen.add(r.body)
        assert seen == {b"127.0.0.1", b"::1"}  # round robin over both addresses
    finally:
        server.close()
        server6.close()


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            local = writer.get_extra_info("sockname")[0].encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(local), local))
            await writer.drain()
    writer.close()


def _has_ipv6_localhost() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", None, socket.AF_INET6)
        with contextlib.closing(socket.socket(socket.AF_INET6)) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return any(i[4][0] == "::1" for i in infos)


async def test_unresolvable_name_fails_requests_without_hanging(env: Env):
    env.proxy = InProcessProxy()
    await _serve(env, dns_cluster("nowhere", [("does-not-exist.invalid", 80)], refresh=30))
    r = await fetch(env.port, "/")
    assert (r.status, r.body) == (503, b"no healthy upstream")
    assert env.proxy.counter("cluster.nowhere.update_failure") == 1
    assert env.proxy.clusters.host_status_dump()["nowhere"] == []


async def test_requests_wait_for_the_first_resolution(env: Env, monkeypatch):
    env.proxy = InProcessProxy()
    env.servers = await upstreams("up")
    resolver = ScriptedResolver({"slow.test": ["127.0.0.1"]})
    resolver.gate = asyncio.Event()
    monkeypatch.setattr(dns_module, "system_resolver", lambda loop: resolver)
    await _serve(env, dns_cluster("slow", [("slow.test", env.servers[0].port)]))
    pending = asyncio.ensure_future(fetch(env.port, "/"))
    await until(lambda: bool(resolver.calls))
    await asyncio.sleep(0.05)
    assert not pending.done()  # held while the cluster initializes, not failed
    resolver.gate.set()
    r = await pending
    assert (r.status, r.json()["server"]) == (200, "up")


async def test_every_resolved_address_is_a_host(env: Env, monkeypatch):
    env.proxy = InProcessProxy()
    resolver = ScriptedResolver({"multi.test": ["127.0.0.1", "127.0.0.2"]})
    monkeypatch.setattr(dns_module, "system_resolver", lambda loop: resolver)
    first = await asyncio.start_server(_hello, "127.0.0.1", 0)
    port = first.sockets[0].getsockname()[1]
    second = await asyncio.start_server(_hello, "127.0.0.2", port)
    try:
        await _serve(env, dns_cluster("multi", [("multi.test", port)]))
        seen = {(await fetch(env.port, "/")).body for _ in range(10)}
        assert seen == {b"127.0.0.1", b"127.0.0.2"}
        assert [h[0] for h in env.proxy.clusters.host_status_dump()["multi"]] == [
            "127.0.0.1", "127.0.0.2"]
    finally:
        first.close()
        second.close()


async def test_tcp_proxy_waits_for_the_first_resolution(monkeypatch):
    from pistio.proxy.config.listener_config import TcpProxyConfig
    from pistio.proxy.network.tcp_proxy import TcpProxyFilter, TcpUpstreams
    from pistio.proxy.runtime.cluster_manager import ClusterManager
    from pistio.proxy.runtime.resource_compiler import CompiledCluster
    from pistio.proxy.runtime.snapshot import build_snapshot
    from pistio.proxy.stats.store import StatsStore
    from tests.unit.proxy.test_tcp_proxy import proxy_listener, upstream_server

    resolver = ScriptedResolver({"db.test": ["127.0.0.1"]})
    resolver.gate = asyncio.Event()
    monkeypatch.setattr(dns_module, "system_resolver", lambda loop: resolver)
    store = StatsStore()
    manager = ClusterManager(loop=asyncio.get_running_loop(), store=store)
    async with upstream_server() as up:
        cluster = compile_cluster(dns_cluster("db", [("db.test", up)]))
        manager.apply(build_snapshot(1, {"db": CompiledCluster(cluster)}, {}, {}, {}))
        proxy = TcpProxyFilter(TcpProxyConfig("db", "db"),
                               TcpUpstreams.from_cluster_manager(manager), store)
        try:
            async with proxy_listener(proxy) as (port, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"ping")
                await until(lambda: bool(resolver.calls))
                resolver.gate.set()
                assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
                writer.close()
        finally:
            manager.close()
    assert store.snapshot().counters["cluster.db.upstream_cx_none_healthy"] == 0
