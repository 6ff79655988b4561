"""Envoy's listener manager, per worker: listening sockets that follow the config snapshots.

Every listener with ``bind_to_port`` (Envoy's default) gets a socket on its address and port
with ``SO_REUSEPORT``, so all workers listen on the same port and the kernel spreads the
connections. For each accepted connection the listener:

1. finds the connection's destination (``original_destination``: the seam where the
   ``SO_ORIGINAL_DST`` lookup of iptables-redirected connections plugs in; today the local
   address) and, for a ``use_original_dst`` listener (Istio's ``virtualOutbound``), hands the
   connection to the listener bound — or not bound — to that destination, if there is one;
2. selects the filter chain with Envoy's filter chain match (``select_filter_chain``); no match:
   the connection is closed (``no_filter_chain_match``);
3. gives the connection to the chain's network filter. HTTP connection manager chains are
   served here; TCP proxy and TLS chains are the network layer's (``pistio/proxy/network``):
   until it plugs in at ``serve_other_chain`` they are closed.

On each snapshot: new listeners are bound; a listener whose config changed keeps its socket and
serves *new* connections with the new config; a removed listener's socket stops accepting. In
every case the connections already accepted keep the config (chain, connection manager) they
started with until they close, as Envoy drains its old listeners.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.listener_config import (
    ConnInfo,
    FilterChainConfig,
    ListenerConfig,
    original_dst_listener,
)
from pistio.proxy.http.connection_manager import HttpConnectionManager
from pistio.proxy.http.headers import RequestIdGenerator
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.router.router import RouterContext
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder
from pistio.proxy.stats.families import ListenerStats, listener_stat_name
from pistio.proxy.stats.store import StatsStore

log = logging.getLogger("pistio.proxy.listeners")

LISTEN_BACKLOG = 1024


def original_destination(sock: Any) -> tuple[str, int]:
    """Where the client meant to connect: the seam for ``SO_ORIGINAL_DST`` (the network
    layer's ``original_dst`` plugs in here). ``sock`` is the accepted socket (asyncio's
    ``TransportSocket``: ``getsockname``, ``getsockopt``, ``fileno``). Today: the local
    address, which is the destination of a connection nobody redirected."""
    local = sock.getsockname()
    return local[0], local[1]


# Serves a connection whose chain is not an HTTP connection manager (TCP proxy, TLS); the
# network layer installs one. ``None``: such connections are closed.
OtherChainServer = Callable[[Any, ListenerConfig, FilterChainConfig, ConnInfo], None]
serve_other_chain: OtherChainServer | None = None


@dataclass(frozen=True, slots=True)
class ListenerRuntime:
    """A listener's config with the connection managers of its HTTP chains (by chain id)."""

    config: ListenerConfig
    managers: Mapping[int, HttpConnectionManager]
    stats: ListenerStats


class BoundListener:
    """One listening socket; ``runtime`` is swapped when the listener's config changes."""

    def __init__(self, manager: ListenerManager, runtime: ListenerRuntime) -> None:
        self.manager = manager
        self.runtime = runtime
        self.server: asyncio.AbstractServer | None = None

    def protocol(self) -> asyncio.Protocol:
        return _Accepted(self)


class _Accepted(asyncio.Protocol):
    """Lives for the accept only: picks the listener and chain, then hands the transport to
    the chain's protocol (``set_protocol``)."""

    __slots__ = ("bound",)

    def __init__(self, bound: BoundListener) -> None:
        self.bound = bound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self.bound.manager
        runtime = self.bound.runtime
        runtime.stats.downstream_cx_total += 1
        dst_ip, dst_port = original_destination(transport.get_extra_info("socket"))
        listener = runtime.config
        if listener.use_original_dst:
            target = original_dst_listener(manager.snapshot.listeners_by_address, dst_ip,
                                           dst_port)
            if target is not None and target is not listener:
                handed = manager.runtimes.get(target.name)
                if handed is not None:
                    runtime = handed
                    listener = target
        peer = transport.get_extra_info("peername") or ("", 0)
        info = ConnInfo(dst_ip, dst_port, peer[0], peer[1])
        chain = listener.select_filter_chain(info)
        if chain is None:
            runtime.stats.no_filter_chain_match += 1
            transport.close()
            return
        hcm = runtime.managers.get(id(chain))
        if hcm is None:
            if serve_other_chain is not None:
                serve_other_chain(transport, listener, chain, info)
            else:
                transport.close()
            return
        downstream = DownstreamConnectionInfo((dst_ip, dst_port), peer)
        protocol = hcm.connection(downstream)
        transport.set_protocol(protocol)  # type: ignore[attr-defined]
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - replaced at once
        pass


class ListenerManager:
    """This worker's listeners, following snapshots (register ``apply`` as an observer after
    the cluster manager's)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        holder: SnapshotHolder,
        clusters: ClusterManager,
        store: StatsStore,
        sweeper: DeadlineSweeper,
    ) -> None:
        self.loop = loop
        self.holder = holder
        self.store = store
        self.sweeper = sweeper
        self.router_context = RouterContext(loop, clusters, store)
        self.request_ids = RequestIdGenerator()
        self.snapshot: ConfigSnapshot = holder.current
        self.runtimes: dict[str, ListenerRuntime] = {}
        self.bound: dict[tuple[str, int], BoundListener] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # --- following config ----------------------------------------------------------------------

    def apply(self, snapshot: ConfigSnapshot) -> None:
        self.snapshot = snapshot
        runtimes: dict[str, ListenerRuntime] = {}
        for name, config in snapshot.listeners.items():
            old = self.runtimes.get(name)
            if old is not None and (old.config is config or old.config == config):
                runtimes[name] = old
            else:
                runtimes[name] = self._runtime(config)
        self.runtimes = runtimes
        wanted = {
            (cfg.address, cfg.port): runtimes[name]
            for name, cfg in snapshot.listeners.items() if cfg.bind_to_port
        }
        for key, bound in list(self.bound.items()):
            if key not in wanted:
                del self.bound[key]
                if bound.server is not None:
                    bound.server.close()  # stops accepting; accepted connections carry on
        for key, runtime in wanted.items():
            bound = self.bound.get(key)
            if bound is not None:
                bound.runtime = runtime
                continue
            bound = self.bound[key] = BoundListener(self, runtime)
            self._bind(bound, key)

    def _runtime(self, config: ListenerConfig) -> ListenerRuntime:
        managers: dict[int, HttpConnectionManager] = {}
        chains = list(enumerate(config.filter_chains))
        if config.default_filter_chain is not None:
            chains.append((-1, config.default_filter_chain))
        for index, chain in chains:
            if chain.http is None or chain.tls is not None:
                continue
            managers[id(chain)] = HttpConnectionManager(
                chain.http, config.name, index, self.holder, self.router_context,
                self.sweeper, self.store, config.per_connection_buffer_limit, self.request_ids,
            )
        stat_name = config.stat_prefix or listener_stat_name(config.address, config.port)
        return ListenerRuntime(config, managers, self.store.listener(stat_name))

    def _bind(self, bound: BoundListener, key: tuple[str, int]) -> None:
        lm = self.store.listener_manager()
        try:
            sock = _listening_socket(*key)
        except OSError as err:
            lm.listener_create_failure += 1
            log.error("listener %s cannot bind %s:%d: %s", bound.runtime.config.name, key[0],
                      key[1], err)
            del self.bound[key]
            return
        lm.listener_create_success += 1
        task = self.loop.create_task(self._serve(bound, sock, key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve(self, bound: BoundListener, sock: socket.socket,
                     key: tuple[str, int]) -> None:
        server = await self.loop.create_server(bound.protocol, sock=sock,
                                               backlog=LISTEN_BACKLOG)
        if self.bound.get(key) is not bound:
            server.close()  # removed while starting
            return
        bound.server = server

    async def wait_bound(self) -> None:
        """Until every socket of the last ``apply`` accepts (tests, start-up)."""
        while self._pending:
            await asyncio.gather(*self._pending)

    def close(self) -> None:
        for bound in self.bound.values():
            if bound.server is not None:
                bound.server.close()
        self.bound.clear()
        for task in self._pending:
            task.cancel()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
