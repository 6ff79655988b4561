"""What the node commands (up, apply, delete, get, exec, logs, down) share: finding the node,
reading manifests the way ``kubectl apply -f`` does, and reporting in kubectl's words."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from pistio.api.registry import KindInfo, all_kinds, find_kind
from pistio.config.loader import read_paths
from pistio.node import api
from pistio.node.config import NodeConfig, load_node_config

namespace_option = click.option("-n", "--namespace", default=None,
                                help="Namespace (default: the manifest's, else default).")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def need_root(command: str) -> None:
    if os.geteuid() != 0:
        fail(f"pistio {command} needs root: the node makes network namespaces, a bridge and "
             "iptables rules")


def node_config() -> NodeConfig:
    return load_node_config()


def call(op: str, timeout: float = 300.0, **fields: Any) -> dict[str, Any]:
    """One request to the running node; every failure ends the command with one line."""
    config = node_config()
    try:
        answer = api.call(config.socket, op, timeout=timeout, **fields)
    except api.NodeUnavailable as exc:
        fail(f"{exc}; start it with `pistio up`")
    if not answer.get("ok"):
        errors = answer.get("errors") or [answer.get("error") or "request failed"]
        for line in errors:
            click.echo(f"Error: {line}", err=True)
        sys.exit(1)
    return answer


def read_manifests(filenames: tuple[str, ...], recursive: bool) -> list[dict[str, Any]]:
    """Manifests as the node takes them; a file that does not parse ends the command, before
    anything is sent (all-or-nothing starts here)."""
    docs, issues = read_paths(filenames, recursive=recursive)
    if issues:
        for issue in issues:
            click.echo(f"Error: {issue}", err=True)
        sys.exit(1)
    if not docs:
        fail("no objects passed to apply")
    items = []
    for doc in docs:
        file = doc.source.file
        source_dir = os.getcwd() if file == "-" else str(Path(file).resolve().parent)
        items.append({"data": doc.data, "file": file, "line": doc.source.line,
                      "source_dir": source_dir})
    return items


def resource_name(kind: str, group: str) -> str:
    """kubectl's ``<kind>.<group>`` spelling in messages: ``virtualservice.networking.istio.io``."""
    return kind.lower() + (f".{group}" if group else "")


def kind_info(name: str) -> KindInfo:
    """A kind from what a user types: pods, po, svc, vs, virtualservices.networking.istio.io."""
    base, _, group = name.partition(".")
    if group:
        for info in all_kinds():
            if info.group == group and base.lower() in (
                    info.kind.lower(), info.plural, *info.short_names):
                return info
    info = find_kind(base)
    if info is None:
        fail(f'the server doesn\'t have a resource type "{name}"')
    return info


def group_of(kind: str) -> str:
    info = find_kind(kind)
    return info.group if info else ""
