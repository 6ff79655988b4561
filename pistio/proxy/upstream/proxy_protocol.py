"""The PROXY protocol header an upstream connection starts with
(``envoy.transport_sockets.upstream_proxy_protocol``; Istio's DestinationRule
``trafficPolicy.proxyProtocol``).

As Envoy's upstream socket: the addresses are the downstream connection's (its client as the
source, the address it connected to as the destination), written before anything else on the
connection, TLS handshake included. Version 1 is the text line, version 2 the binary form
(PROXY command, TCP over IPv4 or IPv6). See https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import struct

V1, V2 = 0, 1  # envoy.config.core.v3.ProxyProtocolConfig.Version

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, PROXY command
_V2_TCP4, _V2_TCP6 = 0x11, 0x21


def proxy_protocol_header(version: int, source: object, destination: object) -> bytes:
    """The header for a connection from ``source`` to ``destination`` ((ip, port) pairs);
    ``UNKNOWN`` (v1) / LOCAL (v2) when either is not an IP address of the same family."""
    src = _ip_port(source)
    dst = _ip_port(destination)
    if src is not None and dst is not None and src[0].version != dst[0].version:
        src = dst = None
    if version == V2:
        if src is None or dst is None:
            return _V2_SIGNATURE + struct.pack(">BBH", 0x20, 0x00, 0)  # LOCAL, unspecified
        family = _V2_TCP4 if src[0].version == 4 else _V2_TCP6
        body = src[0].packed + dst[0].packed + struct.pack(">HH", src[1], dst[1])
        return _V2_SIGNATURE + struct.pack(">BBH", _V2_PROXY, family, len(body)) + body
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src[0].version == 4 else "TCP6"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def _ip_port(address: object) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(address[1])
