"""HTTP/2 connection pool per upstream host, per worker (Envoy's HTTP/2 conn pool).

Streams are multiplexed: a host normally has one connection, and every request attempt
becomes a stream on it. A new connection is opened only when the current ones are full (the
lower of the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` and the cluster's
``http2_protocol_options.max_concurrent_streams``), when one received GOAWAY (it drains
its streams and closes; new streams go to a new connection), or when a connection carried
``max_requests_per_connection`` streams. Attempts that arrive while a connection is being
set up wait for it; a failed connect fails them all (UF), as in Envoy.

The pool offers the HTTP/1 pool's interface to the router: ``acquire(attempt)``, ``idle``
(true when a stream can start at once) and ``close``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pistio.proxy.config.cluster_config import TcpKeepalive
from pistio.proxy.http.http2_downstream import Http2Settings
from pistio.proxy.http.http2_upstream import Http2ClientConnection
from pistio.proxy.http.stream_events import UpstreamFailure
from pistio.proxy.tls.upstream import UpstreamTls, open_connection

_INF = float("inf")


class Http2ConnectionPool:
    """Multiplexed HTTP/2 connections to one upstream address."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        settings: Http2Settings,
        connect_timeout: float = 5.0,
        max_requests_per_connection: int = 0,
        local_addr: tuple[str, int] | None = None,
        tls: UpstreamTls | None = None,
        keepalive: TcpKeepalive | None = None,
        proxy_header: bytes | None = None,
    ) -> None:
        self.local_addr = local_addr
        self.keepalive = keepalive
        self.proxy_header = proxy_header  # upstream_proxy_protocol: sent first
        self.tls = tls  # the host's TLS transport socket (ALPN h2 comes from its config)
        self.loop = loop
        self.host = host
        self.port = port
        self.settings = settings
        self.max_concurrent_streams = settings.max_concurrent_streams
        self.connect_timeout = connect_timeout
        self.max_requests_per_connection = max_requests_per_connection
        self.ready: list[Http2ClientConnection] = []
        self.connections: set[Http2ClientConnection] = set()
        self._waiting: deque[Any] = deque()
        self._connecting: set[asyncio.Task[None]] = set()
        self.connects = 0
        self.connect_failures = 0
        self.deadline = _INF

    @property
    def idle(self) -> bool:
        return any(c.capacity > 0 for c in self.ready)

    def acquire(self, attempt: Any) -> None:
        for conn in self.ready:
            if conn.capacity > 0:
                self._attach(conn, attempt)
                return
        self._waiting.append(attempt)
        if not self._connecting:
            self._open()

    def _attach(self, conn: Http2ClientConnection, attempt: Any) -> None:
        conn.attach(attempt)
        limit = self.max_requests_per_connection
        if limit and conn.requests >= limit:
            # Envoy drains a connection that carried its quota of streams.
            self.connection_going_away(conn)
            conn.going_away = True

    def _open(self) -> None:
        task = self.loop.create_task(self._connect())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self) -> None:
        conn = Http2ClientConnection(self, self.settings)
        self.connects += 1
        try:
            await asyncio.wait_for(
                open_connection(self.loop, lambda: conn, self.host, self.port,
                                local_addr=self.local_addr, tls=self.tls,
                                keepalive=self.keepalive, proxy_header=self.proxy_header),
                self.connect_timeout,
            )
        except TimeoutError:
            self.connect_failures += 1
            self._fail_waiting(UpstreamFailure.CONNECTION_TIMEOUT)
            return
        except OSError:
            self.connect_failures += 1
            self._fail_waiting(UpstreamFailure.CONNECTION_FAILURE)
            return
        # Done connecting: waiters beyond this connection's capacity may open another.
        self._connecting.discard(asyncio.current_task())  # type: ignore[arg-type]
        self.connections.add(conn)
        self.ready.append(conn)
        self._dispatch_waiting()

    def _dispatch_waiting(self) -> None:
        waiting = self._waiting
        while waiting:
            attempt = waiting[0]
            if attempt.cancelled:
                waiting.popleft()
                continue
            conn = next((c for c in self.ready if c.capacity > 0), None)
            if conn is None:
                if not self._connecting:
                    self._open()
                return
            waiting.popleft()
            self._attach(conn, attempt)
            conn.flush()

    def _fail_waiting(self, failure: UpstreamFailure) -> None:
        waiting = self._waiting
        self._waiting = deque()
        for attempt in waiting:
            if not attempt.cancelled:
                attempt.on_upstream_failure(failure)
                attempt.conn.flush()

    # --- the connections' reports -----------------------------------------------------------------

    def stream_finished(self, conn: Http2ClientConnection) -> None:
        if conn.going_away and not conn.streams:
            conn.close()
            self.discard(conn)
        elif self._waiting:
            self._dispatch_waiting()

    def capacity_changed(self, conn: Http2ClientConnection) -> None:
        if self._waiting:
            self._dispatch_waiting()

    def connection_going_away(self, conn: Http2ClientConnection) -> None:
        if conn in self.ready:
            self.ready.remove(conn)

    def discard(self, conn: Http2ClientConnection) -> None:
        self.connections.discard(conn)
        if conn in self.ready:
            self.ready.remove(conn)
        if self._waiting and not self._connecting:
            self._open()

    def on_deadline(self, now: float) -> None:
        self.deadline = _INF

    @property
    def unused(self) -> bool:
        """No connection open or being opened, no stream waiting (can be forgotten)."""
        return not self.connections and not self._connecting and not self._waiting

    def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
        self.ready.clear()
        self.connections.clear()
        self._waiting.clear()
