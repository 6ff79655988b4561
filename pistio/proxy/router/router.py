"""Envoy's router filter (``envoy.filters.http.router``): the last HTTP filter of a chain.

Per stream, in Envoy's order:

1. **Route.** No route: 404 with an empty body, flag ``NR`` (``no_route``). A direct response
   answers with its status and body; a redirect answers its 3xx with ``location``; both get the
   route's response header mutations (``rq_direct_response``, ``rq_redirect``).
2. **Cluster.** ``cluster``, ``cluster_header`` or a weighted pick (``random % total``, the
   random value from ``header_name`` when it holds a number). Unknown cluster:
   ``cluster_not_found_response_code`` (503 by default), flag ``NC`` (``no_cluster``).
3. **Request edits** (Envoy's ``finalizeRequestHeaders``): the header mutations of the weighted
   cluster, route, virtual host and route configuration levels; then the host rewrite
   (literal, auto from the host's hostname, from a header, or from the path by regex, with
   ``x-forwarded-host`` when asked); then the path rewrite (prefix or regex) with the original
   in ``x-envoy-original-path``. Then the router's own headers, unless the router config says
   ``suppress_envoy_headers``: ``x-envoy-expected-rq-timeout-ms`` (the per-try timeout if set,
   else the route timeout), ``x-envoy-attempt-count`` when the virtual host asks for it,
   ``x-envoy-decorator-operation``.
4. **Host** from the cluster's load balancer (hash policies give the hash key; a retry with
   the ``previous_hosts`` predicate avoids hosts already tried). None: 503
   ``no healthy upstream``, flag ``UH``.
5. **Circuit breakers.** ``max_requests`` refused, or no idle connection while the cluster's
   busy connections reached ``max_connections`` and ``max_pending_requests`` is full: 503
   ``...reset reason: overflow`` with ``x-envoy-overloaded: true``, flag ``UO``. Within the
   pending limit the request waits for a connection to come free.
6. **Upstream request** on the host's HTTP/1.1 pool. Timeouts: the route ``timeout`` runs from
   the end of the downstream request to the end of the response (504 ``upstream request
   timeout``, flag ``UT``, ``upstream_rq_timeout``; a reset if the response had begun); the
   retry policy's ``per_try_timeout`` runs per attempt until response headers
   (``upstream_rq_per_try_timeout``, retried as a reset would be).
7. **Retries** (``retry_state``): a retriable response or reset, while nothing was sent
   downstream and the request body is fully buffered within the buffer limit (requests with a
   body are buffered only when a retry policy or a mirror could replay them; beyond the limit
   Envoy abandons retries and shadows, ``retry_or_shadow_abandoned``). Exhausted: the last
   outcome stands with flag ``URX``.
8. **Outlier detection** hears every attempt's result (status, connect failure, reset,
   timeout). **Mirrors** get a copy when the request is complete (``mirror``).

Responses get the route's response header mutations, ``x-envoy-attempt-count`` when asked,
``x-envoy-upstream-service-time`` (the codec) and the encoder filters' edits (CORS).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.formatter import ProxiedResponseHeaders
from pistio.proxy.config.cluster_config import UpstreamProtocol
from pistio.proxy.config.route_action import (
    ClusterWeight,
    CookieHash,
    HeaderHash,
    MaxStreamDuration,
    QueryParameterHash,
    RetryPolicy,
    RouteAction,
    SourceIpHash,
    pick_weighted_cluster,
    port_start,
    redirect_location,
    rewritten_path,
)
from pistio.proxy.config.route_table import Route
from pistio.proxy.http import http2_grpc as grpc
from pistio.proxy.http.deferred_writes import deferred_writes
from pistio.proxy.http.flow_control import UPSTREAM_CONNECTING, WRITE_HIGH_WATER
from pistio.proxy.http.headers import (
    X_ENVOY_DECORATOR_OPERATION,
    X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
    X_ENVOY_ORIGINAL_PATH,
    X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS,
    Fields,
    RequestHead,
)
from pistio.proxy.http.stream_events import ResponseFlag, UpstreamFailure
from pistio.proxy.router.header_mutation import mutate_request, mutate_response
from pistio.proxy.router.mirror import ShadowRequest, shadow_head
from pistio.proxy.router.retry_state import RetryState, reset_is_retriable, response_is_retriable
from pistio.proxy.router.upstream_request import UpstreamRequest
from pistio.proxy.runtime.cluster_manager import ClusterManager, ClusterRuntime
from pistio.proxy.stats.families import ClusterStats
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.upstream.outlier_detection import LocalOrigin

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.upstream.host import Host

X_ENVOY_ATTEMPT_COUNT = b"x-envoy-attempt-count"
X_ENVOY_OVERLOADED = b"x-envoy-overloaded"
X_FORWARDED_HOST = b"x-forwarded-host"

NO_HEALTHY_UPSTREAM_BODY = b"no healthy upstream"
UPSTREAM_TIMEOUT_BODY = b"upstream request timeout"
_OVERLOADED = [(X_ENVOY_OVERLOADED, b"true")]

# ResponseFlag (the codecs' enum) → the access log's bit.
FLAG_BITS = {flag: rf.from_short_string(flag.value) for flag in ResponseFlag}

_CONNECT_FAILURES = (UpstreamFailure.CONNECTION_FAILURE, UpstreamFailure.CONNECTION_TIMEOUT)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """``envoy.extensions.filters.http.router.v3.Router`` as the router uses it."""

    suppress_envoy_headers: bool = False


class RouterContext:
    """What every router stream of a worker shares: the cluster manager, the stats store and
    the queues of requests waiting for a connection (per cluster runtime)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clusters: ClusterManager,
        store: StatsStore,
    ) -> None:
        self.loop = loop
        self.clusters = clusters
        self.store = store
        # Complete requests are written when the loop's turn is over (deferred_writes).
        self.writes = deferred_writes(loop)
        self._cluster_stats: dict[str, ClusterStats] = {}
        self.pending: dict[ClusterRuntime, deque[RouterStream]] = {}

    def cluster_stats(self, name: str) -> ClusterStats:
        stats = self._cluster_stats.get(name)
        if stats is None:
            stats = self._cluster_stats[name] = self.store.cluster(name)
        return stats

    def dispatch_pending(self, cluster: ClusterRuntime) -> None:
        """A request of ``cluster`` ended: start waiting ones while connections allow."""
        queue = self.pending.get(cluster)
        cb = cluster.circuit_breakers
        while queue and cb.requests.count < cb.connections.limit:
            waiting = queue.popleft()
            cb.pending_requests.release()
            waiting.cluster_stats.upstream_rq_pending_active -= 1
            waiting.waiting_for_connection = False
            waiting.start_attempt()
        if queue is not None and not queue:
            del self.pending[cluster]


def _stable_hash(value: bytes) -> int:
    """A hash that is the same in every worker process (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "big")


class RouterStream:
    """The router's state for one downstream stream."""

    __slots__ = (
        "s", "stream", "ctx", "config", "route", "action", "weight", "cluster",
        "cluster_stats", "retry_policy", "retry", "first_host", "timeout", "per_try_timeout", "global_timer",
        "backoff_timer", "attempt", "attempts", "retain_body", "body", "body_bytes",
        "body_limit", "unsent", "unsent_bytes", "request_done", "response_started",
        "done", "hash_key", "waiting_for_connection", "include_attempt_count",
        "attempt_count_in_response", "retried", "gate_paused", "holding_retry",
        "duration_timer",
    )

    def __init__(self, s: ActiveStream, ctx: RouterContext, config: RouterConfig) -> None:
        self.s = s
        self.stream = s.stream
        self.ctx = ctx
        self.config = config
        self.route: Route | None = None
        self.action: RouteAction | None = None
        self.weight: ClusterWeight | None = None
        self.cluster: ClusterRuntime | None = None
        self.cluster_stats: ClusterStats = None  # type: ignore[assignment]
        # The route's retry policy (None: no retries); the retry state is made only when an
        # outcome is retriable, with ``first_host`` (the first attempt's) as tried.
        self.retry_policy: RetryPolicy | None = None
        self.retry: RetryState | None = None
        self.first_host: Host | None = None
        self.timeout = 0.0
        self.per_try_timeout = 0.0
        self.global_timer: asyncio.TimerHandle | None = None
        self.backoff_timer: asyncio.TimerHandle | None = None
        self.attempt: UpstreamRequest | None = None
        self.attempts = 0
        self.retain_body = False
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.body_limit = 0
        self.unsent: list[bytes] = []
        self.unsent_bytes = 0
        self.request_done = s.stream.request_done
        self.response_started = False
        self.done = False
        self.hash_key: int | None = None
        self.waiting_for_connection = False
        self.include_attempt_count = False
        self.attempt_count_in_response = False
        self.retried = False
        self.gate_paused = False
        # A granted retry's circuit-breaker token, until its attempt takes it over.
        self.holding_retry = False
        self.duration_timer: asyncio.TimerHandle | None = None

    # --- decoding the request ------------------------------------------------------------------

    def decode_headers(self) -> None:
        s = self.s
        hcm_stats = s.hcm.stats
        hcm_stats.rq_total += 1
        route = s.route()
        if route is None:
            hcm_stats.no_route += 1
            s.send_local_reply(404, b"", flag=rf.NO_ROUTE_FOUND, details="route_not_found")
            return
        self.route = route
        s.info.route_name = route.name or None
        if route.direct_response is not None:
            hcm_stats.rq_direct_response += 1
            dr = route.direct_response
            s.send_local_reply(dr.status, dr.body, mutate_response([],
                               route.response_header_mutations()), details="direct_response")
            return
        if route.redirect is not None:
            hcm_stats.rq_redirect += 1
            location = redirect_location(route, s.request_view(), s.forwarded_proto())
            fields = mutate_response([(b"location", location.encode("latin-1"))],
                                     route.response_header_mutations())
            s.send_local_reply(route.redirect.response_code, b"", fields, details="redirect")
            return
        action = route.action
        assert action is not None
        self.action = action
        head = self.stream.head
        cluster_name = action.cluster
        if action.weighted_clusters is not None:
            wc = action.weighted_clusters
            rnd = None
            if wc.header_name:
                raw = head.index.get(wc.header_name.encode("latin-1"))
                if raw is not None and raw.isdigit():
                    rnd = int(raw)
            if rnd is None:
                rnd = s.request_view().random_value
            self.weight = pick_weighted_cluster(wc, rnd)
            cluster_name = self.weight.name
        elif action.cluster_header:
            raw = head.index.get(action.cluster_header.encode("latin-1"))
            cluster_name = raw.decode("latin-1") if raw else ""
        cluster = self.ctx.clusters.get(cluster_name) if cluster_name else None
        if cluster is None:
            hcm_stats.no_cluster += 1
            s.send_local_reply(action.cluster_not_found_response_code, b"",
                               flag=rf.NO_CLUSTER_FOUND, details="cluster_not_found")
            return
        self.cluster = cluster
        self.cluster_stats = self.ctx.cluster_stats(cluster.name)
        s.info.upstream_cluster = cluster.name
        if cluster.config.alt_stat_name:
            s.info.upstream_cluster_observability_name = cluster.config.alt_stat_name
        if head.upgrade is not None:
            allowed = action.upgrades.get(head.upgrade.decode("latin-1"),
                                          head.upgrade.decode("latin-1") in s.hcm.upgrade_types)
            if not allowed:
                s.send_local_reply(403, b"", details="upgrade_failed")
                return
        self._finalize_request_headers(route, action)
        policy = action.retry_policy
        if policy is not None and head.upgrade is None:
            self.retry_policy = policy
            self.per_try_timeout = policy.per_try_timeout
        if head.upgrade is None:
            self._final_timeouts(action, head)
        else:
            self.timeout = 0.0
        if action.max_stream_duration is not None:
            self._arm_stream_duration(action.max_stream_duration)
        self.include_attempt_count = action.include_request_attempt_count
        self.attempt_count_in_response = action.include_attempt_count_in_response
        if action.hash_policies:
            self.hash_key = self._hash_key(action)
        if not self.request_done and (self.retry_policy is not None
                                      or action.mirror_policies):
            # Keep the body for a retry or a shadow, within the buffer limit.
            self.retain_body = True
            limit = action.per_request_buffer_limit_bytes
            self.body_limit = limit if limit is not None else s.hcm.buffer_limit
        body = s.take_held_body()
        if body:
            self.on_request_body(body)
        if self.request_done:
            self._request_complete_actions()
        self.start_attempt()

    def _final_timeouts(self, action: RouteAction, head: RequestHead) -> None:
        """Envoy's ``FilterUtility::finalTimeout``. The route's timeout — or, for a gRPC call
        on a route with ``max_grpc_timeout`` (and no ``max_stream_duration``), its
        ``grpc-timeout`` (none: no timeout) less ``grpc_timeout_offset``, capped by
        ``max_grpc_timeout`` unless that is 0; then ``x-envoy-upstream-rq-timeout-ms`` and
        ``-per-try-timeout-ms`` override them (and are removed); a per-try timeout not below
        the global one is dropped. The upstream is told the outcome in
        ``x-envoy-expected-rq-timeout-ms`` (and ``grpc-timeout`` when it was read)."""
        timeout = action.timeout
        index = head.index
        grpc_max = action.max_grpc_timeout
        grpc_timeouts = False
        if grpc_max is not None and action.max_stream_duration is None:
            grpc_timeouts = grpc.is_grpc(index.get(b"content-type"))
        if grpc_timeouts:
            raw = index.get(grpc.GRPC_TIMEOUT)
            value = (grpc.parse_grpc_timeout(raw) if raw is not None else None) or 0.0
            offset = action.grpc_timeout_offset
            if offset and offset < value:
                value -= offset
            if grpc_max and (value == 0 or value > grpc_max):
                value = grpc_max
            timeout = value
        if X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS in index:
            raw = index[X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS]
            if raw.isdigit():
                timeout = int(raw) / 1000
            head.remove(X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS)
        if X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS in index:
            raw = index[X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS]
            if raw.isdigit():
                self.per_try_timeout = int(raw) / 1000
            head.remove(X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS)
        per_try = self.per_try_timeout
        if timeout and per_try >= timeout:
            per_try = self.per_try_timeout = 0.0
        self.timeout = timeout
        expected = per_try or timeout
        if expected > 0:
            ms = int(expected * 1000)
            if not self.config.suppress_envoy_headers:
                head.set(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, b"%d" % ms)
            if grpc_timeouts:
                head.set(grpc.GRPC_TIMEOUT, grpc.format_grpc_timeout(ms))

    def _arm_stream_duration(self, msd: MaxStreamDuration) -> None:
        """The route's ``max_stream_duration``; for a gRPC call with ``grpc-timeout`` and
        ``grpc_timeout_header_max`` set, the header's value (capped, less the offset)."""
        duration = msd.max_stream_duration or 0.0
        if msd.grpc_timeout_header_max is not None:
            head = self.stream.head
            raw = head.index.get(grpc.GRPC_TIMEOUT)
            if raw is not None and grpc.is_grpc(head.index.get(b"content-type")):
                value = grpc.parse_grpc_timeout(raw)
                if value is not None:
                    cap = msd.grpc_timeout_header_max
                    if cap > 0:
                        value = min(value, cap)
                    if msd.grpc_timeout_header_offset and value > msd.grpc_timeout_header_offset:
                        value -= msd.grpc_timeout_header_offset
                    duration = value
        if duration > 0:
            self.duration_timer = self.ctx.loop.call_later(duration, self._on_stream_duration)

    def _on_stream_duration(self) -> None:
        """Envoy's "max stream duration reached": a reset once the response began, else a
        local reply (408 while the request is incomplete, 504 after) that a gRPC client reads
        as DEADLINE_EXCEEDED."""
        self.duration_timer = None
        if self.done:
            return
        attempt = self.attempt
        if attempt is not None:
            self.attempt = None
            attempt.cancel()
            self._release(attempt)
        self.s.info.response_flags |= rf.UPSTREAM_MAX_STREAM_DURATION_REACHED
        if self.response_started:
            self._end()
            self.stream.conn.reset()
            self.s.finish()
            return
        status = 504 if self.request_done else 408
        self._local_failure(status, b"downstream duration timeout", 0, "max_duration_timeout",
                            [(grpc.GRPC_STATUS, b"%d" % grpc.DEADLINE_EXCEEDED)]
                            if grpc.is_grpc(self.stream.head.index.get(b"content-type"))
                            else None)

    def _finalize_request_headers(self, route: Route, action: RouteAction) -> None:
        head = self.stream.head
        if self.weight is None and route.simple_request_edits:
            # Decided when the route was compiled: no mutation, no rewrite.
            if route.decorator_header is not None:
                head.set(X_ENVOY_DECORATOR_OPERATION, route.decorator_header)
            return
        mutate_request(head, route.request_header_mutations(self.weight))
        new_host = None
        if self.weight is not None and self.weight.host_rewrite_literal:
            new_host = self.weight.host_rewrite_literal.encode("latin-1")
        elif action.host_rewrite_literal:
            new_host = action.host_rewrite_literal.encode("latin-1")
        elif action.host_rewrite_header:
            new_host = head.index.get(action.host_rewrite_header.encode("latin-1")) or None
        elif action.host_rewrite_path_regex is not None:
            path = self.s.request_view().path_only
            new_host = action.host_rewrite_path_regex.apply(path).encode("latin-1")
        if new_host is not None:
            if action.append_x_forwarded_host:
                head.add(X_FORWARDED_HOST, head.authority)
            head.set(b"host", new_host)
        new_path = rewritten_path(route, self.s.request_view().path)
        if new_path is not None:
            head.set(X_ENVOY_ORIGINAL_PATH, head.target)
            head.target = new_path.encode("latin-1")
        if route.decorator_header is not None:
            head.set(X_ENVOY_DECORATOR_OPERATION, route.decorator_header)

    def _hash_key(self, action: RouteAction) -> int | None:
        """Envoy's hash policies: the first that yields a value (all of them, combined, unless
        one is ``terminal``)."""
        head = self.stream.head
        key: int | None = None
        for policy in action.hash_policies:
            value: bytes | None = None
            if isinstance(policy, HeaderHash):
                raw = head.index.get(policy.header_name.encode("latin-1"))
                if raw is not None:
                    if policy.regex_rewrite is not None:
                        raw = policy.regex_rewrite.apply(raw.decode("latin-1")).encode("latin-1")
                    value = raw
            elif isinstance(policy, SourceIpHash):
                remote = self.s.info.downstream.remote_address
                if isinstance(remote, tuple):
                    value = remote[0].encode("latin-1")
            elif isinstance(policy, QueryParameterHash):
                text = self.s.request_view().query_first_values().get(policy.name)
                if text is not None:
                    value = text.encode("latin-1")
            elif isinstance(policy, CookieHash):
                cookies = head.index.get(b"cookie")
                if cookies:
                    prefix = policy.name.encode("latin-1") + b"="
                    for part in cookies.split(b";"):
                        part = part.strip()
                        if part.startswith(prefix):
                            value = part[len(prefix):]
                            break
            if value is not None:
                h = _stable_hash(value)
                key = h if key is None else ((key << 1) ^ h) & 0xFFFFFFFFFFFFFFFF
                if policy.terminal:
                    break
        return key

    # --- request body ----------------------------------------------------------------------------

    def on_request_body(self, pieces: list[bytes]) -> None:
        size = 0
        for piece in pieces:
            size += len(piece)
        self.s.info.bytes_received += size
        if self.retain_body:
            self.body += pieces
            self.body_bytes += size
            if self.body_bytes > self.body_limit and self.attempt is not None:
                # Too large to replay: no retry and no shadow for this request (Envoy). While
                # no attempt is in flight the body keeps buffering (reading is paused soon).
                self.retain_body = False
                self.body = []
                self.retry_policy = None
                self.retry = None
                if self.cluster_stats is not None:
                    self.cluster_stats.retry_or_shadow_abandoned += 1
        attempt = self.attempt
        if attempt is not None and not attempt.cancelled:
            up = attempt.upstream
            if up is not None:
                up.out += pieces
                up.flush()
                return
            attempt.pending += pieces
        else:
            self.unsent += pieces
        self.unsent_bytes += size
        if self.unsent_bytes > WRITE_HIGH_WATER and not self.gate_paused:
            # No connection takes the body yet: stop reading the client until one does.
            self.gate_paused = True
            self.stream.conn.gate.pause(UPSTREAM_CONNECTING)

    def resume_reading(self) -> None:
        self.unsent_bytes = 0
        if self.gate_paused:
            self.gate_paused = False
            self.stream.conn.gate.resume(UPSTREAM_CONNECTING)

    def on_request_complete(self) -> None:
        self.request_done = True
        if self.done or self.cluster is None:
            return
        self._request_complete_actions()
        attempt = self.attempt
        if attempt is not None and attempt.upstream is not None:
            attempt.upstream.on_request_complete()

    def _request_complete_actions(self) -> None:
        """Envoy starts the route timeout, and the shadows, once the request is complete."""
        if self.timeout > 0 and self.global_timer is None:
            self.global_timer = self.ctx.loop.call_later(self.timeout, self._on_global_timeout)
        action = self.action
        if action is not None and action.mirror_policies:
            self._start_mirrors(action)

    def _start_mirrors(self, action: RouteAction) -> None:
        has_body = self.body_bytes > 0 or not self.stream.request_done
        if has_body and not self.retain_body:
            return
        for policy in action.mirror_policies:
            if not policy.fraction.enabled(random.getrandbits(32)):
                continue
            cluster = self.ctx.clusters.get(policy.cluster)
            if cluster is None:
                continue
            host = cluster.lb.choose_host(self.hash_key)
            stats = self.ctx.cluster_stats(policy.cluster)
            if host is None:
                stats.upstream_cx_none_healthy += 1
                continue
            shadow = ShadowRequest(shadow_head(self.stream.head, policy), list(self.body),
                                   self.stream.chunked_in, cluster, host, stats)
            shadow.start(self.ctx.loop, self.timeout)

    # --- attempts --------------------------------------------------------------------------------

    def start_attempt(self) -> None:
        """Pick a host and send the request to it (or wait for a connection)."""
        if self.done:
            return
        cluster = self.cluster
        assert cluster is not None
        stats = self.cluster_stats
        exclude = None
        retry = self.retry
        if retry is not None and retry.policy.avoid_previous_hosts and retry.tried_hosts:
            exclude = retry.tried_hosts
        # ORIGINAL_DST clusters (Istio's PassthroughCluster) send the request where the
        # client connected to before the capture redirected it.
        destination = self.s.info.downstream.local_address
        if cluster.initializing:
            # First DNS resolution or health checks still running (Envoy's warming).
            cluster.when_initialized(self._cluster_initialized)
            return
        host = cluster.lb.choose_host(
            self.hash_key, exclude, destination if type(destination) is tuple else None)
        if host is None:
            stats.upstream_cx_none_healthy += 1
            self._local_failure(503, NO_HEALTHY_UPSTREAM_BODY, rf.NO_HEALTHY_UPSTREAM,
                                "no_healthy_upstream")
            return
        action = self.action
        if action is not None and action.auto_host_rewrite and self.attempts == 0:
            # The host header becomes the chosen host's name (DNS clusters), as Envoy does
            # once the first host is picked.
            hostname = host.config.hostname
            if hostname:
                head = self.stream.head
                if action.append_x_forwarded_host:
                    head.add(X_FORWARDED_HOST, head.authority)
                head.set(b"host", hostname.encode("latin-1"))
        pools = cluster.pools(self.ctx.loop)
        http = cluster.config.http
        # auto_sni: TLS connections name the request's host (after host rewrites).
        sni = _host_of(self.stream.head.authority) if http.auto_sni else None
        # upstream_proxy_protocol: connections carry this downstream's addresses.
        header = (cluster.proxy_protocol_header(host.config, self.s.info.downstream)
                  if cluster.proxy_protocol else None)
        if http.protocol is UpstreamProtocol.HTTP2 or (
                http.protocol is UpstreamProtocol.USE_DOWNSTREAM
                and self.stream.head.version == "2"):
            pool = pools.get_h2((host.address, host.port), http, sni, header)
        else:
            pool = pools.get((host.address, host.port), sni, http.auto_san_validation, header)
        cb = cluster.circuit_breakers
        if not pool.idle and cb.requests.count >= cb.connections.limit:
            # HTTP/1.1: every busy connection carries one request; a new one would pass
            # max_connections, so the request waits as pending (or overflows).
            stats.upstream_cx_overflow += 1
            if not cb.pending_requests.try_acquire():
                stats.upstream_rq_pending_overflow += 1
                self._overflow()
                return
            stats.upstream_rq_pending_total += 1
            stats.upstream_rq_pending_active += 1
            self.waiting_for_connection = True
            self.ctx.pending.setdefault(cluster, deque()).append(self)
            return
        if not cb.requests.try_acquire():
            stats.upstream_rq_pending_overflow += 1
            self._overflow()
            return
        self.attempts += 1
        head = self.stream.head
        if self.include_attempt_count:
            head.set(X_ENVOY_ATTEMPT_COUNT, b"%d" % self.attempts)
        if self.attempts > 1 and self.retain_body:
            pending = list(self.body)
            self.unsent = []
        else:
            pending, self.unsent = self.unsent, []
        self.resume_reading()
        attempt = UpstreamRequest(self, head, pending, host, cluster, self.attempts)
        attempt.is_retry = self.holding_retry
        self.holding_retry = False
        self.attempt = attempt
        if retry is not None:
            retry.tried_hosts.append(host)
        elif self.first_host is None:
            self.first_host = host
        info = self.s.info
        info.upstream_host = host.key
        info.attempt_count = self.attempts
        host.active_requests += 1
        stats.upstream_rq_total += 1
        stats.upstream_rq_active += 1
        if self.per_try_timeout > 0:
            attempt.per_try_timer = self.ctx.loop.call_later(
                self.per_try_timeout, self._on_per_try_timeout, attempt)
        pool.acquire(attempt)
        up = attempt.upstream
        if up is not None:
            if self.request_done:
                self.ctx.writes.add(up)  # the whole request is queued: write at turn's end
            else:
                up.flush()  # a body streams on: back-pressure needs the head out now

    def _cluster_initialized(self) -> None:
        if not self.done:
            self.start_attempt()

    def _release(self, attempt: UpstreamRequest) -> None:
        """The attempt no longer holds its request slot and host."""
        if attempt.per_try_timer is not None:
            attempt.per_try_timer.cancel()
            attempt.per_try_timer = None
        cluster = attempt.cluster
        cluster.circuit_breakers.requests.release()
        attempt.host.active_requests -= 1
        self.cluster_stats.upstream_rq_active -= 1
        if attempt.is_retry:
            cluster.circuit_breakers.retries.release()
        if cluster in self.ctx.pending:
            self.ctx.dispatch_pending(cluster)

    def _overflow(self) -> None:
        self._local_failure(503, UpstreamFailure.OVERFLOW.local_reply_body(),
                            rf.UPSTREAM_OVERFLOW, "overflow", _OVERLOADED)

    def _try_retry(self, connect_failure: bool | None, status: int = 0,
                   fields: Fields | None = None) -> bool | None:
        """Retry if the outcome allows: True (scheduled), False (not retriable), None
        (retriable but exhausted or refused: the caller sets URX)."""
        policy = self.retry_policy
        if policy is None or self.response_started:
            return False
        if connect_failure is None:
            retriable = response_is_retriable(policy, status, fields or [])
        else:
            retriable = reset_is_retriable(policy, connect_failure)
        if not retriable:
            return False
        if self.body_bytes and not self.retain_body:
            return False
        retry = self.retry
        if retry is None:
            first = self.first_host
            retry = self.retry = RetryState(policy, [first] if first is not None else [])
        granted = retry.take_retry(self.cluster.circuit_breakers)  # type: ignore[union-attr]
        stats = self.cluster_stats
        if granted is None:
            stats.upstream_rq_retry_limit_exceeded += 1
            return None
        if granted is False:
            stats.upstream_rq_retry_overflow += 1
            return None
        stats.upstream_rq_retry += 1
        stats.upstream_rq_retry_backoff_exponential += 1
        self.retried = True
        self.holding_retry = True
        self.attempt = None
        self.backoff_timer = self.ctx.loop.call_later(retry.backoff(), self._retry_now)
        return True

    def _retry_now(self) -> None:
        self.backoff_timer = None
        self.start_attempt()

    # --- events from the upstream attempt --------------------------------------------------------

    def on_upstream_headers(
        self, attempt: UpstreamRequest, status: int, fields: Fields, has_length: bool,
        upgrade: bytes | None,
    ) -> None:
        if attempt is not self.attempt or self.done:
            return
        if attempt.per_try_timer is not None:
            attempt.per_try_timer.cancel()
            attempt.per_try_timer = None
        up = attempt.upstream
        if up is not None:
            self.s.info.upstream_local_address = up.local_address
        cluster = attempt.cluster
        stats = self.cluster_stats
        if status != 101:
            stats.record_response(status)
            stats.upstream_rq_time.record((self.ctx.loop.time() - attempt.sent_at) * 1000)
        detector = cluster.outlier_detector
        if detector is not None:
            detector.report_http_status(attempt.host, status)
        policy = self.retry_policy
        if policy is not None and status != 101 and (
                policy.header_driven or (status >= 300 and status in policy.retriable_statuses)):
            decision = self._try_retry(None, status, fields)
            if decision:
                attempt.cancel()
                self._release(attempt)
                return
            if decision is None:
                self.s.info.response_flags |= rf.UPSTREAM_RETRY_LIMIT_EXCEEDED
        if self.retried and status < 500:
            stats.upstream_rq_retry_success += 1
        self.response_started = True
        route = self.route
        assert route is not None
        levels = route.response_header_mutations(self.weight)
        if levels:
            fields = mutate_response(fields, levels)
        if self.attempt_count_in_response:
            fields = [*fields, (X_ENVOY_ATTEMPT_COUNT, b"%d" % self.attempts)]
        gw = self.s.grpc_web
        if gw is not None:
            gw.response_head(status, fields)
            has_length = False  # the body changes (trailers frame, base64)
        info = self.s.info
        info.response_code_details = "via_upstream"  # Envoy's details for a proxied reply
        fields = self.s.encode_headers(status, fields)
        # What %RESP(...)% and CEL's response.headers read (the codec adds the service time).
        info.response_headers = ProxiedResponseHeaders(
            fields, int((self.ctx.loop.time() - attempt.sent_at) * 1000))
        stream = self.stream
        stream.sent_at = attempt.sent_at
        if gw is not None and gw.transforming:
            # Not a gRPC response: it goes out trailers-only once its body was read.
            gw.held_head = (status, fields)
            return
        self.s.response_begins(status)
        stream.on_response_head(status, fields, has_length, upgrade)

    def on_upgraded(self, attempt: UpstreamRequest, transport: object, early: bytes) -> None:
        """The upstream switched protocols (101 already relayed): the connection becomes a
        byte relay; the HTTP stream, its timers and its request slot end here."""
        if attempt is not self.attempt or self.done:
            return
        self.attempt = None
        self._release(attempt)
        self._end()
        self.stream.on_upgraded(transport, early)  # type: ignore[arg-type]
        self.s.finish()

    def on_upstream_body(self, data: bytes) -> None:
        s = self.s
        gw = s.grpc_web
        if gw is not None:
            data = gw.encode_body(data)
            if not data:
                s.last_activity = self.ctx.loop.time()
                return
        s.info.bytes_sent += len(data)
        s.last_activity = self.ctx.loop.time()
        self.stream.on_response_body(data)

    def on_upstream_trailers(self, fields: Fields) -> None:
        """Response trailers go downstream when the downstream codec carries them (HTTP/2);
        an HTTP/1.1 downstream drops them, as Envoy does unless trailers are enabled. A
        gRPC-Web response carries them as its last body frame."""
        if self.done:
            return
        # What istio.stats (grpc_response_status) and CEL's response.trailers read.
        self.s.info.response_trailers = ProxiedResponseHeaders(fields, 0)
        gw = self.s.grpc_web
        if gw is not None:
            frame = gw.encode_trailers(fields)
            if frame:
                self.s.info.bytes_sent += len(frame)
                self.stream.on_response_body(frame)
            return
        send = getattr(self.stream, "on_response_trailers", None)
        if send is not None:
            send(fields)

    def on_upstream_complete(self, attempt: UpstreamRequest) -> None:
        if attempt is not self.attempt or self.done:
            return
        self.attempt = None
        self._release(attempt)
        self._end()
        stream = self.stream
        gw = self.s.grpc_web
        if gw is not None:
            held = gw.release()
            if held is not None:
                status, fields = held
                self.s.response_begins(status)
                stream.on_response_head(status, fields, True, None)
            elif gw.text_response:
                rest = gw.flush_text()
                if rest:
                    stream.on_response_body(rest)
        stream.on_response_complete()
        self.s.finish()

    def on_upstream_failure(self, attempt: UpstreamRequest, failure: UpstreamFailure) -> None:
        if attempt is not self.attempt or self.done:
            return
        self._release(attempt)
        stats = self.cluster_stats
        connect_failure = failure in _CONNECT_FAILURES
        detector = attempt.cluster.outlier_detector
        if connect_failure:
            stats.upstream_cx_connect_fail += 1
            if failure is UpstreamFailure.CONNECTION_TIMEOUT:
                stats.upstream_cx_connect_timeout += 1
            if detector is not None:
                detector.report_local_origin(attempt.host, LocalOrigin.CONNECT_FAILED)
        else:
            stats.upstream_rq_rx_reset += 1
            if detector is not None:
                detector.report_local_origin(attempt.host, LocalOrigin.RESET)
        if self.response_started:
            # Part of the response went downstream: all Envoy can do is reset.
            self.attempt = None
            self.s.hcm.stats.rq_reset_after_downstream_response_started += 1
            self.s.info.response_flags |= FLAG_BITS[failure.response_flag]
            self._end()
            self.stream.on_upstream_failure(failure)
            self.s.finish()
            return
        decision = self._try_retry(connect_failure)
        if decision:
            return
        self.attempt = None
        flags = FLAG_BITS[failure.response_flag]
        body = failure.local_reply_body()
        if decision is None or (self.retry is not None and self.retry.retries_done):
            if decision is None:
                flags |= rf.UPSTREAM_RETRY_LIMIT_EXCEEDED
            body = (b"upstream connect error or disconnect/reset before headers. retried and "
                    b"the latest reset reason: " + failure.reset_reason.encode())
        self._local_failure(503, body, flags, "upstream_reset_before_response_started{"
                            + failure.reset_reason.replace(" ", "_") + "}")

    def _on_per_try_timeout(self, attempt: UpstreamRequest) -> None:
        attempt.per_try_timer = None
        if attempt is not self.attempt or self.done or attempt.response_started:
            return
        stats = self.cluster_stats
        stats.upstream_rq_per_try_timeout += 1
        detector = attempt.cluster.outlier_detector
        if detector is not None:
            detector.report_local_origin(attempt.host, LocalOrigin.TIMEOUT)
        attempt.cancel()
        self._release(attempt)
        self.s.info.response_flags |= rf.UPSTREAM_REQUEST_TIMEOUT
        decision = self._try_retry(False)
        if decision:
            return
        self.attempt = None
        flags = rf.UPSTREAM_REQUEST_TIMEOUT
        if decision is None:
            flags |= rf.UPSTREAM_RETRY_LIMIT_EXCEEDED
        self._local_failure(504, UPSTREAM_TIMEOUT_BODY, flags, "upstream_per_try_timeout")

    def _on_global_timeout(self) -> None:
        self.global_timer = None
        if self.done:
            return
        self.cluster_stats.upstream_rq_timeout += 1
        attempt = self.attempt
        if attempt is not None:
            self.attempt = None
            detector = attempt.cluster.outlier_detector
            if detector is not None and not attempt.response_started:
                detector.report_local_origin(attempt.host, LocalOrigin.TIMEOUT)
            attempt.cancel()
            self._release(attempt)
        if self.response_started:
            self.s.info.response_flags |= rf.UPSTREAM_REQUEST_TIMEOUT
            self._end()
            self.stream.conn.reset()
            self.s.finish()
            return
        self._local_failure(504, UPSTREAM_TIMEOUT_BODY, rf.UPSTREAM_REQUEST_TIMEOUT,
                            "upstream_response_timeout")

    # --- ending ----------------------------------------------------------------------------------

    def _local_failure(self, status: int, body: bytes, flags: int, details: str,
                       extra: Fields | None = None) -> None:
        self._end()
        self.s.send_local_reply(status, body, extra or [], flag=flags, details=details)

    def _end(self) -> None:
        """Stop every timer and wait; the stream's outcome is decided."""
        self.done = True
        self.resume_reading()
        if self.holding_retry:
            self.holding_retry = False
            self.cluster.circuit_breakers.retries.release()  # type: ignore[union-attr]
        if self.global_timer is not None:
            self.global_timer.cancel()
            self.global_timer = None
        if self.duration_timer is not None:
            self.duration_timer.cancel()
            self.duration_timer = None
        if self.backoff_timer is not None:
            self.backoff_timer.cancel()
            self.backoff_timer = None
        if self.waiting_for_connection:
            self.waiting_for_connection = False
            cluster = self.cluster
            assert cluster is not None
            queue = self.ctx.pending.get(cluster)
            if queue is not None and self in queue:
                queue.remove(self)
            cluster.circuit_breakers.pending_requests.release()
            self.cluster_stats.upstream_rq_pending_active -= 1

    def reset(self) -> None:
        """The downstream went away (or the stream ended locally): drop everything."""
        if self.done:
            return
        attempt = self.attempt
        self.attempt = None
        self._end()
        if attempt is not None:
            if not attempt.response_done:
                self.cluster_stats.upstream_rq_cancelled += 1
                self.cluster_stats.upstream_rq_tx_reset += 1
            attempt.cancel()
            self._release(attempt)


def _host_of(authority: bytes) -> str | None:
    """The host of a Host/:authority value without its port (IPv6 brackets removed)."""
    host = authority.decode("latin-1")
    colon = port_start(host)
    return (host[:colon] if colon >= 0 else host).strip("[]") or None
