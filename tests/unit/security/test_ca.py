"""The CA: self-signed and plug-in roots, signing, refusals, reload and root rotation."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pistio.security import pki
from pistio.security.ca import CaError, CertificateAuthority, bundle_from_pem
from pistio.security.csr import generate_csr
from tests.unit.security.conftest import write_cacerts

ME = "spiffe://cluster.local/ns/default/sa/reviews"
OTHER = "spiffe://cluster.local/ns/default/sa/ratings"


def _chain(pems: list[str]) -> list[x509.Certificate]:
    return [c for p in pems for c in pki.load_certs(p)]


@pytest.fixture(scope="module")
def csr():
    return generate_csr(ME, key_type="ECDSA")


def test_self_signed_root_is_made_once_and_kept(tmp_path):
    ca = CertificateAuthority.self_signed(tmp_path / "ca", "cluster.local")
    root = ca.bundle.roots[0]
    assert root.subject.rfc4514_string() == "O=cluster.local"
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct(os.stat(tmp_path / "ca" / "ca-key.pem").st_mode & 0o777) == "0o600"
    again = CertificateAuthority.self_signed(tmp_path / "ca", "cluster.local")
    assert again.bundle.roots == ca.bundle.roots
    assert again.bundle.signing_cert == root


def test_signs_csr_for_the_callers_identity(tmp_path, csr):
    ca = CertificateAuthority.self_signed(tmp_path, default_ttl=3600)
    chain = _chain(ca.sign_csr(csr[0], [ME]))
    leaf, root = chain
    assert root == ca.bundle.roots[0]
    assert pki.uri_sans(leaf) == [ME]
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # empty subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.same_public_key(leaf, pki.load_key(csr[1]))
    assert pki.chain_to_roots(chain, [root])
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() == 3600


def test_default_ttl_is_24h_and_requested_ttl_is_honoured(tmp_path, csr):
    ca = CertificateAuthority.self_signed(None)
    leaf = _chain(ca.sign_csr(csr[0], [ME]))[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 86400
    leaf = _chain(ca.sign_csr(csr[0], [ME], 120))[0]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 120


def test_ttl_above_max_is_refused_with_istios_message(csr):
    ca = CertificateAuthority.self_signed(None, max_ttl=2 * 3600)
    with pytest.raises(CaError) as err:
        ca.sign_csr(csr[0], [ME], 3 * 3600)
    assert err.value.kind == CaError.TTL
    assert str(err.value) == "requested TTL 3h0m0s is greater than the max allowed TTL 2h0m0s"


def test_csr_for_a_foreign_spiffe_id_is_refused(csr):
    ca = CertificateAuthority.self_signed(None)
    with pytest.raises(CaError, match="unable to validate SAN Identities in CSR") as err:
        ca.sign_csr(csr[0], [OTHER])
    assert err.value.kind == CaError.CSR
    extra, _ = generate_csr(OTHER, key_type="ECDSA")
    with pytest.raises(CaError):
        ca.sign_csr(extra, [ME])


def test_csr_without_san_gets_the_callers_id(csr):
    from cryptography.hazmat.primitives import hashes, serialization

    key = pki.new_key("ECDSA")
    bare = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    ca = CertificateAuthority.self_signed(None)
    assert pki.uri_sans(_chain(ca.sign_csr(bare, [ME]))[0]) == [ME]


def test_garbage_csr_is_refused():
    ca = CertificateAuthority.self_signed(None)
    with pytest.raises(CaError, match="not properly encoded"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", [ME])


def test_csr_contents(csr):
    parsed = x509.load_pem_x509_csr(csr[0])
    assert parsed.is_signature_valid
    assert pki.uri_sans(parsed) == [ME]
    rsa_csr, rsa_key = generate_csr(ME)
    assert pki.load_key(rsa_key).key_size == 2048  # type: ignore[union-attr]
    assert b"BEGIN RSA PRIVATE KEY" in rsa_key  # PKCS#1 unless PKCS8_KEY
    assert b"BEGIN PRIVATE KEY" in generate_csr(ME, pkcs8=True)[1]


def test_plugin_cacerts_chain_is_leaf_intermediate_root(tmp_path, root_a, csr):
    inter, _ = write_cacerts(tmp_path, *root_a)
    ca = CertificateAuthority.from_cacerts(tmp_path)
    chain = _chain(ca.sign_csr(csr[0], [ME]))
    assert chain[1:] == [inter, root_a[0]]  # the root is not repeated from cert-chain.pem
    assert chain[0].issuer == inter.subject
    assert pki.chain_to_roots(chain, [root_a[0]])


def test_plugin_cacerts_that_do_not_verify_are_refused(tmp_path, root_a, root_b):
    write_cacerts(tmp_path, *root_a, roots_bundle=[root_b[0]])
    with pytest.raises(ValueError, match="cannot verify the cert"):
        CertificateAuthority.from_cacerts(tmp_path)
    inter, key = write_cacerts(tmp_path, *root_a)
    with pytest.raises(ValueError, match="does not match"):
        bundle_from_pem(pki.cert_pem(inter), pki.key_pem(root_a[1]), b"", pki.cert_pem(root_a[0]))


def test_root_rotation_through_cacerts_reload(tmp_path, root_a, root_b, csr):
    """Istio's root rotation: trust both roots, switch the signer to the new root, drop the
    old root; certificates of each phase verify against the bundle in force."""
    write_cacerts(tmp_path, *root_a)
    ca = CertificateAuthority.from_cacerts(tmp_path)
    old_leaf_chain = _chain(ca.sign_csr(csr[0], [ME]))
    assert not ca.reload_if_changed()

    # 1. the bundle gains the new root; the old intermediate keeps signing
    (tmp_path / "root-cert.pem").write_bytes(pki.certs_pem([root_a[0], root_b[0]]))
    assert ca.reload_if_changed()
    chain = _chain(ca.sign_csr(csr[0], [ME]))
    assert chain[-2:] == [root_a[0], root_b[0]]
    # 2. a new intermediate under the new root signs; both roots are trusted
    write_cacerts(tmp_path, *root_b, roots_bundle=[root_a[0], root_b[0]], name="inter-b")
    assert ca.reload_if_changed()
    chain = _chain(ca.sign_csr(csr[0], [ME]))
    roots = [c for c in chain if pki.is_self_signed(c)]
    assert roots == [root_a[0], root_b[0]]
    new_leaf_chain = [c for c in chain if c not in roots]
    assert pki.chain_to_roots(new_leaf_chain, roots)
    assert pki.chain_to_roots(old_leaf_chain[:-1], roots)  # old certificates still trusted
    # 3. the old root goes
    (tmp_path / "root-cert.pem").write_bytes(pki.cert_pem(root_b[0]))
    assert ca.reload_if_changed()
    assert ca.bundle.roots == (root_b[0],)


def test_bad_reload_keeps_the_previous_bundle(tmp_path, root_a):
    write_cacerts(tmp_path, *root_a)
    ca = CertificateAuthority.from_cacerts(tmp_path)
    before = ca.bundle
    (tmp_path / "ca-key.pem").write_bytes(pki.key_pem(pki.new_key("ECDSA")))
    assert not ca.reload_if_changed()
    assert ca.bundle is before


def test_issued_certificates_make_a_real_mutual_tls_handshake(tmp_path):
    ca = CertificateAuthority.self_signed(None)
    paths = {}
    for name, ident in (("server", ME), ("client", OTHER)):
        csr_pem, key_pem = generate_csr(ident, key_type="ECDSA")
        chain = ca.sign_csr(csr_pem, [ident])
        (tmp_path / f"{name}.pem").write_text("".join(chain[:-1]))
        (tmp_path / f"{name}.key").write_bytes(key_pem)
        paths[name] = (str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
    (tmp_path / "root.pem").write_text(ca.sign_csr(generate_csr(ME, key_type="ECDSA")[0], [ME])[-1])

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*paths["server"])
    server_ctx.load_verify_locations(str(tmp_path / "root.pem"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # SPIFFE identities, not host names
    client_ctx.load_cert_chain(*paths["client"])
    client_ctx.load_verify_locations(str(tmp_path / "root.pem"))

    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname()) as raw, \
            client_ctx.wrap_socket(raw) as tls:
        assert tls.recv(2) == b"ok"
        peer = tls.getpeercert()
    thread.join()
    listener.close()
    assert ("URI", ME) in peer["subjectAltName"]
    assert ("URI", OTHER) in seen["peer"]["subjectAltName"]  # type: ignore[index]
