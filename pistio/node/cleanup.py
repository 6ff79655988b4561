"""``pistio down``'s sweep: remove whatever a node left, whether it stopped cleanly or not.

Run after asking a live node to shut down, and on its own after a crash: it kills the processes
the node recorded (the node itself, the discovery) and every process inside the node's network
namespaces, deletes those namespaces and their /etc/netns files, the bridge and the tagged host
rule, and the state directory. Each step tolerates "already gone", so running it twice is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

from pistio.node.config import NodeConfig
from pistio.node.network.bridge import teardown_node_network
from pistio.node.network.pod_network import list_node_netns, teardown_pod_network


def _is_ours(pid: int) -> bool:
    """Only kill a recorded pid if it still runs pistio (pids are reused after a reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pistio" in cmdline


def _kill(pids: list[int], grace: float = 5.0) -> None:
    live = [p for p in pids if _is_ours(p)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if Path(f"/proc/{p}").exists() and _is_ours(p)]
        time.sleep(0.1)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep(config: NodeConfig) -> list[str]:
    """Remove every trace of the node; returns what was found and removed (for the user)."""
    removed: list[str] = []
    try:
        recorded = json.loads(config.node_file.read_text())
    except (OSError, ValueError):
        recorded = {}
    pids = [p for p in (recorded.get("pid"), recorded.get("discovery_pid")) if isinstance(p, int)]
    if any(_is_ours(p) for p in pids):
        removed.append("processes " + " ".join(str(p) for p in pids if _is_ours(p)))
        _kill(pids)
    for netns in list_node_netns(config.network.name):
        teardown_pod_network(netns)
        removed.append(f"namespace {netns}")
    for stale in Path("/etc/netns").glob(f"{config.network.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # files of a namespace already gone
    if Path(f"/sys/class/net/{config.network.bridge}").exists():
        removed.append(f"bridge {config.network.bridge}")
    teardown_node_network(config.network)
    if config.state_dir.exists():
        shutil.rmtree(config.state_dir, ignore_errors=True)
        removed.append(f"state {config.state_dir}")
    return removed
