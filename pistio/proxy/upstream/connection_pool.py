"""HTTP/1.1 connection pools per upstream host, per worker (Envoy's HTTP/1 conn pool).

A pool keeps idle keep-alive connections to one (address, port) and hands the most recently
used one to the next request (warm in the kernel and in the peer), opening a new connection
when none is idle. Envoy's cluster settings that shape it: ``connect_timeout`` (Envoy's default
5 s), ``common_http_protocol_options.idle_timeout`` (default one hour; idle connections older
than this are closed) and ``max_requests_per_connection`` (0: unlimited). Circuit breaking
(max connections, pending requests) belongs to the cluster's circuit breakers, not here.

Each worker process owns its pools: nothing is shared or locked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pistio.proxy.http.deferred_writes import deferred_writes
from pistio.proxy.http.http1_upstream import Http1ClientConnection
from pistio.proxy.http.http2_downstream import Http2Settings
from pistio.proxy.http.stream_events import UpstreamFailure
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.tls.upstream import UpstreamTls, open_connection
from pistio.proxy.upstream.connection_pool_h2 import Http2ConnectionPool

if TYPE_CHECKING:
    from pistio.proxy.config.cluster_config import HttpProtocolConfig, TcpKeepalive
    from pistio.proxy.http.http1_downstream import Http1Stream

_INF = float("inf")
# Variant pools are looked over for unused ones once they are this many (then twice as many
# as were kept): one per downstream connection with the PROXY protocol would pile up.
VARIANT_PRUNE_MIN = 64


@dataclass(frozen=True, slots=True)
class UpstreamHttpOptions:
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0
    max_requests_per_connection: int = 0
    # upstream_bind_config: Istio binds inbound clusters to 127.0.0.6 so that iptables
    # tells the proxy's own connections to the app apart from captured traffic.
    local_addr: tuple[str, int] | None = None
    # upstream_connection_options.tcp_keepalive (None: the kernel's default, off).
    tcp_keepalive: TcpKeepalive | None = None


class Http1ConnectionPool:
    """Idle keep-alive connections to one upstream address; new ones on demand."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        options: UpstreamHttpOptions,
        tls: UpstreamTls | None = None,
        proxy_header: bytes | None = None,
    ) -> None:
        self.loop = loop
        # Finished responses go downstream when the loop's turn is over (deferred_writes).
        self.writes = deferred_writes(loop)
        self.host = host
        self.port = port
        self.options = options
        # The host's TLS transport socket: a handshake per new connection, none per request.
        self.tls = tls
        # upstream_proxy_protocol: what every new connection of this pool sends first.
        self.proxy_header = proxy_header
        # Most recently released last: pop() takes the warmest, [0] is the oldest.
        self.idle: list[Http1ClientConnection] = []
        self.connections: set[Http1ClientConnection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self.deadline = _INF
        self.connects = 0
        self.connect_failures = 0

    def acquire(self, stream: Http1Stream) -> None:
        """Attach ``stream`` to an idle connection now, or to a new one once connected."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.attach(stream)
                return
        task = self.loop.create_task(self._open(stream))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(self, stream: Http1Stream) -> None:
        conn = Http1ClientConnection(self)
        self.connects += 1
        try:
            await asyncio.wait_for(
                open_connection(self.loop, lambda: conn, self.host, self.port,
                                local_addr=self.options.local_addr, tls=self.tls,
                                keepalive=self.options.tcp_keepalive,
                                proxy_header=self.proxy_header),
                self.options.connect_timeout,
            )
        except TimeoutError:
            self.connect_failures += 1
            self._connect_failed(stream, UpstreamFailure.CONNECTION_TIMEOUT)
            return
        except OSError:
            self.connect_failures += 1
            self._connect_failed(stream, UpstreamFailure.CONNECTION_FAILURE)
            return
        if conn.closed:
            # Closed before carrying a request (the peer spoke first, or hung up).
            self._connect_failed(stream, UpstreamFailure.CONNECTION_TERMINATION)
            return
        self.connections.add(conn)
        if stream.cancelled or stream.response_done:
            self.release(conn)
            return
        conn.attach(stream)
        conn.flush()

    @staticmethod
    def _connect_failed(stream: Http1Stream, failure: UpstreamFailure) -> None:
        stream.on_upstream_failure(failure)
        stream.conn.flush()

    def release(self, conn: Http1ClientConnection) -> None:
        """A connection finished a response and may carry another request."""
        now = self.loop.time()
        conn.idle_since = now
        if not self.idle and self.options.idle_timeout > 0:
            self.deadline = now + self.options.idle_timeout
        self.idle.append(conn)

    def discard(self, conn: Http1ClientConnection) -> None:
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def on_deadline(self, now: float) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        timeout = self.options.idle_timeout
        idle = self.idle
        while idle and idle[0].idle_since + timeout <= now:
            conn = idle.pop(0)
            self.connections.discard(conn)
            conn.close()
        self.deadline = idle[0].idle_since + timeout if idle else _INF

    @property
    def unused(self) -> bool:
        """No connection open or being opened (the pool can be forgotten)."""
        return not self.connections and not self._connecting

    def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
        self.idle.clear()
        self.connections.clear()


class UpstreamPools:
    """This worker's pools, one per upstream (address, port): HTTP/1.1 pools, and HTTP/2
    pools for clusters whose protocol options ask for HTTP/2."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: UpstreamHttpOptions,
        sweeper: DeadlineSweeper | None = None,
        tls_for: Callable[[tuple[str, int]], UpstreamTls | None] | None = None,
    ) -> None:
        self.loop = loop
        self.options = options
        self._sweeper = sweeper
        # The TLS transport socket of an upstream address (its endpoint's tlsMode), if any.
        self.tls_for = tls_for
        self._pools: dict[tuple[str, int], Http1ConnectionPool] = {}
        self._h2_pools: dict[tuple[str, int], Http2ConnectionPool] = {}
        # auto_sni (the request's host as SNI) and the PROXY protocol (the downstream's
        # addresses) make connections that only some requests may use: pooled per variant.
        self._variant_pools: dict[tuple[Any, ...], Http1ConnectionPool] = {}
        self._variant_h2_pools: dict[tuple[Any, ...], Http2ConnectionPool] = {}
        self._prune_at = VARIANT_PRUNE_MIN

    def _tls(self, address: tuple[str, int], sni: str | None,
             validate_san: bool) -> UpstreamTls | None:
        tls = self.tls_for(address) if self.tls_for is not None else None
        if tls is not None and sni:
            tls = tls.for_host(sni, validate_san)
        return tls

    def get_h2(self, address: tuple[str, int], http: HttpProtocolConfig,
               sni: str | None = None, proxy_header: bytes | None = None
               ) -> Http2ConnectionPool:
        """The HTTP/2 pool to ``address`` (for ``sni`` with ``auto_sni``, and for the PROXY
        protocol ``proxy_header``); the cluster's ``http2_protocol_options`` shape a pool when
        it is created."""
        pools: dict[Any, Http2ConnectionPool] = self._h2_pools
        key: Any = address
        if proxy_header is not None or (sni and self.tls_for is not None):
            pools, key = self._variant_h2_pools, (address, sni, proxy_header)
        pool = pools.get(key)
        if pool is None:
            settings = Http2Settings.of(http.max_concurrent_streams,
                                        http.initial_stream_window_size,
                                        http.initial_connection_window_size)
            if pools is self._variant_h2_pools:
                self._prune_variants()
            pool = pools[key] = Http2ConnectionPool(
                self.loop, address[0], address[1], settings, self.options.connect_timeout,
                self.options.max_requests_per_connection, self.options.local_addr,
                tls=self._tls(address, sni, http.auto_san_validation),
                keepalive=self.options.tcp_keepalive, proxy_header=proxy_header)
        return pool

    def get(self, address: tuple[str, int], sni: str | None = None,
            validate_san: bool = False, proxy_header: bytes | None = None
            ) -> Http1ConnectionPool:
        pools: dict[Any, Http1ConnectionPool] = self._pools
        key: Any = address
        if proxy_header is not None or (sni and self.tls_for is not None):
            pools, key = self._variant_pools, (address, sni, proxy_header)
        pool = pools.get(key)
        if pool is None:
            if pools is self._variant_pools:
                self._prune_variants()
            pool = Http1ConnectionPool(self.loop, address[0], address[1], self.options,
                                       self._tls(address, sni, validate_san), proxy_header)
            pools[key] = pool
            if self._sweeper is not None:
                self._sweeper.watch(pool)
        return pool

    def _prune_variants(self) -> None:
        """Forget the variant pools that hold no connection any more (their connections
        closed on idle timeout or failure), once there are enough of them to matter."""
        if len(self._variant_pools) + len(self._variant_h2_pools) < self._prune_at:
            return
        for key, pool in list(self._variant_pools.items()):
            if pool.unused:
                del self._variant_pools[key]
                if self._sweeper is not None:
                    self._sweeper.unwatch(pool)
        for key, h2_pool in list(self._variant_h2_pools.items()):
            if h2_pool.unused:
                del self._variant_h2_pools[key]
        self._prune_at = max(VARIANT_PRUNE_MIN,
                             2 * (len(self._variant_pools) + len(self._variant_h2_pools)))

    def close_host(self, address: tuple[str, int]) -> None:
        """Close every connection to one host (Envoy's
        ``close_connections_on_host_health_failure``); requests on them fail."""
        pool = self._pools.pop(address, None)
        if pool is not None:
            if self._sweeper is not None:
                self._sweeper.unwatch(pool)
            pool.close()
        h2_pool = self._h2_pools.pop(address, None)
        if h2_pool is not None:
            h2_pool.close()
        for key in [k for k in self._variant_pools if k[0] == address]:
            pool = self._variant_pools.pop(key)
            if self._sweeper is not None:
                self._sweeper.unwatch(pool)
            pool.close()
        for key in [k for k in self._variant_h2_pools if k[0] == address]:
            self._variant_h2_pools.pop(key).close()

    def close(self) -> None:
        for pool in (*self._pools.values(), *self._variant_pools.values()):
            if self._sweeper is not None:
                self._sweeper.unwatch(pool)
            pool.close()
        self._pools.clear()
        self._variant_pools.clear()
        for h2_pool in (*self._h2_pools.values(), *self._variant_h2_pools.values()):
            h2_pool.close()
        self._h2_pools.clear()
        self._variant_h2_pools.clear()
