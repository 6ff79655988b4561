"""Test and benchmark helpers: tiny generators, resource builders, raw streams, a harness.

A `StaticGenerator` serves a mutable table of real Envoy resources of one type,
ignoring the push request: the transport's behaviour can be exercised with
real protos and no control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import message

from pistio.xds.any_codec import resource_name
from pistio.xds.client import AdsClient
from pistio.xds.connection import ConnectionInfo
from pistio.xds.generator import Resource
from pistio.xds.push_request import PushRequest
from pistio.xds.server import DiscoveryServer

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("pistio.xds.testing")


class StaticGenerator:
    def __init__(self, messages: Iterable[message.Message] = ()) -> None:
        self.table: dict[str, Resource] = {}
        self.calls = 0
        for msg in messages:
            self.set(msg)

    def set(self, msg: message.Message) -> None:
        name = resource_name(msg)
        self.table[name] = Resource(name, msg)

    def remove(self, name: str) -> None:
        self.table.pop(name, None)

    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        self.calls += 1
        if watched is None:
            return list(self.table.values())
        return [self.table[n] for n in sorted(watched) if n in self.table]


def cluster(name: str, connect_timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = connect_timeout_s
    c.eds_cluster_config.service_name = name
    return c


def endpoints(
    name: str, addresses: Iterable[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    for ip, port in addresses:
        lb = group.lb_endpoints.add()
        lb.endpoint.CopyFrom(
            endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
                )
            )
        )
    return cla


def listener(name: str, port: int) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=port)
        ),
    )


def route(name: str, domains: Iterable[str] = ("*",)) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[route_components_pb2.VirtualHost(name=name, domains=list(domains))],
    )


class RawAdsStream:
    """One ADS stream driven request by request: exact protocol tests, no client logic."""

    def __init__(self, target: str, delta: bool = False) -> None:
        self.target = target
        self.delta = delta
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.error: grpc.aio.AioRpcError | None = None

    async def open(self) -> RawAdsStream:
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        method = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        self._call = method()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                self._responses.put_nowait(response)
        except grpc.aio.AioRpcError as err:
            self.error = err
        self._responses.put_nowait(None)

    async def send(self, request: Any) -> None:
        await self._call.write(request)

    async def recv(self, timeout: float = 3.0) -> Any:
        """The next response; None if the stream ended. Raises TimeoutError."""
        return await asyncio.wait_for(self._responses.get(), timeout)

    async def silent(self, duration: float = 0.2) -> bool:
        """True if no response arrives within `duration`."""
        try:
            response = await asyncio.wait_for(self._responses.get(), duration)
        except TimeoutError:
            return True
        self._responses.put_nowait(response)
        return False

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()


class XdsHarness:
    """Servers, clients and raw streams of one test, all closed at the end, even on failure."""

    def __init__(self) -> None:
        self.servers: list[DiscoveryServer] = []
        self.clients: list[AdsClient] = []
        self.streams: list[RawAdsStream] = []

    async def server(
        self, generators: dict[str, Any], address: str = "127.0.0.1:0", **options: Any
    ) -> DiscoveryServer:
        server = DiscoveryServer(generators, **options)
        self.servers.append(server)
        await server.start(address)
        return server

    async def client(
        self,
        server: DiscoveryServer,
        node_id: str,
        subscriptions: dict[str, Iterable[str] | None],
        **options: Any,
    ) -> AdsClient:
        client = AdsClient(f"127.0.0.1:{server.port}", node_id, **options)
        for type_url, names in subscriptions.items():
            client.subscribe(type_url, names)
        self.clients.append(client)
        await client.start()
        return client

    async def raw(self, server: DiscoveryServer, delta: bool = False) -> RawAdsStream:
        stream = RawAdsStream(f"127.0.0.1:{server.port}", delta)
        self.streams.append(stream)
        return await stream.open()

    async def close(self, timeout: float = 10.0) -> None:
        """Close everything; bounded, so a stuck stream cannot hang the suite's teardown."""
        steps = [c.stop() for c in self.clients]
        steps += [s.close() for s in self.streams]
        steps += [s.stop(grace=None) for s in self.servers]
        for step in steps:
            try:
                await asyncio.wait_for(step, timeout)
            except TimeoutError:
                log.warning("test harness: a close step took over %.0f s; abandoned", timeout)


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Fail an async test that runs longer than `seconds` instead of hanging the suite."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return await asyncio.wait_for(fn(*args, **kwargs), seconds)

        return run

    return wrap


async def eventually(
    condition: Callable[[], bool], timeout: float = 3.0, step: float = 0.005
) -> None:
    """Poll until `condition()` holds (e.g. the server processed an ACK); raises TimeoutError."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(step)
