"""SDS in the proxy's xDS flow (a real ADS server, a SecretManager-shaped provider with real
certificates, real files): warming on absent secrets, rotation, file secrets, the workers'
copy, ``/config_dump``'s secrets, and the NACKs of TLS config pistio cannot honour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.agent.config_dump import config_dump_json
from pistio.agent.config_manager import ConfigManager
from pistio.proxy.config.cluster_config import compile_cluster
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from pistio.proxy.runtime.snapshot_receiver import SnapshotReceiver
from pistio.proxy.runtime.snapshot_wire import decode_update, encode_update
from pistio.proxy.tls.secret_source import SecretResolver
from pistio.xds import types as T
from pistio.xds.client import AdsClient
from pistio.xds.testing import StaticGenerator, XdsHarness, endpoints
from tests.unit.proxy.http_fixtures import eds_cluster, route, route_config
from tests.unit.proxy.tls.tls_fixtures import (
    Pki,
    StaticSecretManager,
    downstream_tls,
    sds,
    spiffe,
    tls_http_listener,
    tls_socket,
    upstream_tls,
)

NODE_ID = "sidecar~10.244.0.10~reviews-v1.default~default.svc.cluster.local"
ME = spiffe("default", "reviews")


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


async def start(xds: XdsHarness, provider, listener, cluster) -> ConfigManager:  # type: ignore[no-untyped-def]
    server = await xds.server({
        T.CLUSTER: StaticGenerator([cluster]),
        T.ENDPOINT: StaticGenerator([endpoints(cluster.name, [("10.244.0.12", 9080)])]),
        T.LISTENER: StaticGenerator([listener]),
        T.ROUTE: StaticGenerator([route_config("http", [route("/", cluster=cluster.name)])]),
    })
    client = AdsClient(f"127.0.0.1:{server.port}", NODE_ID)
    xds.clients.append(client)
    manager = ConfigManager(client)
    manager.secrets = provider  # as pistio/cli/proxy_cmd.py does
    await manager.start()
    return manager


def mtls_cluster(name: str = "outbound|9080||ratings") -> cluster_pb2.Cluster:
    return eds_cluster(name, transport_socket=tls_socket(upstream_tls(
        sans=(spiffe("default", "ratings"),), alpn=("istio-peer-exchange", "istio"))))


@pytest.mark.asyncio
async def test_listener_and_cluster_warm_until_the_agent_has_secrets(xds) -> None:  # type: ignore[no-untyped-def]
    provider = StaticSecretManager(Pki(), ME)
    listener = tls_http_listener("virtualInbound", 15006, downstream_tls())
    manager = await start(xds, provider, listener, mtls_cluster())
    await manager.wait_for(lambda m: m.status[T.LISTENER].acks and "http" in m.routes)
    # Accepted (ACKed), but warming: Envoy's init waits for the SDS secrets.
    assert manager.listeners["virtualInbound"].active is None
    assert manager.clusters["outbound|9080||ratings"].active is None
    assert not manager.initialized and not manager.snapshot.listeners
    dump = json.loads(config_dump_json(manager))
    secrets = dump["configs"][-1]
    assert secrets["@type"].endswith("SecretsConfigDump")
    assert sorted(s["name"] for s in secrets["dynamic_warming_secrets"]) == ["ROOTCA", "default"]

    provider.rotate()  # the first certificate arrives
    await manager.wait_for(lambda m: "virtualInbound" in m.snapshot.listeners)
    assert manager.initialized
    snap = manager.snapshot
    assert set(snap.secrets) == {"default", "ROOTCA"}
    assert snap.secrets["default"].uri_sans == (ME,)
    assert "outbound|9080||ratings" in snap.clusters

    text = config_dump_json(manager)
    assert "PRIVATE KEY" not in text
    active = json.loads(text)["configs"][-1]["dynamic_active_secrets"]
    by_name = {s["name"]: s for s in active}
    assert by_name["default"]["secret"]["tls_certificate"]["private_key"] == {
        "inline_string": "[redacted]"}
    assert by_name["default"]["version_info"] == "v1"
    assert "trusted_ca" in by_name["ROOTCA"]["secret"]["validation_context"]

    # The workers rebuild the same secrets from what the agent forwards.
    frame = encode_update(snap.version, manager.active_resources(), {}, snap.xds_versions)
    rebuilt = SnapshotReceiver().apply(snap.version, decode_update(frame[13:]))
    assert {n: s.digest for n, s in rebuilt.secrets.items()} == {
        n: s.digest for n, s in snap.secrets.items()}

    # Rotation: a new snapshot with the new certificate; config unchanged.
    before = snap.version
    listener_config = snap.listeners["virtualInbound"]
    provider.rotate()
    await manager.wait_for(lambda m: m.snapshot.version > before)
    assert manager.snapshot.secrets["default"].digest != snap.secrets["default"].digest
    assert manager.snapshot.listeners["virtualInbound"] is listener_config


@pytest.mark.asyncio
async def test_an_absent_secret_stops_warming_at_its_initial_fetch_timeout(xds) -> None:  # type: ignore[no-untyped-def]
    listener = tls_http_listener("0.0.0.0_8443", 8443, downstream_tls(timeout=0.2))
    never = StaticSecretManager(Pki(), ME)  # a CA that never answers
    manager = await start(xds, never, listener, eds_cluster("plain"))
    await manager.wait_for(lambda m: m.status[T.LISTENER].acks > 0)
    assert "0.0.0.0_8443" not in manager.snapshot.listeners
    await manager.wait_for(lambda m: "0.0.0.0_8443" in m.snapshot.listeners, timeout=5)
    assert not manager.snapshot.secrets  # served without: its connections are closed


@pytest.mark.asyncio
async def test_without_a_certificate_provider_workload_secrets_are_not_awaited(xds) -> None:  # type: ignore[no-untyped-def]
    # A proxy started without a CA: Istio's auto-mTLS clusters must not block plaintext.
    manager = await start(xds, None, tls_http_listener("l", 8443, downstream_tls()),
                          mtls_cluster())
    await manager.wait_for(lambda m: m.initialized)
    assert "outbound|9080||ratings" in manager.snapshot.clusters


@pytest.mark.asyncio
async def test_file_secrets_load_from_disk_and_follow_changes(xds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = Pki()
    chain, key = pki.issue(ME)
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    cert_name = f"file-cert:{tmp_path}/cert.pem~{tmp_path}/key.pem"
    root_name = f"file-root:{tmp_path}/root.pem"  # not there yet
    listener = tls_http_listener("gw", 8443, downstream_tls(cert=cert_name, roots=root_name))
    manager = await start(xds, None, listener, eds_cluster("plain"))
    await manager.wait_for(lambda m: m.status[T.LISTENER].acks and "http" in m.routes)
    assert manager.listeners["gw"].active is None
    assert "root.pem" in manager.secret_resolver().errors[root_name]
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    manager._poll_file_secrets()  # the periodic check, now
    await manager.wait_for(lambda m: "gw" in m.snapshot.listeners)
    assert manager.snapshot.secrets[cert_name].uri_sans == (ME,)

    resolver = SecretResolver()
    first = resolver.get(cert_name)
    assert resolver.get(cert_name) is first  # unchanged files: cached
    chain2, key2 = pki.issue(ME)
    (tmp_path / "key.pem").write_bytes(key2 + b"\n")
    (tmp_path / "cert.pem").write_bytes(chain2)
    second = resolver.get(cert_name)
    assert second is not None and second.digest != first.digest  # type: ignore[union-attr]


# --- NACKs ------------------------------------------------------------------------------------


def _listener_problems(ctx) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        compile_listener(tls_http_listener("l", 8443, ctx))
    return "; ".join(err.value.problems)


def test_unsupported_tls_config_is_nacked_with_the_reason() -> None:
    assert "SDS secret 'my-cred' is not served by pistio proxy" in (
        _listener_problems(downstream_tls(cert="my-cred")))
    # A credentialName comes from the discovery over ADS, never from the agent's sds-grpc.
    assert "SDS secret 'kubernetes://my-cred' is served by the discovery: its config source " \
        "must be ADS" in _listener_problems(downstream_tls(cert="kubernetes://my-cred"))
    assert "is a validation_context secret, not a tls_certificate" in _listener_problems(
        downstream_tls(cert="ROOTCA"))
    no_cert = downstream_tls(cert=None)
    assert "a server TLS context needs a certificate" in _listener_problems(no_cert)
    two = downstream_tls()
    two.common_tls_context.tls_certificate_sds_secret_configs.append(sds("default"))
    assert "only one certificate is supported" in _listener_problems(two)
    elsewhere = downstream_tls()
    cfg = elsewhere.common_tls_context.tls_certificate_sds_secret_configs[0]
    cfg.sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name = "other"
    assert "only the agent's SDS (gRPC to cluster 'sds-grpc') is supported" in (
        _listener_problems(elsewhere))
    curves = downstream_tls()
    curves.common_tls_context.tls_params.ecdh_curves.extend(["X25519", "P-256"])
    assert "pistio sets one ECDH curve, not 2" in _listener_problems(curves)
    ciphers = downstream_tls()
    ciphers.common_tls_context.tls_params.cipher_suites.append("NOT-A-CIPHER")
    assert "no usable cipher" in _listener_problems(ciphers)
    inverted = downstream_tls(min_version=4, max_version=3)
    assert "tls_minimum_protocol_version is above" in _listener_problems(inverted)

    listener = tls_http_listener("l", 8443, downstream_tls())
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.set_current_client_cert_details.chain = True
    listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
    with pytest.raises(ConfigError, match="set_current_client_cert_details.chain"):
        compile_listener(listener)

    unverified = upstream_tls(roots=None)
    unverified.common_tls_context.combined_validation_context.default_validation_context \
        .match_subject_alt_names.add(exact="spiffe://x")
    with pytest.raises(ConfigError, match="SAN verification needs a trusted CA"):
        compile_cluster(eds_cluster("c", transport_socket=tls_socket(unverified)))
    crl = upstream_tls()
    crl.common_tls_context.combined_validation_context.default_validation_context.crl \
        .filename = "/x"
    with pytest.raises(ConfigError, match="crl: field not supported"):
        compile_cluster(eds_cluster("c", transport_socket=tls_socket(crl)))


def test_istio_shaped_tls_compiles_with_its_sds_needs() -> None:
    from pistio.proxy.tls.references import cluster_secrets, listener_secrets

    listener = compile_listener(tls_http_listener(
        "l", 8443, downstream_tls(san_prefix=("spiffe://cluster.local/",), alpn=("h2",))))
    assert listener_secrets(listener) == (frozenset({"default", "ROOTCA"}), None)
    cluster = compile_cluster(mtls_cluster())
    tls = cluster.transport_socket.tls
    assert tls is not None and tls.alpn_protocols == ("istio-peer-exchange", "istio")
    assert cluster_secrets(cluster) == (frozenset({"default", "ROOTCA"}), None)
    timed = compile_cluster(eds_cluster("c", transport_socket=tls_socket(
        upstream_tls(timeout=None))))
    assert cluster_secrets(timed) == (frozenset({"default", "ROOTCA"}), 15.0)
    plain = listener_pb2.Listener(name="p")
    plain.address.socket_address.port_value = 1
    assert listener_secrets(compile_listener(plain))[0] == frozenset()
