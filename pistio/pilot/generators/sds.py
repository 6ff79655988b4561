"""The SDS generator: ``kubernetes://`` credentials (Kubernetes Secrets) over ADS.

Istio's ``SecretGen`` (``pilot/pkg/xds/sds.go``). A DestinationRule or Gateway
``credentialName`` reaches the proxy as an ``SdsSecretConfig`` whose config source is ADS;
the proxy asks the discovery for that name on its xDS stream, and gets an Envoy ``Secret``:

- only a proxy with a **verified identity** gets anything: one whose ADS stream came in on the
  secure port with a pod token, and whose SPIFFE id matches its node's namespace (and
  service account, when its metadata names one). Others are refused with Istio's warning
  (``proxy ... is not authorized to receive credentials``) and get no secrets;
- ``kubernetes://<name>`` is read from the proxy's own namespace; a name in another namespace
  is refused (Istio: ``cross namespace secret reference requires ReferencePolicy``); CA-only
  names (``-cacert``) are served to any proxy of the namespace, key material only when the
  proxy's service account may read Secrets there (always in pistio: no Kubernetes RBAC);
- a Secret that is missing or lacks the expected keys is left out with Istio's warning
  (``failed to fetch key and certificate for kubernetes://x: secret ns/x not found``) and
  counted in ``pilot_sds_certificate_errors_total``: the proxy keeps waiting for it, and its
  listener or cluster stays warming; a certificate that is expired or not yet valid is served
  with a warning (``invalid certificates``), as Istio does.

Secrets are pushed when they change (a push that names ``Secret`` keys regenerates SDS only,
for proxies of that namespace); unchanged resources are not sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from pistio.pilot.generators.connection import connection_proxy
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.security.credentials import (
    KUBERNETES_GATEWAY_SECRET_TYPE,
    KUBERNETES_SECRET_TYPE,
    CertInfo,
    CredentialError,
    Credentials,
    SecretResource,
    parse_resource_name,
)
from pistio.security import spiffe
from pistio.xds.generator import ConnectionInfo, PushRequest, Resource

log = logging.getLogger("pistio.discovery.sds")

SECRET_KIND = "Secret"
VERIFIED_IDENTITY = "verified_identity"  # ConnectionInfo.attributes cache


class SdsErrors:
    """``pilot_sds_certificate_errors_total``."""

    def __init__(self) -> None:
        self.total = 0


def verified_identity(conn: ConnectionInfo, proxy: Proxy) -> spiffe.SpiffeId | None:
    """The first authenticated SPIFFE id that matches the proxy's namespace and service
    account (Istio's ``checkConnectionIdentity``); ``None`` for an unauthenticated stream."""
    cached = conn.attributes.get(VERIFIED_IDENTITY)
    if cached is not None:
        return cached or None
    found: spiffe.SpiffeId | None = None
    for raw in conn.identities:
        try:
            ident = spiffe.parse(raw)
        except ValueError:
            continue
        if proxy.namespace and ident.namespace != proxy.namespace:
            continue
        if proxy.service_account and ident.service_account != proxy.service_account:
            continue
        found = ident
        break
    if found is None and conn.identities:
        log.warning("unauthorized XDS: %s with identity %s: no identities (%s) matched %s/%s",
                    conn.peer, list(conn.identities), ", ".join(conn.identities),
                    proxy.namespace, proxy.service_account)
    conn.attributes[VERIFIED_IDENTITY] = found or False
    return found


def _at_most(names: list[str], n: int = 3) -> str:
    if len(names) <= n:
        return ", ".join(names)
    return f"{', '.join(names[:n])}, and {len(names) - n} others"


def check_certificate(pem: bytes) -> str | None:
    """Istio's ``ValidateCertificate``: the first PEM certificate parses and is valid now."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return "pem decode failed"
    now = datetime.now(UTC)
    for cert in certs[:1]:
        if now > cert.not_valid_after_utc or now < cert.not_valid_before_utc:
            return "certificate is expired or not yet valid"
    return None


def key_cert_secret(name: str, info: CertInfo) -> secret_pb2.Secret:
    """Istio's ``toEnvoyTLSSecret`` (no private key provider)."""
    out = secret_pb2.Secret(name=name)
    out.tls_certificate.certificate_chain.inline_bytes = info.cert
    out.tls_certificate.private_key.inline_bytes = info.key
    return out


def ca_secret(name: str, info: CertInfo) -> secret_pb2.Secret:
    """Istio's ``toEnvoyCaSecret``. A CRL is not sent: pistio's proxy does not check CRLs
    (it would refuse the secret), so it is logged instead."""
    out = secret_pb2.Secret(name=name)
    out.validation_context.trusted_ca.inline_bytes = info.cert
    if info.crl:
        log.warning("%s: the Secret's CRL is not supported by pistio proxy and is not sent",
                    name)
    return out


class SecretGenerator:
    """``type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret``."""

    def __init__(self, credentials: Callable[[], Credentials],
                 errors: SdsErrors | None = None) -> None:
        self.credentials = credentials
        self.errors = errors or SdsErrors()
        # Built Secrets, per Credentials index (replaced whenever a Secret changes).
        self._cache: tuple[Credentials, dict[tuple[str, str, str], Resource | None]] | None = None

    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None:
        proxy = connection_proxy(conn)
        identity = verified_identity(conn, proxy)
        if identity is None:
            if watched:
                log.warning("proxy %s is not authorized to receive credentials. Ensure you are "
                            "connecting over TLS port and are authenticated.", proxy.id)
            return None
        if not _needs_push(push):
            return None
        if not watched:  # SDS is never a wildcard subscription
            return []
        creds = self.credentials()
        out = []
        # Every watched secret is generated (built once per Credentials index): the transport
        # sends only those whose content changed, and in delta xDS a name left out would
        # read as removed.
        for sr in self._authorized(self._parse(sorted(watched), identity.namespace), proxy,
                                   identity, creds):
            res = self._resource(creds, sr)
            if res is not None:
                out.append(res)
        return out

    def _parse(self, names: list[str], namespace: str) -> list[SecretResource]:
        out = []
        for name in names:
            try:
                out.append(parse_resource_name(name, namespace))
            except CredentialError as err:
                self.errors.total += 1
                log.warning("error parsing resource name: %s", err)
        return out

    def _authorized(self, resources: list[SecretResource], proxy: Proxy,
                    identity: spiffe.SpiffeId, creds: Credentials) -> list[SecretResource]:
        """Istio's ``filterAuthorizedResources``: same namespace only; key material needs
        the service account's right to read Secrets there."""
        allowed, denied = [], []
        authz: list[str | None] = []

        def authorized() -> bool:
            if not authz:
                authz.append(creds.authorize(identity.service_account, identity.namespace))
            return authz[0] is None

        for sr in resources:
            if sr.type == KUBERNETES_SECRET_TYPE and sr.namespace == identity.namespace and (
                    sr.ca_only or authorized()):
                allowed.append(sr)
            elif sr.type in (KUBERNETES_SECRET_TYPE, KUBERNETES_GATEWAY_SECRET_TYPE):
                # kubernetes-gateway:// needs a verified Gateway API reference: none here.
                denied.append(sr.name)
        if denied:
            reason = authz[0] if authz and authz[0] else (
                "cross namespace secret reference requires ReferencePolicy")
            self.errors.total += 1
            log.warning("proxy %s attempted to access unauthorized certificates %s: %s",
                        proxy.id, _at_most(denied), reason)
        return allowed

    def _resource(self, creds: Credentials, sr: SecretResource) -> Resource | None:
        if self._cache is None or self._cache[0] is not creds:
            self._cache = (creds, {})
        table = self._cache[1]
        key = (sr.resource_name, sr.namespace, sr.name)
        if key in table:
            return table[key]
        res = table[key] = self._build(creds, sr)
        return res

    def _build(self, creds: Credentials, sr: SecretResource) -> Resource | None:
        if sr.ca_only:
            try:
                info = creds.get_ca_cert(sr.name, sr.namespace)
            except CredentialError as err:
                self.errors.total += 1
                log.warning("failed to fetch ca certificate for %s: %s", sr.resource_name, err)
                return None
            self._check(sr.resource_name, info.cert)
            return Resource(sr.resource_name, ca_secret(sr.resource_name, info))
        try:
            info = creds.get_cert_info(sr.name, sr.namespace)
        except CredentialError as err:
            self.errors.total += 1
            log.warning("failed to fetch key and certificate for %s: %s", sr.resource_name, err)
            return None
        self._check(sr.resource_name, info.cert)
        return Resource(sr.resource_name, key_cert_secret(sr.resource_name, info))

    def _check(self, name: str, cert: bytes) -> None:
        problem = check_certificate(cert)
        if problem is not None:
            self.errors.total += 1
            log.warning("invalid certificates: %r: %s", name, problem)


def _needs_push(push: PushRequest) -> bool:
    """Istio's ``sdsNeedsPush``: a proxy's own request, or a change to a Secret."""
    keys = push.configs_updated
    return not keys or any(k.kind == SECRET_KIND for k in keys)

