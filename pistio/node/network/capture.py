"""Istio's ``istio-iptables`` traffic capture for one pod (REDIRECT mode, IPv4, nat table).

The rule order is Istio's (tools/istio-iptables/pkg/capture/run.go): inbound TCP goes
PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT (15006) except the proxy's own ports;
outbound goes OUTPUT -> ISTIO_OUTPUT where, in order: excluded ports return; the inbound
passthrough source 127.0.0.6 returns; the proxy's (uid/gid 1337) connections to the pod's own
non-loopback address loop back through ISTIO_IN_REDIRECT (app -> sidecar -> sidecar -> app via
a service VIP); other lo traffic returns; the proxy's remaining traffic returns (no loops);
127.0.0.1 returns; excluded ranges return; included ports, then included ranges (or
everything) jump to ISTIO_REDIRECT (15001). DNS capture (15053) is not done: the node's DNS
answers cluster names itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pistio.node.network.commands import in_netns

_TRAFFIC = "traffic.sidecar.istio.io/"
INCLUDE_INBOUND_PORTS = _TRAFFIC + "includeInboundPorts"
EXCLUDE_INBOUND_PORTS = _TRAFFIC + "excludeInboundPorts"
INCLUDE_OUTBOUND_IP_RANGES = _TRAFFIC + "includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = _TRAFFIC + "excludeOutboundIPRanges"
INCLUDE_OUTBOUND_PORTS = _TRAFFIC + "includeOutboundPorts"
EXCLUDE_OUTBOUND_PORTS = _TRAFFIC + "excludeOutboundPorts"
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"

# Ports the proxy itself serves (Prometheus, health, agent status): never captured inbound.
PROXY_INBOUND_PORTS = (15090, 15021, 15020)
INBOUND_TUNNEL_PORT = 15008  # HBONE; Istio always lets it through
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32"
HOST_LOOPBACK = "127.0.0.1/32"


@dataclass(frozen=True)
class CaptureSpec:
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    inbound_capture_port: int = 15006
    outbound_capture_port: int = 15001
    inbound_ports: str = "*"  # "*", "" (no inbound capture) or "p1,p2"
    exclude_inbound_ports: tuple[int, ...] = PROXY_INBOUND_PORTS
    include_outbound_ip_ranges: str = "*"  # "*", "" (none) or "cidr1,cidr2"
    exclude_outbound_ip_ranges: tuple[str, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    include_outbound_ports: tuple[int, ...] = ()

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> CaptureSpec:
        """The capture Istio's injector would configure for a pod with these annotations.
        A bad value raises ValueError naming the annotation, as Istio's injection rejects
        the pod."""
        mode = annotations.get(INTERCEPTION_MODE, "REDIRECT").strip()
        if mode != "REDIRECT":
            raise ValueError(f"annotation {INTERCEPTION_MODE}: {mode!r} is not supported "
                             "(only REDIRECT)")
        inbound = annotations.get(INCLUDE_INBOUND_PORTS, "*")
        inbound = "*" if inbound.strip() == "*" else ",".join(
            map(str, _ports(INCLUDE_INBOUND_PORTS, inbound)))
        ranges = annotations.get(INCLUDE_OUTBOUND_IP_RANGES, "*")
        ranges = "*" if ranges.strip() == "*" else ",".join(
            _cidrs(INCLUDE_OUTBOUND_IP_RANGES, ranges))
        excluded_in = _ports(EXCLUDE_INBOUND_PORTS, annotations.get(EXCLUDE_INBOUND_PORTS, ""))
        return cls(
            inbound_ports=inbound,
            exclude_inbound_ports=tuple(dict.fromkeys((*PROXY_INBOUND_PORTS, *excluded_in))),
            include_outbound_ip_ranges=ranges,
            exclude_outbound_ip_ranges=_cidrs(EXCLUDE_OUTBOUND_IP_RANGES,
                                              annotations.get(EXCLUDE_OUTBOUND_IP_RANGES, "")),
            exclude_outbound_ports=_ports(EXCLUDE_OUTBOUND_PORTS,
                                          annotations.get(EXCLUDE_OUTBOUND_PORTS, "")),
            include_outbound_ports=_ports(INCLUDE_OUTBOUND_PORTS,
                                          annotations.get(INCLUDE_OUTBOUND_PORTS, "")),
        )


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _ports(annotation: str, value: str) -> tuple[int, ...]:
    ports = []
    for item in _items(value):
        if not item.isdigit() or not 0 < int(item) <= 65535:
            raise ValueError(f"annotation {annotation}: {item!r} is not a port (1-65535)")
        ports.append(int(item))
    return tuple(dict.fromkeys(ports))


def _cidrs(annotation: str, value: str) -> tuple[str, ...]:
    out = []
    for item in _items(value):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as e:
            raise ValueError(f"annotation {annotation}: {item!r} is not a CIDR: {e}") from e
    return tuple(dict.fromkeys(out))


def _v4(cidrs: Iterable[str]) -> list[str]:
    # IPv6 ranges belong in ip6tables; pods on the node are IPv4-only.
    return [c for c in cidrs if ipaddress.ip_network(c).version == 4]


def capture_rules(spec: CaptureSpec) -> str:
    """``iptables-restore`` input (``*nat`` ... ``COMMIT``) with Istio's chains and order."""
    inbound_ip = "ISTIO_IN_REDIRECT"
    rules: list[str] = [
        f"-A ISTIO_INBOUND -p tcp --dport {INBOUND_TUNNEL_PORT} -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {spec.outbound_capture_port}",
        f"-A {inbound_ip} -p tcp -j REDIRECT --to-ports {spec.inbound_capture_port}",
    ]
    if spec.inbound_ports:
        rules.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        if spec.inbound_ports == "*":
            rules += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"
                      for p in spec.exclude_inbound_ports]
            rules.append(f"-A ISTIO_INBOUND -p tcp -j {inbound_ip}")
        else:
            rules += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j {inbound_ip}"
                      for p in _items(spec.inbound_ports)]

    rules.append("-A OUTPUT -j ISTIO_OUTPUT")
    for port in spec.exclude_outbound_ports:
        rules.append(f"-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN")
        rules.append(f"-A ISTIO_OUTPUT -p udp --dport {port} -j RETURN")
    rules.append(f"-A ISTIO_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE} -j RETURN")

    include = ([] if spec.include_outbound_ip_ranges == "*"
               else _v4(_items(spec.include_outbound_ip_ranges)))
    # An explicitly included loopback range means lo traffic must reach the later rules.
    loopback_included = any(ipaddress.ip_network(c).network_address.is_loopback
                            for c in include)
    for match in (f"--uid-owner {spec.proxy_uid}", f"--gid-owner {spec.proxy_gid}"):
        rules.append(f"-A ISTIO_OUTPUT -o lo ! -d {HOST_LOOPBACK} -p tcp ! --dport "
                     f"{INBOUND_TUNNEL_PORT} -m owner {match} -j {inbound_ip}")
        if not loopback_included:
            rules.append(f"-A ISTIO_OUTPUT -o lo -m owner ! {match} -j RETURN")
        rules.append(f"-A ISTIO_OUTPUT -m owner {match} -j RETURN")

    rules.append(f"-A ISTIO_OUTPUT -d {HOST_LOOPBACK} -j RETURN")
    rules += [f"-A ISTIO_OUTPUT -d {c} -j RETURN" for c in _v4(spec.exclude_outbound_ip_ranges)]
    rules += [f"-A ISTIO_OUTPUT -p tcp --dport {p} -j ISTIO_REDIRECT"
              for p in spec.include_outbound_ports]
    if spec.include_outbound_ip_ranges == "*":
        rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    else:
        rules += [f"-A ISTIO_OUTPUT -d {c} -j ISTIO_REDIRECT" for c in include]

    chains = ("ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT")
    return "\n".join(["*nat", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT", ""])


def apply_capture(netns: str, spec: CaptureSpec) -> None:
    """Replace the pod namespace's nat table with the capture rules (idempotent)."""
    in_netns(netns, "iptables-restore", "-w", "5", input=capture_rules(spec))
