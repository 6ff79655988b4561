"""IstioCertificateService over real gRPC + TLS, and the agent's SecretManager against it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from pistio.agent.secrets import ROOT_CERT, WORKLOAD_CERT, SecretManager, SecretOptions
from pistio.security import ca_proto, pki
from pistio.security.ca import CertificateAuthority
from pistio.security.ca_client import CaClient
from pistio.security.ca_server import Authenticator, SecureServer
from pistio.security.csr import generate_csr
from pistio.security.tokens import TokenIssuer
from tests.unit.security.conftest import write_cacerts

ME = "spiffe://cluster.local/ns/default/sa/reviews"


class Env:
    def __init__(self, tmp: Path, ca: CertificateAuthority) -> None:
        self.tmp = tmp
        self.ca = ca
        self.issuer = TokenIssuer.generate()
        self.issuer.write_jwks(tmp / "jwks.json")
        self.root_file = tmp / "root.pem"
        self.root_file.write_bytes(ca.bundle.roots_pem)
        self.server = SecureServer(ca, Authenticator(tmp / "jwks.json"), reload_interval=0.05)
        self.port = 0

    def token_file(self, ns: str, sa: str, issuer: TokenIssuer | None = None) -> Path:
        path = self.tmp / f"token-{ns}-{sa}"
        path.write_text((issuer or self.issuer).issue(ns, sa, pod_name=f"{sa}-1"))
        return path

    def client(self, token: Path | None) -> CaClient:
        return CaClient(f"127.0.0.1:{self.port}", root_cert=self.root_file, token_file=token)


@pytest_asyncio.fixture
async def env(tmp_path):
    e = Env(tmp_path, CertificateAuthority.self_signed(None))
    e.port = await e.server.start("127.0.0.1:0")
    yield e
    await e.server.stop()


@pytest.mark.asyncio
async def test_signs_for_the_token_service_account(env):
    csr, key = generate_csr(ME, key_type="ECDSA")
    chain = await env.client(env.token_file("default", "reviews")).create_certificate(csr, 600)
    certs = [c for p in chain for c in pki.load_certs(p)]
    assert len(chain) == 2 and all(p.endswith("\n") for p in chain)
    assert pki.uri_sans(certs[0]) == [ME]
    assert pki.chain_to_roots(certs, list(env.ca.bundle.roots))
    assert env.server.certificates.signed == 1


@pytest.mark.asyncio
async def test_token_of_another_service_account_gets_nothing(env):
    csr, _ = generate_csr(ME, key_type="ECDSA")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.client(env.token_file("default", "ratings")).create_certificate(csr, 600)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "CSR signing error (unable to validate SAN Identities in CSR)"


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["none", "foreign-signer", "garbage"])
async def test_bad_tokens_are_unauthenticated(env, case):
    token = {"none": None, "foreign-signer": env.token_file("default", "reviews",
                                                            TokenIssuer.generate()),
             "garbage": env.tmp / "garbage"}[case]
    (env.tmp / "garbage").write_text("abc.def.ghi")
    csr, _ = generate_csr(ME, key_type="ECDSA")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.client(token).create_certificate(csr, 600)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "request authenticate failure"


@pytest.mark.asyncio
async def test_impersonation_is_refused(env):
    csr, _ = generate_csr(ME, key_type="ECDSA")
    request = ca_proto.IstioCertificateRequest(csr=csr.decode(), validity_duration=60)
    request.metadata.update({ca_proto.IMPERSONATED_IDENTITY: ME})
    token = env.issuer.issue("default", "reviews")
    creds = grpc.ssl_channel_credentials(env.root_file.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{env.port}", creds) as channel:
        call = channel.unary_unary(
            ca_proto.CREATE_CERTIFICATE,
            request_serializer=ca_proto.IstioCertificateRequest.SerializeToString,
            response_deserializer=ca_proto.IstioCertificateResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=[("authorization", f"Bearer {token}")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == "request impersonation authentication failure"


@pytest.mark.asyncio
async def test_serving_certificate_names_istiod_and_chains_to_the_ca(env):
    ctx = ssl.create_default_context(cafile=str(env.root_file))
    ctx.set_alpn_protocols(["h2"])

    def handshake(name: str) -> dict:
        with socket.create_connection(("127.0.0.1", env.port)) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()

    cert = await asyncio.to_thread(handshake, "istiod.istio-system.svc")
    assert ("DNS", "istiod.istio-system.svc") in cert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(handshake, "evil.example.com")


@pytest.mark.asyncio
async def test_ttl_above_max_is_invalid_argument(tmp_path):
    e = Env(tmp_path, CertificateAuthority.self_signed(None, max_ttl=3600))
    e.port = await e.server.start("127.0.0.1:0")
    try:
        csr, _ = generate_csr(ME, key_type="ECDSA")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await e.client(e.token_file("default", "reviews")).create_certificate(csr, 7200)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == ("CSR signing error (requested TTL 2h0m0s is greater "
                                       "than the max allowed TTL 1h0m0s)")
    finally:
        await e.server.stop()


# -- the agent's SecretManager ------------------------------------------------------------


def _options(env: Env, sa: str, token: Path, **extra: str) -> SecretOptions:
    return SecretOptions.from_env(namespace="default", service_account=sa,
                                  ca_address=f"127.0.0.1:{env.port}", root_cert=env.root_file,
                                  token_file=token, env={"ECC_SIGNATURE_ALGORITHM": "ECDSA",
                                                         **extra})


def test_options_from_istio_env():
    opts = SecretOptions.from_env(namespace="ns", service_account="sa", env={
        "CA_ADDR": "istiod:15012", "SECRET_TTL": "12h", "SECRET_GRACE_PERIOD_RATIO": "0.25",
        "TRUST_DOMAIN": "example.org", "CA_ROOT_CA": "/r.pem", "OUTPUT_CERTS": "/out",
        "WORKLOAD_RSA_KEY_SIZE": "3072"})
    assert opts.ca_address == "istiod:15012" and opts.ttl == 12 * 3600
    assert opts.identity == "spiffe://example.org/ns/ns/sa/sa"
    assert opts.grace_ratio == 0.25 and opts.rsa_bits == 3072 and opts.key_type == "RSA"
    assert str(opts.root_cert) == "/r.pem" and str(opts.output_dir) == "/out"
    with pytest.raises(ValueError, match="no CA address"):
        SecretOptions.from_env(namespace="ns", service_account="sa", env={})


@pytest.mark.asyncio
async def test_secret_manager_gets_default_and_rootca(env):
    out = env.tmp / "out"
    manager = SecretManager(_options(env, "reviews", env.token_file("default", "reviews"),
                                     OUTPUT_CERTS=str(out)))
    changed: list[str] = []
    manager.subscribe(changed.append)
    await manager.start()
    try:
        cert = manager.get(WORKLOAD_CERT)
        roots = manager.get(ROOT_CERT)
        assert cert is not None and roots is not None
        assert changed == [WORKLOAD_CERT, ROOT_CERT]
        chain = pki.load_certs(cert.cert_chain_pem)
        assert pki.uri_sans(chain[0]) == [ME]
        assert pki.same_public_key(chain[0], pki.load_key(cert.private_key_pem))
        assert pki.load_certs(roots.roots_pem) == list(env.ca.bundle.roots)
        assert cert.expires_at - manager.rotate_at == pytest.approx(12 * 3600, abs=2)
        assert (out / "cert-chain.pem").read_bytes() == cert.cert_chain_pem
        assert (out / "key.pem").read_bytes() == cert.private_key_pem
        assert (out / "root-cert.pem").read_bytes() == roots.roots_pem
    finally:
        await manager.close()


@pytest.mark.asyncio
async def test_secret_manager_rotates_with_a_new_key_before_expiry(env):
    manager = SecretManager(_options(env, "reviews", env.token_file("default", "reviews"),
                                     SECRET_TTL="3s"))
    rotated = asyncio.Event()
    manager.subscribe(lambda name: manager.fetches > 1 and rotated.set())
    await manager.start()
    try:
        first = manager.get(WORKLOAD_CERT)
        await asyncio.wait_for(rotated.wait(), 30)
        second = manager.get(WORKLOAD_CERT)
        assert second.version != first.version
        assert second.private_key_pem != first.private_key_pem
        # Rotation came before the first certificate expired (half of its lifetime).
        assert manager.fetches >= 2
        assert second.expires_at > first.expires_at
        assert pki.load_certs(second.cert_chain_pem)[0].not_valid_before_utc.timestamp() \
            < first.expires_at
    finally:
        await manager.close()


@pytest.mark.asyncio
async def test_secret_manager_refused_keeps_retrying_without_a_certificate(env, monkeypatch):
    import pistio.agent.secrets as secrets_mod

    monkeypatch.setattr(secrets_mod, "START_ATTEMPTS", 1)
    manager = SecretManager(_options(env, "reviews", env.token_file("default", "ratings")))
    await manager.start()
    try:
        assert manager.get(WORKLOAD_CERT) is None
        assert "unable to validate SAN Identities" in manager.last_error
    finally:
        await manager.close()


@pytest.mark.asyncio
async def test_root_rotation_reaches_the_agent(tmp_path, root_a, root_b):
    write_cacerts(tmp_path / "cacerts", *root_a)
    ca = CertificateAuthority.from_cacerts(tmp_path / "cacerts")
    e = Env(tmp_path, ca)
    e.port = await e.server.start("127.0.0.1:0")
    manager = SecretManager(_options(e, "reviews", e.token_file("default", "reviews"),
                                     SECRET_TTL="2s"))
    names: list[str] = []
    manager.subscribe(names.append)
    try:
        await manager.start()
        assert pki.load_certs(manager.get(ROOT_CERT).roots_pem) == [root_a[0]]
        (tmp_path / "cacerts" / "root-cert.pem").write_bytes(
            pki.certs_pem([root_a[0], root_b[0]]))
        for _ in range(300):
            roots = pki.load_certs(manager.get(ROOT_CERT).roots_pem)
            if len(roots) == 2:
                break
            await asyncio.sleep(0.1)
        assert roots == [root_a[0], root_b[0]]
        assert names.count(ROOT_CERT) == 2
    finally:
        await manager.close()
        await e.server.stop()
