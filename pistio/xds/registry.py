"""The registry of live ADS connections, and the sync snapshot behind /debug/syncz.

Each row is what istioctl proxy-status prints: per proxy and per type, the
version/nonce sent and acked, and the resulting SYNCED / NOT SENT / STALE.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pistio.xds.connection import Connection
from pistio.xds.types import short_name


@dataclass(frozen=True)
class TypeSync:
    type_url: str
    short: str
    version_sent: str
    nonce_sent: str
    version_acked: str
    nonce_acked: str
    status: str
    error: str


@dataclass(frozen=True)
class ConnectionSync:
    conn_id: str
    node_id: str
    cluster: str
    delta: bool
    connected_at: float
    types: dict[str, TypeSync]


class ConnectionRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}

    def add(self, conn: Connection) -> None:
        self._by_id[conn.conn_id] = conn

    def remove(self, conn: Connection) -> None:
        if self._by_id.get(conn.conn_id) is conn:
            del self._by_id[conn.conn_id]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def get(self, conn_id: str) -> Connection | None:
        return self._by_id.get(conn_id)

    def by_node(self, node_id: str) -> list[Connection]:
        return [c for c in self._by_id.values() if c.info.node_id == node_id]

    def sync_status(self) -> list[ConnectionSync]:
        rows = []
        for conn in self:
            types = {
                t: TypeSync(
                    type_url=t,
                    short=short_name(t),
                    version_sent=w.version_sent,
                    nonce_sent=w.nonce_sent,
                    version_acked=w.version_acked,
                    nonce_acked=w.nonce_acked,
                    status=w.sync_status,
                    error=w.error,
                )
                for t, w in conn.watches.items()
            }
            rows.append(
                ConnectionSync(
                    conn_id=conn.conn_id,
                    node_id=conn.info.node_id,
                    cluster=conn.info.cluster,
                    delta=conn.info.delta,
                    connected_at=conn.info.connected_at,
                    types=types,
                )
            )
        return rows
