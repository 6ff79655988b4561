"""Istio's port protocols and how a port's protocol is decided.

Istio reads the protocol from a Service port's ``appProtocol`` first, then from the prefix of
its name (``http-web`` → HTTP); anything else is left to protocol sniffing.
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


def port_protocol(name: str, transport: str = "TCP", app_protocol: str | None = None) -> Protocol:
    """The protocol of a Kubernetes Service port, as Istio derives it."""
    if transport.upper() == "UDP":
        return Protocol.UDP
    if transport.upper() == "SCTP":
        return Protocol.UNSUPPORTED
    if app_protocol:
        known = _APP_PROTOCOLS.get(app_protocol.lower())
        if known is not None:
            return known
        parsed = parse_protocol(app_protocol)
        if not parsed.is_unsupported:
            return parsed
    prefix = name.split("-", 1)[0]
    return parse_protocol(prefix) if prefix else Protocol.UNSUPPORTED
