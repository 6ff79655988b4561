"""The node's bridge: every pod's veth is a port of it; its address is the pods' gateway,
DNS server and discovery address. No route, NAT or forwarding out of the host is set up."""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from pistio.node.network.commands import NetworkError, run

_BR_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
_MAX_RULES = 256  # bound on tagged-rule deletions (there is normally one)


@dataclass(frozen=True)
class NodeNetwork:
    name: str = "pistio"  # prefix of every object the node creates
    bridge: str = "pistio0"  # <= 15 chars (IFNAMSIZ)
    pod_cidr: str = "10.88.0.0/16"
    service_cidr: str = "10.96.0.0/16"

    def __post_init__(self) -> None:
        if not 0 < len(self.bridge) <= 15:
            raise ValueError(f"bridge name {self.bridge!r}: 1 to 15 characters")
        pods = ipaddress.IPv4Network(self.pod_cidr)
        services = ipaddress.IPv4Network(self.service_cidr)
        if pods.overlaps(services):
            raise ValueError(f"pod CIDR {pods} overlaps service CIDR {services}")
        if pods.num_addresses < 4:
            raise ValueError(f"pod CIDR {pods} is too small")

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.pod_cidr)[1])

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.pod_cidr).prefixlen

    @property
    def comment(self) -> str:
        """The tag on every host iptables rule of this node, found again by teardown."""
        return f"pistio:{self.name}"


def _link_exists(name: str) -> bool:
    return run("ip", "link", "show", "dev", name, check=False).returncode == 0


def _forward_rule(net: NodeNetwork) -> list[str]:
    return ["FORWARD", "-i", net.bridge, "-o", net.bridge, "-m", "comment",
            "--comment", net.comment, "-j", "ACCEPT"]


def _br_netfilter_active() -> bool:
    try:
        return _BR_NF.read_text().strip() == "1"
    except OSError:
        return False


def setup_node_network(net: NodeNetwork) -> None:
    """Create (or complete) the bridge and, under br_netfilter, the FORWARD accept rule."""
    if not _link_exists(net.bridge):
        run("ip", "link", "add", "name", net.bridge, "type", "bridge")
    run("ip", "addr", "replace", f"{net.gateway}/{net.prefixlen}", "dev", net.bridge)
    run("ip", "link", "set", "dev", net.bridge, "up")
    if _br_netfilter_active():
        # Bridged pod<->pod frames traverse the host's FORWARD chain (policy may be DROP,
        # as Docker sets it); accept exactly bridge-to-bridge traffic, nothing else.
        rule = _forward_rule(net)
        if run("iptables", "-w", "5", "-C", *rule, check=False).returncode != 0:
            run("iptables", "-w", "5", "-I", *rule)


def _tagged_rules(net: NodeNetwork) -> list[list[str]]:
    """Host filter rules carrying our comment, as argv for ``iptables -D``."""
    done = run("iptables", "-w", "5", "-S", check=False)
    if done.returncode != 0:
        return []
    rules = []
    for line in done.stdout.splitlines():
        parts = shlex.split(line)
        if parts[:1] == ["-A"] and net.comment in parts:
            rules.append(parts[1:])
    return rules


def teardown_node_network(net: NodeNetwork) -> None:
    """Remove every tagged host rule and the bridge; fine to call when none exist."""
    for _ in range(_MAX_RULES):
        rules = _tagged_rules(net)
        if not rules:
            break
        for rule in rules:
            run("iptables", "-w", "5", "-D", *rule, check=False)
    else:
        raise NetworkError(f"tagged iptables rules of {net.name} keep coming back")
    if _link_exists(net.bridge):
        run("ip", "link", "del", "dev", net.bridge)
