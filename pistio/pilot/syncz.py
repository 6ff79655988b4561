"""``/debug/syncz``: per connected proxy, what was sent and acknowledged, by xDS type.

The row keeps the fields of Istio's ``SyncStatus`` JSON (``proxy``, ``cluster_id``,
``istio_version``, ``cluster_sent``/``cluster_acked``, ``listener_*``, ``route_*``,
``endpoint_*``, ``extensionconfig_*``: nonces) so tools written for istiod's syncz read it,
and adds a ``types`` map with versions, NACK errors and the status istioctl prints:
``SYNCED`` (last response acknowledged), ``STALE`` (sent, not acknowledged yet, or NACKed),
``NOT SENT`` (subscribed, nothing sent), ``IGNORED`` (not subscribed, and not served by
this control plane).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pistio.pilot.discovery import proxy_name, proxy_of
from pistio.xds import types as T
from pistio.xds.connection import Connection

if TYPE_CHECKING:
    from pistio.pilot.discovery import Discovery

NOT_SENT = "NOT SENT"
IGNORED = "IGNORED"

# Istio's SyncStatus field prefixes, and the column order of istioctl proxy-status.
STATUS_TYPES: tuple[tuple[str, str], ...] = (
    ("cluster", T.CLUSTER),
    ("listener", T.LISTENER),
    ("endpoint", T.ENDPOINT),
    ("route", T.ROUTE),
    ("extensionconfig", T.EXTENSION_CONFIG),
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else ""


def type_status(conn: Connection, type_url: str, served: bool) -> dict[str, Any]:
    state = conn.watches.get(type_url)
    if state is None:
        return {
            "type_url": type_url,
            "subscribed": False,
            "status": NOT_SENT if served else IGNORED,
        }
    return {
        "type_url": type_url,
        "subscribed": True,
        "wildcard": state.wildcard,
        "resource_names": sorted(state.names),
        "version_sent": state.version_sent,
        "nonce_sent": state.nonce_sent,
        "version_acked": state.version_acked,
        "nonce_acked": state.nonce_acked,
        "sent_at": _iso(state.sent_at),
        "acked_at": _iso(state.acked_at),
        "error": state.error,
        "status": state.sync_status,
    }


def sync_row(discovery: Discovery, conn: Connection) -> dict[str, Any]:
    info = conn.info
    proxy = proxy_of(info)
    row: dict[str, Any] = {
        "cluster_id": proxy.cluster_id,
        "proxy": proxy_name(info),
        "node_id": info.node_id,
        "connection_id": info.conn_id,
        "proxy_type": proxy.type.value,
        "proxy_version": str(info.metadata.get("ISTIO_PROXY_VERSION", "")),
        "istio_version": proxy.istio_version,
        "generator": proxy.generator,
        "istiod": discovery.server.control_plane.identifier,
        "delta": info.delta,
        "connected_at": _iso(info.connected_at),
    }
    served = discovery.server.generators
    types: dict[str, Any] = {}
    for prefix, type_url in STATUS_TYPES:
        state = conn.watches.get(type_url)
        if state is not None and state.nonce_sent:
            row[f"{prefix}_sent"] = state.nonce_sent
        if state is not None and state.nonce_acked:
            row[f"{prefix}_acked"] = state.nonce_acked
    for type_url in sorted(set(conn.watches) | {t for _, t in STATUS_TYPES}):
        types[T.short_name(type_url)] = type_status(conn, type_url, type_url in served)
    row["types"] = types
    return row


def sync_rows(discovery: Discovery) -> list[dict[str, Any]]:
    """One row per ADS connection, sorted as istioctl sorts them (cluster, then proxy)."""
    rows = [sync_row(discovery, conn) for conn in discovery.server.registry]
    rows.sort(key=lambda r: (r["cluster_id"], r["proxy"], r["connection_id"]))
    return rows
