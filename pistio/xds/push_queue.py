"""The push queue: which connections still need a push, merged per connection.

Istio's `PushQueue`. A debounced push enqueues every connection; a fixed pool
of workers drains the queue, so at most N connections are being pushed at
once however many proxies are connected. A connection appears in the queue at
most once: a second push for a queued connection merges into the queued one;
a push for a connection being pushed right now is kept aside and re-queued
when that push finishes, so a slow proxy gets one merged push, not a backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from pistio.xds.push_request import PushRequest, merge

C = TypeVar("C")


class PushQueue(Generic[C]):
    def __init__(self) -> None:
        self._order: deque[C] = deque()
        self._pending: dict[C, PushRequest] = {}
        self._processing: dict[C, PushRequest | None] = {}
        # One event loop, no threads: events suffice, no locks needed.
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._order)

    @property
    def busy(self) -> int:
        return len(self._processing)

    def _append(self, conn: C, request: PushRequest) -> None:
        self._pending[conn] = request
        self._order.append(conn)
        self._ready.set()
        self._idle.clear()

    def _check_idle(self) -> None:
        if not self._order and not self._processing:
            self._idle.set()

    def enqueue(self, conn: C, request: PushRequest) -> None:
        if conn in self._pending:
            self._pending[conn] = self._pending[conn].merge(request)
        elif conn in self._processing:
            self._processing[conn] = merge(self._processing[conn], request)
        else:
            self._append(conn, request)

    async def dequeue(self) -> tuple[C, PushRequest]:
        while not self._order:
            self._ready.clear()
            await self._ready.wait()
        conn = self._order.popleft()
        request = self._pending.pop(conn)
        self._processing[conn] = None
        return conn, request

    def mark_done(self, conn: C) -> None:
        request = self._processing.pop(conn, None)
        if request is not None:
            self._append(conn, request)
        self._check_idle()

    def remove(self, conn: C) -> None:
        """Forget a closed connection (a push being processed finishes on its own)."""
        if self._pending.pop(conn, None) is not None:
            self._order.remove(conn)
        if conn in self._processing:
            self._processing[conn] = None
        self._check_idle()

    async def join(self) -> None:
        """Wait until nothing is queued or being pushed."""
        await self._idle.wait()
