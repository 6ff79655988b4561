"""``pistio proxy-status``: istioctl proxy-status against a discovery's debug port.

Reads ``/debug/syncz`` and prints, per connected proxy (sidecars, gateways and proxyless
gRPC clients alike), whether the last CDS/LDS/EDS/RDS/ECDS response was acknowledged.
Also holds the small HTTP client and table printer ``proxy-config`` shares.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import click

DEFAULT_DISCOVERY_ADDRESS = "127.0.0.1:15014"
TIMEOUT = 5.0

discovery_address_option = click.option(
    "--discovery-address",
    default=DEFAULT_DISCOVERY_ADDRESS,
    show_default=True,
    envvar="PISTIO_DISCOVERY_ADDRESS",
    help="HOST:PORT of the discovery's monitoring/debug HTTP port.",
)


def fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit, as every pistio command does."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def debug_get(address: str, path: str) -> bytes:
    """GET a debug endpoint; a failure ends the command with one line."""
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 (http only)
            return resp.read()
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace").strip()
        if err.code == 404 and path.startswith("/debug/config_dump"):
            raise LookupError(detail) from None
        fail(f"discovery at {address} answered {err.code} for {path}: {detail}")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        fail(f"cannot reach discovery at {address}: {getattr(reason, 'strerror', None) or reason}")
    raise AssertionError("unreachable")


def debug_json(address: str, path: str) -> Any:
    body = debug_get(address, path)
    try:
        return json.loads(body)
    except ValueError:
        fail(f"discovery at {address} returned invalid JSON for {path}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], padding: int) -> str:
    """Columns padded like Go's tabwriter (istioctl's output); the last column is not padded."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.ljust(widths[i] + padding) for i, c in enumerate(row[:-1])]
        lines.append("".join(parts) + row[-1])
    return "\n".join(lines)


def resolve_proxy_id(proxy: str, namespace: str | None) -> str:
    """istioctl's ``pod[.namespace]``, ``pod/NAME``, ``deploy/NAME`` (a pod of the
    Deployment, found through the running local node) or a full node id, as the discovery
    matches it."""
    kind, slash, name = proxy.partition("/")
    if slash and kind in ("pod", "pods", "po"):
        proxy = name
    elif slash and kind in ("deploy", "deployment", "deployments"):
        proxy = _deployment_pod(name, namespace or "default")
    if "~" in proxy or "." in proxy:
        return proxy
    return f"{proxy}.{namespace or 'default'}"


def _deployment_pod(name: str, namespace: str) -> str:
    from pistio.node import api
    from pistio.node.config import load_node_config

    try:
        answer = api.call(load_node_config().socket, "exec_info", timeout=10,
                          namespace=namespace, pod=f"deploy/{name}", container=None)
    except api.NodeUnavailable as exc:
        fail(f"deploy/{name}: finding its pod needs the local node ({exc}); give the pod name")
    if not answer.get("ok"):
        fail("; ".join(answer.get("errors") or [f"deploy/{name} not found"]))
    return f"{answer['pod']}.{answer['namespace']}"


def quote_id(proxy_id: str) -> str:
    return quote(proxy_id, safe="")


STATUS_COLUMNS = ("CDS", "LDS", "EDS", "RDS", "ECDS")


def _status(row: dict[str, Any], short: str) -> str:
    info = (row.get("types") or {}).get(short) or {}
    return str(info.get("status") or "NOT SENT")


def status_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            row.get("proxy", ""),
            row.get("cluster_id", ""),
            *(_status(row, c) for c in STATUS_COLUMNS),
            row.get("istiod", ""),
            row.get("istio_version") or "-",
        ]
        for row in rows
    ]


def _matches(row: dict[str, Any], proxy: str) -> bool:
    return proxy in (row.get("proxy"), row.get("node_id"), row.get("connection_id"))


@click.command("proxy-status")
@click.argument("proxy", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace of the proxy's pod.")
@discovery_address_option
def proxy_status(proxy: str | None, namespace: str | None, discovery_address: str) -> None:
    """Sync status of every proxy connected to the discovery, or of one PROXY.

    PROXY is pod.namespace (as listed) or a full node id. Statuses: SYNCED (the proxy
    acknowledged the last response), STALE (sent, not acknowledged, or rejected), NOT SENT
    (subscribed, nothing sent yet), IGNORED (not subscribed and not served).
    """
    rows = debug_json(discovery_address, "/debug/syncz")
    if not isinstance(rows, list):
        fail(f"discovery at {discovery_address} returned an unexpected /debug/syncz")
    if proxy is not None:
        wanted = resolve_proxy_id(proxy, namespace)
        rows = [r for r in rows if _matches(r, wanted) or _matches(r, proxy)]
        if not rows:
            fail(f"proxy {wanted} is not connected to the discovery at {discovery_address}")
    headers = ("NAME", "CLUSTER", *STATUS_COLUMNS, "ISTIOD", "VERSION")
    click.echo(format_table(headers, status_rows(rows), padding=5))
    # A rejected config is what a user runs proxy-status to find: say why.
    for row in rows:
        for short, info in sorted((row.get("types") or {}).items()):
            if info.get("error"):
                click.echo(f"{row.get('proxy')}: {short} rejected: {info['error']}", err=True)
