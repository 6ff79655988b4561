"""The proxy list: proxy-status's words per xDS type, from /debug/syncz rows."""

from __future__ import annotations

import socket

from pistio.dashboard.proxies import proxies_snapshot, proxy_rows


def syncz_row(proxy: str, acked: bool) -> dict:  # type: ignore[type-arg]
    def typ(version: str) -> dict[str, str]:
        return {"status": "SYNCED" if acked else "STALE", "version_sent": version,
                "version_acked": version if acked else "", "error": ""}

    return {"proxy": proxy, "cluster_id": "Kubernetes", "istiod": "discovery-1",
            "istio_version": "1.24.0", "proxy_type": "sidecar",
            "types": {"CDS": typ("c1"), "LDS": typ("l1"), "EDS": typ("e1"),
                      "RDS": {"status": "NOT SENT"}}}


def test_rows_split_name_and_namespace_and_keep_statuses() -> None:
    rows = proxy_rows([syncz_row("reviews-v1-abc.default", True),
                       syncz_row("curl-x.other", False)])
    first, second = rows
    assert (first["name"], first["namespace"], first["version"]) == \
        ("reviews-v1-abc", "default", "1.24.0")
    assert first["types"]["CDS"] == {"status": "SYNCED", "versionSent": "c1",
                                     "versionAcked": "c1", "error": ""}
    assert first["types"]["RDS"]["status"] == "NOT SENT"
    assert first["synced"] is False  # RDS not sent
    assert second["types"]["LDS"]["status"] == "STALE"


def test_a_type_missing_from_the_row_is_not_sent() -> None:
    [row] = proxy_rows([{"proxy": "a.b", "types": {}}])
    assert {t["status"] for t in row["types"].values()} == {"NOT SENT"}


def test_discovery_unreachable_is_an_error_not_an_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    snap = proxies_snapshot(f"127.0.0.1:{port}")
    assert snap["proxies"] == []
    assert snap["error"].startswith(f"cannot reach the discovery at 127.0.0.1:{port}: ")


def test_unexpected_syncz_is_an_error() -> None:
    snap = proxies_snapshot("x", fetch=lambda _: {"oops": 1})
    assert snap == {"proxies": [], "error":
                    "unexpected /debug/syncz answer (not a list of proxies)"}
