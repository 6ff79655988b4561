"""The ADS server: gRPC streams, generators by type URL, debounced pushes fanned out.

Istio's `DiscoveryServer` (pilot/pkg/xds/discovery.go) without any Istio
semantics. The control plane registers one generator per type URL and calls
`config_update()` for every config or endpoint change; the debouncer merges
them; each debounced push gets the next version and is queued for every
connection; `push_concurrency` workers hand pushes to connection stream tasks,
which generate, diff and write. Streams themselves live in `ads.py` (state of
the world) and `delta.py` (incremental).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import json_format

from pistio.xds import ads, delta
from pistio.xds.connection import Connection, ConnectionInfo, PushEvent, WatchState
from pistio.xds.debounce import DebounceOptions, Debouncer
from pistio.xds.generator import Generator, Resource
from pistio.xds.push_queue import PushQueue
from pistio.xds.push_request import PushRequest
from pistio.xds.registry import ConnectionRegistry
from pistio.xds.stats import XdsStats
from pistio.xds.types import ENDPOINT, push_order, short_name
from pistio.xds.wire import add_ads_servicer

log = logging.getLogger("pistio.xds")

R = TypeVar("R")

# Istio's istiod accepts large requests (proxies send big metadata) and sends
# arbitrarily large responses.
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]

_END = object()  # the proxy closed its side of the stream


class DiscoveryServer:
    def __init__(
        self,
        generators: Mapping[str, Generator] | None = None,
        *,
        debounce: DebounceOptions | None = None,
        push_concurrency: int = 100,
        send_timeout: float | None = 10.0,
        prepare: Callable[[PushRequest], PushRequest | Awaitable[PushRequest]] | None = None,
        needs_push: Callable[[ConnectionInfo, PushRequest], bool] | None = None,
        on_connect: Callable[[ConnectionInfo], None] | None = None,
        on_disconnect: Callable[[ConnectionInfo], None] | None = None,
        control_plane_id: str = "pistiod",
    ) -> None:
        self.generators: dict[str, Generator] = dict(generators or {})
        self.registry = ConnectionRegistry()
        self.stats = XdsStats()
        self.push_queue: PushQueue[Connection] = PushQueue()
        self.debounce_options = debounce or DebounceOptions()
        self.push_concurrency = push_concurrency
        self.send_timeout = send_timeout
        # prepare: turns a debounced request into the one pushed (the control
        # plane builds its push context here, once per push).
        self._prepare = prepare
        # needs_push: lets the control plane skip proxies a change cannot affect.
        self._needs_push = needs_push
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self.control_plane = base_pb2.ControlPlane(identifier=control_plane_id)
        self.version = 1
        self._last_push = PushRequest(full=True, reasons=frozenset({"initial"}), version=1)
        self._conn_ids = itertools.count(1)
        self._debouncer: Debouncer | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------

    def register(self, type_url: str, generator: Generator) -> None:
        self.generators[type_url] = generator

    async def start(self, address: str = "127.0.0.1:0") -> int:
        """Serve plaintext ADS on `address` (Istio: 15010); returns the bound port."""
        self._start_pushing()
        self._grpc = grpc.aio.server(options=GRPC_OPTIONS)
        add_ads_servicer(_Servicer(self), self._grpc)
        self.port = self._grpc.add_insecure_port(address)
        await self._grpc.start()
        log.info("xDS server listening on port %d", self.port)
        return self.port

    def _start_pushing(self) -> None:
        if self._debouncer is not None:
            return
        self._debouncer = Debouncer(self._push, self.debounce_options)
        self._debouncer.start()
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._push_worker(), name=f"xds-push-{i}")
            for i in range(self.push_concurrency)
        ]

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._debouncer is not None:
            await self._debouncer.stop()
            self._debouncer = None
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    # -- pushes ------------------------------------------------------------

    def config_update(self, request: PushRequest) -> None:
        """A config or endpoint change (Istio's ConfigUpdate): debounced, then pushed."""
        if self._debouncer is None:
            raise RuntimeError("server not started")
        self._debouncer.enqueue(request)

    async def push_now(self, request: PushRequest) -> PushRequest:
        """Push without debouncing (startup, tests); returns the request as pushed."""
        return await self._push(request)

    async def wait_idle(self) -> None:
        """Wait until every queued push has been handed to its connection."""
        await self.push_queue.join()

    async def _push(self, request: PushRequest) -> PushRequest:
        if self._prepare is not None:
            prepared = self._prepare(request)
            request = await prepared if inspect.isawaitable(prepared) else prepared
        self.version += 1
        request = request.with_version(self.version)
        if request.full:
            self.stats.full_pushes += 1
            self._last_push = request
        else:
            self.stats.eds_pushes += 1
            # An EDS push changes endpoints only; later full answers keep the
            # full push's context unless the EDS push brought a newer one.
            context = request.context if request.context is not None else self._last_push.context
            self._last_push = replace(self._last_push, version=request.version, context=context)
        for reason in request.reasons or ("unknown",):
            self.stats.push_triggers[reason] += 1
        for conn in self.registry:
            self.push_queue.enqueue(conn, request)
        return request

    async def _push_worker(self) -> None:
        while True:
            conn, request = await self.push_queue.dequeue()
            try:
                if conn.closed:
                    continue
                if self._needs_push is not None and not self._needs_push(conn.info, request):
                    continue
                if not await conn.push(request, self.send_timeout) and not conn.closed:
                    self.stats.push_timeouts += 1
                    log.warning("ADS: push to %s timed out; closing it", conn.conn_id)
                    conn.close()
            except Exception:
                log.exception("ADS: push to %s failed", conn.conn_id)
            finally:
                self.push_queue.mark_done(conn)

    def request_push(self) -> PushRequest:
        """The push request used to answer a proxy's own request: the latest state, full."""
        return replace(
            self._last_push,
            full=True,
            configs_updated=frozenset(),
            reasons=frozenset({"proxy request"}),
            start=time.monotonic(),
        )

    def push_types(self, conn: Connection, request: PushRequest) -> list[str]:
        """Types a push regenerates for `conn`, in Envoy's order: all watched, or EDS only."""
        watched = {t for t in conn.watches if t in self.generators}
        if not request.full:
            watched &= {ENDPOINT}
        return push_order(watched)

    def push_converged(self, event: PushEvent) -> None:
        """Every response of a push is written: the proxy has (or is applying) the change."""
        self.stats.observe_convergence(time.monotonic() - event.request.start)

    @staticmethod
    def push_finished(event: PushEvent) -> None:
        # Also on failure: the push worker waiting on it must move on.
        if not event.done.done():
            event.done.set_result(None)

    def generate(
        self, conn: Connection, state: WatchState, push: PushRequest
    ) -> list[Resource] | None:
        """Run the type's generator; keep only what the proxy subscribed to."""
        generator = self.generators.get(state.type_url)
        if generator is None:
            log.debug("ADS: no generator for %s (requested by %s)", state.type_url, conn.conn_id)
            return None
        try:
            resources = generator.generate(conn.info, state.watched, push)
        except Exception:
            log.exception(
                "ADS:%s: generator failed for %s", short_name(state.type_url), conn.conn_id
            )
            return None
        if resources is None or state.wildcard:
            return resources
        return [r for r in resources if r.name in state.names]

    def record_nack(self, conn: Connection, state: WatchState) -> None:
        self.stats.rejects[short_name(state.type_url)] += 1
        log.warning(
            "ADS:%s: ACK ERROR %s nonce=%s acked version=%s: %s",
            short_name(state.type_url),
            conn.conn_id,
            state.nonce_nacked,
            state.version_acked or "(none)",
            state.error,
        )

    # -- streams -----------------------------------------------------------

    async def first_request(
        self, request_iterator: AsyncIterator[R], context: grpc.aio.ServicerContext
    ) -> R | None:
        """The stream's first request, which must carry the node and its id."""
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return None
        if not first.HasField("node") or not first.node.id:  # type: ignore[attr-defined]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing node id")
        return first

    def open_connection(
        self, node: base_pb2.Node, context: grpc.aio.ServicerContext, delta: bool,
        identities: tuple[str, ...] = (),
    ) -> Connection:
        info = ConnectionInfo(
            conn_id=f"{node.id}-{next(self._conn_ids)}",
            node_id=node.id,
            metadata=json_format.MessageToDict(node.metadata),
            cluster=node.cluster,
            peer=context.peer() or "",
            delta=delta,
            node=node,
            identities=identities,
        )
        conn = Connection(info)
        conn.task = asyncio.current_task()
        self.registry.add(conn)
        self.stats.connections = len(self.registry)
        self.stats.connects_total += 1
        log.info("ADS: new %sconnection for node %s", "delta " if delta else "", conn.conn_id)
        if self._on_connect is not None:
            self._on_connect(info)
        return conn

    def start_reader(
        self, conn: Connection, request_iterator: AsyncIterator[Any]
    ) -> asyncio.Task[None]:
        async def read() -> None:
            try:
                async for request in request_iterator:
                    conn.inbox.put_nowait(request)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the proxy went away
                log.debug("ADS: %s read error: %s", conn.conn_id, err)
            conn.inbox.put_nowait(_END)

        return asyncio.get_running_loop().create_task(read(), name=f"xds-read-{conn.conn_id}")

    def close_connection(self, conn: Connection) -> None:
        conn.closed = True
        conn.release_pending()
        self.registry.remove(conn)
        self.push_queue.remove(conn)
        self.stats.connections = len(self.registry)
        self.stats.disconnects_total += 1
        log.info("ADS: connection %s closed", conn.conn_id)
        if self._on_disconnect is not None:
            self._on_disconnect(conn.info)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS service. With ``authenticate`` (the secure port: Istio's xDS authentication on
    TLS), every stream must prove who calls: ``authenticate(metadata)`` returns its SPIFFE
    ids or raises, and a stream that fails is refused with ``UNAUTHENTICATED``."""

    def __init__(self, server: DiscoveryServer,
                 authenticate: Callable[[Any], list[str]] | None = None) -> None:
        self._server = server
        self._authenticate = authenticate

    async def _identities(self, context: grpc.aio.ServicerContext) -> tuple[str, ...]:
        if self._authenticate is None:
            return ()
        try:
            return tuple(self._authenticate(context.invocation_metadata()))
        except Exception as err:
            log.warning("ADS: authentication failure for %s: %s", context.peer(), err)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"authentication failure: {err}")
            raise  # abort raises; for type checkers

    # Async generators: grpc.aio writes each yielded response with flow control. Responses
    # are pre-encoded bytes (see wire.add_ads_servicer).
    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
        identities = await self._identities(context)
        async for response in ads.stream(self._server, request_iterator, context, identities):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        identities = await self._identities(context)
        async for response in delta.stream(self._server, request_iterator, context,
                                           identities):
            yield response
