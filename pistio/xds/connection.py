"""One ADS connection: who the proxy is, and per type what it watches, got and accepted.

Istio's `Connection` plus `model.WatchedResource`. The state here is plain
data, changed only by the stream task that owns the connection; everything
else (pushes from the push queue, debug readers) talks to that task through
its inbox or reads a snapshot.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2

from pistio.xds.push_request import PushRequest


@dataclass
class ConnectionInfo:
    """The proxy on the other end, as a generator sees it."""

    conn_id: str
    node_id: str
    metadata: dict[str, Any]
    cluster: str = ""
    peer: str = ""
    delta: bool = False
    connected_at: float = field(default_factory=time.time)
    node: base_pb2.Node | None = None
    # The caller's authenticated identities (SPIFFE ids), from the pod token of a stream on
    # the secure port; empty on the plaintext port (Istio: no authentication there).
    identities: tuple[str, ...] = ()
    # Free slot for the control plane (e.g. its proxy record / sidecar scope).
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class WatchState:
    """Per type: the subscription, and the last response sent, acked and nacked."""

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    version_sent: str = ""
    nonce_sent: str = ""
    version_acked: str = ""
    nonce_acked: str = ""
    nonce_nacked: str = ""
    error: str = ""  # error_detail.message of the last NACK; cleared by the next ACK
    sent_at: float = 0.0
    acked_at: float = 0.0
    # name -> version (hash) of what we sent. In delta xDS this is what the
    # client holds (seeded from initial_resource_versions); in SotW it lets a
    # push skip unchanged resources.
    resource_versions: dict[str, str] = field(default_factory=dict)

    @property
    def watched(self) -> set[str] | None:
        """What a generator is asked for: None = wildcard."""
        return None if self.wildcard else set(self.names)

    @property
    def sync_status(self) -> str:
        return sync_status(self.nonce_sent, self.nonce_acked)

    def record_send(self, version: str) -> str:
        """Note a response about to go out (either protocol) and return its fresh nonce."""
        self.nonce_sent = uuid.uuid4().hex
        self.version_sent = version
        self.sent_at = time.time()
        return self.nonce_sent


def sync_status(nonce_sent: str, nonce_acked: str) -> str:
    """istioctl proxy-status: NOT SENT, SYNCED (last response acked), or STALE."""
    if not nonce_sent:
        return "NOT SENT"
    if nonce_sent == nonce_acked:
        return "SYNCED"
    return "STALE"


@dataclass
class PushEvent:
    """A push handed to a connection's stream task; `done` resolves when it is written."""

    request: PushRequest
    done: asyncio.Future[None]


class Connection:
    def __init__(self, info: ConnectionInfo) -> None:
        self.info = info
        self.watches: dict[str, WatchState] = {}
        # Requests from the proxy and pushes from the queue, handled in order by
        # the stream task: the only writer of this connection's state.
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[Any] | None = None
        self.closed = False

    @property
    def conn_id(self) -> str:
        return self.info.conn_id

    def watch(self, type_url: str) -> WatchState | None:
        return self.watches.get(type_url)

    async def push(self, request: PushRequest, timeout: float | None) -> bool:
        """Hand a push to the stream task and wait until it is written; False on timeout/close."""
        if self.closed:
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(PushEvent(request, done))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            return False
        return not self.closed

    def release_pending(self) -> None:
        """Resolve pushes still queued when the stream ends, so no push worker waits on them."""
        while not self.inbox.empty():
            event = self.inbox.get_nowait()
            if isinstance(event, PushEvent) and not event.done.done():
                event.done.set_result(None)

    def close(self) -> None:
        """Stop the stream task (e.g. a proxy that stopped reading)."""
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def __repr__(self) -> str:
        return f"Connection({self.conn_id})"
