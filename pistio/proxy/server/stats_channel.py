"""How the admin process reads the workers' stats: one Unix socket per worker.

Each worker listens on ``<dir>/worker-<id>.sock`` (the directory is handed down by the agent in
``PISTIO_WORKER_STATS_DIR``); a connection receives that worker's ``StatsStore.dump()`` and is
closed. The admin connects to every worker on a scrape and merges the dumps
(``merge_dumps``): workers count without locks or messages, only scrapes pay.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from pistio.proxy.stats.snapshot import StatsSnapshot, merge_dumps
from pistio.proxy.stats.store import StatsStore

STATS_DIR_ENV = "PISTIO_WORKER_STATS_DIR"
SCRAPE_TIMEOUT = 2.0


def socket_path(directory: str | Path, worker_id: int) -> Path:
    return Path(directory) / f"worker-{worker_id}.sock"


async def serve_worker_stats(store: StatsStore, path: Path) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(store.dump())
            await writer.drain()
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(answer, path=str(path))


async def _read_one(path: Path) -> bytes | None:
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return None  # a worker that went away has nothing to add
    try:
        return await reader.read()
    finally:
        writer.close()


async def collect_worker_stats(directory: str | Path) -> StatsSnapshot:
    """Every live worker's stats, merged."""
    paths = sorted(Path(directory).glob("worker-*.sock"))
    dumps: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            results = await asyncio.gather(*(_read_one(p) for p in paths))
            dumps = [d for d in results if d]
    return merge_dumps(dumps)
