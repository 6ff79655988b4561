"""The discovery's security wiring (istiod's ``RunCA`` + secure gRPC server): which CA to
run, and the TLS port serving ADS and the CA together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from pistio.security.ca import DEFAULT_CERT_TTL, MAX_CERT_TTL, CertificateAuthority, has_cacerts
from pistio.security.ca_server import Authenticator, SecureServer

log = logging.getLogger("pistio.security")


@dataclass(frozen=True)
class CaOptions:
    """``pistio discovery``'s CA flags."""

    ca_dir: Path | None = None  # where the self-signed root is kept
    cacerts_dir: Path | None = None  # Istio's plug-in certs (/etc/cacerts)
    token_jwks: Path | None = None  # the keys pod tokens are signed with
    workload_cert_ttl: float = DEFAULT_CERT_TTL
    max_workload_cert_ttl: float = MAX_CERT_TTL


def build_ca(options: CaOptions, trust_domain: str) -> CertificateAuthority:
    """Plug-in certs when ``cacerts_dir`` holds them (as istiod with ``/etc/cacerts``), else
    the self-signed root kept in ``ca_dir``."""
    ttls = {"default_ttl": options.workload_cert_ttl, "max_ttl": options.max_workload_cert_ttl}
    if options.cacerts_dir is not None:
        if not has_cacerts(options.cacerts_dir):
            raise ValueError(f"{options.cacerts_dir}: no ca-cert.pem and ca-key.pem "
                             "(Istio's plug-in CA files)")
        return CertificateAuthority.from_cacerts(options.cacerts_dir, **ttls)
    return CertificateAuthority.self_signed(options.ca_dir, trust_domain, **ttls)


def secure_server(ca: CertificateAuthority, options: CaOptions,
                  trust_domain: Callable[[], str], ads_server: object | None = None,
                  grpc_options: list | None = None) -> SecureServer:
    """The 15012 server: the CA, and ADS from ``ads_server`` (a
    :class:`pistio.xds.server.DiscoveryServer`) when given."""
    add_ads = None
    if ads_server is not None:
        from pistio.xds.server import _Servicer  # the ADS servicer the plaintext port uses
        from pistio.xds.wire import add_ads_servicer

        def add_ads(server: grpc.aio.Server) -> None:
            # ADS on the TLS port authenticates each stream with the pod token, as istiod
            # does; the identity lets the discovery serve the proxy its namespace's
            # credentials (SDS).
            add_ads_servicer(_Servicer(ads_server, authenticator.authenticate),  # type: ignore[arg-type]
                             server)

    if options.token_jwks is None:
        log.warning("CA: no --token-jwks: every certificate request will be refused")
    authenticator = Authenticator(options.token_jwks, trust_domain)
    return SecureServer(ca, authenticator, add_ads, grpc_options)
