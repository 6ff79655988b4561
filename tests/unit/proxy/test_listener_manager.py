"""The listener manager's L4 path on what our control plane generates for productpage's
sidecar (Bookinfo plus a TCP service and a service whose port protocol is not declared):
``virtualOutbound`` hands connections to the listener of their original destination, runs its
listener filters, and serves HTTP chains with the HTTP connection manager and ``tcp_proxy``
chains with the TCP proxy — to a cluster, to the original destination (PassthroughCluster) or
nowhere (BlackHoleCluster).

iptables is played by ``ListenerManager.original_destination``: the test maps each client's
source port to the destination the client "dialled" before the REDIRECT. The real REDIRECT is
tests/integration/test_sidecar_capture.py (root)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from types import MappingProxyType

import pytest
import pytest_asyncio

from pistio.config.protocol import Protocol
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Service, ServicePort
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.pilot.networking.listener_filters import socket_address
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from tests.unit.pilot.bookinfo_fixture import (
    DESTINATION_RULES_YAML,
    REVIEWS_VIRTUAL_SERVICE_YAML,
    bookinfo_endpoints,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)
from tests.unit.proxy.http_fixtures import (
    InProcessProxy,
    UpstreamServer,
    free_port,
    load_assignment,
    read_response,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

MYSQL_VIP, LEGACY_VIP = "10.96.0.20", "10.96.0.21"
REVIEWS_V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
MYSQL = "outbound|3306||mysql.default.svc.cluster.local"
LEGACY = "outbound|7000||legacy.default.svc.cluster.local"


def _service(name: str, vip: str, port: ServicePort) -> Service:
    return Service(hostname=f"{name}.default.svc.cluster.local", namespace="default", name=name,
                   ports=(port,), addresses=(vip,), labels={"app": name},
                   selector={"app": name}, service_accounts=(), origin=f"Service default/{name}")


def generated_push() -> PushContext:
    services = bookinfo_services() + [
        _service("mysql", MYSQL_VIP, ServicePort("tcp", 3306, Protocol.TCP, 3306)),
        # No protocol in the port name: Istio sniffs HTTP vs TCP on it.
        _service("legacy", LEGACY_VIP, ServicePort("legacy", 7000, Protocol.UNSUPPORTED, 7000)),
    ]
    configs = parse_configs(DESTINATION_RULES_YAML + "---\n" + REVIEWS_VIRTUAL_SERVICE_YAML)
    return PushContext(configs, services, bookinfo_endpoints())


class DualServer:
    """A loopback upstream for TCP and sniffed ports: answers an HTTP/1.1 request with 200
    ``http:<name>``, and echoes any other bytes prefixed with ``tcp:<name>:``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> DualServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.read(65536)
            if first.startswith((b"GET ", b"POST ")):
                body = f"http:{self.name}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            else:
                writer.write(f"tcp:{self.name}:".encode() + first)
                while data := await reader.read(65536):
                    writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Capture:
    """The fake iptables: source port of a client → the destination it dialled."""

    def __init__(self) -> None:
        self.dialled: dict[int, tuple[str, int]] = {}

    def original_destination(self, sock: socket.socket) -> tuple[str, int]:
        return self.dialled.get(sock.getpeername()[1]) or sock.getsockname()[:2]


class Sidecar:
    def __init__(self, proxy: InProcessProxy, outbound_port: int, capture: Capture,
                 servers: dict[str, UpstreamServer | DualServer]) -> None:
        self.proxy = proxy
        self.outbound_port = outbound_port
        self.capture = capture
        self.servers = servers

    async def dial(self, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect as an application of the pod would, to ``ip:port``, through the capture."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.capture.dialled[sock.getsockname()[1]] = (ip, port)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.outbound_port))
        return await asyncio.open_connection(sock=sock)


@pytest_asyncio.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    proxy = InProcessProxy()
    servers: dict[str, UpstreamServer | DualServer] = {}
    try:
        (v1,) = await upstreams("reviews-v1")
        servers["reviews-v1"] = v1
        servers["mysql"] = await DualServer("mysql").start()
        servers["legacy"] = await DualServer("legacy").start()
        servers["elsewhere"] = await DualServer("elsewhere").start()
        endpoints = {REVIEWS_V1: v1.port, MYSQL: servers["mysql"].port,
                     LEGACY: servers["legacy"].port}

        push = generated_push()
        node = sidecar_proxy()
        listeners = build_sidecar_listeners(push, node)
        outbound_port = free_port()
        for listener in listeners:
            if listener.name == "virtualOutbound":
                listener.address.CopyFrom(socket_address("127.0.0.1", outbound_port))
        # virtualInbound binds 15006, a fixed port: not this test's subject.
        listeners = [x for x in listeners if x.name != "virtualInbound"]
        clusters = build_clusters(push, node)
        assignments = [load_assignment(c.eds_cluster_config.service_name or c.name,
                                       [endpoints[c.name]] if c.name in endpoints else [])
                       for c in clusters if c.type == c.EDS]
        routes = [build_sidecar_outbound_route_config(push, node, name)
                  for name in ("9080", "legacy.default.svc.cluster.local:7000")]
        capture = Capture()
        proxy.listeners.original_destination = capture.original_destination
        await proxy.apply(listeners, routes, clusters, assignments)
        yield Sidecar(proxy, outbound_port, capture, servers)
    finally:
        await proxy.close()
        for server in servers.values():
            await server.close()


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
    writer.write(f"GET /reviews/0 HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
    response = await read_response(reader)
    writer.close()
    return response


async def test_hands_off_to_the_wildcard_http_listener(sidecar: Sidecar) -> None:
    response = await _http_get(*await sidecar.dial("10.96.0.12", 9080), host="reviews:9080")
    assert response.status == 200
    assert response.json()["server"] == "reviews-v1"
    assert "x-envoy-upstream-service-time" in response.headers
    assert sidecar.proxy.counter("listener.0.0.0.0_9080.downstream_cx_total") == 1
    assert sidecar.proxy.counter("http_inspector.http11_found") == 1
    assert sidecar.proxy.counter(f"cluster.{REVIEWS_V1}.upstream_rq_total") == 1
    # The connection belongs to the listener it was handed to, not to virtualOutbound.
    outbound = f"listener.127.0.0.1_{sidecar.outbound_port}.downstream_cx_total"
    assert sidecar.proxy.counter(outbound) == 0


async def test_hands_off_to_the_tcp_listener_of_a_cluster_ip(sidecar: Sidecar) -> None:
    reader, writer = await sidecar.dial(MYSQL_VIP, 3306)
    writer.write(b"\x00hello")
    assert await reader.readexactly(len(b"tcp:mysql:\x00hello")) == b"tcp:mysql:\x00hello"
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    assert sidecar.proxy.counter(f"listener.{MYSQL_VIP}_3306.downstream_cx_total") == 1
    assert sidecar.proxy.counter(f"cluster.{MYSQL}.upstream_cx_total") == 1


async def test_unknown_destination_passes_through_to_it(sidecar: Sidecar) -> None:
    elsewhere = sidecar.servers["elsewhere"]
    reader, writer = await sidecar.dial("127.0.0.1", elsewhere.port)
    writer.write(b"ping")
    assert await reader.readexactly(len(b"tcp:elsewhere:ping")) == b"tcp:elsewhere:ping"
    writer.close()
    assert sidecar.proxy.counter("cluster.PassthroughCluster.upstream_cx_total") == 1


async def test_connection_to_15001_itself_is_blackholed(sidecar: Sidecar) -> None:
    reader, writer = await sidecar.dial("10.244.0.10", 15001)
    writer.write(b"loop")
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    assert sidecar.proxy.counter("cluster.BlackHoleCluster.upstream_cx_none_healthy") == 1


async def test_undeclared_protocol_port_sniffs_http_and_tcp(sidecar: Sidecar) -> None:
    response = await _http_get(*await sidecar.dial(LEGACY_VIP, 7000), host="legacy:7000")
    assert (response.status, response.body) == (200, b"http:legacy")
    assert "x-envoy-upstream-service-time" in response.headers

    reader, writer = await sidecar.dial(LEGACY_VIP, 7000)
    writer.write(b"\x16binary protocol\r\n\r\n")
    expected = b"tcp:legacy:\x16binary protocol\r\n\r\n"
    assert await reader.readexactly(len(expected)) == expected
    writer.close()
    counters = sidecar.proxy.store.snapshot().counters
    assert counters[f"cluster.{LEGACY}.upstream_rq_total"] == 1
    assert counters[f"tcp.{LEGACY}.downstream_cx_total"] == 1
    assert counters["http_inspector.http11_found"] == 1
    assert counters["http_inspector.http_not_found"] == 1


async def test_removed_listener_closes_its_tcp_sessions(sidecar: Sidecar) -> None:
    reader, writer = await sidecar.dial(MYSQL_VIP, 3306)
    writer.write(b"x")
    assert await reader.readexactly(len(b"tcp:mysql:x")) == b"tcp:mysql:x"
    manager = sidecar.proxy.listeners
    snapshot = manager.snapshot
    # The same snapshot minus the TCP listener.
    listeners = {k: v for k, v in snapshot.listeners.items() if k != f"{MYSQL_VIP}_3306"}
    by_address = {(v.address, v.port): v for v in listeners.values()}
    manager.apply(replace(snapshot, listeners=MappingProxyType(listeners),
                          listeners_by_address=MappingProxyType(by_address)))
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    assert f"{MYSQL_VIP}_3306" not in manager.runtimes
    assert sidecar.proxy.counter(f"cluster.{MYSQL}.upstream_cx_destroy") == 1


async def test_client_closing_before_sending_counts_as_listener_filter_remote_close(
    sidecar: Sidecar,
) -> None:
    reader, writer = await sidecar.dial(LEGACY_VIP, 7000)  # a listener that peeks
    writer.close()
    listener = f"listener.{LEGACY_VIP}_7000"
    async with asyncio.timeout(5):
        while not sidecar.proxy.counter(f"{listener}.downstream_listener_filter_remote_close"):
            await asyncio.sleep(0.01)
    assert sidecar.proxy.counter(f"cluster.{LEGACY}.upstream_cx_total") == 0
