"""The TLS building blocks on real certificates: peer facts, SAN matchers, the XFCC element,
contexts per secret version, and auto-mTLS socket selection per endpoint."""

from __future__ import annotations

from types import MappingProxyType

from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.cluster_config import SanMatcher, compile_cluster
from pistio.proxy.config.endpoints import EndpointConfig
from pistio.proxy.http.headers import RequestHead
from pistio.proxy.tls import context as tls_context
from pistio.proxy.tls.context import TlsSettings, Verify, get_context, openssl_ciphers
from pistio.proxy.tls.peer import certificate_facts, san_matches
from pistio.proxy.tls.upstream import ClusterTls
from pistio.proxy.tls.xfcc import XFCC, xfcc_policy
from tests.unit.proxy.http_fixtures import eds_cluster, pack
from tests.unit.proxy.tls.tls_fixtures import Pki, spiffe, upstream_tls

HCM = hcm_pb2.HttpConnectionManager


def test_peer_facts_and_san_matchers() -> None:
    pki = Pki()
    chain, _ = pki.issue(spiffe("ns1", "sa1"), dns=("reviews.ns1.svc",), common_name="wl")
    peer = certificate_facts(x509.load_pem_x509_certificate(chain))
    assert peer.uri_sans == ("spiffe://cluster.local/ns/ns1/sa/sa1",)
    assert peer.dns_sans == ("reviews.ns1.svc",)
    assert peer.subject == "CN=wl" and len(peer.sha256) == 64
    assert san_matches([SanMatcher("exact", "spiffe://cluster.local/ns/ns1/sa/sa1")], peer)
    assert san_matches([SanMatcher("prefix", "spiffe://cluster.local/ns/ns1/")], peer)
    assert san_matches([SanMatcher("suffix", ".ns1.svc")], peer)
    assert san_matches([SanMatcher("contains", "REVIEWS", ignore_case=True)], peer)
    assert not san_matches([SanMatcher("exact", "spiffe://cluster.local/ns/ns2/sa/sa1")], peer)
    assert not san_matches([SanMatcher("exact", "x")], None)
    assert san_matches([], None)


def test_xfcc_element_in_envoys_order_and_modes() -> None:
    pki = Pki()
    chain, _ = pki.issue(spiffe("a", "client"), dns=("client.a",))
    peer = certificate_facts(x509.load_pem_x509_certificate(chain))
    conn = DownstreamConnectionInfo()
    conn.peer_certificate = peer
    conn.local_uri_san = spiffe("b", "server")

    def head(xfcc: bytes | None = None) -> RequestHead:
        fields = [(XFCC, xfcc)] if xfcc else []
        return RequestHead(b"GET", b"/", "1.1", fields, dict(fields))

    policy = xfcc_policy(HCM.SANITIZE_SET, ("uri", "dns", "subject", "cert"))
    h = head(b"By=spoofed")
    policy.apply(h, conn)  # type: ignore[union-attr]
    value = h.get(XFCC).decode()  # type: ignore[union-attr]
    keys = [p.split("=", 1)[0] for p in value.split(";")]
    assert keys == ["By", "Hash", "Cert", "Subject", "URI", "DNS"]
    assert value.startswith(f"By={spiffe('b', 'server')};Hash={peer.sha256};Cert=\"-----BEGIN")
    assert value.endswith(f'Subject="";URI={spiffe("a", "client")};DNS=client.a')
    h = head(b"By=x")
    xfcc_policy(HCM.FORWARD_ONLY, ()).apply(h, conn)  # type: ignore[union-attr]
    assert h.get(XFCC) == b"By=x"
    h = head(b"By=x")
    xfcc_policy(HCM.SANITIZE, ()).apply(h, conn)  # type: ignore[union-attr]
    assert h.get(XFCC) is None
    assert xfcc_policy(HCM.ALWAYS_FORWARD_ONLY, ()) is None
    plain = DownstreamConnectionInfo()
    h = head(b"By=x")
    xfcc_policy(HCM.FORWARD_ONLY, ()).apply(h, plain)  # type: ignore[union-attr]
    assert h.get(XFCC) is None  # not mutual TLS: removed


def test_contexts_are_built_once_per_secret_version() -> None:
    pki = Pki()
    cert, roots = pki.workload(spiffe("a", "b"))
    settings = TlsSettings(True, ("h2",), 3, 4, (), (), Verify.REQUIRED)
    before = tls_context.builds
    ctx = get_context(settings, cert, roots)  # type: ignore[arg-type]
    assert get_context(settings, cert, roots) is ctx  # type: ignore[arg-type]
    assert tls_context.builds == before + 1
    import ssl
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    client = get_context(TlsSettings(False), None, None)
    assert client.maximum_version == ssl.TLSVersion.TLSv1_2  # Envoy's client default
    assert client.verify_mode == ssl.CERT_NONE
    assert openssl_ciphers(["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]",
                            "TLS_AES_128_GCM_SHA256"]) == (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")


def test_auto_mtls_picks_the_socket_by_endpoint_tls_mode() -> None:
    c = eds_cluster("outbound|9080||reviews")
    match = c.transport_socket_matches.add(name="tlsMode-istio")
    match.match.CopyFrom(struct_pb2.Struct(fields={"tlsMode": struct_pb2.Value(
        string_value="istio")}))
    match.transport_socket.name = "envoy.transport_sockets.tls"
    match.transport_socket.typed_config.CopyFrom(pack(upstream_tls(sans=("spiffe://x",))))
    plain = c.transport_socket_matches.add(name="tlsMode-disabled")
    plain.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    config = compile_cluster(cluster_pb2.Cluster.FromString(c.SerializeToString()))
    tls = ClusterTls(config)

    def endpoint(mode: str | None) -> EndpointConfig:
        md = {"envoy.transport_socket_match": MappingProxyType({"tlsMode": mode})} if mode else {}
        return EndpointConfig("10.0.0.1", 9080, metadata=MappingProxyType(md))

    sidecar = tls.for_endpoint(endpoint("istio"))
    assert sidecar is not None and sidecar.config.san_matchers[0].value == "spiffe://x"
    assert tls.for_endpoint(endpoint("istio")) is sidecar  # one per socket
    assert tls.for_endpoint(endpoint(None)) is None  # no sidecar: plaintext
    assert tls.for_endpoint(endpoint("disabled")) is None
