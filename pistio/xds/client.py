"""A small asyncio ADS client (state of the world or delta).

It behaves like Envoy's xDS client on one ADS stream: sends its node on the
first request, subscribes to types (names or wildcard), and answers every
response with an ACK or a NACK. An `on_update` callback sees each response
before it is applied and may reject it by returning an error message: the
client then NACKs (Envoy: `error_detail`, with the last accepted version) and
keeps its last good resources. After a lost stream it reconnects with
exponential back-off and jitter, re-sending its subscriptions with what it
already holds (SotW: `version_info`; delta: `initial_resource_versions`).

Used by tests, by the control-plane benchmark (many clients can share one
channel) and, later, by the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from pistio.xds.any_codec import resource_name, unpack
from pistio.xds.types import LEGACY_WILDCARD_TYPES, SOTW_COMPLETE_TYPES, WILDCARD

log = logging.getLogger("pistio.xds.client")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

INVALID_ARGUMENT = 3  # google.rpc.Code, what Envoy puts in a NACK


@dataclass
class ResponseUpdate:
    """One response, as the callback sees it before it is applied."""

    type_url: str
    version: str
    nonce: str
    resources: dict[str, any_pb2.Any]  # the resources this response carries, by name
    removed: list[str] = field(default_factory=list)  # delta only
    delta: bool = False


UpdateCallback = Callable[[ResponseUpdate], "str | None | Awaitable[str | None]"]


@dataclass
class Subscription:
    """Per type: what the client asks for and what it has accepted."""

    type_url: str
    names: set[str] | None  # None: wildcard
    resources: dict[str, any_pb2.Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # delta per-resource versions
    version: str = ""  # last accepted version_info / system_version_info
    nonce: str = ""  # last nonce received on the current stream
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    last_error: str = ""

    def wire_names(self) -> list[str]:
        if self.names is None:
            # Legacy wildcard (empty) where Envoy uses it, "*" elsewhere.
            return [] if self.type_url in LEGACY_WILDCARD_TYPES else [WILDCARD]
        return sorted(self.names)


class AdsClient:
    def __init__(
        self,
        target: str,
        node_id: str,
        *,
        delta: bool = False,
        cluster: str = "",
        metadata: dict[str, Any] | None = None,
        on_update: UpdateCallback | None = None,
        channel: grpc.aio.Channel | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        self.target = target
        self.delta = delta
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        if metadata:
            self.node.metadata.update(metadata)
        self.on_update = on_update
        self._shared_channel = channel
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.subscriptions: dict[str, Subscription] = {}
        self.connected = False
        self.connects = 0  # streams opened
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[Any] | None = None
        self._changed = asyncio.Event()

    # -- public API --------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.node.id

    def resources(self, type_url: str) -> dict[str, any_pb2.Any]:
        sub = self.subscriptions.get(type_url)
        return dict(sub.resources) if sub else {}

    def names(self, type_url: str) -> set[str]:
        return set(self.resources(type_url))

    def version(self, type_url: str) -> str:
        sub = self.subscriptions.get(type_url)
        return sub.version if sub else ""

    def subscribe(self, type_url: str, names: Iterable[str] | None = None) -> None:
        """Set the names watched for a type (None: wildcard); sent at once if connected."""
        new = None if names is None else set(names)
        sub = self.subscriptions.get(type_url)
        if sub is None:
            sub = self.subscriptions[type_url] = Subscription(type_url, new)
            self._send(self._initial_request(sub, with_node=False))
            return
        old, sub.names = sub.names, new
        if new is not None:
            for name in list(sub.resources):
                if name not in new:
                    sub.resources.pop(name)
                    sub.versions.pop(name, None)
        if self.delta:
            added = set() if new is None else new - (old or set())
            removed = set() if old is None else old - (new or set())
            if old is not None and new is None:
                added.add(WILDCARD)
            if old is None and new is not None:
                removed.add(WILDCARD)
            self._send(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url,
                    resource_names_subscribe=sorted(added),
                    resource_names_unsubscribe=sorted(removed),
                )
            )
        else:
            self._send(
                discovery_pb2.DiscoveryRequest(
                    type_url=type_url,
                    resource_names=sub.wire_names(),
                    version_info=sub.version,
                    response_nonce=sub.nonce,
                )
            )

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ads-client-{self.node.id}"
            )

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False

    async def wait_for(self, predicate: Callable[[AdsClient], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate(self)` holds; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                event = self._changed
                await event.wait()

    # -- the stream --------------------------------------------------------

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def _send(self, request: Any) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(request)

    def _initial_request(self, sub: Subscription, with_node: bool) -> Any:
        node = self.node if with_node else None
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(
                node=node,
                type_url=sub.type_url,
                resource_names_subscribe=sub.wire_names(),
                initial_resource_versions=sub.versions,
            )
        return discovery_pb2.DiscoveryRequest(
            node=node,
            type_url=sub.type_url,
            resource_names=sub.wire_names(),
            version_info=sub.version,
        )

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            channel = self._shared_channel or grpc.aio.insecure_channel(
                self.target, options=CHANNEL_OPTIONS
            )
            got_response = False
            try:
                got_response = await self._session(channel)
            except grpc.aio.AioRpcError as err:
                log.debug("%s: stream ended: %s", self.node.id, err.code())
            finally:
                self.connected = False
                self._outbox = None
                if self._shared_channel is None:
                    await channel.close()
                self._notify()
            if got_response:
                attempt = 0
            delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
            attempt += 1
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def _session(self, channel: grpc.aio.Channel) -> bool:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        outbox: asyncio.Queue[Any] = asyncio.Queue()

        async def requests() -> AsyncIterator[Any]:
            while (request := await outbox.get()) is not None:
                yield request

        method = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        call = method(requests())
        got_response = False
        try:
            # A new stream: nonces of the old one mean nothing; the node goes first.
            first = True
            for sub in self.subscriptions.values():
                sub.nonce = ""
                outbox.put_nowait(self._initial_request(sub, with_node=first))
                first = False
            if first:  # no subscriptions yet: the node still opens the stream
                outbox.put_nowait(self._node_only_request())
            self._outbox = outbox
            await call.wait_for_connection()
            self.connected = True
            self.connects += 1
            self._notify()
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return got_response
                got_response = True
                await self._handle(response)
        finally:
            outbox.put_nowait(None)
            call.cancel()

    def _node_only_request(self) -> Any:
        # A request for a type nobody serves carries the node without subscribing.
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(node=self.node, type_url="")
        return discovery_pb2.DiscoveryRequest(node=self.node, type_url="")

    async def _handle(self, response: Any) -> None:
        sub = self.subscriptions.get(response.type_url)
        if sub is None:
            log.debug("%s: response for unsubscribed type %s", self.node.id, response.type_url)
            return
        sub.responses += 1
        sub.nonce = response.nonce
        update, error = self._decode(response)
        if error is None and self.on_update is not None:
            verdict = self.on_update(update)
            error = await verdict if inspect.isawaitable(verdict) else verdict
        if error:
            sub.nacks += 1
            sub.last_error = error
            log.debug("%s: NACK %s: %s", self.node.id, response.type_url, error)
        else:
            sub.acks += 1
            sub.last_error = ""
            self._apply(sub, update, response)
        self._send(self._answer(sub, response, error))
        self._notify()

    def _decode(self, response: Any) -> tuple[ResponseUpdate, str | None]:
        if self.delta:
            resources = {r.name: r.resource for r in response.resources}
            update = ResponseUpdate(
                response.type_url,
                response.system_version_info,
                response.nonce,
                resources,
                list(response.removed_resources),
                delta=True,
            )
            return update, None
        resources = {}
        try:
            for packed in response.resources:
                resources[resource_name(unpack(packed))] = packed
        except Exception as err:  # undecodable: reject, as Envoy would
            return ResponseUpdate(response.type_url, response.version_info, response.nonce, {}), (
                f"cannot decode resource: {err}"
            )
        return ResponseUpdate(
            response.type_url, response.version_info, response.nonce, resources
        ), None

    def _apply(self, sub: Subscription, update: ResponseUpdate, response: Any) -> None:
        sub.version = update.version
        if self.delta:
            for r in response.resources:
                sub.resources[r.name] = r.resource
                sub.versions[r.name] = r.version
            for name in update.removed:
                sub.resources.pop(name, None)
                sub.versions.pop(name, None)
            return
        if sub.type_url in SOTW_COMPLETE_TYPES:
            # A complete response: whatever is missing was deleted.
            sub.resources = dict(update.resources)
        else:
            sub.resources.update(update.resources)
        if sub.names is not None:
            for name in list(sub.resources):
                if name not in sub.names:
                    sub.resources.pop(name)

    def _answer(self, sub: Subscription, response: Any, error: str | None) -> Any:
        detail = status_pb2.Status(code=INVALID_ARGUMENT, message=error) if error else None
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(
                type_url=sub.type_url, response_nonce=response.nonce, error_detail=detail
            )
        return discovery_pb2.DiscoveryRequest(
            type_url=sub.type_url,
            version_info=sub.version,  # after a NACK: the last version accepted
            resource_names=sub.wire_names(),
            response_nonce=response.nonce,
            error_detail=detail,
        )
