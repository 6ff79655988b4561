"""One attempt of a routed request on an upstream host (Envoy's ``UpstreamRequest``).

The HTTP/1.1 client codec (``Http1ClientConnection``) drives a *stream* object: it reads the
request head and the body pieces queued before it attached, and reports the response head,
body, end and failures back to it. The relay hands it the downstream stream directly; the
router puts this object in between, so that every upstream event passes through the router
first (retry on a 503, stop the per-try timer, count stats, rewrite response headers) and a
failed attempt can be replaced by another on a different host.

It has exactly the attributes and callbacks the client codec and the pool use: ``conn`` (the
downstream connection, for write back-pressure and flushing), ``head``, ``pending`` /
``take_pending``, ``request_done``, ``chunked_in``, ``head_method``, ``sent_at``,
``cancelled``, ``response_done``, ``upstream``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pistio.proxy.http.headers import Fields, RequestHead
from pistio.proxy.http.stream_events import UpstreamFailure

if TYPE_CHECKING:
    from pistio.proxy.http.http1_upstream import Http1ClientConnection
    from pistio.proxy.router.router import RouterStream
    from pistio.proxy.runtime.cluster_manager import ClusterRuntime
    from pistio.proxy.upstream.host import Host


class UpstreamRequest:
    """One attempt: a host, a pooled connection once attached, and the router to report to."""

    __slots__ = (
        "router",
        "conn",
        "head",
        "pending",
        "chunked_in",
        "head_method",
        "sent_at",
        "cancelled",
        "response_done",
        "response_started",
        "upstream",
        "host",
        "cluster",
        "per_try_timer",
        "attempt",
        "is_retry",
    )

    def __init__(
        self,
        router: RouterStream,
        head: RequestHead,
        pending: list[bytes],
        host: Host,
        cluster: ClusterRuntime,
        attempt: int,
    ) -> None:
        self.router = router
        downstream = router.stream
        self.conn = downstream.conn
        self.head = head
        self.pending = pending
        self.chunked_in = downstream.chunked_in
        self.head_method = downstream.head_method
        self.sent_at = 0.0
        # The router gave up on this attempt: a connection that arrives late goes to the pool
        # and late callbacks are ignored.
        self.cancelled = False
        self.response_done = False
        self.response_started = False
        self.upstream: Http1ClientConnection | None = None
        self.host = host
        self.cluster = cluster
        self.per_try_timer: asyncio.TimerHandle | None = None
        self.attempt = attempt
        self.is_retry = False  # holds a retry circuit-breaker token (set by the router)

    @property
    def request_done(self) -> bool:
        return self.router.request_done

    def take_pending(self) -> list[bytes]:
        """The body pieces that waited for the connection; the client may send more now."""
        pending = self.pending
        self.pending = []
        self.router.resume_reading()
        return pending

    # --- events from the client codec ----------------------------------------------------------

    def on_response_head(
        self, status: int, fields: Fields, has_length: bool, upgrade: bytes | None
    ) -> None:
        if not self.cancelled:
            self.response_started = True
            self.router.on_upstream_headers(self, status, fields, has_length, upgrade)

    def on_response_body(self, data: bytes) -> None:
        if not self.cancelled:
            self.router.on_upstream_body(data)

    def on_response_trailers(self, fields: Fields) -> None:
        """Response trailers (HTTP/2 upstreams: gRPC's ``grpc-status``)."""
        if not self.cancelled:
            self.router.on_upstream_trailers(fields)

    def on_response_complete(self) -> None:
        self.upstream = None
        if not self.cancelled:
            self.response_done = True
            self.router.on_upstream_complete(self)

    def on_upstream_failure(self, failure: UpstreamFailure) -> None:
        self.upstream = None
        if not self.cancelled:
            self.router.on_upstream_failure(self, failure)

    def on_upgraded(self, upstream_transport: Any, early: bytes) -> None:
        if not self.cancelled:
            self.router.on_upgraded(self, upstream_transport, early)

    # --- the router's side ----------------------------------------------------------------------

    def cancel(self) -> None:
        """Abandon the attempt: reset its connection (its state is unknown) or let a
        connection still being opened go to the pool."""
        self.cancelled = True
        timer = self.per_try_timer
        if timer is not None:
            self.per_try_timer = None
            timer.cancel()
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abort_stream()
