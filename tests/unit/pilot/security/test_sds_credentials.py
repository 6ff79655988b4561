"""``credentialName`` credentials in the discovery: SDS resource names, the Secret formats
Istio reads (``tls.crt``/``tls.key``/``ca.crt``, ``cert``/``key``/``cacert``, a separate
``<name>-cacert``), the SDS generator's output and its namespace authorization, the
DestinationRule cluster that references them, and the discovery's SDS-only pushes when a
Secret changes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from pistio.pilot.discovery import Discovery
from pistio.pilot.generators.sds import SecretGenerator
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.security.credentials import (
    CredentialError,
    Credentials,
    SecretResource,
    extract_key_and_cert,
    extract_root,
    parse_resource_name,
    to_resource_name,
)
from pistio.proxy.config.cluster_config import compile_cluster
from pistio.xds import types as T
from pistio.xds.connection import Connection, ConnectionInfo, WatchState
from pistio.xds.push_request import ConfigKey, PushRequest
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, parse_configs, sidecar_proxy
from tests.unit.proxy.tls.tls_fixtures import Pki

NODE = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"
OTHER_NODE = "sidecar~10.244.1.10~sleep-v1.other~other.svc.cluster.local"
ID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
OTHER_ID = "spiffe://cluster.local/ns/other/sa/sleep"
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret_yaml(name: str, data: dict[str, bytes], namespace: str = "default",
                string_data: dict[str, str] | None = None, type_: str = "") -> str:
    lines = ["apiVersion: v1", "kind: Secret", f"metadata: {{name: {name}, namespace: {namespace}}}"]
    if type_:
        lines.append(f"type: {type_}")
    if data:
        lines.append("data:")
        lines += [f"  {k}: {b64(v)}" for k, v in data.items()]
    if string_data:
        lines.append("stringData:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in string_data.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def client_cert(pki: Pki) -> tuple[bytes, bytes]:
    return pki.issue(dns=("client.example.com",), common_name="client")


def credentials(*docs: str) -> Credentials:
    return Credentials.from_resources(parse_configs("---\n".join(docs)))


def conn_info(node: str = NODE, identities: tuple[str, ...] = (ID,),
              sa: str = "bookinfo-productpage") -> ConnectionInfo:
    return ConnectionInfo(conn_id=node + "-1", node_id=node,
                          metadata={"SERVICE_ACCOUNT": sa} if sa else {},
                          identities=identities)


def generate(creds: Credentials, names: set[str], conn: ConnectionInfo | None = None,
             push: PushRequest | None = None) -> dict[str, secret_pb2.Secret]:
    gen = SecretGenerator(lambda: creds)
    out = gen.generate(conn or conn_info(), names, push or PushRequest())
    return {r.name: r.message for r in out or ()}  # type: ignore[misc]


# --- names ---------------------------------------------------------------------------------


def test_credential_names_become_kubernetes_sds_resources() -> None:
    assert to_resource_name("client-cred") == "kubernetes://client-cred"
    assert to_resource_name("kubernetes://ns/cred") == "kubernetes://ns/cred"
    assert to_resource_name("kubernetes-gateway://ns/cred") == "kubernetes-gateway://ns/cred"
    assert to_resource_name("builtin://") == "default"


def test_resource_names_parse_with_the_proxy_namespace_as_default() -> None:
    assert parse_resource_name("kubernetes://cred", "foo") == SecretResource(
        "kubernetes", "cred", "foo", "kubernetes://cred")
    assert parse_resource_name("kubernetes://bar/cred-cacert", "foo") == SecretResource(
        "kubernetes", "cred-cacert", "bar", "kubernetes://bar/cred-cacert")
    assert parse_resource_name("kubernetes://bar/cred-cacert", "foo").ca_only
    assert parse_resource_name("kubernetes-gateway://bar/cred", "foo").namespace == "bar"
    with pytest.raises(CredentialError, match="Expected namespace and name"):
        parse_resource_name("kubernetes-gateway://cred", "foo")
    with pytest.raises(CredentialError, match="unknown resource type: file-root:/x"):
        parse_resource_name("file-root:/x", "foo")


# --- Secret formats ------------------------------------------------------------------------


def test_key_and_cert_from_generic_then_tls_keys() -> None:
    generic = extract_key_and_cert({"cert": b"C", "key": b"K", "tls.crt": b"X", "tls.key": b"Y"})
    assert (generic.cert, generic.key) == (b"C", b"K")
    tls = extract_key_and_cert({"tls.crt": b"X", "tls.key": b"Y"})
    assert (tls.cert, tls.key) == (b"X", b"Y")
    with pytest.raises(CredentialError, match='found keys "tls.crt" and "tls.key", but they '
                                              'were empty'):
        extract_key_and_cert({"tls.crt": b"", "tls.key": b""})
    with pytest.raises(CredentialError) as err:
        extract_key_and_cert({"a": b"1", "b": b"2", "c": b"3", "d": b"4"})
    assert str(err.value) == ("found secret, but didn't have expected keys (cert and key) or "
                              "(tls.crt and tls.key); found: a, b, c, and 1 more...")


def test_root_from_cacert_or_ca_crt() -> None:
    assert extract_root({"cacert": b"A", "ca.crt": b"B"}).cert == b"A"
    assert extract_root({"ca.crt": b"B", "ca.crl": b"L"}).crl == b"L"
    with pytest.raises(CredentialError, match='found key "ca.crt", but it was empty'):
        extract_root({"ca.crt": b""})
    with pytest.raises(CredentialError, match="didn't have expected keys cacert or ca.crt; "
                                              "found: tls.crt, tls.key"):
        extract_root({"tls.crt": b"x", "tls.key": b"y"})


def test_ca_comes_from_the_cacert_secret_else_from_the_secret_itself(pki, client_cert) -> None:
    chain, key = client_cert
    other_root = Pki("another root").root_pem
    both = credentials(
        secret_yaml("one", {"tls.crt": chain, "tls.key": key, "ca.crt": pki.root_pem},
                    type_="kubernetes.io/tls"),
        secret_yaml("two", {"cert": chain, "key": key}),
        secret_yaml("two-cacert", {"cacert": other_root}),
    )
    assert both.get_ca_cert("one-cacert", "default").cert == pki.root_pem
    assert both.get_ca_cert("two-cacert", "default").cert == other_root
    assert both.get_cert_info("two", "default").key == key
    with pytest.raises(CredentialError, match="secret default/nope not found"):
        both.get_ca_cert("nope-cacert", "default")
    with pytest.raises(CredentialError, match="secret other/one not found"):
        both.get_cert_info("one", "other")


def test_string_data_is_read_as_the_api_server_merges_it(client_cert) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml("s", {"cert": b"old"},
                                    string_data={"cert": chain.decode(), "key": key.decode()}))
    info = creds.get_cert_info("s", "default")
    assert (info.cert, info.key) == (chain, key)


# --- the generator -------------------------------------------------------------------------


def test_an_authenticated_proxy_gets_key_cert_and_ca_of_its_namespace(pki, client_cert) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml(
        "client-cred", {"tls.crt": chain, "tls.key": key, "ca.crt": pki.root_pem}))
    out = generate(creds, {"kubernetes://client-cred", "kubernetes://client-cred-cacert"})
    cert = out["kubernetes://client-cred"]
    assert cert.name == "kubernetes://client-cred"
    assert cert.tls_certificate.certificate_chain.inline_bytes == chain
    assert cert.tls_certificate.private_key.inline_bytes == key
    ca = out["kubernetes://client-cred-cacert"]
    assert ca.validation_context.trusted_ca.inline_bytes == pki.root_pem
    assert not ca.HasField("tls_certificate")
    # The explicit namespace form names the same Secret.
    assert set(generate(creds, {"kubernetes://default/client-cred"})) == {
        "kubernetes://default/client-cred"}


def test_secrets_of_another_namespace_are_refused(pki, client_cert, caplog) -> None:
    chain, key = client_cert
    creds = credentials(
        secret_yaml("client-cred", {"tls.crt": chain, "tls.key": key, "ca.crt": pki.root_pem}),
        secret_yaml("client-cred", {"tls.crt": chain, "tls.key": key}, namespace="other"))
    other = conn_info(OTHER_NODE, (OTHER_ID,), sa="sleep")
    with caplog.at_level(logging.WARNING, "pistio.discovery.sds"):
        out = generate(creds, {"kubernetes://default/client-cred",
                               "kubernetes://default/client-cred-cacert",
                               "kubernetes://client-cred"}, other)
    assert set(out) == {"kubernetes://client-cred"}  # its own namespace's Secret only
    assert "attempted to access unauthorized certificates client-cred, client-cred-cacert: " \
        "cross namespace secret reference requires ReferencePolicy" in caplog.text
    # kubernetes-gateway:// needs a verified Gateway API reference: never for a sidecar.
    assert not generate(creds, {"kubernetes-gateway://default/client-cred"})


def test_an_unauthenticated_or_mismatched_proxy_gets_nothing(client_cert, caplog) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml("client-cred", {"tls.crt": chain, "tls.key": key}))
    names = {"kubernetes://client-cred"}
    with caplog.at_level(logging.WARNING, "pistio.discovery.sds"):
        # The plaintext port: no identity (Istio serves credentials over TLS only).
        assert not generate(creds, names, conn_info(identities=()))
        assert "is not authorized to receive credentials. Ensure you are connecting over TLS " \
            "port and are authenticated." in caplog.text
        # A token of another namespace, or another service account, does not match the node.
        assert not generate(creds, names, conn_info(identities=(OTHER_ID,)))
        assert not generate(creds, names, conn_info(
            identities=("spiffe://cluster.local/ns/default/sa/reviews",)))
    assert "no identities (spiffe://cluster.local/ns/other/sa/sleep) matched " \
        "default/bookinfo-productpage" in caplog.text


def test_denied_by_the_authorizer_keeps_ca_only_secrets(pki, client_cert, caplog) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml(
        "client-cred", {"tls.crt": chain, "tls.key": key, "ca.crt": pki.root_pem}))
    creds.authorizer = lambda sa, ns: f"{sa}/{ns} is not authorized to read secrets"
    with caplog.at_level(logging.WARNING, "pistio.discovery.sds"):
        out = generate(creds, {"kubernetes://client-cred", "kubernetes://client-cred-cacert"})
    assert set(out) == {"kubernetes://client-cred-cacert"}  # CA certificates are public
    assert "bookinfo-productpage/default is not authorized to read secrets" in caplog.text


def test_missing_or_invalid_secrets_are_left_out_and_counted(client_cert, caplog) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml("no-key", {"tls.crt": chain}),
                        secret_yaml("good", {"tls.crt": chain, "tls.key": key}))
    gen = SecretGenerator(lambda: creds)
    names = {"kubernetes://missing", "kubernetes://no-key", "kubernetes://good",
             "kubernetes://good-cacert", "default"}
    with caplog.at_level(logging.WARNING, "pistio.discovery.sds"):
        out = gen.generate(conn_info(), names, PushRequest())
    assert [r.name for r in out or ()] == ["kubernetes://good"]
    text = caplog.text
    assert "failed to fetch key and certificate for kubernetes://missing: secret " \
        "default/missing not found" in text
    assert "failed to fetch key and certificate for kubernetes://no-key: found secret, but " \
        "didn't have expected keys (cert and key) or (tls.crt and tls.key); found: tls.crt" in text
    assert "failed to fetch ca certificate for kubernetes://good-cacert: found secret, but " \
        "didn't have expected keys cacert or ca.crt" in text
    assert "error parsing resource name: unknown resource type: default" in text
    assert gen.errors.total == 4


def test_an_expired_certificate_is_served_with_a_warning(caplog) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(past)
            .not_valid_after(past + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    creds = credentials(secret_yaml("old", {"cert": pem, "key": key_pem}))
    with caplog.at_level(logging.WARNING, "pistio.discovery.sds"):
        assert set(generate(creds, {"kubernetes://old"})) == {"kubernetes://old"}
    assert "invalid certificates: 'kubernetes://old': certificate is expired or not yet valid" \
        in caplog.text


def test_pushes_about_other_config_do_not_regenerate_secrets(client_cert) -> None:
    chain, key = client_cert
    creds = credentials(secret_yaml("c", {"tls.crt": chain, "tls.key": key}))
    gen = SecretGenerator(lambda: creds)
    vs = PushRequest(configs_updated=frozenset({ConfigKey("VirtualService", "r", "default")}))
    assert gen.generate(conn_info(), {"kubernetes://c"}, vs) is None
    secret = PushRequest(configs_updated=frozenset({ConfigKey("Secret", "c", "default")}))
    first = gen.generate(conn_info(), {"kubernetes://c"}, secret)
    again = gen.generate(conn_info(), {"kubernetes://c"}, secret)
    assert first and again and first[0] is again[0]  # built once per Secret index


# --- the cluster that references them ------------------------------------------------------


def _dr(selector: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-tls, namespace: default}}
spec:
  host: reviews
  {selector}
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: client-cred, sni: reviews.example.com}}
"""


def test_destination_rule_with_selector_references_credentials_over_ads() -> None:
    push = bookinfo_push(_dr("workloadSelector: {matchLabels: {app: productpage}}"))
    cluster = {c.name: c for c in build_clusters(push, sidecar_proxy())}[REVIEWS]
    ctx = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(ctx)
    common = ctx.common_tls_context
    (cert,) = common.tls_certificate_sds_secret_configs
    ca = common.combined_validation_context.validation_context_sds_secret_config
    assert (cert.name, ca.name) == ("kubernetes://client-cred", "kubernetes://client-cred-cacert")
    for cfg in (cert, ca):
        # Istio's SDSAdsConfig: ADS, and Envoy's default initial fetch timeout (not 0).
        assert cfg.sds_config.WhichOneof("config_source_specifier") == "ads"
        assert not cfg.sds_config.HasField("initial_fetch_timeout")
    assert ctx.sni == "reviews.example.com"
    # The proxy accepts it: a cluster warming on two ADS secrets, 15 s fetch timeout.
    compiled = compile_cluster(cluster)
    tls = compiled.transport_socket.tls
    assert tls is not None and set(tls.sds_names) == {"kubernetes://client-cred",
                                                      "kubernetes://client-cred-cacert"}
    assert tls.sds_fetch_timeout == 15.0
    # Another workload of the namespace is not selected: no TLS to reviews from it.
    other = {c.name: c for c in build_clusters(push, sidecar_proxy("ratings"))}[REVIEWS]
    assert not other.HasField("transport_socket")


# --- the discovery: Secret changes push SDS only, to the Secret's namespace ----------------


def test_a_secret_change_pushes_sds_only_to_its_namespace(tmp_path: Path, client_cert) -> None:
    chain, key = client_cert
    (tmp_path / "s.yaml").write_text(secret_yaml("c", {"tls.crt": chain, "tls.key": key}))
    d = Discovery(tmp_path)
    d.load()
    assert d.credentials.get_cert_info("c", "default").cert == chain
    pushed: list[PushRequest] = []
    d.server.config_update = pushed.append  # type: ignore[method-assign]
    before = d.credentials
    d.on_config_change([])  # nothing about Secrets: no push, same index
    assert d.credentials is before and not pushed

    new_chain, new_key = Pki().issue(common_name="rotated")
    (tmp_path / "s.yaml").write_text(secret_yaml("c", {"tls.crt": new_chain, "tls.key": new_key}))
    d.on_config_change(d.store.reload())
    (request,) = pushed
    assert request.configs_updated == frozenset({ConfigKey("Secret", "c", "default")})
    assert request.reasons == frozenset({"secret"})
    assert d.credentials.get_cert_info("c", "default").cert == new_chain

    mine, theirs = conn_info(), conn_info(OTHER_NODE, (OTHER_ID,), "sleep")
    assert d._needs_push(mine, request) and not d._needs_push(theirs, request)
    conn = Connection(mine)
    conn.watches = {t: WatchState(t) for t in (T.CLUSTER, T.LISTENER, T.SECRET)}
    assert d.server.push_types(conn, request) == [T.SECRET]
    conn.watches.pop(T.SECRET)
    assert d.server.push_types(conn, request) == []
    assert T.SECRET in d.server.generators



# --- the secure port: ADS streams carry the caller's identity ------------------------------


class _Context:
    def __init__(self, token: str | None) -> None:
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.aborted: tuple | None = None

    def invocation_metadata(self) -> list:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    async def abort(self, code, details):  # type: ignore[no-untyped-def]
        self.aborted = (code, details)
        raise RuntimeError("aborted")


@pytest.mark.asyncio
async def test_secure_ads_streams_are_authenticated() -> None:
    import grpc

    from pistio.xds.server import DiscoveryServer, _Servicer

    def authenticate(metadata) -> list[str]:  # type: ignore[no-untyped-def]
        if ("authorization", "Bearer good") not in metadata:
            raise ValueError("no bearer token in the request")
        return [ID]

    servicer = _Servicer(DiscoveryServer({}), authenticate)
    assert await servicer._identities(_Context("good")) == (ID,)  # type: ignore[arg-type]
    refused = _Context(None)
    with pytest.raises(RuntimeError):
        await servicer._identities(refused)  # type: ignore[arg-type]
    assert refused.aborted == (grpc.StatusCode.UNAUTHENTICATED,
                               "authentication failure: no bearer token in the request")
    # The plaintext port authenticates nobody: no identity, no credentials.
    assert await _Servicer(DiscoveryServer({}))._identities(_Context("good")) == ()  # type: ignore[arg-type]
