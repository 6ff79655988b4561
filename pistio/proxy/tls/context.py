"""``ssl.SSLContext``s for TLS transport sockets, built once per (settings, secret versions).

A context depends on the transport socket's settings (server or client side, ALPN, protocol
versions, ciphers, how the peer is verified) and on the *content* of its secrets. Contexts are
cached by that key in each process, so every chain or cluster with the same settings shares
one, and a rotation (new secret digest) builds exactly one new context, used by new connections
only: connections already established keep the ``SSLObject`` they were made with.

Envoy's defaults: minimum TLS 1.2 on both sides; maximum TLS 1.3 for servers and TLS 1.2 for
clients (Istio asks for 1.3 explicitly on its mTLS clusters). Envoy's cipher list syntax with
equal-preference groups (``[A|B]``) is flattened for OpenSSL; cipher suites only govern TLS
1.2 and below, as in Envoy (BoringSSL's TLS 1.3 suites are fixed).

Python's ``ssl`` loads keys from files only: the PEMs are written to a private temporary file
(mode 0600, on ``/dev/shm`` when it exists) for the load and removed at once.
"""

from __future__ import annotations

import contextlib
import enum
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from pistio.proxy.tls.secrets import CertificateSecret, ValidationSecret

_P = common_pb2.TlsParameters
_VERSIONS = {
    _P.TLSv1_0: ssl.TLSVersion.TLSv1,
    _P.TLSv1_1: ssl.TLSVersion.TLSv1_1,
    _P.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    _P.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}
_CACHE_LIMIT = 256


class Verify(enum.Enum):
    NONE = "none"  # no trusted CA: the peer is not verified (nor asked, on a server)
    OPTIONAL = "optional"  # server with a trusted CA: a client certificate is verified if sent
    REQUIRED = "required"  # client with a trusted CA, or require_client_certificate


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What shapes a context besides its secrets (hashable: the cache key)."""

    server: bool
    alpn_protocols: tuple[str, ...] = ()
    min_version: int = 0  # TlsParameters.TlsProtocol, 0 = Envoy's default
    max_version: int = 0
    cipher_suites: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()
    verify: Verify = Verify.NONE


def openssl_ciphers(suites: Sequence[str]) -> str:
    """Envoy's cipher list (with ``[A|B]`` groups) as an OpenSSL cipher string; TLS 1.3 suite
    names are left out (they are not configurable, in Envoy either)."""
    names = []
    for entry in suites:
        for name in entry.strip("[]").split("|"):
            name = name.strip()
            if name and not name.startswith("TLS_"):
                names.append(name)
    return ":".join(names)


def check_tls_parameters(params: common_pb2.TlsParameters, path: str,
                         problems: list[str]) -> None:
    """Config-time checks, so a context build never fails on settings."""
    lo, hi = params.tls_minimum_protocol_version, params.tls_maximum_protocol_version
    if lo and hi and lo > hi:
        problems.append(f"{path}.tls_params: tls_minimum_protocol_version is above "
                        "tls_maximum_protocol_version")
    if params.cipher_suites:
        ciphers = openssl_ciphers(params.cipher_suites)
        if ciphers:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(ciphers)
            except ssl.SSLError:
                problems.append(f"{path}.tls_params.cipher_suites: no usable cipher in "
                                f"{list(params.cipher_suites)}")
    if len(params.ecdh_curves) > 1:
        problems.append(f"{path}.tls_params.ecdh_curves: pistio sets one ECDH curve, not "
                        f"{len(params.ecdh_curves)}")
    for curve in params.ecdh_curves:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ecdh_curve(curve)
        except (ValueError, ssl.SSLError):
            problems.append(f"{path}.tls_params.ecdh_curves: unknown curve {curve!r}")


_contexts: dict[tuple[TlsSettings, str, str], ssl.SSLContext] = {}
builds = 0  # contexts built in this process (tests: reuse across connections)


def get_context(settings: TlsSettings, cert: CertificateSecret | None,
                roots: ValidationSecret | None) -> ssl.SSLContext:
    """The context for these settings and secret versions, built on first use."""
    key = (settings, cert.digest if cert else "", roots.digest if roots else "")
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = build_context(settings, cert, roots)
        if len(_contexts) >= _CACHE_LIMIT:
            _contexts.clear()  # old versions; live connections keep their own reference
        _contexts[key] = ctx
    return ctx


def build_context(settings: TlsSettings, cert: CertificateSecret | None,
                  roots: ValidationSecret | None) -> ssl.SSLContext:
    global builds
    builds += 1
    server = settings.server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # peers are checked against SAN matchers, not the host name
    ctx.minimum_version = _VERSIONS.get(settings.min_version, ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = _VERSIONS.get(
        settings.max_version, ssl.TLSVersion.TLSv1_3 if server else ssl.TLSVersion.TLSv1_2)
    if settings.cipher_suites:
        ciphers = openssl_ciphers(settings.cipher_suites)
        if ciphers:
            ctx.set_ciphers(ciphers)
    if settings.ecdh_curves:
        ctx.set_ecdh_curve(settings.ecdh_curves[0])
    if settings.alpn_protocols:
        ctx.set_alpn_protocols(list(settings.alpn_protocols))
    if cert is not None:
        _load_cert_chain(ctx, cert)
    if roots is not None and settings.verify is not Verify.NONE:
        ctx.load_verify_locations(cadata=roots.roots_pem.decode("ascii", "replace"))
        ctx.verify_mode = (ssl.CERT_REQUIRED if settings.verify is Verify.REQUIRED
                           else ssl.CERT_OPTIONAL)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _secret_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _load_cert_chain(ctx: ssl.SSLContext, cert: CertificateSecret) -> None:
    fd, path = tempfile.mkstemp(prefix="pistio-tls-", suffix=".pem", dir=_secret_dir())
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates the file with mode 0600
            f.write(cert.private_key_pem.rstrip(b"\n") + b"\n")
            f.write(cert.cert_chain_pem)
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
