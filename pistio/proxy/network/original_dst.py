"""The original destination of a connection that iptables redirected: Envoy's ``original_dst``
listener filter and the ``use_original_dst`` listener hand-off.

Istio's capture rules (``istio-iptables``) REDIRECT a pod's outbound TCP to 15001 and its
inbound TCP to 15006. REDIRECT rewrites the destination, so ``getsockname()`` on the accepted
socket says ``127.0.0.1:15001``; the address the application dialled is kept by conntrack and
read back with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (``IP6T_SO_ORIGINAL_DST`` on
``SOL_IPV6`` for IPv6), which returns a ``sockaddr_in`` / ``sockaddr_in6``.

A connection that was not redirected has no NAT entry (``ENOENT``), or the kernel has no
conntrack for the family (``ENOPROTOOPT``): its local address is then its destination, as in
Envoy.

``virtualOutbound`` (15001) has ``use_original_dst``: Envoy hands each accepted connection to
the listener whose address is the original destination — the exact ``ip:port`` first, else the
wildcard ``0.0.0.0:port`` — and keeps it on 15001 (its passthrough chain) when there is none.
:func:`handoff_listener` does that with ``listener_config.original_dst_listener``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Mapping

from pistio.proxy.config.listener_config import ListenerConfig, original_dst_listener

# linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both are 80.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)

_SOCKADDR_IN_SIZE = 16
_SOCKADDR_IN6_SIZE = 28
# Errors that mean "this connection was not redirected": fall back to the local address.
_NOT_REDIRECTED = frozenset({errno.ENOENT, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


def parse_sockaddr_in(raw: bytes) -> tuple[str, int] | None:
    """``struct sockaddr_in`` (family in host order, port and address in network order)."""
    if len(raw) < 8:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def parse_sockaddr_in6(raw: bytes) -> tuple[str, int] | None:
    """``struct sockaddr_in6``: family, port, flowinfo, 16-byte address, scope id."""
    if len(raw) < 24:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port


def _unmap(ip: str) -> str:
    """``::ffff:10.0.0.1`` (an IPv4 peer on a dual-stack socket) → ``10.0.0.1``."""
    if ip.startswith("::ffff:") and "." in ip:
        mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        if mapped is not None:
            return str(mapped)
    return ip


def _query(sock: socket.socket, level: int, size: int) -> tuple[str, int] | None:
    """One ``getsockopt``; ``None`` when the connection has no NAT entry for that family."""
    try:
        raw = sock.getsockopt(level, SO_ORIGINAL_DST, size)
    except OSError as err:
        if err.errno in _NOT_REDIRECTED:
            return None
        raise
    if size == _SOCKADDR_IN_SIZE:
        return parse_sockaddr_in(raw)
    return parse_sockaddr_in6(raw)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The address the peer dialled before any REDIRECT/DNAT, as ``(ip, port)``.

    IPv4 peers of a dual-stack (``::``) socket are answered in dotted form. Raises ``OSError``
    only for a socket that is no longer connected (``ENOTCONN``, ``EBADF``)."""
    local = sock.getsockname()
    if sock.family == socket.AF_INET:
        found = _query(sock, SOL_IP, _SOCKADDR_IN_SIZE)
    elif sock.family == socket.AF_INET6:
        if local[0].startswith("::ffff:"):
            # An IPv4 connection on an IPv6 socket: conntrack keeps it in the IPv4 table.
            found = _query(sock, SOL_IP, _SOCKADDR_IN_SIZE) or _query(
                sock, SOL_IPV6, _SOCKADDR_IN6_SIZE
            )
        else:
            found = _query(sock, SOL_IPV6, _SOCKADDR_IN6_SIZE)
    else:
        found = None
    if found is None:
        return _unmap(local[0]), local[1]
    return _unmap(found[0]), found[1]


def handoff_listener(
    listeners: Mapping[tuple[str, int], ListenerConfig], sock: socket.socket
) -> tuple[ListenerConfig | None, tuple[str, int]]:
    """The ``use_original_dst`` hand-off for a connection accepted on a listener that has it:
    the listener owning the original destination (``None``: keep it on the accepting
    listener), and that destination. ``listeners`` is keyed by ``(address, port)``."""
    dst = original_destination(sock)
    return original_dst_listener(listeners, dst[0], dst[1]), dst
