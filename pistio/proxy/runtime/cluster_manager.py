"""Envoy's cluster manager, per worker: the runtime state of each cluster that outlives
config snapshots — its load balancer (with per-host counters), circuit breakers, outlier
detector and upstream connection pools.

On every new snapshot (``apply``):

- a cluster whose compiled config is unchanged keeps its ``ClusterRuntime``; if only its
  endpoints changed, the load balancer is updated in place (hosts that stay keep their
  active-request counts and ejections, new hosts start their slow-start window) and the
  outlier detector follows the new host list;
- a new cluster, or one whose config changed, gets a fresh runtime (Envoy re-creates a
  changed cluster too); the old one is *drained*;
- a removed cluster is drained.

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
from collections.abc import Callable

from pistio.proxy.config.cluster_config import ClusterConfig
from pistio.proxy.config.endpoints import LoadAssignment
from pistio.proxy.runtime.snapshot import ActiveCluster, ConfigSnapshot, empty_assignment
from pistio.proxy.upstream.circuit_breaker import CircuitBreakers
from pistio.proxy.upstream.connection_pool import UpstreamHttpOptions, UpstreamPools
from pistio.proxy.upstream.load_balancer import LoadBalancer
from pistio.proxy.upstream.outlier_detection import OutlierDetector

log = logging.getLogger("pistio.proxy.cluster_manager")


class ClusterRuntime:
    """One cluster's runtime state on one worker."""

    __slots__ = ("config", "assignment", "lb", "circuit_breakers", "outlier_detector",
                 "_pools", "draining")

    def __init__(
        self,
        cluster: ActiveCluster,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config: ClusterConfig = cluster.config
        self.assignment: LoadAssignment | None = cluster.assignment
        self.lb = LoadBalancer(
            cluster.config.lb, cluster.assignment or empty_assignment(cluster.name), rng, now
        )
        self.circuit_breakers = CircuitBreakers(cluster.config.circuit_breakers)
        self.outlier_detector: OutlierDetector | None = None
        if cluster.config.outlier_detection is not None:
            self.outlier_detector = OutlierDetector(
                cluster.config.outlier_detection, self.lb.hosts, now, rng, self.lb.refresh
            )
        self._pools: UpstreamPools | None = None
        self.draining = False

    @property
    def name(self) -> str:
        return self.config.name

    def update_endpoints(self, assignment: LoadAssignment | None) -> None:
        """A new EDS assignment for an unchanged cluster: host state carries over."""
        if assignment is self.assignment or assignment == self.assignment:
            self.assignment = assignment
            return
        self.assignment = assignment
        self.lb.update(assignment or empty_assignment(self.name))
        if self.outlier_detector is not None:
            self.outlier_detector.set_hosts(self.lb.hosts)

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
            ))
        return self._pools

    @property
    def busy(self) -> bool:
        cb = self.circuit_breakers
        return bool(cb.requests.count or cb.pending_requests.count)

    def close(self) -> None:
        if self._pools is not None:
            self._pools.close()
            self._pools = None


class ClusterManager:
    """The clusters of one worker, following snapshots (register ``apply`` as an observer)."""

    def __init__(
        self,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rng = rng
        self._now = now
        self.clusters: dict[str, ClusterRuntime] = {}
        self.draining: list[ClusterRuntime] = []
        self.version = 0  # the snapshot version applied last

    def get(self, name: str) -> ClusterRuntime | None:
        """The runtime for a cluster a route names; ``None``: Envoy's 503 NC."""
        return self.clusters.get(name)

    def apply(self, snapshot: ConfigSnapshot) -> None:
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
                runtime = ClusterRuntime(active, self._rng, self._now)
            clusters[name] = runtime
        for name, runtime in self.clusters.items():
            if name not in clusters:
                self._drain(runtime)
        self.clusters = clusters
        self.version = snapshot.version
        self.sweep_draining()

    def _drain(self, runtime: ClusterRuntime) -> None:
        runtime.draining = True
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

    def close(self) -> None:
        for runtime in (*self.clusters.values(), *self.draining):
            runtime.close()
        self.clusters = {}
        self.draining = []
