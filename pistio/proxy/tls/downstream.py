"""TLS termination on a listener filter chain (``DownstreamTlsContext``).

The listener manager has already matched the chain on what ``tls_inspector`` peeked (SNI,
ALPN, nothing consumed); the handshake then runs on the accepted socket with the chain's
context (``loop.connect_accepted_socket(ssl=…)``, uvloop's TLS). When it completes, a
:class:`TlsHandoff` protocol — set only for that moment — checks the peer against the chain's
SAN matchers, records the connection's facts on its ``DownstreamConnectionInfo`` (peer URI SAN
and subject, local URI SAN, SNI, TLS version, the peer certificate for XFCC) and hands the
transport to the chain's network filter: the HTTP codec chosen by the negotiated ALPN (``h2`` →
HTTP/2), or the TCP proxy, which takes the held transport once its upstream is connected.
After the handoff the decrypted bytes go straight to the codec: TLS costs nothing per request.

A chain whose secrets are not available (its listener warmed past ``initial_fetch_timeout``)
closes its connections, as Envoy does without a certificate. Statistics are Envoy's
``listener.<stat_prefix>.ssl.*``: ``handshake``, ``connection_error``, ``fail_verify_no_cert``,
``fail_verify_san``, ``no_certificate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Mapping

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.listener_config import DownstreamTlsConfig
from pistio.proxy.stats.store import Counter, StatsStore
from pistio.proxy.tls.context import TlsSettings, Verify, get_context
from pistio.proxy.tls.peer import peer_certificate, san_matches
from pistio.proxy.tls.secrets import CertificateSecret, Secret, ValidationSecret

# No TLS handshake timeout in Envoy's DownstreamTlsContext; a bound keeps half-open
# handshakes from piling up (uvloop's default is 60 s).
HANDSHAKE_TIMEOUT = 15.0

SecretsView = Callable[[], Mapping[str, Secret]]
# (transport, negotiated ALPN or None) → the protocol to take the connection over, or None
# when the callee keeps the held connection (TCP proxy) or closed it (network RBAC).
Ready = Callable[["TlsHandoff", "str | None"], "asyncio.Protocol | None"]


class TlsStats:
    __slots__ = ("handshake", "connection_error", "fail_verify_no_cert", "fail_verify_san",
                 "no_certificate")

    def __init__(self, store: StatsStore, prefix: str) -> None:
        for name in self.__slots__:
            counter: Counter = store.counter(f"{prefix}.ssl.{name}")
            setattr(self, name, counter)


def server_settings(config: DownstreamTlsConfig) -> TlsSettings:
    if config.validation_sds_name is None:
        verify = Verify.NONE
    else:
        verify = Verify.REQUIRED if config.require_client_certificate else Verify.OPTIONAL
    return TlsSettings(True, config.alpn_protocols, config.min_version, config.max_version,
                       config.cipher_suites, config.ecdh_curves, verify)


class DownstreamTls:
    """One chain's TLS termination in one worker."""

    __slots__ = ("config", "settings", "secrets", "stats", "cert_name", "roots_name", "_cert",
                 "_roots", "_ctx")

    def __init__(self, config: DownstreamTlsConfig, secrets: SecretsView, stats: TlsStats
                 ) -> None:
        self.config = config
        self.settings = server_settings(config)
        self.secrets = secrets
        self.stats = stats
        self.cert_name = config.certificate_sds_names[0] if config.certificate_sds_names else None
        self.roots_name = config.validation_sds_name
        self._cert: Secret | None = None
        self._roots: Secret | None = None
        self._ctx: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext | None:
        """The context for the secrets in force now (``None``: a secret is missing)."""
        current = self.secrets()
        cert = current.get(self.cert_name) if self.cert_name else None
        roots = current.get(self.roots_name) if self.roots_name else None
        if cert is self._cert and roots is self._roots and self._ctx is not None:
            return self._ctx
        if not isinstance(cert, CertificateSecret) or (
                self.roots_name and not isinstance(roots, ValidationSecret)):
            return None
        self._ctx = get_context(self.settings, cert, roots)  # type: ignore[arg-type]
        self._cert, self._roots = cert, roots
        return self._ctx

    @property
    def local_uri_san(self) -> str | None:
        cert = self._cert
        return cert.uri_sans[0] if isinstance(cert, CertificateSecret) and cert.uri_sans else None

    async def handshake(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                        downstream: DownstreamConnectionInfo, ready: Ready) -> None:
        """Run the handshake on ``sock`` (owned from now on), then ``ready``."""
        ctx = self.context()
        if ctx is None:
            self.stats.no_certificate.value += 1
            sock.close()
            return
        handoff = TlsHandoff(self, downstream, ready, self.local_uri_san)
        try:
            await loop.connect_accepted_socket(lambda: handoff, sock, ssl=ctx,
                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ConnectionError, TimeoutError, ssl.SSLError):
            # A failed handshake: no client certificate under require_client_certificate,
            # an untrusted one, a protocol version outside tls_params, a plaintext client.
            self.stats.connection_error.value += 1
            with contextlib.suppress(OSError):
                sock.close()


class TlsHandoff(asyncio.Protocol):
    """The protocol of a TLS connection between its handshake and its network filter; holds
    bytes (and an EOF) that arrive before a filter that attaches later (TCP proxy) takes
    over."""

    __slots__ = ("tls", "downstream", "ready", "local_uri_san", "transport", "early", "eof",
                 "lost", "paused")

    def __init__(self, tls: DownstreamTls, downstream: DownstreamConnectionInfo, ready: Ready,
                 local_uri_san: str | None) -> None:
        self.tls = tls
        self.downstream = downstream
        self.ready = ready
        self.local_uri_san = local_uri_san
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.eof = False
        self.lost = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tls = self.tls
        ssl_object = transport.get_extra_info("ssl_object")
        peer = peer_certificate(ssl_object)
        if peer is None and tls.config.require_client_certificate:
            tls.stats.fail_verify_no_cert.value += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        if tls.config.san_matchers and not san_matches(tls.config.san_matchers, peer):
            tls.stats.fail_verify_san.value += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        tls.stats.handshake.value += 1
        d = self.downstream
        d.tls_version = ssl_object.version() if ssl_object is not None else None
        d.local_uri_san = self.local_uri_san
        if peer is not None:
            d.peer_certificate = peer
            d.peer_uri_san = peer.uri_sans[0] if peer.uri_sans else None
            d.peer_subject = peer.subject
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol = self.ready(self, alpn)
        if protocol is not None:
            self.attach(protocol)
        elif not transport.is_closing():
            self.paused = True
            transport.pause_reading()  # type: ignore[attr-defined]

    def attach(self, protocol: asyncio.Protocol) -> None:
        """Give the connection to ``protocol`` with whatever arrived meanwhile."""
        transport = self.transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        early, self.early = self.early, []
        for data in early:
            protocol.data_received(data)  # type: ignore[attr-defined]
        if self.lost:
            protocol.connection_lost(None)
            return
        if self.eof and not protocol.eof_received():  # type: ignore[attr-defined]
            transport.close()
            return
        if self.paused and not transport.is_closing():
            self.paused = False
            transport.resume_reading()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
