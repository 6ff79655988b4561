"""One proxy worker process: ``python -m pistio.proxy.runtime.worker_process --fd N``.

The agent starts its workers as fresh interpreters (never ``fork``: the agent runs gRPC
threads) and passes each one end of a Unix socket pair as file descriptor ``N``. The worker
receives snapshots on it (``SnapshotReceiver``), keeps its own ``ClusterManager`` in step, and
exits when the agent closes the socket or on SIGTERM. Its ``ListenerManager`` follows the same
snapshots and serves the listeners (``SO_REUSEPORT``: every worker accepts on every port); its
stats are read by the admin through ``stats_channel`` when the agent names a directory for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket

from pistio.proxy.http.connection_manager import AccessLogFile
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.snapshot import SnapshotHolder
from pistio.proxy.runtime.snapshot_receiver import SnapshotReceiver
from pistio.proxy.server.housekeeping import Housekeeping
from pistio.proxy.server.listener_manager import ListenerManager
from pistio.proxy.server.stats_channel import STATS_DIR_ENV, serve_worker_stats, socket_path
from pistio.proxy.stats.store import StatsStore

# The deadline sweeper's tick: connection idle, stream idle and request timeouts fire up to
# this late (they are seconds to minutes).
SWEEP_TICK = 0.1

log = logging.getLogger("pistio.proxy.worker")


# Python's cyclic GC: the objects that live long (modules, the compiled config) are frozen
# out of the collector's view once the first config is in, so the collections that still
# happen scan only young objects. (A request's objects hold no reference cycle and are freed
# by reference counting; a larger young generation was measured slower, bench/proxy_path.py.)
# Frozen objects are still freed by reference counting; only cyclic garbage among them (of
# the first config, once replaced) stays: bounded, once per worker.
def tune_gc() -> None:
    """Move everything alive now to the permanent generation."""
    gc.collect()
    gc.freeze()


async def run_worker(fd: int, worker_id: int = 0) -> None:
    loop = asyncio.get_running_loop()
    holder = SnapshotHolder()
    store = StatsStore()
    clusters = ClusterManager(loop=loop, store=store)
    store.host_status = clusters.host_status_dump
    sweeper = DeadlineSweeper(loop, SWEEP_TICK)
    listeners = ListenerManager(loop, holder, clusters, store, sweeper)
    holder.subscribe(clusters.apply)
    holder.subscribe(listeners.apply)
    tuned = False

    def first_config(snapshot: object) -> None:
        nonlocal tuned
        if not tuned:
            tuned = True
            loop.call_soon(tune_gc)  # after every subscriber has applied it

    holder.subscribe(first_config)
    housekeeping = Housekeeping(loop, clusters)
    stats_server = None
    stats_dir = os.environ.get(STATS_DIR_ENV)
    if stats_dir:
        stats_server = await serve_worker_stats(store, socket_path(stats_dir, worker_id))
    receiver = SnapshotReceiver(holder)
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    serving = loop.create_task(receiver.serve(reader, writer))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    finally:
        listeners.close()
        housekeeping.close()
        if stats_server is not None:
            stats_server.close()
        AccessLogFile.flush_all()
        clusters.close()
        sweeper.close()
        writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pistio-proxy-worker")
    parser.add_argument("--fd", type=int, required=True, help="socket to the agent")
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s\t%(levelname)s\tworker-{args.worker_id}\t%(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(run_worker(args.fd, args.worker_id))
    else:
        uvloop.run(run_worker(args.fd, args.worker_id))


if __name__ == "__main__":
    main()
