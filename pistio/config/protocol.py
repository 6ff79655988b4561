"""Istio's port protocols and how a port's protocol is decided (Istio's pkg/config/protocol).

Istio reads the protocol from a Service port's ``appProtocol`` first, then from the prefix of
its name (``http-web`` → HTTP); a few well-known ports are TCP; anything else is left to
protocol sniffing. Validation, analysis and Pilot all decide it here.
"""

from __future__ import annotations

from enum import StrEnum


class Protocol(StrEnum):
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTP = "HTTP"
    HTTP_PROXY = "HTTP_PROXY"
    HTTP2 = "HTTP2"
    HTTPS = "HTTPS"
    TCP = "TCP"
    TLS = "TLS"
    UDP = "UDP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    UNSUPPORTED = "UnsupportedProtocol"

    @property
    def is_http(self) -> bool:
        return self in _HTTP

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_grpc(self) -> bool:
        return self in (Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_tcp(self) -> bool:
        return self in _TCP

    @property
    def is_tls(self) -> bool:
        return self in (Protocol.HTTPS, Protocol.TLS)

    @property
    def is_unsupported(self) -> bool:
        """Not declared: Istio sniffs the protocol on such ports."""
        return self is Protocol.UNSUPPORTED


_HTTP = frozenset(
    {Protocol.HTTP, Protocol.HTTP2, Protocol.HTTP_PROXY, Protocol.GRPC, Protocol.GRPC_WEB}
)
_TCP = frozenset(
    {Protocol.TCP, Protocol.HTTPS, Protocol.TLS, Protocol.MONGO, Protocol.REDIS, Protocol.MYSQL}
)
_BY_LOWER = {p.value.lower(): p for p in Protocol if p is not Protocol.UNSUPPORTED}
# Kubernetes' standard appProtocol values.
_APP_PROTOCOLS = {
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
    "http2": Protocol.HTTP2,
}


def parse_protocol(text: str) -> Protocol:
    """A protocol name as Istio spells it (case-insensitive); UNSUPPORTED when unknown."""
    return _BY_LOWER.get(text.lower(), Protocol.UNSUPPORTED)


# Ports whose protocol Istio takes as TCP when nothing else says (server-first protocols:
# SMTP, DNS, MySQL, MongoDB), so that no sniffing waits for a client's first bytes.
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})


def port_protocol(
    name: str, transport: str = "TCP", app_protocol: str | None = None, port: int = 0
) -> Protocol:
    """The protocol of a Kubernetes Service port, as Istio derives it (kube.ConvertProtocol)."""
    if transport.upper() == "UDP":
        return Protocol.UDP
    if transport.upper() == "SCTP":
        return Protocol.UNSUPPORTED
    if app_protocol:
        known = _APP_PROTOCOLS.get(app_protocol.lower())
        if known is not None:
            return known
        name = app_protocol
    if name.lower().startswith("grpc-web"):
        return Protocol.GRPC_WEB
    prefix = name.split("-", 1)[0]
    found = parse_protocol(prefix) if prefix else Protocol.UNSUPPORTED
    if found.is_unsupported and port in WELL_KNOWN_TCP_PORTS:
        return Protocol.TCP
    return found
