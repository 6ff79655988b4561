"""Request mirroring (Envoy's shadowing): a fire-and-forget copy of a request to another cluster.

For each ``request_mirror_policies`` entry whose fraction fires, the router sends the request
— headers after the route's mutations, the ``:authority`` with ``-shadow`` appended to the host
part unless ``disable_shadow_host_suffix_append``, and the complete buffered body — to a host
of the shadow cluster, once the downstream request is complete. The response is read and
dropped; a failure, a missing cluster or no healthy host only counts a stat. The main request
never waits for the shadow and is never failed by it. A shadow is cut off after the route
timeout, as Envoy gives it the same timeout as the main request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pistio.proxy.config.route_action import MirrorPolicy, shadow_host
from pistio.proxy.http.headers import Fields, RequestHead
from pistio.proxy.http.stream_events import UpstreamFailure
from pistio.proxy.runtime.cluster_manager import ClusterRuntime


class _NoGate:
    __slots__ = ()

    def pause(self, reason: int) -> None:
        pass

    def resume(self, reason: int) -> None:
        pass


class _NullDownstream:
    """Stands for the downstream connection of a shadow: nobody reads its response."""

    __slots__ = ()
    write_blocked = False
    gate = _NoGate()
    transport = None

    def flush(self) -> None:
        pass


NULL_DOWNSTREAM = _NullDownstream()


def shadow_head(head: RequestHead, policy: MirrorPolicy) -> RequestHead:
    """A copy of ``head`` for the shadow cluster, with its authority rewritten."""
    fields = list(head.fields)
    index = dict(head.index)
    copy = RequestHead(head.method, head.target, head.version, fields, index, None)
    authority = head.authority.decode("latin-1")
    if policy.host_rewrite_literal:
        host = policy.host_rewrite_literal
    elif policy.disable_shadow_host_suffix_append:
        host = authority
    else:
        host = shadow_host(authority)
    copy.set(b"host", host.encode("latin-1"))
    return copy


class ShadowRequest:
    """One mirrored request; duck-types the stream the HTTP/1 client codec drives."""

    __slots__ = (
        "conn", "head", "pending", "request_done", "chunked_in", "head_method", "sent_at",
        "cancelled", "response_done", "upstream", "host", "cluster", "timer", "stats",
    )

    def __init__(
        self,
        head: RequestHead,
        body: list[bytes],
        chunked: bool,
        cluster: ClusterRuntime,
        host: Any,
        stats: Any,
    ) -> None:
        self.conn = NULL_DOWNSTREAM
        self.head = head
        self.pending = body
        self.request_done = True
        self.chunked_in = chunked
        self.head_method = head.method == b"HEAD"
        self.sent_at = 0.0
        self.cancelled = False
        self.response_done = False
        self.upstream: Any = None
        self.cluster = cluster
        self.host = host
        self.timer: asyncio.TimerHandle | None = None
        self.stats = stats

    def take_pending(self) -> list[bytes]:
        pending, self.pending = self.pending, []
        return pending

    def start(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.host.active_requests += 1
        self.stats.upstream_rq_total += 1
        if timeout > 0:
            self.timer = loop.call_later(timeout, self._timed_out)
        pool = self.cluster.pools(loop).get((self.host.address, self.host.port))
        pool.acquire(self)
        up = self.upstream
        if up is not None:
            up.flush()

    def _finish(self) -> None:
        if self.response_done:
            return
        self.response_done = True
        self.host.active_requests -= 1
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def _timed_out(self) -> None:
        self.timer = None
        if self.response_done:
            return
        self.stats.upstream_rq_timeout += 1
        self.cancelled = True
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.abort_stream()
        self._finish()

    # --- events from the client codec ----------------------------------------------------------

    def on_response_head(
        self, status: int, fields: Fields, has_length: bool, upgrade: bytes | None
    ) -> None:
        self.stats.record_response(status)

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_complete(self) -> None:
        self.upstream = None
        self._finish()

    def on_upstream_failure(self, failure: UpstreamFailure) -> None:
        self.upstream = None
        if not self.response_done:
            self.stats.upstream_rq_rx_reset += 1
        self._finish()

    def on_upgraded(self, upstream_transport: Any, early: bytes) -> None:
        upstream_transport.close()
