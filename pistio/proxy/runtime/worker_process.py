"""One proxy worker process: ``python -m pistio.proxy.runtime.worker_process --fd N``.

The agent starts its workers as fresh interpreters (never ``fork``: the agent runs gRPC
threads) and passes each one end of a Unix socket pair as file descriptor ``N``. The worker
receives snapshots on it (``SnapshotReceiver``), keeps its own ``ClusterManager`` in step, and
exits when the agent closes the socket or on SIGTERM. The data path (listeners with
``SO_REUSEPORT``, reading ``holder.current`` per connection) plugs in here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket

from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.snapshot import SnapshotHolder
from pistio.proxy.runtime.snapshot_receiver import SnapshotReceiver

log = logging.getLogger("pistio.proxy.worker")


async def run_worker(fd: int) -> None:
    holder = SnapshotHolder()
    clusters = ClusterManager()
    holder.subscribe(clusters.apply)
    receiver = SnapshotReceiver(holder)
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    loop = asyncio.get_running_loop()
    serving = loop.create_task(receiver.serve(reader, writer))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, serving.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    finally:
        clusters.close()
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
        asyncio.run(run_worker(args.fd))
    else:
        uvloop.run(run_worker(args.fd))


if __name__ == "__main__":
    main()
