"""Envoy's ``tcp_proxy`` network filter: relay a downstream connection's bytes to one upstream
host of a cluster, both ways, until either side is done.

Istio uses it for every TCP service port, for the ``PassthroughCluster`` (an ``ORIGINAL_DST``
cluster: the host *is* the connection's original destination) and for ``BlackHoleCluster``
(no hosts: the connection is closed at once), and for weighted TCP routes of a
VirtualService (``weighted_clusters``).

Semantics carried over from Envoy:

- the cluster is ``cluster``, or one of ``weighted_clusters`` picked at random in proportion to
  the weights, once per connection;
- a cluster the cluster manager does not know closes the connection (flag ``NC``, stat
  ``tcp.<stat_prefix>.downstream_cx_no_route``); a cluster without a usable host closes it too
  (flag ``UH``, ``cluster.<name>.upstream_cx_none_healthy``);
- the upstream connection is attempted once, within the cluster's ``connect_timeout``; a
  failure closes the downstream connection (flag ``UF``, ``upstream_cx_connect_fail``, plus
  ``upstream_cx_connect_timeout`` for a timeout). Downstream bytes are not read until the
  upstream is connected, and upstream bytes (server-speaks-first protocols) not until the
  downstream side is attached, so nothing is buffered in between;
- back-pressure: each side's write buffer has the high-water mark of its connection's
  ``per_connection_buffer_limit_bytes`` (listener for downstream, cluster for upstream; Envoy's
  default 1 MiB) and the low-water mark at half of it; above it, the *other* side stops reading
  (``pistio.proxy.http.flow_control.ReadGate``), so at most about one buffer limit per
  direction sits in our memory while bytes wait in the kernels' socket buffers;
- half-close: an EOF from one side is passed on as a write shutdown (``FIN``) to the other, and
  the connection ends when both directions have ended or either side closes;
- ``idle_timeout`` (Envoy's default 1 h; ``None`` disables it): no byte in either direction for
  that long closes both sides without flushing (``tcp.<stat_prefix>.idle_timeout``).

Every connection yields a :class:`~pistio.proxy.access_log.stream_info.StreamInfo`: the
upstream cluster and host, ``bytes_received`` (downstream → upstream) and ``bytes_sent``
(upstream → downstream), response flags, and the duration up to the close
(``last_downstream_tx_byte_sent``); it is handed to ``on_complete`` (the access loggers).

API for the listener manager::

    upstreams = TcpUpstreams.from_cluster_manager(cluster_manager)   # once per worker
    proxy = TcpProxyFilter(chain.tcp_proxy, upstreams, stats_store,
                           downstream_buffer_limit=listener.per_connection_buffer_limit,
                           on_complete=access_log)                   # once per config
    info = await proxy.serve(sock, conn_info, downstream=downstream_connection_info)

``sock`` is the accepted socket after the listener filters (nothing consumed), or — on a chain
with a ``DownstreamTlsContext`` — the connection held after its TLS handshake
(``pistio.proxy.tls.downstream.TlsHandoff``), attached once the upstream is connected;
``serve`` owns it from then on and returns when the session is over. The upstream connection
uses the cluster's transport socket for the chosen host (TLS origination with SNI, ALPN and SAN
verification: ``pistio.proxy.tls.upstream``). ``serve_tcp_proxy`` is
the one-call form for callers without a compiled filter.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import socket
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from pistio.proxy.access_log import response_flags as flags
from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo, StreamInfo
from pistio.proxy.config.cluster_config import DEFAULT_CONNECT_TIMEOUT, ClusterConfig
from pistio.proxy.config.listener_config import (
    DEFAULT_PER_CONNECTION_BUFFER_LIMIT,
    ConnInfo,
    TcpProxyConfig,
)
from pistio.proxy.http.flow_control import PEER_WRITE_BLOCKED, ReadGate
from pistio.proxy.stats.families import ClusterStats
from pistio.proxy.stats.store import Counter, StatsStore
from pistio.proxy.tls.downstream import TlsHandoff
from pistio.proxy.tls.upstream import UpstreamTls, open_connection
from pistio.proxy.upstream.proxy_protocol import proxy_protocol_header

# Read-pause reason: the other side's transport does not exist yet.
PEER_NOT_ATTACHED = 1 << 8


class HostLike(Protocol):
    """An upstream host as the load balancer returns it (``upstream.host.Host``)."""

    address: str
    port: int
    active_connections: int


PickHost = Callable[[str, ConnInfo], "tuple[str, int] | HostLike | None"]
ClusterLookup = Callable[[str], "ClusterConfig | None"]
TlsLookup = Callable[[str, object], "UpstreamTls | None"]
Downstream = socket.socket | TlsHandoff  # both have close()


class TcpUpstreams:
    """What the TCP proxy asks of the cluster manager.

    ``pick_host(cluster, conn)``: the host for a new connection — ``(ip, port)`` or a ``Host``
    (whose ``active_connections`` is then kept) — or ``None`` when the cluster has no usable
    host. For an ``ORIGINAL_DST`` cluster the host is ``(conn.dst_ip, conn.dst_port)``.
    ``cluster_config(cluster)``: the compiled cluster (connect timeout, bind address, buffer
    limit), ``None`` for an unknown cluster; without it every cluster exists with defaults."""

    __slots__ = ("pick_host", "cluster_config", "initialized", "tls_for")

    def __init__(
        self,
        pick_host: PickHost,
        cluster_config: ClusterLookup | None = None,
        initialized: Callable[[str], Awaitable[None] | None] | None = None,
        tls_for: TlsLookup | None = None,
    ) -> None:
        self.pick_host = pick_host
        self.cluster_config = cluster_config
        # tls_for(cluster, host): the upstream TLS of the host's transport socket, or None.
        self.tls_for = tls_for
        # initialized(cluster): something to await while the cluster is still initializing
        # (first DNS resolution, first health checks), else None.
        self.initialized = initialized

    @classmethod
    def from_cluster_manager(cls, cluster_manager) -> TcpUpstreams:
        """Hosts from a worker's ``ClusterManager``: each cluster's load balancer, with the
        connection's original destination for ``ORIGINAL_DST`` clusters."""

        def pick_host(cluster: str, conn: ConnInfo):
            runtime = cluster_manager.get(cluster)
            if runtime is None:
                return None
            return runtime.lb.choose_host(original_dst=(conn.dst_ip, conn.dst_port))

        def cluster_config(cluster: str) -> ClusterConfig | None:
            runtime = cluster_manager.get(cluster)
            return None if runtime is None else runtime.config

        def initialized(cluster: str) -> Awaitable[None] | None:
            runtime = cluster_manager.get(cluster)
            if runtime is None or not runtime.initializing:
                return None
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def ready() -> None:
                if not done.done():
                    done.set_result(None)

            runtime.when_initialized(ready)
            return done

        def tls_for(cluster: str, host: object) -> UpstreamTls | None:
            runtime = cluster_manager.get(cluster)
            if runtime is None:
                return None
            return runtime.upstream_tls(getattr(host, "config", None))

        return cls(pick_host, cluster_config, initialized, tls_for)


class TcpProxyStats:
    """Envoy's ``tcp.<stat_prefix>.*`` counters."""

    __slots__ = ("downstream_cx_total", "downstream_cx_no_route", "downstream_cx_rx_bytes_total",
                 "downstream_cx_tx_bytes_total", "downstream_flow_control_paused_reading_total",
                 "downstream_flow_control_resumed_reading_total", "idle_timeout")

    def __init__(self, store: StatsStore, stat_prefix: str) -> None:
        for name in self.__slots__:
            counter: Counter = store.counter(f"tcp.{stat_prefix}.{name}")
            setattr(self, name, counter)


class TcpProxyFilter:
    """One compiled ``tcp_proxy`` (per filter chain and config version); ``serve`` runs one
    downstream connection through it."""

    __slots__ = ("config", "upstreams", "store", "stats", "downstream_buffer_limit",
                 "on_complete", "on_connected", "sessions", "_rng", "_names", "_cumulative")

    def __init__(
        self,
        config: TcpProxyConfig,
        upstreams: TcpUpstreams,
        store: StatsStore | None = None,
        *,
        downstream_buffer_limit: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT,
        on_complete: Callable[[StreamInfo], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.upstreams = upstreams
        self.store = store if store is not None else StatsStore()
        self.stats = TcpProxyStats(self.store, config.stat_prefix)
        self.downstream_buffer_limit = downstream_buffer_limit
        self.on_complete = on_complete
        # Called with (info, host) once the upstream connection is up (Istio's TCP stats).
        self.on_connected: Callable[[StreamInfo, object], None] | None = None
        # Connections relaying now: for draining on listener removal, and for inspection.
        self.sessions: set[_TcpSession] = set()
        self._rng = rng if rng is not None else random.Random()
        weighted = [(name, w) for name, w in config.weighted_clusters if w > 0]
        self._names = tuple(name for name, _ in weighted)
        total = 0
        cumulative = []
        for _, w in weighted:
            total += w
            cumulative.append(total)
        self._cumulative = tuple(cumulative)

    def choose_cluster(self) -> str | None:
        """``cluster``, or a weighted pick among ``weighted_clusters``."""
        if self.config.cluster is not None:
            return self.config.cluster
        if not self._cumulative:
            return None
        roll = self._rng.randrange(self._cumulative[-1])
        return self._names[bisect.bisect_right(self._cumulative, roll)]

    async def serve(
        self,
        sock: Downstream,
        conn: ConnInfo,
        *,
        downstream: DownstreamConnectionInfo | None = None,
        ssl: ssl_module.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> StreamInfo:
        """Proxy one accepted connection; returns its ``StreamInfo`` when both sides are closed.
        ``ssl``: terminate TLS on the downstream side (a chain with a transport socket)."""
        loop = loop if loop is not None else asyncio.get_running_loop()
        info = StreamInfo(downstream)
        self.stats.downstream_cx_total.value += 1
        try:
            await self._serve(loop, sock, conn, info, ssl)
        finally:
            info.last_downstream_tx_byte_sent = time.monotonic_ns()
            if self.on_complete is not None:
                self.on_complete(info)
        return info

    async def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: Downstream,
        conn: ConnInfo,
        info: StreamInfo,
        ssl: ssl_module.SSLContext | None,
    ) -> None:
        upstreams = self.upstreams
        cluster = self.choose_cluster()
        info.upstream_cluster = cluster
        cluster_config = None
        if cluster is not None and upstreams.cluster_config is not None:
            cluster_config = upstreams.cluster_config(cluster)
        if cluster is None or (upstreams.cluster_config is not None and cluster_config is None):
            info.response_flags |= flags.NO_CLUSTER_FOUND
            self.stats.downstream_cx_no_route.value += 1
            sock.close()
            return
        if cluster_config is not None and cluster_config.alt_stat_name:
            info.upstream_cluster_observability_name = cluster_config.alt_stat_name
        cluster_stats = self.store.cluster(cluster)
        if upstreams.initialized is not None:
            waiting = upstreams.initialized(cluster)
            if waiting is not None:
                await waiting
        picked = upstreams.pick_host(cluster, conn)
        if picked is None:
            info.response_flags |= flags.NO_HEALTHY_UPSTREAM
            cluster_stats.upstream_cx_none_healthy += 1
            sock.close()
            return
        host: HostLike | None = None
        if isinstance(picked, tuple):
            address, port = picked
        else:
            host = picked
            address, port = picked.address, picked.port
        info.upstream_host = (address, port)
        connect_timeout = DEFAULT_CONNECT_TIMEOUT
        upstream_limit = DEFAULT_PER_CONNECTION_BUFFER_LIMIT
        bind = None
        keepalive = None
        if cluster_config is not None:
            keepalive = cluster_config.tcp_keepalive
            connect_timeout = cluster_config.connect_timeout
            upstream_limit = cluster_config.per_connection_buffer_limit
            if cluster_config.upstream_bind_address:
                bind = (cluster_config.upstream_bind_address, 0)

        session = _TcpSession(loop, info, self.stats, cluster_stats, self.config.idle_timeout)
        upstream = _Upstream(session, upstream_limit)
        downstream_side = _Downstream(session, self.downstream_buffer_limit)
        upstream.peer, downstream_side.peer = downstream_side, upstream
        session.upstream, session.downstream = upstream, downstream_side

        tls = upstreams.tls_for(cluster, host) if upstreams.tls_for is not None else None
        proxy_header = None
        if cluster_config is not None:  # upstream_proxy_protocol: the downstream's addresses
            version = cluster_config.transport_socket_of(
                getattr(host, "config", None)).proxy_protocol_version
            if version is not None:
                proxy_header = proxy_protocol_header(
                    version, (conn.src_ip, conn.src_port), (conn.dst_ip, conn.dst_port))
        cluster_stats.upstream_cx_total += 1
        started = loop.time()
        try:
            async with asyncio.timeout(connect_timeout):
                await open_connection(loop, lambda: upstream, address, port, local_addr=bind,
                                      tls=tls, keepalive=keepalive, proxy_header=proxy_header)
        except (OSError, TimeoutError) as err:
            cluster_stats.upstream_cx_connect_fail += 1
            if isinstance(err, TimeoutError):
                cluster_stats.upstream_cx_connect_timeout += 1
                info.upstream_transport_failure_reason = "connect timeout"
            else:
                info.upstream_transport_failure_reason = err.strerror or str(err)
            info.response_flags |= flags.UPSTREAM_CONNECTION_FAILURE
            sock.close()
            return
        cluster_stats.upstream_cx_connect_ms.record((loop.time() - started) * 1000.0)
        cluster_stats.upstream_cx_active += 1
        if host is not None:
            host.active_connections += 1
        self.sessions.add(session)
        if self.on_connected is not None:
            self.on_connected(info, host)
        try:
            local = upstream.transport.get_extra_info("sockname")
            if local is not None:
                info.upstream_local_address = (local[0], local[1])
            try:
                if isinstance(sock, TlsHandoff):
                    sock.attach(downstream_side)  # TLS done: take the held connection
                else:
                    await loop.connect_accepted_socket(lambda: downstream_side, sock, ssl=ssl)
            except (OSError, ConnectionError):  # ssl.SSLError is an OSError
                # The downstream went away (or failed its TLS handshake) meanwhile.
                sock.close()
                downstream_side.lost = downstream_side.closed = True
                info.response_flags |= flags.DOWNSTREAM_CONNECTION_TERMINATION
                upstream.close()
                session.side_lost()
            await session.done
        finally:
            cluster_stats.upstream_cx_active -= 1
            cluster_stats.upstream_cx_destroy += 1
            cluster_stats.upstream_cx_length_ms.record((loop.time() - started) * 1000.0)
            if host is not None:
                host.active_connections -= 1
            session.cancel_idle_timer()
            self.sessions.discard(session)

    def close_all(self) -> None:
        """Close every connection of this filter after flushing (listener drain)."""
        for session in list(self.sessions):
            session.upstream.close()
            session.downstream.close()


async def serve_tcp_proxy(
    sock: socket.socket,
    config: TcpProxyConfig,
    conn: ConnInfo,
    pick_host: PickHost,
    *,
    cluster_config: ClusterLookup | None = None,
    stats: StatsStore | None = None,
    downstream_buffer_limit: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT,
    on_complete: Callable[[StreamInfo], None] | None = None,
    downstream: DownstreamConnectionInfo | None = None,
) -> StreamInfo:
    """One connection through a ``tcp_proxy`` config without keeping a compiled filter."""
    proxy = TcpProxyFilter(config, TcpUpstreams(pick_host, cluster_config), stats,
                           downstream_buffer_limit=downstream_buffer_limit,
                           on_complete=on_complete)
    return await proxy.serve(sock, conn, downstream=downstream)


# --- the relay ---------------------------------------------------------------------------------


class _TcpSession:
    """State shared by the two sides of one proxied connection."""

    __slots__ = ("loop", "info", "tcp_stats", "cluster_stats", "upstream", "downstream",
                 "idle_timeout", "last_activity", "_idle_handle", "done")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        info: StreamInfo,
        tcp_stats: TcpProxyStats,
        cluster_stats: ClusterStats,
        idle_timeout: float | None,
    ) -> None:
        self.loop = loop
        self.info = info
        self.tcp_stats = tcp_stats
        self.cluster_stats = cluster_stats
        self.upstream: _Upstream
        self.downstream: _Downstream
        self.idle_timeout = idle_timeout
        self.last_activity = loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    def start_idle_timer(self) -> None:
        if self.idle_timeout is not None and self._idle_handle is None:
            self._idle_handle = self.loop.call_at(
                self.last_activity + self.idle_timeout, self._on_idle
            )

    def cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _on_idle(self) -> None:
        # Activity only stamps ``last_activity``; the timer re-arms itself for what is left,
        # so moving bytes never touches the timer.
        deadline = self.last_activity + self.idle_timeout  # type: ignore[operator]
        if self.loop.time() < deadline:
            self._idle_handle = self.loop.call_at(deadline, self._on_idle)
            return
        self._idle_handle = None
        self.tcp_stats.idle_timeout.value += 1
        self.info.connection_termination_details = "tcp_proxy_idle_timeout"
        self.upstream.abort()
        self.downstream.abort()

    def side_lost(self) -> None:
        if self.upstream.lost and self.downstream.lost and not self.done.done():
            self.cancel_idle_timer()
            self.done.set_result(None)


class _Side(asyncio.Protocol):
    """One connection of the pair; ``peer`` is the other one."""

    __slots__ = ("session", "transport", "peer", "gate", "limit", "eof", "closed", "lost",
                 "early")

    def __init__(self, session: _TcpSession, buffer_limit: int) -> None:
        self.session = session
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: _Side = None  # type: ignore[assignment]
        self.gate: ReadGate = None  # type: ignore[assignment]
        self.limit = max(buffer_limit, 1)
        self.eof = False  # this side sent us its FIN
        self.closed = False  # we closed (or aborted) this side
        self.lost = False
        # Bytes for this side that arrived before its transport existed (uvloop may deliver
        # one read even though reading was paused in ``connection_made``).
        self.early: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gate = ReadGate(self.transport)
        self.transport.set_write_buffer_limits(high=self.limit, low=self.limit // 2)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            if self.early is None:
                self.early = []
            self.early.append(data)
        elif not self.closed:
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer.eof or peer.closed:
            self.close()
            peer.close()
            return True
        if peer.transport is not None and not peer.closed:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            else:
                peer.close()
        return True  # keep this transport open: the other direction may still flow

    def pause_writing(self) -> None:
        self.peer.gate.pause(PEER_WRITE_BLOCKED)

    def resume_writing(self) -> None:
        self.peer.gate.resume(PEER_WRITE_BLOCKED)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closed = True
        peer = self.peer
        if peer.transport is not None and not peer.closed:
            peer.close()
        self.session.side_lost()

    def close(self) -> None:
        """Close after flushing what is buffered for this side."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.closed = True
            self.transport.abort()


class _Upstream(_Side):
    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Server-first protocols: hold the upstream's bytes until the downstream is attached.
        self.gate.pause(PEER_NOT_ATTACHED)

    def data_received(self, data: bytes) -> None:
        session = self.session
        n = len(data)
        session.last_activity = session.loop.time()
        session.info.bytes_sent += n
        session.cluster_stats.upstream_cx_rx_bytes_total += n
        session.tcp_stats.downstream_cx_tx_bytes_total.value += n
        self.peer.write(data)

    def pause_writing(self) -> None:
        # The upstream cannot take more: stop reading the downstream.
        self.session.tcp_stats.downstream_flow_control_paused_reading_total.value += 1
        self.peer.gate.pause(PEER_WRITE_BLOCKED)

    def resume_writing(self) -> None:
        self.session.tcp_stats.downstream_flow_control_resumed_reading_total.value += 1
        self.peer.gate.resume(PEER_WRITE_BLOCKED)


class _Downstream(_Side):
    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        session = self.session
        if self.peer.lost:
            self.close()  # the upstream went away while this side was being attached
            return
        session.last_activity = session.loop.time()
        session.start_idle_timer()
        if self.early is not None:
            self.transport.writelines(self.early)
            self.early = None
        self.peer.gate.resume(PEER_NOT_ATTACHED)

    def data_received(self, data: bytes) -> None:
        session = self.session
        n = len(data)
        session.last_activity = session.loop.time()
        session.info.bytes_received += n
        session.cluster_stats.upstream_cx_tx_bytes_total += n
        session.tcp_stats.downstream_cx_rx_bytes_total.value += n
        self.peer.write(data)
