"""Real X.509 material (``cryptography``), an SDS provider with the agent SecretManager's
interface, Envoy TLS config builders and an in-process proxy that serves secrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2

from pistio.agent.secrets import TlsCertificate, TrustBundle
from pistio.proxy.runtime.snapshot import build_snapshot
from pistio.proxy.tls.secrets import Secret, certificate_secret, validation_secret
from pistio.xds import types as T
from tests.unit.proxy.http_fixtures import InProcessProxy, http_listener, pack

TD = "cluster.local"


def spiffe(ns: str, sa: str) -> str:
    return f"spiffe://{TD}/ns/{ns}/sa/{sa}"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """A self-signed root issuing workload certificates (ECDSA P-256: fast)."""

    def __init__(self, name: str = "pistio test root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.root_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, uri: str | None = None, dns: Sequence[str] = (),
              common_name: str | None = None) -> tuple[bytes, bytes]:
        """(certificate chain PEM, private key PEM); Istio's workload certificates have an
        empty subject and the SPIFFE id as their only (URI) SAN."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        if uri:
            sans.insert(0, x509.UniformResourceIdentifier(uri))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(names))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=24))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not names)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def workload(self, uri: str) -> tuple[Secret, Secret]:
        chain, key = self.issue(uri)
        return (certificate_secret("default", chain, key),
                validation_secret("ROOTCA", self.root_pem))

    def client_context(self, uri: str | None, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A Python client trusting this root, presenting a certificate for ``uri`` if any."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=self.root_pem.decode())
        if uri is not None:
            import os
            import tempfile

            chain, key = self.issue(uri)
            fd, path = tempfile.mkstemp(suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(key + chain)
            ctx.load_cert_chain(path)
            os.unlink(path)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx


@dataclass
class FakeVersion:
    n: int = 0


class StaticSecretManager:
    """The agent SecretManager's interface (``get``, ``subscribe``) over certificates the
    test issues and rotates."""

    def __init__(self, pki: Pki | None, uri: str) -> None:
        self.pki = pki
        self.uri = uri
        self._secrets: dict[str, TlsCertificate | TrustBundle] = {}
        self._subscribers: list[Callable[[str], None]] = []
        self.rotations = 0

    def get(self, name: str) -> TlsCertificate | TrustBundle | None:
        return self._secrets.get(name)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._subscribers.append(callback)

    def rotate(self) -> None:
        """A new key and certificate (and the roots on the first call), announced."""
        assert self.pki is not None
        chain, key = self.pki.issue(self.uri)
        self.rotations += 1
        changed = ["default"]
        self._secrets["default"] = TlsCertificate(chain, key, 0.0, f"v{self.rotations}")
        if "ROOTCA" not in self._secrets:
            self._secrets["ROOTCA"] = TrustBundle(self.pki.root_pem, "roots-1")
            changed.append("ROOTCA")
        for name in changed:
            for cb in list(self._subscribers):
                cb(name)


# --- Envoy config --------------------------------------------------------------------------------


def sds(name: str, timeout: float | None = 0.0) -> secret_pb2.SdsSecretConfig:
    """Istio's SdsSecretConfig: gRPC to the agent's ``sds-grpc``."""
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="sds-grpc"))]),
        resource_api_version=config_source_pb2.V3)
    if timeout is not None:
        source.initial_fetch_timeout.CopyFrom(duration_pb2.Duration(
            seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def common_tls(cert: str | None = "default", roots: str | None = "ROOTCA",
               sans: Sequence[str] = (), san_prefix: Sequence[str] = (),
               alpn: Sequence[str] = (), min_version: int = 0, max_version: int = 0,
               timeout: float | None = 0.0) -> tls_pb2.CommonTlsContext:
    common = tls_pb2.CommonTlsContext(alpn_protocols=list(alpn))
    if min_version or max_version:
        common.tls_params.tls_minimum_protocol_version = min_version
        common.tls_params.tls_maximum_protocol_version = max_version
    if cert:
        common.tls_certificate_sds_secret_configs.append(sds(cert, timeout))
    if roots:
        combined = common.combined_validation_context
        combined.validation_context_sds_secret_config.CopyFrom(sds(roots, timeout))
        dv = combined.default_validation_context
        dv.match_subject_alt_names.extend(string_pb2.StringMatcher(exact=s) for s in sans)
        dv.match_subject_alt_names.extend(string_pb2.StringMatcher(prefix=s)
                                          for s in san_prefix)
    return common


def downstream_tls(require_client: bool = True, **common) -> tls_pb2.DownstreamTlsContext:
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=common_tls(**common))
    ctx.require_client_certificate.value = require_client
    return ctx


def upstream_tls(sni: str = "", **common) -> tls_pb2.UpstreamTlsContext:
    return tls_pb2.UpstreamTlsContext(common_tls_context=common_tls(**common), sni=sni)


def tls_socket(ctx) -> dict:  # type: ignore[no-untyped-def]
    return {"name": "envoy.transport_sockets.tls", "typed_config": pack(ctx)}


def tls_http_listener(name: str, port: int, ctx: tls_pb2.DownstreamTlsContext,
                      **hcm_fields) -> listener_pb2.Listener:
    """``http_listener`` with the chain's transport socket set and the tls_inspector."""
    listener = http_listener(name, port, **hcm_fields)
    chain = listener.filter_chains[0]
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.CopyFrom(pack(ctx))
    listener.listener_filters.append(lc.ListenerFilter(
        name="envoy.filters.listener.tls_inspector",
        typed_config=pack(tls_inspector_pb2.TlsInspector())))
    return listener


class TlsProxy(InProcessProxy):
    """The in-process data path with SDS secrets in its snapshots."""

    secrets: dict[str, Secret]

    async def apply_with_secrets(self, secrets: dict[str, Secret], listeners=(), routes=(),
                                 clusters=(), assignments=()):  # type: ignore[no-untyped-def]
        def compiled(type_url, items, key):  # type: ignore[no-untyped-def]
            return {getattr(m, key): self.compiler.compile(type_url, getattr(m, key), pack(m))
                    for m in items}

        self.version += 1
        self.last = dict(listeners=listeners, routes=routes, clusters=clusters,
                         assignments=assignments)
        snapshot = build_snapshot(
            self.version,
            compiled(T.CLUSTER, clusters, "name"),
            compiled(T.ENDPOINT, assignments, "cluster_name"),
            compiled(T.LISTENER, listeners, "name"),
            compiled(T.ROUTE, routes, "name"),
            secrets=secrets,
        )
        self.holder.publish(snapshot)
        await self.listeners.wait_bound()
        await asyncio.sleep(0)
        return snapshot

    async def rotate(self, secrets: dict[str, Secret]):  # type: ignore[no-untyped-def]
        return await self.apply_with_secrets(secrets, **self.last)
