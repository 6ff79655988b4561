"""The serving half of a proxy process: what follows a ``SnapshotHolder`` and carries traffic.

A ``DataPlane`` owns one process's cluster manager (pools, load balancers, health checks,
outlier detection), listener manager (sockets, filter chains), deadline sweeper, housekeeping
and stats store, and keeps them on every snapshot the holder publishes. Two places run one:

- the agent itself (worker 0), on the snapshots it compiles from ADS — a proxy with
  ``--concurrency 1`` is a single process, as Envoy is, and never compiles anything twice;
- each extra worker process (``worker_process``), on the snapshots it rebuilds from what the
  agent forwards.

Listeners are bound with ``SO_REUSEPORT``, so every data plane of a proxy accepts on every
port. Stats stay per data plane and are merged by the admin on a scrape (``stats_channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

from pistio.proxy.http.connection_manager import AccessLogFile
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder
from pistio.proxy.server.housekeeping import Housekeeping
from pistio.proxy.server.listener_manager import ListenerManager
from pistio.proxy.server.stats_channel import serve_worker_stats, socket_path
from pistio.proxy.stats.store import StatsStore

# The deadline sweeper's tick: connection idle, stream idle and request timeouts fire up to
# this late (they are seconds to minutes).
SWEEP_TICK = 0.1


# Python's cyclic GC: the objects that live long (modules, the compiled config) are frozen
# out of the collector's view once the first config is in, so the collections that still
# happen scan only young objects. (A request's objects hold no reference cycle and are freed
# by reference counting; a larger young generation was measured slower, bench/proxy_path.py.)
# Frozen objects are still freed by reference counting; only cyclic garbage among them (of
# the first config, once replaced) stays: bounded, once per process.
def tune_gc() -> None:
    """Move everything alive now to the permanent generation."""
    gc.collect()
    gc.freeze()


class DataPlane:
    """One process's listeners and clusters, following ``holder`` from its next snapshot on
    (both users create it before the first one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, holder: SnapshotHolder,
                 worker_id: int = 0) -> None:
        self.loop = loop
        self.holder = holder
        self.worker_id = worker_id
        self.store = StatsStore()
        self.clusters = ClusterManager(loop=loop, store=self.store)
        self.store.host_status = self.clusters.host_status_dump
        self.sweeper = DeadlineSweeper(loop, SWEEP_TICK)
        self.listeners = ListenerManager(loop, holder, self.clusters, self.store, self.sweeper)
        self.housekeeping = Housekeeping(loop, self.clusters)
        self._stats_server: asyncio.AbstractServer | None = None
        self._tuned = False
        holder.subscribe(self.clusters.apply)
        holder.subscribe(self.listeners.apply)
        holder.subscribe(self._first_config)

    def _first_config(self, snapshot: ConfigSnapshot) -> None:
        if not self._tuned:
            self._tuned = True
            self.loop.call_soon(tune_gc)  # after every subscriber has applied it

    async def serve_stats(self, directory: str | Path) -> None:
        """Answer the admin's stats scrapes on this data plane's socket in ``directory``."""
        self._stats_server = await serve_worker_stats(
            self.store, socket_path(directory, self.worker_id))

    def drain_listeners(self, inbound_only: bool, graceful: bool, drain_time: float) -> None:
        """``/drain_listeners`` for this process (``ListenerManager.drain_listeners``)."""
        self.listeners.drain_listeners(inbound_only, graceful, drain_time)

    def close(self) -> None:
        """Stop following snapshots, close listeners and pools, flush access logs."""
        for observer in (self.clusters.apply, self.listeners.apply, self._first_config):
            with contextlib.suppress(ValueError):
                self.holder.unsubscribe(observer)
        self.listeners.close()
        self.housekeeping.close()
        if self._stats_server is not None:
            self._stats_server.close()
            self._stats_server = None
        AccessLogFile.flush_all()
        self.clusters.close()
        self.sweeper.close()
