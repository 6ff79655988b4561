"""``pistio get``: kubectl's tables (and -o yaml/json) for what runs on the node."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import yaml

from pistio.cli.node_client import call, fail, kind_info
from pistio.cli.proxy_status_cmd import format_table


def age(created: str | None, now: float) -> str:
    """kubectl's short ages: 45s, 3m20s, 12m, 5h, 3d."""
    if not created:
        return "<unknown>"
    try:
        then = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return "<unknown>"
    s = max(0, int(now - then))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _pod_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    status = obj.get("status") or {}
    containers = status.get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in containers if c.get("ready"))
    shown = status.get("phase") or "Pending"
    for c in containers:  # a waiting container's reason wins, as in kubectl
        state = c.get("state") or {}
        for key in ("waiting", "terminated"):
            reason = (state.get(key) or {}).get("reason")
            if reason:
                shown = reason
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    row = [_meta(obj).get("name", ""), f"{ready}/{total}", shown, str(restarts),
           age(_meta(obj).get("creationTimestamp"), now)]
    if wide:
        row += [status.get("podIP") or "<none>", "pistio"]
    return row


def _service_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol') or 'TCP'}"
                     for p in spec.get("ports") or []) or "<none>"
    row = [_meta(obj).get("name", ""), spec.get("type") or "ClusterIP",
           spec.get("clusterIP") or "<none>", "<none>", ports,
           age(_meta(obj).get("creationTimestamp"), now)]
    if wide:
        sel = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        row.append(sel or "<none>")
    return row


def _deployment_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return [_meta(obj).get("name", ""), f"{status.get('readyReplicas', 0)}/{want}",
            str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0)),
            age(_meta(obj).get("creationTimestamp"), now)]


def _vs_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    spec = obj.get("spec") or {}
    return [_meta(obj).get("name", ""), json.dumps(spec.get("gateways") or []),
            json.dumps(spec.get("hosts") or []), age(_meta(obj).get("creationTimestamp"), now)]


def _dr_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    return [_meta(obj).get("name", ""), str((obj.get("spec") or {}).get("host", "")),
            age(_meta(obj).get("creationTimestamp"), now)]


def _plain_row(obj: dict[str, Any], now: float, wide: bool) -> list[str]:
    return [_meta(obj).get("name", ""), age(_meta(obj).get("creationTimestamp"), now)]


Row = Callable[[dict[str, Any], float, bool], list[str]]
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], Row]] = {
    "Pod": (("NAME", "READY", "STATUS", "RESTARTS", "AGE"), ("IP", "NODE"), _pod_row),
    "Service": (("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), ("SELECTOR",),
                _service_row),
    "Deployment": (("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"), (), _deployment_row),
    "VirtualService": (("NAME", "GATEWAYS", "HOSTS", "AGE"), (), _vs_row),
    "DestinationRule": (("NAME", "HOST", "AGE"), (), _dr_row),
}


@click.command()
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]),
              default=None)
def get(kind: str, names: tuple[str, ...], namespace: str | None, all_namespaces: bool,
        output: str | None) -> None:
    """List pods, services, deployments or any Istio kind on the node (kubectl get)."""
    info = kind_info(kind)
    ns = None if all_namespaces or not info.namespaced else (namespace or "default")
    answer = call("get", kind=info.kind, namespace=ns)
    items = answer["items"]
    if names:
        items = [i for i in items if _meta(i).get("name") in names]
        missing = set(names) - {_meta(i).get("name") for i in items}
        if missing:
            plural = info.plural + (f".{info.group}" if info.group else "")
            fail(f'{plural} "{sorted(missing)[0]}" not found')
    if output in ("yaml", "json"):
        doc: Any = items[0] if len(names) == 1 and items else {
            "apiVersion": "v1", "kind": "List", "items": items}
        click.echo(yaml.safe_dump(doc, sort_keys=False) if output == "yaml"
                   else json.dumps(doc, indent=2))
        return
    if output == "name":
        for i in items:
            click.echo(f"{info.kind.lower()}/{_meta(i).get('name')}")
        return
    if not items:
        where = "" if ns is None else f" in {ns} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    headers, wide_headers, row = TABLES.get(info.kind, (("NAME", "AGE"), (), _plain_row))
    wide = output == "wide"
    headers = headers + (wide_headers if wide else ())
    rows = [row(i, answer["now"], wide) for i in items]
    if ns is None and info.namespaced:
        headers = ("NAMESPACE", *headers)
        rows = [[_meta(i).get("namespace", ""), *r] for i, r in zip(items, rows, strict=True)]
    click.echo(format_table(headers, rows, padding=3))
