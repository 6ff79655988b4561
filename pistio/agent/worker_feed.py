"""Config distribution from the agent to its extra worker processes (``--concurrency N``).

The agent process owns the ADS stream and compiles every response to decide ACK or NACK; it
serves its own snapshots as worker 0 (``pistio.proxy.runtime.data_plane``), and the N-1 other
workers are processes fed from here. Each published snapshot is forwarded to every worker as
the *raw* resources it was built from — only what changed since that worker's previous frame —
and each worker recompiles them with the same code (``SnapshotReceiver``) and swaps its own
snapshot; compiled objects never cross a process boundary. Workers answer with the version
they applied, so the agent knows when all of them converged (``applied``). See
``pistio.proxy.runtime.snapshot_wire`` for the frames.

A worker process that dies is started again with the same id and sent the whole current
snapshot (at once the first time, then with a back-off doubling from 0.5 s to 30 s while it
keeps dying within a minute), as pilot-agent restarts an Envoy that exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2

from pistio.agent.config_manager import ConfigManager
from pistio.proxy.runtime import shared_buckets
from pistio.proxy.runtime.snapshot import ConfigSnapshot
from pistio.proxy.runtime.snapshot_wire import (
    APPLIED,
    FAILED,
    encode_drain,
    encode_update,
    read_frame,
)

log = logging.getLogger("pistio.agent.workers")


@dataclass(eq=False)
class Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    sent: dict[str, dict[str, bytes]] = field(default_factory=dict)  # type → name → bytes
    applied: int = 0  # last snapshot version the worker reported in force
    failed: str = ""
    alive: bool = True
    reader_task: asyncio.Task[None] | None = None
    started_at: float = 0.0
    restarts: int = 0  # restarts in a row, each within RESTART_RESET_AFTER of the previous


# A worker that died is started again after a back-off that doubles while it keeps dying soon.
RESTART_BACKOFF_INITIAL = 0.5
RESTART_BACKOFF_MAX = 30.0
RESTART_RESET_AFTER = 60.0


def delta(
    sent: Mapping[str, Mapping[str, bytes]], active: Mapping[str, Mapping[str, any_pb2.Any]]
) -> tuple[dict[str, dict[str, any_pb2.Any]], dict[str, list[str]]]:
    """What a worker holding ``sent`` needs to hold ``active``: (upserts, removals)."""
    upserts: dict[str, dict[str, any_pb2.Any]] = {}
    removals: dict[str, list[str]] = {}
    for type_url in set(sent) | set(active):
        have = sent.get(type_url, {})
        want = active.get(type_url, {})
        changed = {n: p for n, p in want.items() if have.get(n) != p.value}
        gone = [n for n in have if n not in want]
        if changed:
            upserts[type_url] = changed
        if gone:
            removals[type_url] = gone
    return upserts, removals


class WorkerFeed:
    """Starts ``count`` worker processes (ids from ``first_id``) and keeps them on the
    manager's snapshots."""

    def __init__(self, manager: ConfigManager, count: int, log_level: str = "warning",
                 first_id: int = 1) -> None:
        self.manager = manager
        self.count = count
        self.first_id = first_id
        self.log_level = log_level
        self.workers: list[Worker] = []
        self._converged = asyncio.Event()
        self._stopped = asyncio.Event()
        self._restarts: set[asyncio.Task[None]] = set()
        self._drain: bytes | None = None  # the last /drain_listeners, for restarted workers

    @property
    def applied(self) -> list[int]:
        return [w.applied for w in self.workers]

    async def start(self) -> None:
        if not self.count:
            return  # the agent serves alone: nothing to forward
        for index in range(self.first_id, self.first_id + self.count):
            self.workers.append(await self._spawn(index))
        self.manager.holder.subscribe(self._on_snapshot)
        if self.manager.snapshot.version:
            self._on_snapshot(self.manager.snapshot)

    async def _spawn(self, index: int) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: tuple[int, ...] = (theirs.fileno(),)
        env = None
        buckets = shared_buckets.current  # the rate limits' shared token buckets
        if buckets is not None:
            fds += (buckets.fd,)
            env = {**os.environ, shared_buckets.ENV: str(buckets.fd)}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pistio.proxy.runtime.worker_process",
                "--fd", str(theirs.fileno()), "--worker-id", str(index),
                "--log-level", self.log_level,
                pass_fds=fds, env=env,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        loop = asyncio.get_running_loop()
        worker = Worker(index, process, writer, reader, started_at=loop.time())
        worker.reader_task = loop.create_task(self._read(worker))
        return worker

    def _on_snapshot(self, snapshot: ConfigSnapshot) -> None:
        active = self.manager.active_resources()
        for worker in self.workers:
            if worker.alive:
                self._send(worker, snapshot, active)

    @staticmethod
    def _send(worker: Worker, snapshot: ConfigSnapshot,
              active: Mapping[str, Mapping[str, any_pb2.Any]]) -> None:
        upserts, removals = delta(worker.sent, active)
        worker.writer.write(encode_update(snapshot.version, upserts, removals,
                                          dict(snapshot.xds_versions)))
        worker.sent = {t: {n: p.value for n, p in r.items()} for t, r in active.items()}

    async def _read(self, worker: Worker) -> None:
        try:
            while (frame := await read_frame(worker.reader)) is not None:
                kind, version, body = frame
                if kind == APPLIED:
                    worker.applied = version
                elif kind == FAILED:
                    worker.failed = body.decode(errors="replace")
                    log.error("worker %d failed to apply snapshot %d: %s", worker.index,
                              version, worker.failed)
                self._converged.set()
                self._converged = asyncio.Event()
        except (OSError, ValueError) as err:
            log.error("worker %d: %s", worker.index, err)
        finally:
            worker.alive = False
            self._converged.set()
            self._converged = asyncio.Event()
        if worker in self.workers and not self._stopped.is_set():
            await self._reap(worker)
            loop = asyncio.get_running_loop()
            lived = loop.time() - worker.started_at
            restarts = 0 if lived >= RESTART_RESET_AFTER else worker.restarts + 1
            delay = 0.0 if restarts <= 1 else min(
                RESTART_BACKOFF_MAX, RESTART_BACKOFF_INITIAL * 2 ** (restarts - 2))
            log.warning("worker %d (pid %s) exited with status %s; starting it again in %.1fs",
                        worker.index, worker.process.pid, worker.process.returncode, delay)
            task = loop.create_task(self._restart(worker, delay, restarts))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    @staticmethod
    async def _reap(worker: Worker, timeout: float = 5.0) -> None:
        """Wait for the process to exit (SIGKILL if it does not)."""
        try:
            await asyncio.wait_for(worker.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()

    async def _restart(self, old: Worker, delay: float, restarts: int) -> None:
        """Start worker ``old.index`` again after ``delay`` (unless the feed stops first) and
        send it the whole current snapshot."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay)
        if self._stopped.is_set() or old not in self.workers:
            return
        try:
            new = await self._spawn(old.index)
        except OSError as err:
            log.error("worker %d cannot be started again: %s", old.index, err)
            return
        new.restarts = restarts
        self.workers[self.workers.index(old)] = new
        snapshot = self.manager.snapshot
        if snapshot.version:
            self._send(new, snapshot, self.manager.active_resources())
        if self._drain is not None:
            new.writer.write(self._drain)

    def drain_listeners(self, inbound_only: bool, graceful: bool, drain_time: float) -> None:
        """Forward the admin's ``/drain_listeners`` to every worker process."""
        frame = self._drain = encode_drain(inbound_only, graceful, drain_time)
        for worker in self.workers:
            if worker.alive:
                worker.writer.write(frame)

    async def wait_converged(self, version: int | None = None, timeout: float = 10.0) -> None:
        """Wait until every live worker applied ``version`` (default: the current one)."""
        async with asyncio.timeout(timeout):
            while True:
                target = version if version is not None else self.manager.snapshot.version
                if all(w.applied >= target for w in self.workers if w.alive):
                    return
                await self._converged.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        """Close every socket (workers exit on end of stream); SIGTERM then SIGKILL the
        ones that do not."""
        self._stopped.set()
        if self._restarts:  # a restart under way finishes (its worker is stopped below)
            await asyncio.gather(*self._restarts, return_exceptions=True)
        with contextlib.suppress(ValueError):
            self.manager.holder.unsubscribe(self._on_snapshot)
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.writer.close()
        for worker in workers:
            await self._reap(worker, timeout)
            if worker.reader_task is not None:
                worker.reader_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader_task
