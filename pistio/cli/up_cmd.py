"""``pistio up`` and ``pistio down``: start (or reuse) the local node, and remove it.

``up`` returns once every pod is running and ready and every sidecar has acknowledged its
config (SYNCED in ``pistio proxy-status``); the node keeps running in the background until
``pistio down``, which also cleans up after a node that crashed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from typing import Any

import click

from pistio.cli.apply_cmd import apply_files, filename_option, recursive_option
from pistio.cli.node_client import call, fail, namespace_option, need_root, node_config
from pistio.node import api
from pistio.node.cleanup import sweep
from pistio.node.config import NodeConfig

NODE_START_TIMEOUT = 90.0
SYNC_TYPES = ("CDS", "LDS")  # every sidecar subscribes to these; EDS/RDS follow them


def _start_node(config: NodeConfig) -> int:
    if config.state_dir.exists():  # a node that died without `down`: clear its remains first
        for line in sweep(config):
            click.echo(f"cleaned up a stale {line}")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)
    config.node_file.write_text(json.dumps(config.to_json(), indent=2))
    with config.node_log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.node.daemon", "--state-dir", str(config.state_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # the node outlives this command and its terminal
        )
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while not api.alive(config.socket):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = config.node_log.read_text(errors="replace")[-3000:] \
                if config.node_log.exists() else ""
            if proc.poll() is None:
                proc.kill()
            sweep(config)
            fail(f"the node did not start; its log ends:\n{tail}")
        time.sleep(0.2)
    return proc.pid


def _synced(row: dict[str, Any]) -> bool:
    types = row.get("types") or {}
    return all((types.get(t) or {}).get("status") == "SYNCED" for t in SYNC_TYPES)


def pending(status: dict[str, Any]) -> list[str]:
    """What `up` still waits for: pods not ready, sidecars not SYNCED."""
    rows = status.get("syncz")
    synced = {r.get("proxy") for r in rows if _synced(r)} if isinstance(rows, list) else set()
    waiting = []
    for pod in status["pods"]:
        name = f"{pod['name']}.{pod['namespace']}"
        if not pod["ready"]:
            why = ", ".join(pod["reasons"]) or pod["phase"]
            waiting.append(f"{name} ({why})")
        elif pod["injected"] and name not in synced:
            waiting.append(f"{name} (sidecar not SYNCED)")
    return waiting


def wait_ready(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        status = call("status")
        waiting = pending(status)
        if not waiting:
            return
        now = time.monotonic()
        if now > deadline:
            for event in status.get("events") or []:
                click.echo(f"  event: {event}", err=True)
            fail(f"not ready after {timeout:.0f}s: {', '.join(waiting)}")
        if now - last_report > 10:
            click.echo(f"waiting for {len(waiting)}: {', '.join(waiting[:6])}"
                       + (" ..." if len(waiting) > 6 else ""))
            last_report = now
        time.sleep(0.5)


@click.command()
@filename_option
@recursive_option
@namespace_option
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for every pod to be ready and every sidecar SYNCED.")
def up(filenames: tuple[str, ...], recursive: bool, namespace: str | None,
       timeout: float) -> None:
    """Start the local mesh node (or reuse the running one) and run the manifests in -f.

    The node is a bridge, a DNS server, the discovery and a supervisor of pods (network
    namespaces); it runs in the background until `pistio down`.
    """
    need_root("up")
    config = node_config()
    if api.alive(config.socket):
        click.echo(f"node {config.network.name} is running ({config.state_dir})")
    else:
        pid = _start_node(config)
        net = config.network
        click.echo(f"node {net.name} started (pid {pid}): bridge {net.bridge} {net.pod_cidr}, "
                   f"services {net.service_cidr}, discovery {config.discovery_address}")
    if filenames:
        apply_files(filenames, recursive, namespace)
    wait_ready(timeout)
    pods = call("status")["pods"]
    click.echo(f"{len(pods)} pod(s) running and ready; sidecars SYNCED. Try: pistio get pods, "
               "pistio proxy-status")


@click.command()
def down() -> None:
    """Stop the node and remove every namespace, veth, bridge, rule, process and state file
    it made (safe to run twice, and after a crash)."""
    need_root("down")
    config = node_config()
    if api.alive(config.socket):
        with contextlib.suppress(api.NodeUnavailable):
            api.call(config.socket, "shutdown", timeout=10)
        deadline = time.monotonic() + 60
        while api.alive(config.socket) and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = _recorded_pid(config)
        while pid and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    removed = sweep(config)
    click.echo(f"node {config.network.name} is down"
               + (f" (also removed: {', '.join(removed)})" if removed else ""))


def _recorded_pid(config: NodeConfig) -> int | None:
    try:
        pid = json.loads(config.node_file.read_text()).get("pid")
    except (OSError, ValueError):
        return None
    return pid if isinstance(pid, int) else None


def _running(pid: int) -> bool:
    try:
        return b"pistio" in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False
