"""TLS origination to upstream hosts (``UpstreamTlsContext``), for the HTTP/1.1 and HTTP/2
pools and the TCP proxy.

:func:`open_connection` replaces ``loop.create_connection`` for every upstream connection: for
a plaintext transport socket it is exactly that; for TLS it connects with the transport
socket's current context (secrets in force now: a rotation changes new connections only,
pooled keep-alive connections carry on), sends ``sni`` (none when unset, as Envoy), offers
``alpn_protocols`` (Istio: ``istio-peer-exchange``, ``istio``, plus ``h2`` for HTTP/2
clusters), and — before the pool's protocol sees the connection — verifies the server's
certificate against ``match_subject_alt_names`` (Istio puts the destination's SPIFFE ids
there). A failure raises :class:`UpstreamTlsError` (an ``OSError``: the pools' connect-failure
path, flag ``UF``), with Envoy-like ``upstream_transport_failure_reason`` text.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from pistio.proxy.config.cluster_config import ClusterConfig, TcpKeepalive, UpstreamTlsConfig
from pistio.proxy.config.endpoints import EndpointConfig
from pistio.proxy.tls.context import TlsSettings, Verify, get_context
from pistio.proxy.tls.peer import peer_certificate, san_matches
from pistio.proxy.tls.secrets import CertificateSecret, Secret, ValidationSecret

SecretsView = Callable[[], Mapping[str, Secret]]

NO_SECRET = "TLS error: Secret is not supplied by SDS"
SAN_MISMATCH = "TLS error: peer certificate SAN verification failed"


class UpstreamTlsError(OSError):
    """The upstream TLS connection cannot be used (no secret, SAN mismatch)."""


def client_settings(config: UpstreamTlsConfig) -> TlsSettings:
    verify = Verify.REQUIRED if config.validation_sds_name else Verify.NONE
    return TlsSettings(False, config.alpn_protocols, config.min_version, config.max_version,
                       config.cipher_suites, config.ecdh_curves, verify)


class UpstreamTls:
    """One TLS transport socket of a cluster, in one worker."""

    __slots__ = ("config", "settings", "secrets", "server_hostname", "cert_name",
                 "roots_name", "auto_san", "_cert", "_roots", "_ctx", "_by_host")

    def __init__(self, config: UpstreamTlsConfig, secrets: SecretsView) -> None:
        self.config = config
        self.settings = client_settings(config)
        self.secrets = secrets
        # "" = no SNI (asyncio would otherwise send the host it connects to).
        self.server_hostname = config.sni
        self.cert_name = config.certificate_sds_names[0] if config.certificate_sds_names else None
        self.roots_name = config.validation_sds_name
        # auto_san_validation: the DNS name the verified certificate must carry.
        self.auto_san: str | None = None
        self._cert: Secret | None = None
        self._roots: Secret | None = None
        self._ctx: ssl.SSLContext | None = None
        self._by_host: dict[tuple[str, bool], UpstreamTls] = {}

    def for_host(self, host: str, validate_san: bool) -> UpstreamTls:
        """This transport socket for a request to ``host`` (``auto_sni``: its SNI; with
        ``validate_san``, Envoy's ``auto_san_validation``, the certificate must name it)."""
        key = (host, validate_san)
        tls = self._by_host.get(key)
        if tls is None:
            tls = self._by_host[key] = UpstreamTls(self.config, self.secrets)
            tls.server_hostname = host
            # SANs are checked against what the CA vouched for: only with a validation
            # context, as Envoy's certificate validator does.
            tls.auto_san = host if validate_san and self.roots_name else None
        return tls

    def context(self) -> ssl.SSLContext | None:
        current = self.secrets()
        cert = current.get(self.cert_name) if self.cert_name else None
        roots = current.get(self.roots_name) if self.roots_name else None
        if cert is self._cert and roots is self._roots and self._ctx is not None:
            return self._ctx
        if (self.cert_name and not isinstance(cert, CertificateSecret)) or (
                self.roots_name and not isinstance(roots, ValidationSecret)):
            return None
        self._ctx = get_context(self.settings, cert, roots)  # type: ignore[arg-type]
        self._cert, self._roots = cert, roots
        return self._ctx


class _VerifyPeer(asyncio.Protocol):
    """Set for the moment between handshake and use: checks the server's SANs, then hands
    the transport to the real protocol (which never sees a connection that fails)."""

    __slots__ = ("inner", "tls", "failure")

    def __init__(self, inner: asyncio.BaseProtocol, tls: UpstreamTls) -> None:
        self.inner = inner
        self.tls = tls
        self.failure: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        matchers = self.tls.config.san_matchers
        auto_san = self.tls.auto_san
        if matchers or auto_san:
            peer = peer_certificate(transport.get_extra_info("ssl_object"))
            if not san_matches(matchers, peer) or (auto_san and (peer is None or not any(
                    dns_name_matches(san, auto_san) for san in peer.dns_sans))):
                self.failure = SAN_MISMATCH
                transport.abort()  # type: ignore[attr-defined]
                return
        transport.set_protocol(self.inner)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # only after a failed check: dropped
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    *,
    local_addr: tuple[str, int] | None = None,
    tls: UpstreamTls | None = None,
    keepalive: TcpKeepalive | None = None,
    proxy_header: bytes | None = None,
) -> asyncio.BaseTransport:
    """Connect (and, with ``tls``, handshake and verify); returns the transport.
    ``keepalive``: the cluster's ``upstream_connection_options.tcp_keepalive``;
    ``proxy_header``: a PROXY protocol header sent first, before any TLS handshake."""
    where: dict[str, Any] = {"host": host, "port": port, "local_addr": local_addr}
    if proxy_header is not None:
        where = {"sock": await _connect_with_header(loop, host, port, local_addr, proxy_header)}
    if tls is None:
        transport, _ = await loop.create_connection(factory, **where)
    else:
        ctx = tls.context()
        if ctx is None:
            raise UpstreamTlsError(NO_SECRET)
        check = _VerifyPeer(factory(), tls)
        transport, _ = await loop.create_connection(
            lambda: check, ssl=ctx, server_hostname=tls.server_hostname, **where)
        if check.failure is not None:
            raise UpstreamTlsError(check.failure)
    if keepalive is not None:
        set_tcp_keepalive(transport.get_extra_info("socket"), keepalive)
    return transport


async def _connect_with_header(loop: asyncio.AbstractEventLoop, host: str, port: int,
                               local_addr: tuple[str, int] | None,
                               header: bytes) -> socket.socket:
    """A connected socket whose first bytes are ``header`` (then handed to the transport)."""
    family, kind, proto, _, address = (await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM))[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if local_addr is not None:
            sock.bind(local_addr)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, header)
    except BaseException:
        sock.close()
        raise
    return sock


def set_tcp_keepalive(sock: socket.socket | None, keepalive: TcpKeepalive) -> None:
    """SO_KEEPALIVE, and the probes, idle time and interval the cluster sets (else the
    kernel's), as Envoy applies ``TcpKeepalive``."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((socket.TCP_KEEPCNT, keepalive.probes),
                          (socket.TCP_KEEPIDLE, keepalive.time),
                          (socket.TCP_KEEPINTVL, keepalive.interval)):
        if value:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def dns_name_matches(san: str, host: str) -> bool:
    """Envoy's ``dnsNameMatch``: equal (ignoring case), or a ``*.`` SAN covering exactly one
    more label of ``host``."""
    san, host = san.lower(), host.lower()
    if san == host:
        return True
    if san.startswith("*."):
        left, dot, rest = host.partition(".")
        return bool(left) and bool(dot) and rest == san[2:]
    return False


_NO_SECRETS: Mapping[str, Secret] = {}


def no_secrets() -> Mapping[str, Secret]:
    return _NO_SECRETS


class ClusterTls:
    """A cluster's TLS transport sockets in one worker: the :class:`UpstreamTls` of the
    socket each endpoint gets (``transport_socket_matches`` on its
    ``envoy.transport_socket_match`` metadata, else ``transport_socket``), made once."""

    __slots__ = ("config", "secrets", "_by_socket", "enabled")

    def __init__(self, config: ClusterConfig, secrets: SecretsView = no_secrets) -> None:
        self.config = config
        self.secrets = secrets
        self._by_socket: dict[int, UpstreamTls] = {}
        self.enabled = config.transport_socket.tls is not None or any(
            m.socket.tls is not None for m in config.transport_socket_matches)

    def for_endpoint(self, endpoint: EndpointConfig | None) -> UpstreamTls | None:
        if not self.enabled:
            return None
        socket = self.config.transport_socket_of(endpoint)
        if socket.tls is None:
            return None
        tls = self._by_socket.get(id(socket))
        if tls is None:
            tls = self._by_socket[id(socket)] = UpstreamTls(socket.tls, self._current)
        return tls

    def _current(self) -> Mapping[str, Secret]:
        return self.secrets()
