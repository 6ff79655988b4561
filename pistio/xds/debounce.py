"""Debounce: coalesce bursts of config events into one push.

Istio's `debounce` in pilot/pkg/xds/discovery.go. Events merge into one
pending push request. The push fires when no event arrived for `quiet`
seconds, or when `max_delay` has passed since the first pending event
(a steady trickle of events must not postpone a push forever). Only one push
runs at a time; events arriving during a push accumulate and fire as soon as
the push finishes and their own window has passed. An endpoint-only event
merged only with endpoint-only events stays endpoint-only (an EDS push).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pistio.xds.push_request import PushRequest, merge

log = logging.getLogger("pistio.xds")


@dataclass(frozen=True)
class DebounceOptions:
    quiet: float = 0.1  # Istio PILOT_DEBOUNCE_AFTER
    max_delay: float = 1.0  # Istio PILOT_DEBOUNCE_MAX
    # Istio PILOT_ENABLE_EDS_DEBOUNCE: when False, endpoint-only events skip
    # the window and push at once (unless a full push is already pending).
    eds_debounce: bool = True


class Debouncer:
    def __init__(
        self,
        push: Callable[[PushRequest], Awaitable[None]],
        options: DebounceOptions | None = None,
    ) -> None:
        self._push = push
        self.options = options or DebounceOptions()
        self._pending: PushRequest | None = None
        self._first_event = 0.0
        self._last_event = 0.0
        self._immediate = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.events = 0  # config events received
        self.pushes = 0  # debounced pushes fired

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="xds-debounce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def enqueue(self, request: PushRequest) -> None:
        now = asyncio.get_running_loop().time()
        self.events += 1
        if self._pending is None:
            self._first_event = now
        self._last_event = now
        self._pending = merge(self._pending, request)
        if not self.options.eds_debounce and not request.full and not self._pending.full:
            self._immediate = True
        self._wakeup.set()

    @property
    def pending(self) -> PushRequest | None:
        return self._pending

    def _wait_left(self, now: float) -> float:
        if self._immediate:
            return 0.0
        quiet_left = self._last_event + self.options.quiet - now
        max_left = self._first_event + self.options.max_delay - now
        return min(quiet_left, max_left)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending is None:
                continue
            # Sleep until the window closes; new events push the quiet deadline
            # out, the max deadline never moves.
            while (left := self._wait_left(loop.time())) > 0:
                await asyncio.sleep(left)
            request, self._pending, self._immediate = self._pending, None, False
            self.pushes += 1
            try:
                await self._push(request)
            except Exception:
                log.exception("push failed")
