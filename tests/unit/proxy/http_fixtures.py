"""Test pieces for the proxy's data path: upstream HTTP servers on loopback, a small HTTP/1.1
client, Envoy config builders, and an in-process proxy (listener manager on this loop).

Upstream servers answer every request with a small JSON body naming themselves and echoing
what they received; request headers steer them:

- ``x-status: N`` answers with status N;
- ``x-delay-ms: N`` waits N ms before answering;
- ``x-fail-on: <name>,...`` answers 503 when this server's name is listed;
- ``x-close-on: <name>,...`` closes the connection without answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, message

from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.resource_compiler import ResourceCompiler
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder, build_snapshot
from pistio.proxy.server.listener_manager import ListenerManager
from pistio.proxy.stats.store import StatsStore
from pistio.xds import types as T
from tests import ports


def pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


# --- upstream servers ----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class UpstreamServer:
    name: str
    port: int = 0
    received: list[Received] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> UpstreamServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.writers):
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_connection(reader, writer)

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                self.received.append(Received(method, path, headers, body))
                if "x-delay-ms" in headers:
                    await asyncio.sleep(int(headers["x-delay-ms"]) / 1000)
                if self.name in headers.get("x-close-on", "").split(","):
                    writer.transport.abort()
                    return
                status = int(headers.get("x-status", "200"))
                if self.name in headers.get("x-fail-on", "").split(","):
                    status = 503
                payload = json.dumps({"server": self.name, "path": path,
                                      "headers": headers, "body": body.decode("latin-1")})
                data = payload.encode()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\ncontent-type: "
                             b"application/json\r\nx-upstream: %s\r\n\r\n%s"
                             % (status, len(data), self.name.encode(), data))
                await writer.drain()
        finally:
            self.writers.discard(writer)
            writer.close()


async def upstreams(*names: str) -> list[UpstreamServer]:
    return [await UpstreamServer(n).start() for n in names]


# --- a small HTTP/1.1 client -----------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(
    port: int,
    path: str = "/",
    host: str = "example.com",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection; the response (read to its framing)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
            for k, v in (headers or {}).items():
                lines.append(f"{k}: {v}")
            if body is not None:
                lines.append(f"content-length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
            return await read_response(reader, method == "HEAD")
        finally:
            writer.close()


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            key = k.strip().lower()
            headers[key] = headers[key] + "," + v.strip() if key in headers else v.strip()
    data = b""
    if head_only:
        pass
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            data += chunk[:-2]
    else:
        data = await reader.read()
    return Response(status, headers, data)


# --- Envoy config builders -------------------------------------------------------------------------


def http_listener(
    name: str,
    port: int,
    route_config_name: str = "http",
    stat_prefix: str = "ingress_http",
    server_name: str = "istio-envoy",
    address: str = "127.0.0.1",
    access_log_path: str | None = None,
    stream_idle_timeout: float | None = None,
    upgrades: Sequence[str] = ("websocket",),
    first_filters: Sequence[hcm_pb2.HttpFilter] = (),
    hcm_fields: dict[str, Any] | None = None,
) -> listener_pb2.Listener:
    """A gateway-style listener bound to ``address:port``: ``first_filters``, fault, CORS,
    router, routes by RDS; ``hcm_fields`` set on the HttpConnectionManager."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        server_name=server_name,
        rds=hcm_pb2.Rds(
            route_config_name=route_config_name,
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
        ),
        http_filters=[
            *first_filters,
            hcm_pb2.HttpFilter(name="envoy.filters.http.fault",
                               typed_config=pack(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name="envoy.filters.http.cors", typed_config=pack(cors_pb2.Cors())),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                               typed_config=pack(router_pb2.Router())),
        ],
    )
    for kind in upgrades:
        hcm.upgrade_configs.add(upgrade_type=kind)
    if hcm_fields:
        hcm.MergeFrom(hcm_pb2.HttpConnectionManager(**hcm_fields))
    if stream_idle_timeout is not None:
        hcm.stream_idle_timeout.FromTimedelta(_td(stream_idle_timeout))
    if access_log_path is not None:
        from envoy.config.accesslog.v3 import accesslog_pb2
        from envoy.extensions.access_loggers.file.v3 import file_pb2

        hcm.access_log.append(accesslog_pb2.AccessLog(
            name="envoy.access_loggers.file",
            typed_config=pack(file_pb2.FileAccessLog(path=access_log_path))))
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=address, port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))
        ])],
    )


def _td(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)


def route(prefix: str = "/", cluster: str = "", **fields: Any) -> rc.Route:
    """A route from keyword fields: ``match``/``route``/``redirect``/``direct_response``
    messages may be given whole; ``cluster`` makes a plain RouteAction."""
    r = rc.Route(**fields)
    if not r.HasField("match"):
        r.match.prefix = prefix
    if cluster:
        r.route.cluster = cluster
    return r


def route_config(name: str, routes: Sequence[rc.Route], domains: Iterable[str] = ("*",),
                 **vhost: Any) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[
        rc.VirtualHost(name="vh", domains=list(domains), routes=list(routes), **vhost)])


def eds_cluster(name: str, connect_timeout: float = 1.0, **fields: Any) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, **fields)
    c.connect_timeout.FromTimedelta(_td(connect_timeout))
    c.eds_cluster_config.service_name = name
    c.eds_cluster_config.eds_config.ads.SetInParent()
    return c


def load_assignment(name: str, ports: Iterable[int], ip: str = "127.0.0.1"
                    ) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    for port in ports:
        group.lb_endpoints.add().endpoint.CopyFrom(endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address=ip, port_value=port))))
    return cla


def header_value(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


# --- an in-process proxy ---------------------------------------------------------------------------


class InProcessProxy:
    """The worker's data path on the test's loop: compile resources, publish snapshots."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.holder = SnapshotHolder()
        self.store = StatsStore()
        self.clusters = ClusterManager(loop=loop, store=self.store)
        self.sweeper = DeadlineSweeper(loop, 0.05)
        self.listeners = ListenerManager(loop, self.holder, self.clusters, self.store,
                                         self.sweeper)
        self.holder.subscribe(self.clusters.apply)
        self.holder.subscribe(self.listeners.apply)
        self.compiler = ResourceCompiler()
        self.version = 0

    async def apply(
        self,
        listeners: Sequence[listener_pb2.Listener] = (),
        routes: Sequence[route_pb2.RouteConfiguration] = (),
        clusters: Sequence[cluster_pb2.Cluster] = (),
        assignments: Sequence[endpoint_pb2.ClusterLoadAssignment] = (),
    ) -> ConfigSnapshot:
        def compiled(type_url: str, items: Sequence[message.Message], key: str) -> dict:
            return {getattr(m, key): self.compiler.compile(type_url, getattr(m, key), pack(m))
                    for m in items}

        self.version += 1
        snapshot = build_snapshot(
            self.version,
            compiled(T.CLUSTER, clusters, "name"),
            compiled(T.ENDPOINT, assignments, "cluster_name"),
            compiled(T.LISTENER, listeners, "name"),
            compiled(T.ROUTE, routes, "name"),
        )
        self.holder.publish(snapshot)
        await self.listeners.wait_bound()
        return snapshot

    def counter(self, name: str) -> int:
        return self.store.snapshot().counters.get(name, 0)

    async def close(self) -> None:
        self.listeners.close()
        self.clusters.close()
        self.sweeper.close()
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def proxy_env() -> AsyncIterator[Env]:
    """An in-process proxy with upstream servers, all closed at the end."""
    e = Env()
    try:
        yield e
    finally:
        await e.close()


class Env:
    def __init__(self) -> None:
        self.proxy: InProcessProxy | None = None
        self.servers: list = []
        self.port = free_port()

    async def start(self, *names: str) -> list:
        self.proxy = InProcessProxy()
        self.servers = await upstreams(*names)
        return self.servers

    async def apply(self, routes, clusters=None, assignments=None, **listener):
        servers = {s.name: s for s in self.servers}
        if clusters is None:
            clusters = [eds_cluster(n) for n in servers]
        if assignments is None:
            assignments = [load_assignment(n, [s.port]) for n, s in servers.items()]
        return await self.proxy.apply(  # type: ignore[union-attr]
            [http_listener("gw", self.port, **listener)], routes, clusters, assignments)

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
        for s in self.servers:
            await s.close()


free_port = ports.free_port


class KeepAliveClient:
    """Requests one after another on one connection (HTTP/1.1 keep-alive)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str = "/", host: str = "example.com",
                      headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
        async with asyncio.timeout(timeout):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            lines = [f"GET {path} HTTP/1.1", f"host: {host}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = await read_response(self.reader)  # type: ignore[arg-type]
            if response.headers.get("connection") == "close":
                self.close()
            return response

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
