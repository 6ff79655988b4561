"""The agent's key and certificate signing request (Istio's ``pkiutil.GenCSR``): a new key
each time, an empty subject (O=<trust domain> as Istio sets it), and the workload's SPIFFE
id as the only SAN."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from pistio.security import pki


def generate_csr(identity: str, *, key_type: str = "RSA", rsa_bits: int = 2048,
                 org: str = "", pkcs8: bool = False) -> tuple[bytes, bytes]:
    """(CSR PEM, private key PEM) for ``identity`` (a SPIFFE URI)."""
    key = pki.new_key(key_type, rsa_bits)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                       critical=not attrs)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), pki.key_pem(key, pkcs8)
