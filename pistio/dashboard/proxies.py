"""The proxy list: ``pistio proxy-status`` as JSON, from the discovery's ``/debug/syncz``.

The status words are proxy-status's own (``status_rows``): SYNCED, STALE, NOT SENT, IGNORED;
each type also carries the config version last sent and last acknowledged, and the NACK
message when the proxy rejected it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pistio.cli.proxy_status_cmd import STATUS_COLUMNS, status_rows

TIMEOUT = 5.0
SHOWN_TYPES = ("CDS", "LDS", "EDS", "RDS")


class DiscoveryError(Exception):
    """The discovery could not be reached or answered something else than syncz rows."""


def fetch_syncz(address: str) -> Any:
    url = f"http://{address}/debug/syncz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 (http only)
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise DiscoveryError(f"discovery at {address} answered {err.code} for /debug/syncz") \
            from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DiscoveryError(f"cannot reach the discovery at {address}: "
                             f"{getattr(reason, 'strerror', None) or reason}") from None
    except ValueError:
        raise DiscoveryError(f"discovery at {address} returned invalid JSON for /debug/syncz") \
            from None


def proxy_rows(syncz: Any) -> list[dict[str, Any]]:
    """One entry per connected proxy: name, namespace, per-type status and versions."""
    if not isinstance(syncz, list):
        raise DiscoveryError("unexpected /debug/syncz answer (not a list of proxies)")
    out = []
    for row, printed in zip(syncz, status_rows(syncz), strict=True):
        name, _, namespace = str(row.get("proxy", "")).partition(".")
        statuses = dict(zip(STATUS_COLUMNS, printed[2:2 + len(STATUS_COLUMNS)], strict=True))
        types = {}
        for short in SHOWN_TYPES:
            info = (row.get("types") or {}).get(short) or {}
            types[short] = {
                "status": statuses[short],
                "versionSent": info.get("version_sent") or "",
                "versionAcked": info.get("version_acked") or "",
                "error": info.get("error") or "",
            }
        out.append({
            "name": name, "namespace": namespace, "proxy": row.get("proxy", ""),
            "cluster": row.get("cluster_id", ""), "type": row.get("proxy_type", ""),
            "istiod": row.get("istiod", ""), "version": printed[-1], "types": types,
            "synced": all(t["status"] == "SYNCED" for t in types.values()),
        })
    return out


def proxies_snapshot(address: str,
                     fetch: Callable[[str], Any] = fetch_syncz) -> dict[str, Any]:
    """``{"proxies": [...], "error": None}``, or an empty list and the reason."""
    try:
        return {"proxies": proxy_rows(fetch(address)), "error": None}
    except DiscoveryError as exc:
        return {"proxies": [], "error": str(exc)}
