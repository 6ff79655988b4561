"""The proxy's server state as Envoy's admin reports it (``/ready``, ``/server_info``,
``server.*`` stats).

Envoy is ``PRE_INITIALIZING`` before its init manager starts, ``INITIALIZING`` while waiting for
its first listeners and clusters, then ``LIVE``; it reports ``DRAINING`` once its health check
has been failed (``/healthcheck/fail`` or a shutdown in progress). ``/ready`` answers 200 only
when ``LIVE``. ``server.state`` encodes the same as 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING,
3 INITIALIZING.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LIVE, DRAINING, PRE_INITIALIZING, INITIALIZING = (
    "LIVE",
    "DRAINING",
    "PRE_INITIALIZING",
    "INITIALIZING",
)
STATE_NUMBERS = {LIVE: 0, DRAINING: 1, PRE_INITIALIZING: 2, INITIALIZING: 3}

VERSION = "pistio/0.1.0/Clean/RELEASE/BoringSSL"


class ServerState:
    """``initialized`` says whether the initial config (LDS and CDS, with their dependent
    resources) has been applied; the agent supplies it."""

    def __init__(
        self,
        initialized: Callable[[], bool],
        *,
        node_id: str = "",
        node_cluster: str = "",
        concurrency: int = 1,
        version: str = VERSION,
        started: bool = True,
    ) -> None:
        self._initialized = initialized
        self.node_id = node_id
        self.node_cluster = node_cluster
        self.concurrency = concurrency
        self.version = version
        self.started = started  # False until the init manager starts (PRE_INITIALIZING)
        self.health_check_failed = False
        self.start_wall = time.time()
        self.start_monotonic = time.monotonic()

    def state(self) -> str:
        if not self.started:
            return PRE_INITIALIZING
        if not self._initialized():
            return INITIALIZING
        return DRAINING if self.health_check_failed else LIVE

    def uptime_seconds(self) -> int:
        return int(time.monotonic() - self.start_monotonic)
