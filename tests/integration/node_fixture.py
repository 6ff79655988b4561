"""A private node for tests: its own state directory, bridge, pod subnet and discovery port,
so tests never touch a node the user runs (`make demo`) and always clean up after themselves.

``Node.down()`` runs in teardown whatever happened, then checks the host holds nothing of the
node: no network namespace, bridge, /etc/netns entry, iptables rule or process.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.integration.root_guard import need_root as root_need

REPO = Path(__file__).resolve().parents[2]


def need_root() -> None:
    root_need("run the node (network namespaces, a bridge, iptables)",
              ("ip", "iptables", "iptables-restore", "curl", "setpriv"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    state_dir: Path
    name: str
    env: dict[str, str]
    gateway: str

    def pistio(self, *args: str, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "pistio.cli", *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr, self.log_tail())
        return done

    def exec(self, target: str, *cmd: str, timeout: float = 30,
             namespace: str = "default") -> subprocess.CompletedProcess[str]:
        return self.pistio("exec", "-n", namespace, target, "--", *cmd, timeout=timeout)

    def curl(self, url: str, *opts: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.exec("deploy/curl", "curl", "-s", "--max-time", str(int(timeout) - 5),
                         *opts, url, timeout=timeout)

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in (self.state_dir / "node.log", self.state_dir / "logs" / "discovery.log"):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def down(self) -> None:
        done = self.pistio("down", timeout=120)
        assert done.returncode == 0, (done.stdout, done.stderr)

    def leftovers(self) -> list[str]:
        """Everything of this node still on the host (empty after `down`)."""
        found = []
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found += [f"netns {line.split()[0]}" for line in netns.splitlines()
                  if line.startswith(f"{self.name}-")]
        if Path(f"/sys/class/net/{self.name}0").exists():
            found.append(f"bridge {self.name}0")
        found += [f"/etc/netns/{p.name}" for p in Path("/etc/netns").glob(f"{self.name}-*")]
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        found += [f"rule {line}" for line in rules.splitlines() if f"pistio:{self.name}" in line]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                # The node and discovery name the state dir; sidecars the node's gateway.
                if str(self.state_dir).encode() in cmdline or \
                        f"{self.gateway}:150".encode() in cmdline:
                    found.append(f"process {proc.name}: {cmdline[:120]!r}")
        if self.state_dir.exists():
            found.append(f"state {self.state_dir}")
        return found


def make_node(tmp_path: Path) -> Node:
    name = f"pt{uuid.uuid4().hex[:5]}"
    subnet = random.randrange(0, 256)
    env = dict(os.environ)
    env.update({
        "PISTIO_STATE_DIR": str(tmp_path / "node"),
        "PISTIO_NODE_NAME": name,
        "PISTIO_BRIDGE": f"{name}0",
        "PISTIO_POD_CIDR": f"10.249.{subnet}.0/24",
        "PISTIO_SERVICE_CIDR": "10.97.0.0/16",
        "PISTIO_NODE_DISCOVERY_HTTP": f"127.0.0.1:{_free_port()}",
        "PISTIO_RESTART_BACKOFF": "1",
        "PISTIO_RESTART_BACKOFF_MAX": "4",
    })
    env["PISTIO_DISCOVERY_ADDRESS"] = env["PISTIO_NODE_DISCOVERY_HTTP"]  # for proxy-status
    return Node(tmp_path / "node", name, env, f"10.249.{subnet}.1")


def wait_for(check, timeout: float, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it returns something truthy; the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
