"""X.509 helpers shared by the CA, the agent and the tests: keys, PEM bundles, Go durations."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

PrivateKey = CertificateIssuerPrivateKeyTypes


def new_key(kind: str = "RSA", rsa_bits: int = 2048) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Istio's workload keys: RSA (``WORKLOAD_RSA_KEY_SIZE``, 2048) or, with
    ``ECC_SIGNATURE_ALGORITHM=ECDSA``, P-256."""
    if kind.upper() == "ECDSA":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def key_pem(key: PrivateKey, pkcs8: bool = False) -> bytes:
    # Istio writes PKCS#1 / SEC1 keys unless PKCS8_KEY is set.
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError("only RSA and ECDSA keys are supported")
    return key


def load_certs(pem: bytes | str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order (an empty bundle gives [])."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN" not in data:
        return []
    return x509.load_pem_x509_certificates(data)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, spki) == key.public_key().public_bytes(enc, spki)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, Exception):  # InvalidSignature and unsupported keys
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return issued_by(cert, cert)


def uri_sans(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def chain_to_roots(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> bool:
    """Whether ``chain`` (leaf first, each issued by the next) ends at one of ``roots``."""
    if not chain:
        return False
    for child, parent in zip(chain, chain[1:], strict=False):
        if not issued_by(child, parent):
            return False
    last = chain[-1]
    return any(last == root or issued_by(last, root) for root in roots)


# -- Go's time.Duration text (Istio's flags and error messages use it) -----------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (``24h``, ``1h30m``, ``90s``, ``500ms``) → seconds; a bare
    number is seconds. :class:`ValueError` otherwise."""
    s = text.strip()
    if not s:
        raise ValueError("invalid duration \"\"")
    try:
        return float(s)
    except ValueError:
        pass
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String()``: ``24h0m0s``, ``1m30s``, ``4s``, ``1.5s``, ``500ms``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ms = seconds * 1000
        return f"{sign}{ms:g}ms" if ms >= 1 else f"{sign}{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{round(secs, 9):g}s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{sign}{int(minutes)}m{sec_text}"
    return f"{sign}{sec_text}"
