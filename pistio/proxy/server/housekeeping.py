"""A worker's periodic chores: outlier-detection sweeps on each cluster's ``interval``, and
closing the pools of drained clusters once their last request is done."""

from __future__ import annotations

import asyncio

from pistio.proxy.runtime.cluster_manager import ClusterManager, ClusterRuntime

TICK = 0.5


class Housekeeping:
    def __init__(self, loop: asyncio.AbstractEventLoop, clusters: ClusterManager) -> None:
        self.loop = loop
        self.clusters = clusters
        self._next_sweep: dict[ClusterRuntime, float] = {}
        self._handle: asyncio.TimerHandle | None = loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        due: dict[ClusterRuntime, float] = {}
        for runtime in self.clusters.clusters.values():
            detector = runtime.outlier_detector
            if detector is None:
                continue
            at = self._next_sweep.get(runtime)
            interval = detector.config.interval
            if at is None:
                at = now + interval
            elif at <= now:
                detector.tick()
                at = now + interval
            due[runtime] = at
        self._next_sweep = due
        if self.clusters.draining:
            self.clusters.sweep_draining()
        self._handle = self.loop.call_later(TICK, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
