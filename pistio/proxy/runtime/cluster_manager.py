"""Envoy's cluster manager, per worker: the runtime state of each cluster that outlives
config snapshots — its load balancer (with per-host counters), circuit breakers, outlier
detector, active health checker, DNS resolution and upstream connection pools.

On every new snapshot (``apply``):

- a cluster whose compiled config is unchanged keeps its ``ClusterRuntime``; if only its
  endpoints changed, the load balancer is updated in place (hosts that stay keep their
  active-request counts and ejections, new hosts start their slow-start window) and the
  outlier detector follows the new host list;
- a new cluster, or one whose config changed, gets a fresh runtime (Envoy re-creates a
  changed cluster too); the old one is *drained*;
- a removed cluster is drained.

A new runtime of a ``STRICT_DNS``/``LOGICAL_DNS`` cluster resolves its names
(``pistio.proxy.upstream.dns``) and one with ``health_checks`` checks its hosts
(``pistio.proxy.upstream.health_check``); both run on the worker's loop, when the manager is
given one. Until the first resolution and the first round of checks are done the cluster is
*initializing* (Envoy's cluster warming): a request that finds no host waits for it
(``when_initialized``) instead of failing with 503 UH.

Draining: the runtime leaves the lookup table at once, so new requests no longer see it;
requests already holding it finish on it. ``sweep_draining`` closes the pools of drained
runtimes once they have no active or pending requests (it runs on every ``apply`` and on
the caller's timer); ``close`` closes everything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from pistio.proxy.config.cluster_config import DiscoveryType
from pistio.proxy.config.endpoints import EndpointConfig, LoadAssignment
from pistio.proxy.runtime.snapshot import ActiveCluster, ConfigSnapshot, empty_assignment
from pistio.proxy.stats.families import ClusterStats
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.tls.secrets import Secret
from pistio.proxy.tls.upstream import ClusterTls, UpstreamTls
from pistio.proxy.upstream.circuit_breaker import CircuitBreakers
from pistio.proxy.upstream.connection_pool import UpstreamHttpOptions, UpstreamPools
from pistio.proxy.upstream.dns import DnsResolver
from pistio.proxy.upstream.health_check import HealthChecker, Transition
from pistio.proxy.upstream.host import Host
from pistio.proxy.upstream.load_balancer import LoadBalancer
from pistio.proxy.upstream.outlier_detection import OutlierDetector
from pistio.proxy.upstream.proxy_protocol import proxy_protocol_header

log = logging.getLogger("pistio.proxy.cluster_manager")

_DNS_TYPES = (DiscoveryType.STRICT_DNS, DiscoveryType.LOGICAL_DNS)


class ClusterRuntime:
    """One cluster's runtime state on one worker."""

    __slots__ = ("config", "assignment", "lb", "circuit_breakers", "outlier_detector",
                 "_pools", "draining", "health_checker", "dns", "initializing",
                 "_init_waiters", "_stats", "tls", "proxy_protocol")

    def __init__(
        self,
        cluster: ActiveCluster,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
        loop: asyncio.AbstractEventLoop | None = None,
        store: StatsStore | None = None,
    ) -> None:
        config = self.config = cluster.config
        # TLS transport sockets (the cluster manager points their secrets at its snapshot).
        self.tls = ClusterTls(config)
        # Some transport socket sends a PROXY protocol header (upstream_proxy_protocol).
        self.proxy_protocol = config.transport_socket.proxy_protocol_version is not None or any(
            m.socket.proxy_protocol_version is not None for m in config.transport_socket_matches)
        self.assignment: LoadAssignment | None = cluster.assignment
        self.health_checker: HealthChecker | None = None
        self.dns: DnsResolver | None = None
        # Envoy's cluster initialization (warming): until the first DNS resolution and the
        # first round of health checks are done, requests wait instead of failing.
        self.initializing = False
        self._init_waiters: list[Callable[[], None]] = []
        self._stats: ClusterStats | None = None
        active = loop is not None and store is not None
        if active:
            assert loop is not None and store is not None
            self._stats = store.cluster(config.name)
            if config.discovery_type in _DNS_TYPES and cluster.assignment is not None:
                self.dns = DnsResolver(loop, config, cluster.assignment, self._on_dns,
                                       self._stats, rng=rng)
                self.assignment = self.dns.assignment()  # IP literals now, names once resolved
        self.lb = LoadBalancer(
            config.lb, self.assignment or empty_assignment(cluster.name), rng, now
        )
        self.circuit_breakers = CircuitBreakers(config.circuit_breakers)
        self.outlier_detector: OutlierDetector | None = None
        if config.outlier_detection is not None:
            self.outlier_detector = OutlierDetector(
                config.outlier_detection, self.lb.hosts, now, rng, self.lb.refresh
            )
        self._pools: UpstreamPools | None = None
        self.draining = False
        if active and config.health_check is not None:
            assert loop is not None and store is not None
            self.health_checker = HealthChecker(
                loop, config.name, config.health_check, store.health_check(config.name),
                store.cluster(config.name), self._on_health_result,
                local_addr=(config.upstream_bind_address, 0)
                if config.upstream_bind_address else None,
                mark_pending=config.ignore_new_hosts_until_first_hc,
                rng=rng,
            )
            self.health_checker.set_hosts(self.lb.hosts)
            self.lb.refresh()
            self.initializing = bool(self.health_checker.awaiting_first)
        if self.dns is not None and self.dns.names:
            self.initializing = True
            self.dns.start()

    @property
    def name(self) -> str:
        return self.config.name

    def update_endpoints(self, assignment: LoadAssignment | None) -> None:
        """A new EDS assignment for an unchanged cluster: host state carries over."""
        if self.dns is not None:
            return  # a DNS cluster's hosts come from its resolver, not from the snapshot
        if assignment is self.assignment or assignment == self.assignment:
            self.assignment = assignment
            return
        self.assignment = assignment
        self._set_assignment(assignment or empty_assignment(self.name))

    def _set_assignment(self, assignment: LoadAssignment) -> None:
        before = self.lb.hosts
        checker = self.health_checker
        keep = None
        if checker is not None and not self.config.ignore_health_on_host_removal:
            keep = _passing
        self.lb.update(assignment, keep)
        if checker is not None:
            checker.set_hosts(self.lb.hosts)  # new hosts start failing their checks
            self.lb.refresh()
        if self.outlier_detector is not None:
            self.outlier_detector.set_hosts(self.lb.hosts)
        if self._stats is not None and set(before) != set(self.lb.hosts):
            self._stats.membership_change += 1

    # --- DNS and health checks -----------------------------------------------------------------

    def _on_dns(self, assignment: LoadAssignment | None) -> None:
        if assignment is not None and not self.draining:
            hosts = self.lb.hosts
            endpoints = assignment.endpoints
            if self.dns is not None and self.dns.logical and len(hosts) == 1 and endpoints:
                # Envoy's logical host: same host, new address for new connections.
                host, ep = hosts[0], endpoints[0]
                host.config = ep
                host.address = ep.address
                host.key = ep.address_key
                self.assignment = self.lb.assignment = assignment
                self.lb.refresh()
            else:
                self.assignment = assignment
                self._set_assignment(assignment)
        self._check_initialized()

    def _on_health_result(self, host: Host, transition: Transition, passed: bool) -> None:
        refresh = transition is Transition.CHANGED
        detector = self.outlier_detector
        if passed and host.ejected and detector is not None and (
                detector.config.successful_active_health_check_uneject_host):
            detector.uneject(host)
            refresh = True
        if transition is Transition.CHANGED and host.hc_failed:
            if self.config.close_connections_on_host_health_failure and self._pools is not None:
                self._pools.close_host((host.address, host.port))
            if host.pending_removal:
                # Gone from discovery and now failing: Envoy removes it at last.
                self.lb.remove_hosts({host})
                assert self.health_checker is not None
                self.health_checker.set_hosts(self.lb.hosts)
                if detector is not None:
                    detector.set_hosts(self.lb.hosts)
                refresh = False
        if refresh:
            self.lb.refresh()
        self._check_initialized()

    def _check_initialized(self) -> None:
        if not self.initializing:
            return
        if self.dns is not None and not self.dns.resolved_once:
            return
        if self.health_checker is not None and self.health_checker.awaiting_first:
            return
        self._initialized()

    def _initialized(self) -> None:
        self.initializing = False
        waiters, self._init_waiters = self._init_waiters, []
        for callback in waiters:
            callback()

    def when_initialized(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the cluster is initialized (at once if it is)."""
        if self.initializing:
            self._init_waiters.append(callback)
        else:
            callback()

    def stop_discovery(self) -> None:
        """Stop resolving and health checking (the cluster is drained or closed); requests
        waiting for its initialization go on with what it has."""
        if self.dns is not None:
            self.dns.close()
        if self.health_checker is not None:
            self.health_checker.close()
        if self.initializing:
            self._initialized()

    # --- connections ---------------------------------------------------------------------------

    def pools(self, loop: asyncio.AbstractEventLoop) -> UpstreamPools:
        """This cluster's HTTP/1.1 connection pools (created on first use), shaped by its
        ``connect_timeout`` and upstream HTTP protocol options."""
        if self._pools is None:
            http = self.config.http
            self._pools = UpstreamPools(loop, UpstreamHttpOptions(
                connect_timeout=self.config.connect_timeout,
                idle_timeout=http.idle_timeout if http.idle_timeout is not None else float("inf"),
                max_requests_per_connection=http.max_requests_per_connection or 0,
                local_addr=(self.config.upstream_bind_address, 0)
                if self.config.upstream_bind_address else None,
                tcp_keepalive=self.config.tcp_keepalive,
            ), tls_for=self._tls_for_address if self.tls.enabled else None)
        return self._pools

    def proxy_protocol_header(self, endpoint: EndpointConfig | None,
                              downstream: object) -> bytes | None:
        """The PROXY protocol header a connection to ``endpoint`` starts with, from the
        downstream connection's addresses (None: its transport socket sends none)."""
        version = self.config.transport_socket_of(endpoint).proxy_protocol_version
        if version is None:
            return None
        # The connection's own peer (Envoy's remoteAddress), not one taken from XFF.
        return proxy_protocol_header(version, getattr(downstream, "direct_remote_address", None),
                                     getattr(downstream, "local_address", None))

    def upstream_tls(self, endpoint: EndpointConfig | None) -> UpstreamTls | None:
        """The TLS of the transport socket ``endpoint`` gets (None: plaintext)."""
        return self.tls.for_endpoint(endpoint)

    def _tls_for_address(self, address: tuple[str, int]) -> UpstreamTls | None:
        for host in self.lb.hosts:  # once per new pool (per upstream address)
            if host.port == address[1] and host.address == address[0]:
                return self.tls.for_endpoint(host.config)
        return self.tls.for_endpoint(None)

    @property
    def busy(self) -> bool:
        cb = self.circuit_breakers
        return bool(cb.requests.count or cb.pending_requests.count)

    def close(self) -> None:
        self.stop_discovery()
        if self._pools is not None:
            self._pools.close()
            self._pools = None

    def host_status(self) -> list[list[Any]]:
        """This worker's hosts as ``/clusters`` shows them (see
        ``pistio.proxy.stats.snapshot.merge_hosts``)."""
        out = []
        for h in self.lb.hosts:
            loc = h.config.locality
            out.append([h.address, h.port, h.config.hostname, list(h.health_flags), h.weight,
                        h.priority, loc.region, loc.zone, loc.sub_zone, h.active_requests,
                        h.active_connections])
        return out


def _passing(host: Host) -> bool:
    """Envoy keeps a host that left discovery while it is neither failing its active health
    checks nor unhealthy in EDS."""
    return not host.hc_failed and (host.eds_healthy or host.eds_degraded)


class ClusterManager:
    """The clusters of one worker, following snapshots (register ``apply`` as an observer)."""

    def __init__(
        self,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
        loop: asyncio.AbstractEventLoop | None = None,
        store: StatsStore | None = None,
    ) -> None:
        self._rng = rng
        self._now = now
        # With a loop, DNS clusters are resolved and health checks run (a worker); without
        # one, hosts are taken as configured and never checked (config-only uses).
        self._loop = loop
        self._store = store if store is not None or loop is None else StatsStore()
        self.clusters: dict[str, ClusterRuntime] = {}
        self.draining: list[ClusterRuntime] = []
        self.version = 0  # the snapshot version applied last
        self.secrets: Mapping[str, Secret] = {}  # SDS secrets of the last snapshot

    def get(self, name: str) -> ClusterRuntime | None:
        """The runtime for a cluster a route names; ``None``: Envoy's 503 NC."""
        return self.clusters.get(name)

    def _secrets(self) -> Mapping[str, Secret]:
        return self.secrets

    def apply(self, snapshot: ConfigSnapshot) -> None:
        self.secrets = snapshot.secrets
        clusters: dict[str, ClusterRuntime] = {}
        for name, active in snapshot.clusters.items():
            runtime = self.clusters.get(name)
            if runtime is not None and (
                runtime.config is active.config or runtime.config == active.config
            ):
                runtime.update_endpoints(active.assignment)
            else:
                if runtime is not None:
                    self._drain(runtime)
                runtime = ClusterRuntime(active, self._rng, self._now, self._loop, self._store)
                runtime.tls.secrets = self._secrets
            clusters[name] = runtime
        for name, runtime in self.clusters.items():
            if name not in clusters:
                self._drain(runtime)
        self.clusters = clusters
        self.version = snapshot.version
        self.sweep_draining()

    def _drain(self, runtime: ClusterRuntime) -> None:
        runtime.draining = True
        runtime.stop_discovery()
        self.draining.append(runtime)

    def sweep_draining(self) -> int:
        """Close drained clusters that have no request left; returns how many remain."""
        remaining = []
        for runtime in self.draining:
            if runtime.busy:
                remaining.append(runtime)
            else:
                runtime.close()
        self.draining = remaining
        return len(remaining)

    def tick_outlier_detection(self) -> None:
        """One outlier-detection sweep for every cluster that has it (the worker calls this
        on each cluster's ``interval``; tests call it directly)."""
        for runtime in self.clusters.values():
            if runtime.outlier_detector is not None:
                runtime.outlier_detector.tick()

    def host_status_dump(self) -> dict[str, list[list[Any]]]:
        """The hosts ``/clusters`` must take from the workers (the worker's stats dump carries
        them): those of clusters whose hosts or health this worker decides — DNS resolution,
        active health checks, outlier detection. Other clusters' hosts are the endpoints as
        configured, which the agent shows itself; leaving them out keeps stats scrapes small
        on a sidecar with thousands of endpoints."""
        return {
            name: runtime.host_status()
            for name, runtime in self.clusters.items()
            if runtime.dns is not None or runtime.health_checker is not None
            or runtime.outlier_detector is not None
        }

    def close(self) -> None:
        for runtime in (*self.clusters.values(), *self.draining):
            runtime.close()
        self.clusters = {}
        self.draining = []
