"""One extra proxy worker process: ``python -m pistio.proxy.runtime.worker_process --fd N``.

With ``--concurrency N`` the agent serves as worker 0 and starts N-1 of these, as fresh
interpreters (never ``fork``: the agent runs gRPC threads), passing each one end of a Unix
socket pair as file descriptor ``N``. The worker receives snapshots on it
(``SnapshotReceiver``), runs a ``DataPlane`` on them (``SO_REUSEPORT``: every worker accepts
on every port), and exits when the agent closes the socket or on SIGTERM. Its stats are read
by the admin through ``stats_channel`` when the agent names a directory for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket

from pistio.proxy.runtime import shared_buckets
from pistio.proxy.runtime.data_plane import DataPlane
from pistio.proxy.runtime.snapshot import SnapshotHolder
from pistio.proxy.runtime.snapshot_receiver import SnapshotReceiver
from pistio.proxy.server.stats_channel import STATS_DIR_ENV

log = logging.getLogger("pistio.proxy.worker")


async def run_worker(fd: int, worker_id: int = 1) -> None:
    shared_buckets.install_from_env()  # the agent's shared token buckets, if it passed them
    loop = asyncio.get_running_loop()
    holder = SnapshotHolder()
    data_plane = DataPlane(loop, holder, worker_id)
    stats_dir = os.environ.get(STATS_DIR_ENV)
    if stats_dir:
        await data_plane.serve_stats(stats_dir)
    receiver = SnapshotReceiver(holder, on_drain=data_plane.drain_listeners)
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    serving = loop.create_task(receiver.serve(reader, writer))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    finally:
        data_plane.close()
        writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pistio-proxy-worker")
    parser.add_argument("--fd", type=int, required=True, help="socket to the agent")
    parser.add_argument("--worker-id", type=int, default=1)
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
