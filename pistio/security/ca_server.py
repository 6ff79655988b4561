"""The discovery's secure gRPC port (istiod's 15012): ADS and Istio's
``IstioCertificateService/CreateCertificate`` over TLS.

- **Serving certificate**: signed by the discovery's own CA for ``istiod.istio-system.svc``
  (and ``istiod.istio-system.svc.cluster.local``) plus the address the port is reached at;
  renewed at half its lifetime or when the CA's bundle changes (new handshakes get the new
  one; gRPC's dynamic server credentials).
- **Caller authentication** (Istio's ``security.Authenticate``): ``authorization: Bearer
  <token>`` must be a pod token verified against the JWKS (``--token-jwks``). Any failure is
  ``UNAUTHENTICATED: request authenticate failure``, Istio's opaque answer; the reason is
  logged. Impersonation (``ImpersonatedIdentity`` metadata) is refused: there are no trusted
  node accounts.
- **Signing**: only the caller's SPIFFE id, ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``;
  errors are ``CSR signing error (<reason>)`` with Istio's status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from pistio.security import ca_proto, pki
from pistio.security.ca import CaError, CertificateAuthority
from pistio.security.ca_proto import ISTIOD_DNS_NAMES
from pistio.security.spiffe import spiffe_id
from pistio.security.tokens import TokenError, TokenVerifier

log = logging.getLogger("pistio.security.ca_server")

BEARER = "bearer "

# Istio's caerror → gRPC code (security/pkg/pki/error).
_CODES = {
    CaError.CSR: grpc.StatusCode.INVALID_ARGUMENT,
    CaError.TTL: grpc.StatusCode.INVALID_ARGUMENT,
    CaError.CERT_GEN: grpc.StatusCode.INTERNAL,
    CaError.NOT_READY: grpc.StatusCode.INTERNAL,
}


class Authenticator:
    """Bearer pod tokens → the caller's SPIFFE ids. The JWKS file is re-read when it
    changes (the node may rotate its key)."""

    def __init__(self, jwks_file: str | Path | None,
                 trust_domain: Callable[[], str] = lambda: "cluster.local") -> None:
        self.jwks_file = Path(jwks_file) if jwks_file else None
        self.trust_domain = trust_domain
        self.verifier: TokenVerifier | None = None
        self._stamp: tuple | None = None
        self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        if self.jwks_file is None:
            return False
        try:
            st = self.jwks_file.stat()
            stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            log.error("CA: token JWKS %s is missing; no caller can authenticate", self.jwks_file)
            self.verifier = None
            return True
        try:
            self.verifier = TokenVerifier.from_file(self.jwks_file)
        except (OSError, ValueError, TypeError) as exc:
            log.error("CA: token JWKS %s not loaded: %s", self.jwks_file, exc)
            return False
        log.info("CA: trusting %d token signing key(s) from %s",
                 len(self.verifier.keys) + len(self.verifier._anonymous), self.jwks_file)
        return True

    def authenticate(self, metadata: Any) -> list[str]:
        """The caller's identities from the call's metadata; :class:`TokenError` if none."""
        token = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                text = value.decode() if isinstance(value, bytes) else str(value)
                if text.lower().startswith(BEARER):
                    token = text[len(BEARER):].strip()
        if not token:
            raise TokenError("no bearer token in the request")
        if self.verifier is None:
            raise TokenError("no token JWKS is configured (--token-jwks)")
        claims = self.verifier.verify(token)
        return [spiffe_id(claims.namespace, claims.service_account, self.trust_domain())]


class CertificateService:
    """``istio.v1.auth.IstioCertificateService``."""

    def __init__(self, ca: CertificateAuthority, authenticator: Authenticator) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.signed = 0
        self.refused = 0

    def register(self, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self.create_certificate,
            request_deserializer=ca_proto.IstioCertificateRequest.FromString,
            response_serializer=ca_proto.IstioCertificateResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            ca_proto.SERVICE, {"CreateCertificate": handler}),))

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        peer = context.peer() or ""
        try:
            identities = self.authenticator.authenticate(context.invocation_metadata())
        except TokenError as exc:
            self.refused += 1
            log.warning("CA: authentication failed for %s: %s", peer, exc)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure")
        fields = request.metadata.fields
        if ca_proto.IMPERSONATED_IDENTITY in fields and \
                fields[ca_proto.IMPERSONATED_IDENTITY].string_value:
            self.refused += 1
            log.warning("CA: impersonation not allowed, as no node account is trusted (%s)", peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "request impersonation authentication failure")
        try:
            chain = self.ca.sign_csr(request.csr, identities, float(request.validity_duration))
        except CaError as exc:
            self.refused += 1
            log.error("CA: CSR signing error for %s (%s): %s", identities, peer, exc)
            await context.abort(_CODES.get(exc.kind, grpc.StatusCode.INTERNAL),
                                f"CSR signing error ({exc})")
        self.signed += 1
        log.info("CA: signed a certificate for %s (%s)", identities[0], peer)
        return ca_proto.IstioCertificateResponse(cert_chain=chain)


class ServingCertificate:
    """The discovery's own TLS certificate, from its CA; gRPC's dynamic credentials ask
    :meth:`fetch` at each handshake and get a new configuration only when it changed."""

    def __init__(self, ca: CertificateAuthority, dns_names: list[str], ips: list[str],
                 ttl: float | None = None) -> None:
        self.ca = ca
        self.dns_names = dns_names
        self.ips = ips
        self.ttl = ttl if ttl is not None else max(ca.default_ttl, 3600.0)
        self.renew_at = 0.0
        self.bundle_version = ""
        self.chain_pem = b""
        self.key_pem = b""

    def _renew(self) -> None:
        key = pki.new_key("ECDSA")
        bundle = self.ca.bundle
        cert = self.ca.issue(key.public_key(), dns_names=self.dns_names, ips=self.ips,
                             ttl=self.ttl, bundle=bundle)
        self.chain_pem = pki.certs_pem([cert, *bundle.chain])
        self.key_pem = pki.key_pem(key)
        self.bundle_version = bundle.version
        self.renew_at = time.time() + self.ttl / 2

    def due(self) -> bool:
        return time.time() >= self.renew_at or self.bundle_version != self.ca.bundle.version

    def configuration(self) -> Any:
        self._renew()
        return grpc.ssl_server_certificate_configuration([(self.key_pem, self.chain_pem)])

    def fetch(self) -> Any:
        try:
            return self.configuration() if self.due() else None
        except Exception:  # never break the handshake path: keep serving the old certificate
            log.exception("CA: renewing the serving certificate failed")
            return None


def serving_names(host: str) -> tuple[list[str], list[str]]:
    """DNS and IP SANs for a discovery listening on ``host``."""
    dns = list(ISTIOD_DNS_NAMES)
    ips: list[str] = []
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if host:
            dns.append(host)
        return dns, ips
    if addr.is_unspecified or addr.is_loopback:
        dns.append("localhost")
        ips += ["127.0.0.1", "::1"]
    if not addr.is_unspecified and str(addr) not in ips:
        ips.append(str(addr))
    return dns, ips


class SecureServer:
    """The TLS gRPC server: ADS (the discovery's servicer) and the CA on one port."""

    def __init__(self, ca: CertificateAuthority, authenticator: Authenticator,
                 add_ads: Callable[[grpc.aio.Server], None] | None = None,
                 grpc_options: list[tuple[str, Any]] | None = None,
                 reload_interval: float = 1.0) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.certificates = CertificateService(ca, authenticator)
        self._add_ads = add_ads
        self._options = grpc_options or []
        self.reload_interval = reload_interval
        self.serving: ServingCertificate | None = None
        self._grpc: grpc.aio.Server | None = None
        self._reloader: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, address: str, extra_dns: list[str] | None = None) -> int:
        host = address.rpartition(":")[0].strip("[]")
        dns, ips = serving_names(host)
        self.serving = ServingCertificate(self.ca, dns + list(extra_dns or []), ips)
        creds = grpc.dynamic_ssl_server_credentials(
            self.serving.configuration(), self.serving.fetch,
            require_client_authentication=False)
        self._grpc = grpc.aio.server(options=self._options)
        if self._add_ads is not None:
            self._add_ads(self._grpc)
        self.certificates.register(self._grpc)
        self.port = self._grpc.add_secure_port(address, creds)
        await self._grpc.start()
        self._reloader = asyncio.get_running_loop().create_task(self._reload(),
                                                                name="ca-reload")
        log.info("secure gRPC (xDS + CA, TLS) listening on port %d", self.port)
        return self.port

    async def _reload(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                await asyncio.to_thread(self.ca.reload_if_changed)
                self.authenticator.reload_if_changed()
            except Exception:
                log.exception("CA: reload failed")

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
            self._reloader = None
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
