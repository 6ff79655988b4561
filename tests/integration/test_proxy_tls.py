"""Mutual TLS between two real proxy processes fed by test xDS, with Istio-shaped TLS config
and file-based SDS secrets (``file-cert:`` / ``file-root:``) holding real SPIFFE certificates:

    client ──plaintext──► proxy A ══mTLS══► sniffing relay ══► proxy B (TLS listener,
                          (cluster with       (checks the      require_client_certificate,
                           UpstreamTls)        bytes are TLS)  SAN matcher) ──► upstream

Asserted on the wire: the hop is a TLS handshake (a ClientHello, no plaintext HTTP), TLS 1.3
with the SPIFFE URI SANs both ways (B's certificate seen by a client; A's identity verified by
B, reported in ``x-forwarded-client-cert``), ALPN h2 end to end to B's listener, a client
without a certificate refused, and a certificate rotation on B that new connections see while
the pooled keep-alive connection from A carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.xds import types as T
from tests.integration.test_proxy_http import ControlPlane, ProxyProcess
from tests.unit.proxy.h2_fixtures import H2Client
from tests.unit.proxy.http_fixtures import (
    KeepAliveClient,
    UpstreamServer,
    eds_cluster,
    fetch,
    free_port,
    http_listener,
    load_assignment,
    pack,
    route,
    route_config,
)
from tests.unit.proxy.tls.tls_fixtures import (
    Pki,
    downstream_tls,
    spiffe,
    tls_http_listener,
    tls_socket,
    upstream_tls,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

A_ID = spiffe("default", "productpage")
B_ID = spiffe("default", "reviews")
TLS_HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01


class SniffingRelay:
    """A TCP relay that records, per connection, the first bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.first_bytes: list[bytes] = []
        self.connections = 0
        self.seen = bytearray()  # everything client → server
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> SniffingRelay:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool
                       ) -> None:
            first = True
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if record:
                        if first:
                            self.first_bytes.append(data[:6])
                        self.seen.extend(data)
                    first = False
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def write_identity(directory: Path, pki: Pki, uri: str) -> tuple[str, str]:
    """The workload's files and their SDS names (Istio's file-cert / file-root)."""
    directory.mkdir(parents=True, exist_ok=True)
    chain, key = pki.issue(uri)
    (directory / "key.pem").write_bytes(key)
    (directory / "cert-chain.pem").write_bytes(chain)
    (directory / "root-cert.pem").write_bytes(pki.root_pem)
    return (f"file-cert:{directory}/cert-chain.pem~{directory}/key.pem",
            f"file-root:{directory}/root-cert.pem")


def inbound_listener(port: int, cert: str, root: str):  # type: ignore[no-untyped-def]
    """Istio's inbound mTLS chain: STRICT (client certificate required), ALPN h2/http1.1,
    the HCM forwarding the client's identity (APPEND_FORWARD, subject/dns/uri)."""
    listener = tls_http_listener("virtualInbound", port, downstream_tls(
        cert=cert, roots=root, san_prefix=("spiffe://cluster.local/",),
        alpn=("h2", "http/1.1"), min_version=3, max_version=4))
    hcm = hcm_pb2.HttpConnectionManager()
    chain = listener.filter_chains[0]
    chain.filters[0].typed_config.Unpack(hcm)
    hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    hcm.set_current_client_cert_details.subject.value = True
    hcm.set_current_client_cert_details.dns = True
    hcm.set_current_client_cert_details.uri = True
    chain.filters[0].typed_config.CopyFrom(pack(hcm))
    return listener


async def wait_tls_ready(proxy: ProxyProcess, port: int, ctx: ssl.SSLContext) -> None:
    for _ in range(300):
        if proxy.proc.poll() is not None:
            raise RuntimeError("proxy exited:\n" + proxy.log.read_text())
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                               server_hostname="")
                writer.write(b"GET /__ready__ HTTP/1.1\r\nhost: b\r\n\r\n")
                line = await reader.readline()
                writer.close()
                if line.startswith(b"HTTP/1.1") and proxy.ready.exists():
                    proxy.ports = json.loads(proxy.ready.read_text())
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError("TLS listener never answered:\n" + proxy.log.read_text())


@contextlib.asynccontextmanager
async def two_proxies(tmp_path: Path) -> AsyncIterator[dict]:
    pki = Pki()
    a_cert, a_root = write_identity(tmp_path / "a-certs", pki, A_ID)
    b_cert, b_root = write_identity(tmp_path / "b-certs", pki, B_ID)
    upstream = await UpstreamServer("reviews").start()
    a_port, b_port = free_port(), free_port()
    relay = await SniffingRelay(b_port).start()
    cp_a, cp_b = ControlPlane(), ControlPlane()
    procs: list[ProxyProcess] = []
    try:
        cp_b.set(T.LISTENER, inbound_listener(b_port, b_cert, b_root))
        cp_b.set(T.ROUTE, route_config("http", [route("/", cluster="inbound|9080||")]))
        cp_b.set(T.CLUSTER, eds_cluster("inbound|9080||"))
        cp_b.set(T.ENDPOINT, load_assignment("inbound|9080||", [upstream.port]))
        reviews = "outbound|9080||reviews.default.svc.cluster.local"
        cp_a.set(T.LISTENER, http_listener("0.0.0.0_9080", a_port))
        cp_a.set(T.ROUTE, route_config("http", [route("/", cluster=reviews)]))
        cp_a.set(T.CLUSTER, eds_cluster(reviews, transport_socket=tls_socket(upstream_tls(
            cert=a_cert, roots=a_root, sans=(B_ID,),
            sni="outbound_.9080_._.reviews.default.svc.cluster.local",
            alpn=("istio-peer-exchange", "istio"), min_version=3, max_version=4))))
        cp_a.set(T.ENDPOINT, load_assignment(reviews, [relay.port]))
        ports = []
        for name, cp in (("a", cp_a), ("b", cp_b)):
            (tmp_path / name).mkdir()
            procs.append(ProxyProcess(tmp_path / name, await cp.start(), concurrency=1))
        proxy_a, proxy_b = procs
        client_ctx = pki.client_context(A_ID)
        await wait_tls_ready(proxy_b, b_port, client_ctx)
        await proxy_a.wait_ready(a_port)
        upstream.received.clear()  # the readiness probe went A → relay → B already
        ports = [a_port, b_port]
        yield dict(pki=pki, a=proxy_a, b=proxy_b, a_port=ports[0], b_port=ports[1],
                   relay=relay, upstream=upstream, b_dir=tmp_path / "b-certs",
                   client_ctx=client_ctx)
    finally:
        for p in procs:
            p.stop()
        await cp_a.close()
        await cp_b.close()
        relay.close()
        await upstream.close()


async def test_mtls_between_two_proxies_on_the_wire(tmp_path: Path) -> None:
    async with two_proxies(tmp_path) as env:
        r = await fetch(env["a_port"], "/productpage-to-reviews", host="reviews:9080")
        assert r.status == 200, r.body
        # On the wire between the proxies: a TLS handshake record carrying a ClientHello,
        # and no plaintext HTTP anywhere in the stream.
        relay = env["relay"]
        assert relay.first_bytes and relay.first_bytes[0][0] == TLS_HANDSHAKE_RECORD
        assert relay.first_bytes[0][5] == CLIENT_HELLO
        assert b"GET /productpage-to-reviews" not in relay.seen
        assert b"reviews:9080" not in relay.seen
        # B verified A's SPIFFE certificate and says so; By is B's own SPIFFE id.
        xfcc = env["upstream"].received[-1].headers["x-forwarded-client-cert"]
        parts = dict(p.split("=", 1) for p in xfcc.split(";"))
        assert (parts["By"], parts["URI"], parts["Subject"]) == (B_ID, A_ID, '""')
        assert len(parts["Hash"]) == 64
        # A set x-forwarded-proto for its plaintext client; B keeps it (not an edge proxy).
        assert env["upstream"].received[-1].headers["x-forwarded-proto"] == "http"

        # B's side of the handshake, seen by a client: TLS 1.3, B's SPIFFE id.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env["b_port"], ssl=env["client_ctx"], server_hostname="")
        sslobj = writer.get_extra_info("ssl_object")
        assert sslobj.version() == "TLSv1.3"
        assert ("URI", B_ID) in sslobj.getpeercert()["subjectAltName"]
        writer.close()

        # A client without a certificate is refused by require_client_certificate.
        no_cert = env["pki"].client_context(None)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", env["b_port"], ssl=no_cert, server_hostname="")
            writer.write(b"GET / HTTP/1.1\r\nhost: b\r\n\r\n")
            await writer.drain()
            if not await reader.read(1):
                raise ConnectionError("closed")

        status, text = env["a"].admin("/config_dump")
        secrets = json.loads(text)["configs"][-1]
        names = {s["name"] for s in secrets["dynamic_active_secrets"]}
        assert any(n.startswith("file-cert:") for n in names) and "PRIVATE KEY" not in text


async def test_alpn_h2_end_to_end_to_the_tls_listener(tmp_path: Path) -> None:
    async with two_proxies(tmp_path) as env:
        loop = asyncio.get_running_loop()
        ctx = env["pki"].client_context(A_ID, alpn=("h2",))
        transport, client = await loop.create_connection(
            H2Client, "127.0.0.1", env["b_port"], ssl=ctx, server_hostname="")
        try:
            assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            r = await client.request("/over-h2", authority="reviews")
            assert r.status == 200 and r.json()["path"] == "/over-h2"
            assert f"URI={A_ID}" in r.json()["headers"]["x-forwarded-client-cert"]
        finally:
            client.close()


async def test_rotation_keeps_pooled_connections_and_serves_new_ones(tmp_path: Path) -> None:
    async with two_proxies(tmp_path) as env:
        client = KeepAliveClient(env["a_port"])
        try:
            for _ in range(3):
                assert (await client.request("/before", host="reviews:9080")).status == 200
            relay = env["relay"]
            assert relay.connections == 1  # A pools its TLS connection to B

            reader, writer = await asyncio.open_connection(
                "127.0.0.1", env["b_port"], ssl=env["client_ctx"], server_hostname="")
            old = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            _, text = env["b"].admin("/config_dump")
            old_version = _cert_version(text)

            # Rotation on B: a new key and certificate for the same identity.
            chain, key = env["pki"].issue(B_ID)
            b_dir: Path = env["b_dir"]
            (b_dir / "key.pem").write_bytes(key)
            (b_dir / "cert-chain.pem").write_bytes(chain)
            for _ in range(400):  # B checks its files every few seconds
                _, text = env["b"].admin("/config_dump")
                if _cert_version(text) != old_version:
                    break
                await asyncio.sleep(0.05)
            assert _cert_version(text) != old_version

            # The in-flight keep-alive connection from A carries on, untouched.
            for _ in range(3):
                assert (await client.request("/after", host="reviews:9080")).status == 200
            assert relay.connections == 1
            # New connections get the new certificate.
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", env["b_port"], ssl=env["client_ctx"], server_hostname="")
            new = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            assert new != old
        finally:
            client.close()


def _cert_version(config_dump: str) -> str:
    secrets = json.loads(config_dump)["configs"][-1]["dynamic_active_secrets"]
    return next(s["version_info"] for s in secrets if s["name"].startswith("file-cert:"))
