"""TLS on the in-process data path with real certificates and real handshakes: termination on
a listener chain (mTLS required, SAN matchers, ALPN h2 → HTTP/2 codec, XFCC), origination to
a TLS upstream (SNI, ALPN, SAN verification), rotation without touching live connections."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.proxy.tls import context as tls_context
from tests.unit.proxy.h2_fixtures import H2Client
from tests.unit.proxy.http_fixtures import (
    eds_cluster,
    free_port,
    load_assignment,
    pack,
    read_response,
    route,
    route_config,
    upstreams,
)
from tests.unit.proxy.tls.tls_fixtures import (
    Pki,
    TlsProxy,
    downstream_tls,
    spiffe,
    tls_http_listener,
    tls_socket,
    upstream_tls,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

SERVER_ID = spiffe("default", "reviews")
CLIENT_ID = spiffe("default", "productpage")


def with_xfcc(listener, mode=hcm_pb2.HttpConnectionManager.APPEND_FORWARD):  # type: ignore[no-untyped-def]
    """Istio's sidecar inbound HCM: APPEND_FORWARD with subject, dns and uri."""
    chain = listener.filter_chains[0]
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(hcm)
    hcm.forward_client_cert_details = mode
    hcm.set_current_client_cert_details.subject.value = True
    hcm.set_current_client_cert_details.dns = True
    hcm.set_current_client_cert_details.uri = True
    chain.filters[0].typed_config.CopyFrom(pack(hcm))
    return listener


@contextlib.asynccontextmanager
async def tls_gateway(pki: Pki, **tls) -> AsyncIterator[tuple[TlsProxy, int, list]]:  # type: ignore[no-untyped-def]
    proxy = TlsProxy()
    servers = await upstreams("app")
    port = free_port()
    cert, roots = pki.workload(SERVER_ID)
    try:
        await proxy.apply_with_secrets(
            {"default": cert, "ROOTCA": roots},
            listeners=[with_xfcc(tls_http_listener("inbound", port, downstream_tls(**tls)))],
            routes=[route_config("http", [route("/", cluster="app")])],
            clusters=[eds_cluster("app")],
            assignments=[load_assignment("app", [servers[0].port])],
        )
        yield proxy, port, servers
    finally:
        await proxy.close()
        for s in servers:
            await s.close()


async def https_get(port: int, ctx: ssl.SSLContext, path: str = "/",
                    headers: str = "") -> tuple[int, dict, ssl.SSLObject]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="")
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: reviews\r\n{headers}\r\n".encode())
        resp = await read_response(reader)
        return resp.status, resp.json(), writer.get_extra_info("ssl_object")
    finally:
        writer.close()


async def test_mtls_termination_fills_connection_facts_and_xfcc() -> None:
    pki = Pki()
    async with tls_gateway(pki, san_prefix=("spiffe://cluster.local/ns/default/",),
                           alpn=("h2", "http/1.1")) as (_, port, servers):
        ctx = pki.client_context(CLIENT_ID)
        status, body, sslobj = await https_get(
            port, ctx, headers="x-forwarded-client-cert: By=spoofed\r\n")
        assert status == 200
        assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
        peer = sslobj.getpeercert()
        assert ("URI", SERVER_ID) in peer["subjectAltName"]
        xfcc = body["headers"]["x-forwarded-client-cert"]
        # APPEND_FORWARD keeps what came in and appends this hop's element.
        spoofed, _, element = xfcc.partition(",")
        assert spoofed == "By=spoofed"
        parts = element.split(";")
        assert parts[0] == f"By={SERVER_ID}"
        assert parts[1].startswith("Hash=") and len(parts[1]) == 5 + 64
        assert parts[2:] == ['Subject=""', f"URI={CLIENT_ID}"]
        assert body["headers"]["x-forwarded-proto"] == "https"


async def test_sanitize_set_replaces_and_plaintext_sanitizes() -> None:
    pki = Pki()
    proxy = TlsProxy()
    servers = await upstreams("app")
    tls_port, plain_port = free_port(), free_port()
    cert, roots = pki.workload(SERVER_ID)
    from tests.unit.proxy.http_fixtures import fetch, http_listener
    try:
        await proxy.apply_with_secrets(
            {"default": cert, "ROOTCA": roots},
            listeners=[
                with_xfcc(tls_http_listener("tls", tls_port, downstream_tls()),
                          hcm_pb2.HttpConnectionManager.SANITIZE_SET),
                with_xfcc(http_listener("plain", plain_port),
                          hcm_pb2.HttpConnectionManager.APPEND_FORWARD),
            ],
            routes=[route_config("http", [route("/", cluster="app")])],
            clusters=[eds_cluster("app")],
            assignments=[load_assignment("app", [servers[0].port])],
        )
        _, body, _ = await https_get(tls_port, pki.client_context(CLIENT_ID),
                                     headers="x-forwarded-client-cert: By=spoofed\r\n")
        assert body["headers"]["x-forwarded-client-cert"].startswith(f"By={SERVER_ID};Hash=")
        # Not mutual TLS: Envoy removes the header whatever the mode (but ALWAYS_FORWARD_ONLY).
        r = await fetch(plain_port, "/", headers={"x-forwarded-client-cert": "By=spoofed"})
        assert "x-forwarded-client-cert" not in r.json()["headers"]
    finally:
        await proxy.close()
        for s in servers:
            await s.close()


async def test_client_without_certificate_or_with_a_foreign_identity_is_refused() -> None:
    pki = Pki()
    async with tls_gateway(pki, sans=(CLIENT_ID,)) as (proxy, port, servers):
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await https_get(port, pki.client_context(None))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await https_get(port, pki.client_context(spiffe("other", "intruder")))
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await https_get(port, Pki().client_context(CLIENT_ID))  # another trust domain root
        assert not servers[0].received
        status, _, _ = await https_get(port, pki.client_context(CLIENT_ID))
        assert status == 200
        assert proxy.counter(f"listener.127.0.0.1_{port}.ssl.fail_verify_san") == 1
        assert proxy.counter(f"listener.127.0.0.1_{port}.ssl.handshake") == 1


async def test_alpn_h2_selects_the_http2_codec() -> None:
    pki = Pki()
    async with tls_gateway(pki, alpn=("h2", "http/1.1")) as (_, port, _servers):
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_connection(
            H2Client, "127.0.0.1", port, ssl=pki.client_context(CLIENT_ID, alpn=("h2",)),
            server_hostname="")
        try:
            assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            r = await client.request("/over-h2", authority="reviews")
            assert r.status == 200 and r.json()["path"] == "/over-h2"
            assert r.json()["headers"]["x-forwarded-proto"] == "https"
        finally:
            client.close()


async def test_rotation_changes_new_connections_only() -> None:
    pki = Pki()
    async with tls_gateway(pki) as (proxy, port, _servers):
        ctx = pki.client_context(CLIENT_ID)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="")
        try:
            old_cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n")
            assert (await read_response(reader)).status == 200
            builds = tls_context.builds
            cert, roots = pki.workload(SERVER_ID)
            await proxy.rotate({"default": cert, "ROOTCA": roots})
            # The keep-alive connection carries on with its session.
            writer.write(b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n")
            assert (await read_response(reader)).status == 200
            _, _, sslobj = await https_get(port, ctx)
            assert sslobj.getpeercert(binary_form=True) != old_cert
            await https_get(port, ctx)
            assert tls_context.builds == builds + 1  # one context per secret version
        finally:
            writer.close()


def server_context(chain: bytes, key: bytes) -> ssl.SSLContext:
    """A TLS server context presenting ``chain`` (ssl loads keys from files only)."""
    import os
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fd, path = tempfile.mkstemp()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + chain)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


async def tls_upstream(pki: Pki, uri: str) -> tuple[asyncio.AbstractServer, int, list]:
    """An HTTP/1.1 server over mTLS that records the client's identity and SNI."""
    ctx = server_context(*pki.issue(uri))
    ctx.load_verify_locations(cadata=pki.root_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["istio", "http/1.1"])
    seen: list = []
    sni: list = []
    ctx.sni_callback = lambda obj, name, _ctx: sni.append(name)  # type: ignore[assignment]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        peer = dict(sslobj.getpeercert()["subjectAltName"])
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen.append((peer.get("URI"), sslobj.selected_alpn_protocol(), sni[-1:]))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], seen


async def test_upstream_mtls_with_sni_alpn_and_san_verification() -> None:
    pki = Pki()
    server, upstream_port, seen = await tls_upstream(pki, SERVER_ID)
    proxy = TlsProxy()
    port = free_port()
    from tests.unit.proxy.http_fixtures import KeepAliveClient, http_listener
    good = eds_cluster("good", transport_socket=tls_socket(upstream_tls(
        sni="outbound_.9080_._.reviews.default.svc.cluster.local", sans=(SERVER_ID,),
        alpn=("istio-peer-exchange", "istio"), min_version=3, max_version=4)))
    bad = eds_cluster("bad", transport_socket=tls_socket(upstream_tls(
        sans=(spiffe("default", "ratings"),))))
    cert, roots = pki.workload(CLIENT_ID)
    try:
        await proxy.apply_with_secrets(
            {"default": cert, "ROOTCA": roots},
            listeners=[http_listener("out", port)],
            routes=[route_config("http", [route("/bad", cluster="bad"),
                                          route("/", cluster="good")])],
            clusters=[good, bad],
            assignments=[load_assignment("good", [upstream_port]),
                         load_assignment("bad", [upstream_port])],
        )
        client = KeepAliveClient(port)
        try:
            for _ in range(3):
                assert (await client.request("/")).status == 200
        finally:
            client.close()
        # One TLS connection (pooled keep-alive), our identity, Istio's ALPN and SNI.
        assert seen == [(CLIENT_ID, "istio",
                         ["outbound_.9080_._.reviews.default.svc.cluster.local"])] * 3
        from tests.unit.proxy.http_fixtures import fetch
        r = await fetch(port, "/bad")
        assert r.status == 503
        assert len(seen) == 3  # the SAN mismatch never carried a request
    finally:
        await proxy.close()
        server.close()


async def simple_tls_upstream(pki: Pki, dns: list[str]) -> tuple[asyncio.AbstractServer, int,
                                                                   list]:
    """An HTTPS server (no client certificate) for ``dns``, recording the SNI of each
    connection."""
    ctx = server_context(*pki.issue(None, dns=dns))
    sni: list = []
    ctx.sni_callback = lambda obj, name, _ctx: sni.append(name)  # type: ignore[assignment]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], sni


async def test_auto_sni_and_auto_san_validation() -> None:
    """Istio's TLS origination (DestinationRule SIMPLE without ``sni``): the cluster's
    upstream_http_protocol_options auto_sni sends the request's host as SNI, and
    auto_san_validation wants it in the server certificate's DNS SANs (wildcards as Envoy);
    connections are pooled per host."""
    from envoy.config.core.v3 import protocol_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    from pistio.proxy.tls.secrets import validation_secret
    from tests.unit.proxy.http_fixtures import fetch, http_listener

    pki = Pki()
    server, upstream_port, sni = await simple_tls_upstream(
        pki, ["api.example.com", "*.wild.example"])
    options = hpo.HttpProtocolOptions(
        upstream_http_protocol_options=protocol_pb2.UpstreamHttpProtocolOptions(
            auto_sni=True, auto_san_validation=True))
    options.explicit_http_config.http_protocol_options.SetInParent()
    ext = eds_cluster("ext", transport_socket=tls_socket(upstream_tls(cert=None)))
    ext.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(pack(options))
    proxy = TlsProxy()
    port = free_port()
    try:
        await proxy.apply_with_secrets(
            {"ROOTCA": validation_secret("ROOTCA", pki.root_pem)},
            listeners=[http_listener("out", port)],
            routes=[route_config("http", [route("/", cluster="ext")])],
            clusters=[ext], assignments=[load_assignment("ext", [upstream_port])])
        assert (await fetch(port, "/", host="api.example.com")).status == 200
        assert (await fetch(port, "/", host="a.wild.example:443")).status == 200
        assert sni == ["api.example.com", "a.wild.example"]
        r = await fetch(port, "/", host="other.example.com")  # not in the certificate
        assert (r.status, r.body.endswith(b"connection failure")) == (503, True)
        assert (await fetch(port, "/", host="api.example.com")).status == 200  # pooled
        assert sni[-1] == "other.example.com" and len(sni) == 3
    finally:
        await proxy.close()
        server.close()
