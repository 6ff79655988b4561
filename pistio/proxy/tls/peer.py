"""The peer certificate of a TLS connection: its facts (SANs, subject, digest) and Envoy's
``match_subject_alt_names`` check.

The facts are derived once per distinct certificate (a bounded cache keyed by the SHA-256 of
its DER form): a workload reconnecting with the same certificate costs one hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from pistio.proxy.config.cluster_config import SanMatcher

if TYPE_CHECKING:
    from cryptography import x509

# ``cryptography`` is imported when a peer certificate is first read: a worker with no TLS
# config never loads it.

_CACHE_LIMIT = 4096

# TLS versions as Envoy's %DOWNSTREAM_TLS_VERSION% prints them (OpenSSL's names).
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    sha256: str  # hex digest of the DER form (XFCC ``Hash``)
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    all_sans: tuple[str, ...]  # URI, DNS, e-mail and IP SANs (what SAN matchers look at)
    subject: str  # RFC 2253, as Envoy prints it
    pem: str  # the leaf, for XFCC ``Cert``


_cache: dict[str, PeerCertificate] = {}


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """The certificate the peer presented (verified, when the context verifies), or ``None``."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    digest = hashlib.sha256(der).hexdigest()
    found = _cache.get(digest)
    if found is None:
        from cryptography import x509

        found = certificate_facts(x509.load_der_x509_certificate(der), digest)
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[digest] = found
    return found


def certificate_facts(cert: x509.Certificate, digest: str | None = None) -> PeerCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if digest is None:
        digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris: list[str] = []
        dns: list[str] = []
        others: list[str] = []
    else:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
        others = [*san.get_values_for_type(x509.RFC822Name),
                  *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)
                    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address))]
    return PeerCertificate(
        sha256=digest,
        uri_sans=tuple(uris),
        dns_sans=tuple(dns),
        all_sans=(*uris, *dns, *others),
        subject=cert.subject.rfc4514_string(),
        pem=cert.public_bytes(Encoding.PEM).decode(),
    )


def san_matches(matchers: Sequence[SanMatcher], peer: PeerCertificate | None) -> bool:
    """Envoy: with ``match_subject_alt_names``, some SAN of the peer must match some matcher
    (no matchers: any verified peer)."""
    if not matchers:
        return True
    if peer is None:
        return False
    for san in peer.all_sans:
        for m in matchers:
            if m.matches(san):
                return True
    return False


def url_encoded_pem(peer: PeerCertificate) -> str:
    """Envoy's ``urlEncodedPemEncodedPeerCertificate`` (XFCC ``Cert``)."""
    return quote(peer.pem, safe="")
