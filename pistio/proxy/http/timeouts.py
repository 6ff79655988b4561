"""One coarse timer per worker for connection deadlines (idle, request headers, pool idle).

Envoy arms a timer per connection; in Python a ``call_later``/``cancel`` pair per request
costs about 0.7 µs and an allocation. Instead each connection keeps a plain ``deadline``
number (loop time) that the request path updates with one store, and a single sweeper visits
the watched objects a few times per shortest timeout. A deadline fires up to one tick late,
which the timeouts it serves (seconds to hours) tolerate.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None:
        """Called once the loop time has passed ``deadline``."""


class DeadlineSweeper:
    """Visits watched objects every ``tick`` seconds and fires the expired ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self._loop = loop
        self._tick = tick
        self._watched: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = loop.call_later(tick, self._sweep)

    def watch(self, obj: HasDeadline) -> None:
        self._watched.add(obj)

    def unwatch(self, obj: HasDeadline) -> None:
        self._watched.discard(obj)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._watched.clear()

    def _sweep(self) -> None:
        now = self._loop.time()
        expired = [obj for obj in self._watched if obj.deadline <= now]
        for obj in expired:
            obj.on_deadline(now)
        if self._handle is not None:
            self._handle = self._loop.call_later(self._tick, self._sweep)


def tick_for(*timeouts: float) -> float:
    """A tick a quarter of the shortest enabled timeout, between 20 ms and 1 s."""
    enabled = [t for t in timeouts if t > 0]
    if not enabled:
        return 1.0
    return min(1.0, max(0.02, min(enabled) / 4))
