"""Envoy's listener manager, per worker: listening sockets that follow the config snapshots.

Every listener with ``bind_to_port`` (Envoy's default) gets a socket on its address and port
with ``SO_REUSEPORT``, so all workers listen on the same port and the kernel spreads the
connections. Each accepted socket goes through Envoy's connection set-up:

1. its destination: for a listener with ``use_original_dst`` (Istio's ``virtualOutbound``,
   15001) or an ``original_dst`` listener filter (``virtualInbound``, 15006) the address the
   client dialled before iptables' REDIRECT (``SO_ORIGINAL_DST``), else the local address;
2. the ``use_original_dst`` hand-off: the connection moves to the listener — bound or not —
   whose address is that destination, the exact ``ip:port`` first, then ``0.0.0.0:port``; with
   none it stays on the accepting listener, whose chains pass it through (PassthroughCluster)
   or drop it (BlackHoleCluster, and the chain for connections addressed to 15001 itself);
3. the serving listener's listener filters: ``tls_inspector`` and ``http_inspector`` peek at
   the first bytes (nothing is consumed) for SNI, ALPN and the sniffed HTTP version;
4. the filter chain match (``select_filter_chain``) on what the previous steps found; no match:
   the connection is closed (``no_filter_chain_match``);
5. the chain's network filter: the HTTP connection manager, or ``tcp_proxy`` (its cluster's
   host, or the original destination for an ``ORIGINAL_DST`` cluster). A chain with a
   ``DownstreamTlsContext`` first runs its TLS handshake (``pistio.proxy.tls.downstream``,
   after the chain match: the inspectors consumed nothing); network RBAC, the codec (by
   the negotiated ALPN) or the TCP proxy then take the decrypted connection.

Steps 1, 2 and 4 run synchronously in the accept callback; a task per connection then waits
for the listener filters (only when the listener peeks), attaches the HTTP protocol
(``connect_accepted_socket``) or runs the TCP relay.

Statistics: ``downstream_cx_total`` counts on the listener that serves the connection (after
the hand-off), as the connection belongs to it in Envoy; listener-filter failures count as
``downstream_pre_cx_timeout``, ``downstream_listener_filter_remote_close`` and
``downstream_listener_filter_error``.

On each snapshot: new listeners are bound; a listener whose config changed keeps its socket and
serves *new* connections with the new config, while the connections already accepted keep the
config (chain, connection manager, TCP proxy) they started with until they close, as Envoy
drains its old listeners. A removed listener's socket stops accepting and its TCP proxy
sessions are closed (Envoy's drain without the grace period).

Tests replace :attr:`ListenerManager.original_destination` (the ``SO_ORIGINAL_DST`` lookup) to
play iptables' part without root: it receives the accepted socket and returns ``(ip, port)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo, StreamInfo
from pistio.proxy.config.listener_config import (
    ConnInfo,
    FilterChainConfig,
    ListenerConfig,
    ListenerFilterConfig,
    ListenerFilterKind,
    original_dst_listener,
)
from pistio.proxy.filters.http.chain import TRAFFIC_INBOUND
from pistio.proxy.filters.listener.inspection import InspectionVerdict, InspectorStats, inspect
from pistio.proxy.filters.network.istio_stats import IstioTcpStatsFilter
from pistio.proxy.filters.network.rbac import (
    NetworkRbacFilter,
    build_network_rbac,
    connection_denied,
)
from pistio.proxy.http.connection_manager import HttpConnectionManager, build_access_loggers
from pistio.proxy.http.headers import RequestIdGenerator
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.network import original_dst
from pistio.proxy.network.tcp_proxy import TcpProxyFilter, TcpUpstreams
from pistio.proxy.router.router import RouterContext
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder
from pistio.proxy.stats.families import ListenerStats, listener_stat_name
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.telemetry.plugin_config import StatsConfig
from pistio.proxy.tls.downstream import DownstreamTls, TlsHandoff, TlsStats
from pistio.proxy.tls.secrets import Secret

log = logging.getLogger("pistio.proxy.listeners")

LISTEN_BACKLOG = 1024
# Accepts per readiness callback: enough to drain a burst, bounded so one busy listener does
# not starve the loop's other callbacks.
ACCEPT_BATCH = 64

OriginalDestination = Callable[[socket.socket], "tuple[str, int]"]

# Serves an accepted socket whose chain is neither an HTTP connection manager nor a TCP proxy
# (TLS termination, later). ``None``: such connections are closed.
OtherChainServer = Callable[[socket.socket, ListenerConfig, FilterChainConfig, ConnInfo], None]
serve_other_chain: OtherChainServer | None = None

_SNIFFERS = (ListenerFilterKind.TLS_INSPECTOR, ListenerFilterKind.HTTP_INSPECTOR)
# Negotiated ALPN values that name the HTTP codec (others, e.g. Istio's "istio": sniffed).
_HTTP_ALPN = frozenset({"h2", "http/1.1"})


@dataclass(frozen=True, slots=True)
class ListenerRuntime:
    """A listener's config with what is compiled for it once: the connection managers of its
    HTTP chains and the TCP proxies of its ``tcp_proxy`` chains (both by ``id(chain)``)."""

    config: ListenerConfig
    managers: Mapping[int, HttpConnectionManager]
    tcp_proxies: Mapping[int, TcpProxyFilter]
    stats: ListenerStats
    # The destination comes from SO_ORIGINAL_DST (use_original_dst or the original_dst filter).
    reads_original_dst: bool
    sniffers: tuple[ListenerFilterConfig, ...]  # tls_inspector / http_inspector entries
    # The chains' network RBAC filters (by ``id(chain)``); enforced by ``rbac_denied``.
    network_rbac: Mapping[int, tuple[NetworkRbacFilter, ...]] = field(default_factory=dict)
    # TLS termination of the chains with a DownstreamTlsContext (by ``id(chain)``).
    tls: Mapping[int, DownstreamTls] = field(default_factory=dict)

    def rbac_denied(self, chain: FilterChainConfig,
                    downstream: DownstreamConnectionInfo) -> str | None:
        """The chain's network RBAC decision for a new connection (after its TLS handshake):
        the termination details when it must be closed, else ``None``."""
        filters = self.network_rbac.get(id(chain))
        return connection_denied(filters, downstream) if filters else None

    def sniffs(self, dst_port: int) -> bool:
        # A loop, not any(<generator>): this runs per connection, usually on an empty tuple.
        for f in self.sniffers:  # noqa: SIM110
            if f.enabled_for(dst_port):
                return True
        return False

    def close_tcp_sessions(self) -> None:
        for proxy in self.tcp_proxies.values():
            proxy.close_all()


class BoundListener:
    """One listening socket, accepted from on the loop's readiness callback; ``runtime`` is
    swapped when the listener's config changes."""

    def __init__(self, manager: ListenerManager, runtime: ListenerRuntime,
                 sock: socket.socket) -> None:
        self.manager = manager
        self.runtime = runtime
        self.sock = sock
        self.closed = False
        manager.loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        sock = self.sock
        accepted = self.manager.accepted
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE, ENFILE, ENOBUFS: try again on the next wake-up
                log.warning("listener %s: accept failed: %s", self.runtime.config.name, err)
                return
            accepted(self.runtime, conn)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.manager.loop.remove_reader(self.sock.fileno())
            self.sock.close()


# envoy.config.core.v3.TrafficDirection.INBOUND: what /drain_listeners?inboundonly drains.
INBOUND = 1
ALL, INBOUND_ONLY = "all", "inbound"


def _in_scope(config: ListenerConfig, scope: str | None) -> bool:
    return scope == ALL or (scope == INBOUND_ONLY and config.traffic_direction == INBOUND)


def _widest(current: str | None, new: str) -> str:
    return ALL if ALL in (current, new) else new


def _unmap(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


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
        self.tcp_upstreams = TcpUpstreams.from_cluster_manager(clusters)
        self.inspector_stats = InspectorStats(store)
        self.request_ids = RequestIdGenerator()
        self.snapshot: ConfigSnapshot = holder.current
        self.runtimes: dict[str, ListenerRuntime] = {}
        self.bound: dict[tuple[str, int], BoundListener] = {}
        # Connections in set-up (listener filters, attach) or relayed by a TCP proxy.
        self._tasks: set[asyncio.Task[Any]] = set()
        # The SO_ORIGINAL_DST lookup; tests put a fake in its place (see the module docstring).
        self.original_destination: OriginalDestination = original_dst.original_destination
        # /drain_listeners: the listeners whose connections drain (ALL, INBOUND_ONLY or None)
        # and those that stopped accepting, also across later snapshots (Envoy's
        # stopListeners: a stopped listener is not started again by LDS).
        self.drain_scope: str | None = None
        self.stop_scope: str | None = None
        self._drain_timers: list[asyncio.TimerHandle] = []

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
                if _in_scope(config, self.drain_scope):
                    for manager in runtimes[name].managers.values():
                        manager.draining = True
        for name, old in self.runtimes.items():
            if runtimes.get(name) is not old:
                # Replaced or removed: HTTP connections accepted under the old version drain
                # (policies such as RBAC live in the connection manager and must take effect).
                for manager in old.managers.values():
                    manager.draining = True
            if name not in runtimes:
                old.close_tcp_sessions()
        self.runtimes = runtimes
        wanted = {
            (cfg.address, cfg.port): runtimes[name]
            for name, cfg in snapshot.listeners.items()
            if cfg.bind_to_port and not _in_scope(cfg, self.stop_scope)
        }
        for key, bound in list(self.bound.items()):
            if key not in wanted:
                del self.bound[key]
                bound.close()  # stops accepting; accepted connections carry on
        for key, runtime in wanted.items():
            bound = self.bound.get(key)
            if bound is not None:
                bound.runtime = runtime
            else:
                self._bind(runtime, key)

    # --- /drain_listeners -------------------------------------------------------------------------

    def drain_listeners(self, inbound_only: bool, graceful: bool, drain_time: float) -> None:
        """Envoy's ``/drain_listeners``: stop accepting on every listener (inbound ones only
        with ``inbound_only``); ``graceful`` first drains for ``drain_time`` seconds — the
        HTTP connections of those listeners, new ones included, close after their current
        response (HTTP/2: GOAWAY), as with Istio's ``--drain-strategy immediate``."""
        scope = INBOUND_ONLY if inbound_only else ALL
        if not graceful:
            self.stop_listeners(scope)
            return
        self.drain_scope = _widest(self.drain_scope, scope)
        for runtime in self.runtimes.values():
            if _in_scope(runtime.config, self.drain_scope):
                for manager in runtime.managers.values():
                    manager.draining = True
        self._drain_timers.append(self.loop.call_later(drain_time, self.stop_listeners, scope))

    def stop_listeners(self, scope: str) -> None:
        """Close the listening sockets in ``scope`` (accepted connections carry on)."""
        self.stop_scope = _widest(self.stop_scope, scope)
        for key, bound in list(self.bound.items()):
            if _in_scope(bound.runtime.config, self.stop_scope):
                del self.bound[key]
                bound.close()

    def _runtime(self, config: ListenerConfig) -> ListenerRuntime:
        managers: dict[int, HttpConnectionManager] = {}
        tcp_proxies: dict[int, TcpProxyFilter] = {}
        network_rbac: dict[int, tuple[NetworkRbacFilter, ...]] = {}
        tls: dict[int, DownstreamTls] = {}
        tls_stats: TlsStats | None = None
        chains = list(enumerate(config.filter_chains))
        if config.default_filter_chain is not None:
            chains.append((-1, config.default_filter_chain))
        for index, chain in chains:
            if chain.network_rbac:
                network_rbac[id(chain)] = build_network_rbac(chain.network_rbac, self.store)
            if chain.tls is not None:
                if tls_stats is None:
                    tls_stats = TlsStats(self.store, "listener." + (
                        config.stat_prefix or listener_stat_name(config.address, config.port)))
                tls[id(chain)] = DownstreamTls(chain.tls, self._secrets, tls_stats)
            if chain.http is not None:
                hcm = managers[id(chain)] = HttpConnectionManager(
                    chain.http, config.name, index, self.holder, self.router_context,
                    self.sweeper, self.store, config.per_connection_buffer_limit,
                    self.request_ids,
                    self.snapshot.inline_route_tables.get((config.name, index)),
                    traffic_direction=config.traffic_direction,
                )
                if chain.tls is not None:  # x-forwarded-proto when the request has none
                    hcm.options = dataclasses.replace(hcm.options, forwarded_proto=b"https")
            elif chain.tcp_proxy is not None:
                tcp = tcp_proxies[id(chain)] = TcpProxyFilter(
                    chain.tcp_proxy, self.tcp_upstreams, self.store,
                    downstream_buffer_limit=config.per_connection_buffer_limit,
                    on_complete=_access_logger(chain),
                )
                for stats_config in chain.istio_stats:
                    _attach_istio_tcp_stats(tcp, stats_config, self.store, self.tcp_upstreams,
                                            config.traffic_direction)
        stat_name = config.stat_prefix or listener_stat_name(config.address, config.port)
        reads_original_dst = config.use_original_dst or any(
            f.kind is ListenerFilterKind.ORIGINAL_DST and f.enabled_for(config.port)
            for f in config.listener_filters
        )
        sniffers = tuple(f for f in config.listener_filters if f.kind in _SNIFFERS)
        return ListenerRuntime(config, managers, tcp_proxies, self.store.listener(stat_name),
                               reads_original_dst, sniffers, network_rbac, tls)

    def _secrets(self) -> Mapping[str, Secret]:
        """The SDS secrets in force (TLS contexts follow them per new connection)."""
        return self.snapshot.secrets

    def _bind(self, runtime: ListenerRuntime, key: tuple[str, int]) -> None:
        lm = self.store.listener_manager()
        try:
            sock = _listening_socket(*key)
        except OSError as err:
            lm.listener_create_failure += 1
            log.error("listener %s cannot bind %s:%d: %s", runtime.config.name, key[0],
                      key[1], err)
            return
        lm.listener_create_success += 1
        self.bound[key] = BoundListener(self, runtime, sock)

    async def wait_bound(self) -> None:
        """Until every socket of the last ``apply`` accepts (tests, start-up): binding is
        synchronous, so this only yields once."""
        await asyncio.sleep(0)

    # --- connection set-up ---------------------------------------------------------------------

    def accepted(self, runtime: ListenerRuntime, sock: socket.socket) -> None:
        """A socket accepted on ``runtime``'s listener: steps 1 to 5 of the module docstring."""
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
            peer = sock.getpeername()
            if runtime.reads_original_dst:
                dst = self.original_destination(sock)
            else:
                dst = (_unmap(local[0]), local[1])
        except OSError:  # the peer is already gone
            sock.close()
            return
        listener = runtime.config
        if listener.use_original_dst:
            target = original_dst_listener(self.snapshot.listeners_by_address, dst[0], dst[1])
            if target is not None and target is not listener:
                handed = self.runtimes.get(target.name)
                if handed is not None:
                    runtime = handed
        runtime.stats.downstream_cx_total += 1
        if runtime.sniffs(dst[1]):
            self._track(self.loop.create_task(self._inspect_then_serve(runtime, sock, dst, peer)))
            return
        self._serve(runtime, sock, ConnInfo(dst[0], dst[1], _unmap(peer[0]), peer[1]))

    async def _inspect_then_serve(self, runtime: ListenerRuntime, sock: socket.socket,
                                  dst: tuple[str, int], peer: Any) -> None:
        config = runtime.config
        try:
            found = await inspect(
                sock, self.loop, config.listener_filters, config.listener_filters_timeout,
                continue_on_timeout=config.continue_on_listener_filters_timeout,
                original_dst=dst, stats=self.inspector_stats,
            )
        except BaseException:
            sock.close()
            raise
        if found.conn is None:
            stats = runtime.stats
            if found.verdict is InspectionVerdict.TIMEOUT:
                stats.downstream_pre_cx_timeout += 1
            elif found.verdict is InspectionVerdict.REMOTE_CLOSE:
                stats.downstream_listener_filter_remote_close += 1
            else:
                stats.downstream_listener_filter_error += 1
            sock.close()
            return
        self._serve(runtime, sock, found.conn)

    def _serve(self, runtime: ListenerRuntime, sock: socket.socket, conn: ConnInfo) -> None:
        chain = runtime.config.select_filter_chain(conn)
        if chain is None:
            runtime.stats.no_filter_chain_match += 1
            sock.close()
            return
        downstream = DownstreamConnectionInfo((conn.dst_ip, conn.dst_port),
                                              (conn.src_ip, conn.src_port))
        downstream.requested_server_name = conn.server_name or None
        key = id(chain)
        if chain.tls is not None:
            tls = runtime.tls.get(key)
            if tls is None:
                sock.close()
                return
            self._track(self.loop.create_task(tls.handshake(
                self.loop, sock, downstream,
                functools.partial(self._after_handshake, runtime, chain, conn, downstream))))
            return
        if chain.network_rbac and runtime.rbac_denied(chain, downstream):
            sock.close()  # envoy.filters.network.rbac: access denied
            return
        hcm = runtime.managers.get(key)
        if hcm is not None:
            self._track(self.loop.create_task(self._attach(sock, hcm.connection(downstream))))
            return
        tcp = runtime.tcp_proxies.get(key)
        if tcp is not None:
            self._track(self.loop.create_task(
                tcp.serve(sock, conn, downstream=downstream, loop=self.loop)))
            return
        if serve_other_chain is not None:
            serve_other_chain(sock, runtime.config, chain, conn)
        else:
            sock.close()

    def _after_handshake(self, runtime: ListenerRuntime, chain: FilterChainConfig,
                         conn: ConnInfo, downstream: DownstreamConnectionInfo,
                         held: TlsHandoff, alpn: str | None) -> asyncio.Protocol | None:
        """A TLS chain's connection after its handshake (the peer's identity is known now):
        network RBAC, then the codec picked by ALPN, or the TCP proxy."""
        key = id(chain)
        if chain.network_rbac and runtime.rbac_denied(chain, downstream):
            held.close()  # envoy.filters.network.rbac: access denied
            return None
        hcm = runtime.managers.get(key)
        if hcm is not None:
            return hcm.connection(downstream, alpn if alpn in _HTTP_ALPN else None)
        tcp = runtime.tcp_proxies.get(key)
        if tcp is not None:
            self._track(self.loop.create_task(
                tcp.serve(held, conn, downstream=downstream, loop=self.loop)))
            return None
        held.close()
        return None

    async def _attach(self, sock: socket.socket, protocol: asyncio.Protocol) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError:
            sock.close()

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection set-up failed", exc_info=task.exception())

    def close(self) -> None:
        for timer in self._drain_timers:
            timer.cancel()
        for bound in self.bound.values():
            bound.close()
        self.bound.clear()
        for runtime in self.runtimes.values():
            runtime.close_tcp_sessions()
        for task in list(self._tasks):
            task.cancel()


def _access_logger(chain: FilterChainConfig) -> Callable[[StreamInfo], None] | None:
    """The ``tcp_proxy``'s access logs (file, stdout, stderr) as its ``on_complete``; each
    writes only the connections its filter (if any) accepts."""
    assert chain.tcp_proxy is not None
    loggers = build_access_loggers(chain.tcp_proxy.access_logs)
    if not loggers:
        return None

    def write(info: StreamInfo) -> None:
        for formatter, sink, log_filter in loggers:
            if log_filter is None or log_filter.matches(info):
                sink.write(formatter.format(info))

    return write


def _attach_istio_tcp_stats(tcp: TcpProxyFilter, config: StatsConfig, store: StatsStore,
                            upstreams: TcpUpstreams, traffic_direction: int) -> None:
    """Istio's network ``istio.stats``: counts at connect and close (before the access log)."""
    stats = IstioTcpStatsFilter(config, store, traffic_direction == TRAFFIC_INBOUND,
                                cluster_config=upstreams.cluster_config,
                                tls_for=upstreams.tls_for)
    connected = tcp.on_connected
    if connected is None:
        tcp.on_connected = stats.on_connected
    else:
        def both(info: StreamInfo, host: object) -> None:
            connected(info, host)
            stats.on_connected(info, host)

        tcp.on_connected = both
    log_complete = tcp.on_complete
    if log_complete is None:
        tcp.on_complete = stats.on_complete
    else:
        def complete(info: StreamInfo) -> None:
            stats.on_complete(info)
            log_complete(info)

        tcp.on_complete = complete


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
