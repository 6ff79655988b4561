"""SDS over ADS in the proxy: ``kubernetes://`` secrets (a DestinationRule or Gateway
``credentialName``) are requested by name on the xDS stream as clusters reference them, the
cluster warms until they arrive, a new version reaches new connections through the next
snapshot, an unreferenced secret is unsubscribed, a secret of the wrong kind is NACKed, and a
secret that never comes stops the warming at the initial fetch timeout with a clear log."""

from __future__ import annotations

import json
import logging

import pytest
import pytest_asyncio
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import duration_pb2

from pistio.agent.config_dump import config_dump_json
from pistio.agent.config_manager import ConfigManager
from pistio.xds import types as T
from pistio.xds.client import AdsClient
from pistio.xds.push_request import PushRequest
from pistio.xds.testing import StaticGenerator, XdsHarness, endpoints
from tests.unit.proxy.http_fixtures import eds_cluster
from tests.unit.proxy.tls.tls_fixtures import Pki, tls_socket

pytestmark = pytest.mark.asyncio

NODE_ID = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"
API = "outbound|443||api.example.com"
CERT, CA = "kubernetes://client-cred", "kubernetes://client-cred-cacert"


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


def ads_sds(name: str, timeout: float | None = None) -> secret_pb2.SdsSecretConfig:
    """Istio's SDSAdsConfig (no initial fetch timeout: Envoy's 15 s)."""
    source = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                            resource_api_version=config_source_pb2.V3)
    if timeout is not None:
        source.initial_fetch_timeout.CopyFrom(duration_pb2.Duration(nanos=int(timeout * 1e9)))
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def credential_cluster(name: str = API, cred: str = CERT, timeout: float | None = None):  # type: ignore[no-untyped-def]
    ctx = tls_pb2.UpstreamTlsContext(sni="api.example.com")
    common = ctx.common_tls_context
    common.tls_certificate_sds_secret_configs.append(ads_sds(cred, timeout))
    common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(
        ads_sds(cred + "-cacert", timeout))
    return eds_cluster(name, transport_socket=tls_socket(ctx))


def cert_secret(name: str, chain: bytes, key: bytes) -> secret_pb2.Secret:
    out = secret_pb2.Secret(name=name)
    out.tls_certificate.certificate_chain.inline_bytes = chain
    out.tls_certificate.private_key.inline_bytes = key
    return out


def ca_secret(name: str, roots: bytes) -> secret_pb2.Secret:
    out = secret_pb2.Secret(name=name)
    out.validation_context.trusted_ca.inline_bytes = roots
    return out


async def start(xds: XdsHarness, clusters: StaticGenerator, secrets: StaticGenerator,  # type: ignore[no-untyped-def]
                delta: bool = False):
    server = await xds.server({
        T.CLUSTER: clusters,
        T.ENDPOINT: StaticGenerator([endpoints(API, [("127.0.0.1", 8443)]),
                                     endpoints("other", [("127.0.0.1", 8443)])]),
        T.LISTENER: StaticGenerator([]),
        T.SECRET: secrets,
    })
    client = AdsClient(f"127.0.0.1:{server.port}", NODE_ID, delta=delta)
    xds.clients.append(client)
    manager = ConfigManager(client)
    await manager.start()
    return server, client, manager


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_credential_cluster_warms_until_the_discovery_sends_its_secrets(  # type: ignore[no-untyped-def]
        xds, delta: bool) -> None:
    pki = Pki()
    chain, key = pki.issue(dns=("client.example.com",))
    clusters, secrets = StaticGenerator([credential_cluster()]), StaticGenerator([])
    server, client, manager = await start(xds, clusters, secrets, delta)
    await manager.wait_for(lambda m: m.status[T.CLUSTER].acks > 0 and API in m.endpoints)
    # Accepted, but warming: SDS is requested over ADS by name.
    assert manager.clusters[API].active is None
    assert client.subscriptions[T.SECRET].names == {CERT, CA}
    dump = json.loads(config_dump_json(manager))["configs"][-1]
    assert sorted(s["name"] for s in dump["dynamic_warming_secrets"]) == [CERT, CA]

    secrets.set(cert_secret(CERT, chain, key))
    secrets.set(ca_secret(CA, pki.root_pem))
    await server.push_now(PushRequest(full=True))
    await manager.wait_for(lambda m: API in m.snapshot.clusters)
    snap = manager.snapshot
    assert snap.secrets[CERT].cert_chain_pem == chain and snap.secrets[CA].roots_pem == pki.root_pem
    assert manager.status[T.SECRET].acks > 0
    text = config_dump_json(manager)
    assert "PRIVATE KEY" not in text
    active = {s["name"] for s in json.loads(text)["configs"][-1]["dynamic_active_secrets"]}
    assert active == {CERT, CA}
    # The workers get them with the snapshot, as Secret resources.
    assert set(manager.active_resources()[T.SECRET]) == {CERT, CA}

    # A new certificate: a new snapshot, the cluster's config untouched (new connections use
    # the new context; pooled ones carry on).
    cluster_config = snap.clusters[API].config
    chain2, key2 = pki.issue(dns=("client.example.com",))
    secrets.set(cert_secret(CERT, chain2, key2))
    await server.push_now(PushRequest(full=True))
    await manager.wait_for(lambda m: m.snapshot.secrets[CERT].cert_chain_pem == chain2)
    assert manager.snapshot.clusters[API].config is cluster_config

    # The cluster goes: so does the subscription, and the secrets held.
    clusters.remove(API)
    clusters.set(eds_cluster("other"))
    await server.push_now(PushRequest(full=True))
    await manager.wait_for(lambda m: API not in m.clusters and not m.snapshot.secrets)
    await client.wait_for(lambda c: c.subscriptions[T.SECRET].names == set())
    assert not manager.secret_resolver().ads


async def test_a_secret_of_the_wrong_kind_is_nacked(xds) -> None:  # type: ignore[no-untyped-def]
    pki = Pki()
    chain, key = pki.issue()
    secrets = StaticGenerator([cert_secret(CERT, chain, key), cert_secret(CA, chain, key)])
    _, _, manager = await start(xds, StaticGenerator([credential_cluster()]), secrets)
    await manager.wait_for(lambda m: m.status[T.SECRET].nacks > 0)
    assert manager.status[T.SECRET].last_error == (
        f"Secret {CA}: a validation_context secret was expected, not a tls_certificate")
    assert manager.clusters[API].active is None  # nothing of the response applied


async def test_a_secret_that_never_comes_stops_warming_at_the_fetch_timeout(xds, caplog) -> None:  # type: ignore[no-untyped-def]
    cluster = credential_cluster(cred="kubernetes://no-such-cred", timeout=0.2)
    with caplog.at_level(logging.INFO, "pistio.agent.xds"):
        _, _, manager = await start(xds, StaticGenerator([cluster]), StaticGenerator([]))
        await manager.wait_for(lambda m: API in m.snapshot.clusters, timeout=5)
    # Served without its secrets: TLS connections to it fail.
    assert not manager.snapshot.secrets
    text = caplog.text
    assert f"CDS {API}: warming until the discovery sends SDS secret(s) " \
        "kubernetes://no-such-cred, kubernetes://no-such-cred-cacert" in text
    assert "initial fetch timeout waiting for SDS secret(s) kubernetes://no-such-cred (not " \
        "received from the discovery (SDS over ADS))" in text
