"""Envoy's active health checking (``Cluster.health_checks``) for one cluster on one worker.

**Where the checks run.** Each worker process checks the hosts of its own clusters, the way
HAProxy's processes and NGINX's workers do, rather than one process checking and shipping the
results: a worker's hosts, load balancer and outlier detector are plain objects of that worker
(see ``pistio.proxy.runtime.cluster_manager``), so a result changes them on the spot, with no
new channel between the agent and the workers, no ordering problem between config snapshots
and health updates, and no host set out of step for a moment. The price is ``concurrency``
times the health check traffic (two workers, twice the probes), which stays small next to the
data path: one request per host per ``interval`` per worker, spread by the jitters. The
``/clusters`` admin page merges the workers' views (a flag set in any worker is shown).

**Semantics** (Envoy's ``HealthCheckerImplBase`` and ``updateDynamicHostList``):

- A host that enters a health-checked cluster starts *failing* (``/failed_active_hc``) and, with
  ``common_lb_config.ignore_new_hosts_until_first_hc``, excluded from balancing
  (``/pending_active_hc``) until its first check. Its first check starts at once (after up to
  ``initial_jitter``); a first success makes it healthy immediately, later ones need
  ``healthy_threshold`` successes in a row.
- A check fails when the upstream answers an HTTP status outside ``expected_statuses``
  (default 200): the host is unhealthy at once, unless the status is in
  ``retriable_statuses``; a network failure (connect error, reset, ``timeout``) or a retriable
  status counts towards ``unhealthy_threshold``. A host failing on network errors also shows
  ``/active_hc_timeout``. ``x-envoy-degraded`` in a passing response marks it degraded
  (``/degraded_active_hc``), the load balancer's second tier.
- The next check is due after ``interval`` (healthy result), ``unhealthy_interval``
  (unhealthy result), or the ``*_edge_interval`` while a threshold is being counted; while the
  cluster has carried no traffic on this worker yet, after ``no_traffic_interval`` (or
  ``no_traffic_healthy_interval`` for a healthy host). Each gets ``interval_jitter`` and
  ``interval_jitter_percent`` of random jitter.
- HTTP checks are HTTP/1.1 requests (``method`` default GET, ``path``, ``host`` or the
  cluster's name as authority, ``user-agent: Envoy/HC``, ``request_headers_to_add``/
  ``_remove``) on a kept-alive connection (``reuse_connection``); with ``service_name_matcher``
  the response's ``x-envoy-upstream-healthchecked-cluster`` must match. TCP checks connect
  (and close) when there is nothing to ``receive``; otherwise they write ``send`` and wait for
  every ``receive`` payload, in order.
- A successful check un-ejects a host that outlier detection ejected (Envoy's
  ``successful_active_health_check_uneject_host`` default).

Stats: ``cluster.<name>.health_check.{attempt,success,failure,network_failure,
passive_failure,verify_cluster}`` and the gauges ``healthy`` and ``degraded``.
Checks are not on the request path: they use asyncio streams and one task per check.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Callable, Iterable

from pistio.proxy.config.health_check import (
    ADD_IF_ABSENT,
    APPEND,
    HC_USER_AGENT,
    OVERWRITE,
    HealthCheckConfig,
)
from pistio.proxy.stats.families import ClusterStats, HealthCheckStats
from pistio.proxy.upstream.host import Host

log = logging.getLogger("pistio.proxy.health_check")

X_ENVOY_DEGRADED = b"x-envoy-degraded"
X_ENVOY_HEALTHCHECKED_CLUSTER = b"x-envoy-upstream-healthchecked-cluster"
MAX_RESPONSE_HEAD = 64 * 1024


class Transition(enum.Enum):
    """Envoy's ``HealthTransition``."""

    UNCHANGED = 0
    CHANGED = 1
    CHANGE_PENDING = 2


class _Result(enum.Enum):
    SUCCESS = 0
    DEGRADED = 1
    FAILURE = 2  # the host said so: unhealthy at once
    RETRIABLE = 3  # counts towards unhealthy_threshold
    NETWORK = 4  # connect failure, reset, timeout: counts towards unhealthy_threshold


# (host, transition, passed) after every check; the cluster runtime refreshes its load
# balancer on CHANGED and un-ejects on a pass.
ResultCallback = Callable[[Host, Transition, bool], None]


class HealthChecker:
    """The health check sessions of one cluster's hosts on one worker."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cluster_name: str,
        config: HealthCheckConfig,
        stats: HealthCheckStats,
        cluster_stats: ClusterStats,
        on_result: ResultCallback,
        *,
        local_addr: tuple[str, int] | None = None,
        mark_pending: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.cluster_name = cluster_name
        self.config = config
        self.stats = stats
        self.cluster_stats = cluster_stats
        self.on_result = on_result
        self.local_addr = local_addr
        self.mark_pending = mark_pending
        self.rng = rng or random.Random()
        self.sessions: dict[Host, _Session] = {}
        # Hosts whose first check has not completed (the cluster's initial round).
        self.awaiting_first: set[Host] = set()
        self.closed = False
        self._request = _http_request(config, cluster_name) if config.http is not None else b""

    # --- hosts ---------------------------------------------------------------------------------

    def set_hosts(self, hosts: Iterable[Host]) -> None:
        """Follow the cluster's host set: a new host starts failing (and pending, when asked)
        and is checked now; a host that left stops being checked."""
        current = set()
        for host in hosts:
            current.add(host)
            if host in self.sessions:
                continue
            host.hc_failed = True
            host.hc_degraded = False
            host.hc_timeout = False
            if self.mark_pending:
                host.hc_pending = True
            session = self.sessions[host] = _Session(self, host)
            self.awaiting_first.add(host)
            session.start()
        for host in [h for h in self.sessions if h not in current]:
            self.sessions.pop(host).close()
            self.awaiting_first.discard(host)
        self._update_gauges()

    def close(self) -> None:
        self.closed = True
        for session in self.sessions.values():
            session.close()
        self.sessions = {}
        self.awaiting_first.clear()

    # --- what sessions use ---------------------------------------------------------------------

    def _traffic_seen(self) -> bool:
        stats = self.cluster_stats
        return bool(stats.upstream_rq_total or stats.upstream_cx_total)

    def next_interval(self, healthy: bool, transition: Transition) -> float:
        """Envoy's ``HealthCheckerImplBase::interval`` with its jitters, in seconds."""
        cfg = self.config
        pending = transition is Transition.CHANGE_PENDING
        if self._traffic_seen():
            if healthy:
                base = cfg.healthy_edge_interval if pending else cfg.interval
            else:
                base = cfg.unhealthy_edge_interval if pending else cfg.unhealthy_interval
        else:
            base = (cfg.no_traffic_healthy_interval if healthy and not pending
                    else cfg.no_traffic_interval)
        return self.jittered(base, cfg.interval_jitter)

    def jittered(self, base: float, jitter: float) -> float:
        base_ms = int(base * 1000)
        percent_mod = self.config.interval_jitter_percent * base_ms // 100
        if percent_mod > 0:
            base_ms += self.rng.randrange(percent_mod)
        jitter_ms = int(jitter * 1000)
        if jitter_ms > 0:
            base_ms += self.rng.randrange(jitter_ms)
        return max(1, base_ms) / 1000.0

    def _update_gauges(self) -> None:
        healthy = degraded = 0
        for host in self.sessions:
            if not host.hc_failed:
                healthy += 1
            if host.hc_degraded:
                degraded += 1
        self.stats.healthy = healthy
        self.stats.degraded = degraded

    def _completed(self, host: Host, transition: Transition, passed: bool) -> None:
        self.awaiting_first.discard(host)
        if transition is Transition.CHANGED:
            self._update_gauges()
        self.on_result(host, transition, passed)


class _Session:
    """One host's checks: a timer, at most one check in flight, the kept-alive connection."""

    __slots__ = ("checker", "host", "first_check", "num_healthy", "num_unhealthy", "timer",
                 "task", "reader", "writer")

    def __init__(self, checker: HealthChecker, host: Host) -> None:
        self.checker = checker
        self.host = host
        self.first_check = True
        self.num_healthy = 0
        self.num_unhealthy = 0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def start(self) -> None:
        checker = self.checker
        jitter = checker.config.initial_jitter
        if jitter > 0:
            self.timer = checker.loop.call_later(checker.jittered(0.0, jitter), self._on_interval)
        else:
            self.timer = checker.loop.call_soon(self._on_interval)  # type: ignore[assignment]

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._close_connection()

    def _close_connection(self) -> None:
        writer = self.writer
        self.reader = self.writer = None
        if writer is not None:
            writer.transport.abort()

    def _on_interval(self) -> None:
        self.timer = None
        checker = self.checker
        if checker.closed:
            return
        checker.stats.attempt += 1
        self.task = checker.loop.create_task(self._run())

    async def _run(self) -> None:
        cfg = self.checker.config
        try:
            async with asyncio.timeout(cfg.timeout):
                if cfg.http is not None:
                    result = await self._http_check()
                else:
                    result = await self._tcp_check()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # connect error, reset, timeout, garbage: a network failure
            log.debug("health check of %s in %s failed: %r", self.host.key,
                      self.checker.cluster_name, err)
            self._close_connection()
            result = _Result.NETWORK
        self.task = None
        if self.checker.closed:
            return
        if result is _Result.SUCCESS or result is _Result.DEGRADED:
            self._success(result is _Result.DEGRADED)
        else:
            self._failure(result)

    # --- outcomes (Envoy's handleSuccess / setUnhealthy) ---------------------------------------

    def _clear_pending(self, transition: Transition) -> Transition:
        if self.host.hc_pending:
            self.host.hc_pending = False
            # The host joins balancing: the cluster must rebuild its host lists.
            return Transition.CHANGED
        return transition

    def _success(self, degraded: bool) -> None:
        checker = self.checker
        host = self.host
        self.num_unhealthy = 0
        transition = Transition.UNCHANGED
        if host.hc_failed:
            # A host's very first result counts at once (Envoy: faster start-up).
            self.num_healthy += 1
            if self.first_check or self.num_healthy >= checker.config.healthy_threshold:
                host.hc_failed = False
                host.hc_timeout = False
                transition = Transition.CHANGED
            else:
                transition = Transition.CHANGE_PENDING
        transition = self._clear_pending(transition)
        if degraded != host.hc_degraded:
            host.hc_degraded = degraded
            transition = Transition.CHANGED
        checker.stats.success += 1
        self.first_check = False
        self._schedule(checker.next_interval(True, transition))
        checker._completed(host, transition, True)

    def _failure(self, result: _Result) -> None:
        checker = self.checker
        host = self.host
        network = result is _Result.NETWORK
        self.num_healthy = 0
        transition = Transition.UNCHANGED
        if not host.hc_failed:
            self.num_unhealthy += 1
            if result is _Result.FAILURE or (
                    self.num_unhealthy >= checker.config.unhealthy_threshold):
                host.hc_failed = True
                transition = Transition.CHANGED
            else:
                transition = Transition.CHANGE_PENDING
        host.hc_timeout = network and host.hc_failed
        transition = self._clear_pending(transition)
        stats = checker.stats
        stats.failure += 1
        if network:
            stats.network_failure += 1
        self.first_check = False
        self._schedule(checker.next_interval(False, transition))
        checker._completed(host, transition, False)

    def _schedule(self, delay: float) -> None:
        if not self.checker.closed and self.checker.sessions.get(self.host) is self:
            self.timer = self.checker.loop.call_later(delay, self._on_interval)

    # --- the checks ------------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.writer is not None and not self.writer.is_closing():
            return self.reader, self.writer  # type: ignore[return-value]
        self.reader, self.writer = await asyncio.open_connection(
            self.host.address, self.host.port, local_addr=self.checker.local_addr,
            limit=MAX_RESPONSE_HEAD,
        )
        return self.reader, self.writer

    async def _http_check(self) -> _Result:
        checker = self.checker
        http = checker.config.http
        assert http is not None
        reader, writer = await self._connect()
        writer.write(checker._request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError("not an HTTP/1 response")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        close = (not checker.config.reuse_connection or parts[0] == b"HTTP/1.0"
                 or headers.get(b"connection", b"").lower() == b"close")
        await _read_body(reader, status, headers, http.method == "HEAD")
        if headers.get(b"transfer-encoding") is None and b"content-length" not in headers and (
                status >= 200 and status not in (204, 304) and http.method != "HEAD"):
            close = True  # the body ran to the end of the connection
        if close:
            self._close_connection()
        if http.service_name_check is not None:
            checker.stats.verify_cluster += 1
            served = headers.get(X_ENVOY_HEALTHCHECKED_CLUSTER)
            if served is None or not http.service_name_check(served.decode("latin-1")):
                return _Result.FAILURE
        if http.expected(status):
            return _Result.DEGRADED if X_ENVOY_DEGRADED in headers else _Result.SUCCESS
        return _Result.RETRIABLE if http.retriable(status) else _Result.FAILURE

    async def _tcp_check(self) -> _Result:
        tcp = self.checker.config.tcp
        assert tcp is not None
        if not tcp.receive:
            # Nothing to read back: a connect check; the connection is closed at once.
            await self._connect()
            self._close_connection()
            return _Result.SUCCESS
        reader, writer = await self._connect()
        if tcp.send:
            writer.write(tcp.send)
        data = b""
        while not _contains_in_order(data, tcp.receive):
            chunk = await reader.read(65536)
            if not chunk:
                raise EOFError("closed before the expected payload")
            data += chunk
        if not self.checker.config.reuse_connection:
            self._close_connection()
        return _Result.SUCCESS


def _contains_in_order(data: bytes, segments: tuple[bytes, ...]) -> bool:
    """Envoy's ``TcpHealthCheckMatcher::match``: each segment found after the previous one."""
    start = 0
    for segment in segments:
        at = data.find(segment, start)
        if at < 0:
            return False
        start = at + len(segment)
    return True


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[bytes, bytes],
                     head_request: bool) -> None:
    """Read (and drop) the response body so the connection can carry the next check."""
    if head_request or status < 200 or status in (204, 304):
        return
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    length = headers.get(b"content-length")
    if length is not None:
        if length.isdigit():
            await reader.readexactly(int(length))
            return
        raise ValueError("bad content-length")
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


def _http_request(config: HealthCheckConfig, cluster_name: str) -> bytes:
    """The bytes of the check's request (the same for every check of the cluster)."""
    http = config.http
    assert http is not None
    fields: list[tuple[str, str]] = [("host", http.host or cluster_name),
                                     ("user-agent", HC_USER_AGENT)]
    for name, value, action in http.request_headers:
        present = any(n == name for n, _ in fields)
        if action == APPEND:
            fields.append((name, value))
        elif action == ADD_IF_ABSENT:
            if not present:
                fields.append((name, value))
        elif action == OVERWRITE or present:  # OVERWRITE_IF_EXISTS needs it present
            fields = [(n, v) for n, v in fields if n != name] + [(name, value)]
    fields = [(n, v) for n, v in fields if n not in http.remove_headers or n == "host"]
    if not config.reuse_connection:
        fields.append(("connection", "close"))
    if http.method in ("POST", "PUT", "PATCH"):
        fields.append(("content-length", "0"))
    lines = [f"{http.method} {http.path} HTTP/1.1"] + [f"{n}: {v}" for n, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
