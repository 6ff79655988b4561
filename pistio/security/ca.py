"""The discovery's certificate authority (istiod's Citadel, ``IstioCA``).

Two sources of the signing key, as in Istio:

- **self-signed** (the default): a root made once and kept in a directory (Istio keeps it in
  the ``istio-ca-secret`` Secret), reused on every start so issued certificates stay valid;
- **plug-in certs** (Istio's ``cacerts`` directory): ``ca-cert.pem`` (the signing
  certificate), ``ca-key.pem``, ``cert-chain.pem`` (from the signing certificate up to the
  root) and ``root-cert.pem`` (the trust bundle: one root, or several while a root is being
  rotated). The files are checked for changes and reloaded; a set that does not verify is
  refused and the previous one stays.

Every signed chain is ``leaf + intermediates + roots``, one certificate per element (Istio
expands its response the same way). Workload certificates carry exactly the caller's SPIFFE
id as a critical URI SAN and an empty subject, like Istio's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pistio.security import pki
from pistio.security.pki import PrivateKey, format_duration

log = logging.getLogger("pistio.security.ca")

# Istio's defaults: DEFAULT_WORKLOAD_CERT_TTL 24h, MAX_WORKLOAD_CERT_TTL 90 days, a
# self-signed root valid ten years.
DEFAULT_CERT_TTL = 24 * 3600.0
MAX_CERT_TTL = 90 * 24 * 3600.0
SELF_SIGNED_ROOT_TTL = 3650 * 24 * 3600.0

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_CERT = "root-cert.pem"
CACERTS_FILES = (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)


class CaError(Exception):
    """A signing failure with Istio's error type (``security/pkg/pki/error``)."""

    CSR = "CSR_ERROR"
    TTL = "TTL_ERROR"
    CERT_GEN = "CERT_GEN_ERROR"
    NOT_READY = "CA_NOT_READY"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class KeyCertBundle:
    """The signing material: the signing certificate and key, the certificates between it
    and the roots (the signing certificate first; empty when it is a root), the roots."""

    signing_cert: x509.Certificate
    signing_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @property
    def roots_pem(self) -> bytes:
        return pki.certs_pem(list(self.roots))

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for cert in (self.signing_cert, *self.chain, *self.roots):
            digest.update(cert.fingerprint(hashes.SHA256()))
        return digest.hexdigest()[:16]


def bundle_from_pem(ca_cert: bytes, ca_key: bytes, cert_chain: bytes,
                    root_cert: bytes) -> KeyCertBundle:
    """A verified bundle from Istio's four plug-in files (``cert_chain`` may be empty).
    :class:`ValueError` when they do not fit together."""
    certs = pki.load_certs(ca_cert)
    if not certs:
        raise ValueError(f"{CA_CERT}: no certificate")
    signing = certs[0]
    key = pki.load_key(ca_key)
    if not pki.same_public_key(signing, key):
        raise ValueError(f"{CA_KEY} does not match the public key of {CA_CERT}")
    roots = tuple(pki.load_certs(root_cert))
    if not roots:
        raise ValueError(f"{ROOT_CERT}: no certificate")
    if signing in roots:
        chain: tuple[x509.Certificate, ...] = ()
    else:
        middle = [c for c in pki.load_certs(cert_chain) if c not in roots and c != signing]
        chain = (signing, *middle)
        if not pki.chain_to_roots(list(chain), list(roots)):
            # Istio's KeyCertBundle.Verify message.
            raise ValueError("cannot verify the cert with the provided root chain and cert pool")
    ca = signing.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not ca.ca:
        raise ValueError(f"{CA_CERT} is not a CA certificate")
    return KeyCertBundle(signing, key, chain, roots)


def self_signed_root(trust_domain: str, key: PrivateKey | None = None,
                     ttl: float = SELF_SIGNED_ROOT_TTL) -> tuple[x509.Certificate, PrivateKey]:
    """Istio's self-signed root: subject ``O=<trust domain>``, CA, ten years."""
    key = key or pki.new_key("RSA")
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(seconds=ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _hash_for(key))
    )
    return cert, key


def intermediate_ca(issuer_cert: x509.Certificate, issuer_key: PrivateKey, name: str,
                    key: PrivateKey | None = None,
                    ttl: float = SELF_SIGNED_ROOT_TTL) -> tuple[x509.Certificate, PrivateKey]:
    """An intermediate CA signed by ``issuer`` (what ``cacerts`` users bring; used in tests
    and docs)."""
    key = key or pki.new_key("RSA")
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(seconds=ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
        .sign(issuer_key, _hash_for(issuer_key))
    )
    return cert, key


class CertificateAuthority:
    """Signs workload CSRs with the current :class:`KeyCertBundle` (reloaded from plug-in
    files when they change)."""

    def __init__(self, bundle: KeyCertBundle, *, default_ttl: float = DEFAULT_CERT_TTL,
                 max_ttl: float = MAX_CERT_TTL, cacerts_dir: Path | None = None) -> None:
        self.bundle = bundle
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.cacerts_dir = cacerts_dir
        self._stamps = _stamps(cacerts_dir) if cacerts_dir else None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_cacerts(cls, directory: str | Path, **kwargs: float) -> CertificateAuthority:
        """Istio's plug-in CA from ``ca-cert.pem``, ``ca-key.pem``, ``cert-chain.pem`` and
        ``root-cert.pem`` in ``directory``."""
        directory = Path(directory)
        bundle = _read_cacerts(directory)
        log.info("CA: using plug-in certs from %s (%d root(s))", directory, len(bundle.roots))
        return cls(bundle, cacerts_dir=directory, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def self_signed(cls, directory: str | Path | None, trust_domain: str = "cluster.local",
                    **kwargs: float) -> CertificateAuthority:
        """The self-signed root kept in ``directory`` (made on first use); in memory only
        when ``directory`` is None."""
        if directory is not None:
            directory = Path(directory)
            if (directory / CA_CERT).exists() and (directory / CA_KEY).exists():
                bundle = _read_cacerts(directory)
                log.info("CA: using the self-signed root kept in %s", directory)
                return cls(bundle, **kwargs)  # type: ignore[arg-type]
        cert, key = self_signed_root(trust_domain)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            _write(directory / CA_KEY, pki.key_pem(key), 0o600)
            _write(directory / CA_CERT, pki.cert_pem(cert), 0o644)
            _write(directory / ROOT_CERT, pki.cert_pem(cert), 0o644)
            log.info("CA: generated a self-signed root in %s", directory)
        else:
            log.warning("CA: generated a self-signed root kept in memory only")
        return cls(KeyCertBundle(cert, key, (), (cert,)), **kwargs)  # type: ignore[arg-type]

    # -- plug-in reload -----------------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Re-read the plug-in files if any changed; True when a new bundle is in use. A set
        that does not verify (perhaps half written) is refused; the old bundle stays."""
        if self.cacerts_dir is None:
            return False
        stamps = _stamps(self.cacerts_dir)
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            bundle = _read_cacerts(self.cacerts_dir)
        except (OSError, ValueError) as exc:
            log.error("CA: plug-in certs in %s not reloaded, keeping the previous ones: %s",
                      self.cacerts_dir, exc)
            return False
        if bundle.version == self.bundle.version:
            return False
        self.bundle = bundle
        log.info("CA: reloaded plug-in certs from %s (%d root(s))", self.cacerts_dir,
                 len(bundle.roots))
        return True

    # -- signing ------------------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes | str, identities: Sequence[str],
                 requested_ttl: float = 0.0) -> list[str]:
        """Sign a workload CSR for ``identities`` (the authenticated caller's SPIFFE ids):
        the chain as PEM strings, leaf first. The CSR may name no SAN or only these ids.
        :class:`CaError` on a bad CSR or TTL."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CaError(CaError.CSR, f"certificate signing request is not properly encoded: {exc}") from None
        if not csr.is_signature_valid:
            raise CaError(CaError.CSR, "certificate signing request signature is invalid")
        if not _csr_names_only(csr, identities):
            # Istio's RA check: the caller must be authorized for every SAN in the CSR.
            raise CaError(CaError.CSR, "unable to validate SAN Identities in CSR")
        ttl = requested_ttl if requested_ttl > 0 else self.default_ttl
        if requested_ttl > self.max_ttl:
            raise CaError(CaError.TTL, f"requested TTL {format_duration(requested_ttl)} is "
                          f"greater than the max allowed TTL {format_duration(self.max_ttl)}")
        bundle = self.bundle
        try:
            leaf = self.issue(csr.public_key(), uris=identities, ttl=ttl, bundle=bundle)
        except (ValueError, TypeError) as exc:
            raise CaError(CaError.CERT_GEN, str(exc)) from None
        return [pki.cert_pem(c).decode() for c in (leaf, *bundle.chain, *bundle.roots)]

    def issue(self, public_key, *, uris: Iterable[str] = (), dns_names: Iterable[str] = (),  # type: ignore[no-untyped-def]
              ips: Iterable[str] = (), ttl: float | None = None,
              bundle: KeyCertBundle | None = None) -> x509.Certificate:
        """A leaf certificate for ``public_key``: empty subject, critical SAN, server and
        client auth (Istio's workload and istiod serving certificates)."""
        bundle = bundle or self.bundle
        if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ValueError("only RSA and ECDSA public keys can be certified")
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if not names:
            raise ValueError("a certificate needs at least one subject alternative name")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        lifetime = dt.timedelta(seconds=ttl if ttl is not None else self.default_ttl)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(bundle.signing_cert.subject)
            .public_key(public_key)
            .serial_number(_serial())
            .not_valid_before(now)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(_aki(bundle.signing_cert), critical=False)
            # An empty subject makes the SAN extension critical (RFC 5280 4.2.1.6).
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .sign(bundle.signing_key, _hash_for(bundle.signing_key))
        )


def _csr_names_only(csr: x509.CertificateSigningRequest, identities: Sequence[str]) -> bool:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    allowed = set(identities)
    for name in san:
        if not isinstance(name, x509.UniformResourceIdentifier) or name.value not in allowed:
            return False
    return True


def _read_cacerts(directory: Path) -> KeyCertBundle:
    chain_file = directory / CERT_CHAIN
    root_file = directory / ROOT_CERT
    ca_cert = (directory / CA_CERT).read_bytes()
    return bundle_from_pem(
        ca_cert,
        (directory / CA_KEY).read_bytes(),
        chain_file.read_bytes() if chain_file.exists() else b"",
        root_file.read_bytes() if root_file.exists() else ca_cert,
    )


def has_cacerts(directory: str | Path) -> bool:
    """Whether ``directory`` holds Istio's plug-in CA (at least the signing cert and key)."""
    d = Path(directory)
    return (d / CA_CERT).is_file() and (d / CA_KEY).is_file()


def _stamps(directory: Path) -> tuple:
    out = []
    for name in CACERTS_FILES:
        try:
            st = os.stat(directory / name)
            out.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((name, None))
    return tuple(out)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _serial() -> int:
    return secrets.randbits(127) | 1


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    return hashes.SHA256()


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, key_encipherment=False, content_commitment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
