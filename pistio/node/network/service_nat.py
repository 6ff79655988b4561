"""What kube-proxy (iptables mode) does, for pods without a sidecar: in the pod's own
namespace, connections to a ClusterIP:port are DNATed to one ready endpoint chosen with equal
probability (``-m statistic --mode random --probability 1/(n-i)`` as kube-proxy writes it).

Everything lives in one chain per table, ``PISTIO-SERVICES``, rewritten whole on each call
(``iptables-restore --noflush`` leaves the rest of the table alone; declaring the chain
flushes it). A service port without ready endpoints gets what kube-proxy gives it: a filter
table REJECT, so clients see "connection refused" at once instead of a silent drop at the
gateway (the host does not forward the unroutable ClusterIP).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pistio.node.network.commands import in_netns

CHAIN = "PISTIO-SERVICES"
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}


@dataclass(frozen=True)
class ServiceNat:
    cluster_ip: str
    port: int
    protocol: str  # "TCP" | "UDP"
    endpoints: tuple[tuple[str, int], ...]  # ready endpoints (ip, targetPort)


def _check(svc: ServiceNat) -> str:
    proto = _PROTOCOLS.get(svc.protocol.upper())
    if proto is None:
        raise ValueError(f"service {svc.cluster_ip}:{svc.port}: protocol {svc.protocol!r} "
                         "is not TCP or UDP")
    ipaddress.IPv4Address(svc.cluster_ip)
    for ip, port in ((svc.cluster_ip, svc.port), *svc.endpoints):
        ipaddress.IPv4Address(ip)
        if not 0 < port <= 65535:
            raise ValueError(f"service {svc.cluster_ip}:{svc.port}: bad port {port}")
    return proto


def service_nat_rules(services: Sequence[ServiceNat], *, jump: bool = True) -> str:
    """``iptables-restore --noflush`` input for the nat and filter tables. ``jump`` adds the
    OUTPUT -> PISTIO-SERVICES jumps; leave it out when they already exist (noflush would
    append duplicates)."""
    nat, reject = [], []
    for svc in services:
        proto = _check(svc)
        match = (f"-d {svc.cluster_ip}/32 -p {proto} -m {proto} --dport {svc.port} "
                 f"-m comment --comment {svc.cluster_ip}:{svc.port}/{proto}")
        if not svc.endpoints:
            reject.append(f"-A {CHAIN} {match} -j REJECT --reject-with icmp-port-unreachable")
            continue
        n = len(svc.endpoints)
        for i, (ip, port) in enumerate(svc.endpoints):
            pick = ("" if i == n - 1 else
                    f"-m statistic --mode random --probability {1 / (n - i):.10f} ")
            nat.append(f"-A {CHAIN} {match} {pick}-j DNAT --to-destination {ip}:{port}")
    lines = ["*nat", f":{CHAIN} - [0:0]"]
    lines += [f"-A OUTPUT -j {CHAIN}"] if jump else []
    lines += [*nat, "COMMIT", "*filter", f":{CHAIN} - [0:0]"]
    lines += [f"-A OUTPUT -j {CHAIN}"] if jump else []
    return "\n".join([*lines, *reject, "COMMIT", ""])


def apply_service_nat(netns: str, services: Sequence[ServiceNat]) -> None:
    """Rewrite the pod namespace's service rules; the jumps from OUTPUT are added once."""
    have_jumps = all(
        in_netns(netns, "iptables", "-w", "5", "-t", table, "-C", "OUTPUT", "-j", CHAIN,
                 check=False).returncode == 0
        for table in ("nat", "filter"))
    if not have_jumps:
        # Clear a half-present pair (e.g. an earlier crash) before adding both again.
        for table in ("nat", "filter"):
            for _ in range(8):
                if in_netns(netns, "iptables", "-w", "5", "-t", table, "-D", "OUTPUT", "-j",
                            CHAIN, check=False).returncode != 0:
                    break
    in_netns(netns, "iptables-restore", "-w", "5", "--noflush",
             input=service_nat_rules(services, jump=not have_jumps))
