"""``pistio discovery`` as a real process serves the security config: a sidecar's
virtualInbound over ADS carries the STRICT mTLS chains, RBAC and the JWT filter with the
JWKS the discovery fetched over HTTP; editing a policy on disk pushes the change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2

from pistio.pilot.security.proto_validate import validate_message
from pistio.xds import types as T
from pistio.xds.any_codec import unpack
from pistio.xds.client import AdsClient
from tests.integration.discovery_process import run_discovery
from tests.unit.pilot.security.jwks_server import JwksServer, jwks_server

PRODUCTPAGE_ID = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default, labels: {app: productpage}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: productpage-v1
  namespace: default
  labels: {app: productpage, version: v1}
spec:
  serviceAccountName: bookinfo-productpage
  containers: [{name: app, image: productpage}]
status: {podIP: 10.244.0.10, phase: Running}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: productpage}
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
    to:
    - operation: {methods: [GET]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: productpage}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: JWKS_URI
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server() as s:
        yield s


@pytest.fixture
def discovery(tmp_path: Path, server: JwksServer) -> Iterator[tuple[str, Path]]:
    config = tmp_path / "config"
    config.mkdir()
    write(config / "mesh.yaml", CONFIG.replace("JWKS_URI", server.jwks_uri))
    with run_discovery(config, tmp_path) as info:
        yield info["grpc_address"], config


def virtual_inbound(client: AdsClient) -> listener_pb2.Listener | None:
    packed = client.resources(T.LISTENER).get("virtualInbound")
    return None if packed is None else listener_pb2.Listener.FromString(packed.value)


def app_chains(lst: listener_pb2.Listener) -> list:
    return [c for c in lst.filter_chains if c.filter_chain_match.destination_port.value == 9080]


def test_discovery_serves_security_config(discovery: tuple[str, Path], server: JwksServer) -> None:
    address, config = discovery

    async def scenario() -> None:
        client = AdsClient(
            address,
            PRODUCTPAGE_ID,
            metadata={
                "CLUSTER_ID": "Kubernetes",
                "NAMESPACE": "default",
                "LABELS": {"app": "productpage", "version": "v1"},
            },
        )
        await client.start()
        try:
            client.subscribe(T.LISTENER)
            await client.wait_for(lambda c: virtual_inbound(c) is not None, timeout=10)
            lst = virtual_inbound(client)
            assert validate_message(lst) == []
            (chain,) = app_chains(lst)  # STRICT: TLS only
            assert chain.filter_chain_match.transport_protocol == "tls"
            ctx = unpack(chain.transport_socket.typed_config)
            assert ctx.require_client_certificate.value is True
            hcm = unpack(chain.filters[-1].typed_config)
            names = [f.name for f in hcm.http_filters]
            assert names[:3] == [
                "istio.metadata_exchange", "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"
            ]
            jwt = unpack(hcm.http_filters[1].typed_config)
            assert jwt.providers["origins-0"].local_jwks.inline_string == server.body
            rbac = unpack(hcm.http_filters[2].typed_config)
            assert list(rbac.rules.policies) == ["ns[default]-policy[require-jwt]-rule[0]"]

            # mTLS migration back: DISABLE mesh-wide → plaintext chains are pushed.
            text = (config / "mesh.yaml").read_text().replace("mode: STRICT", "mode: DISABLE")
            write(config / "mesh.yaml", text)

            def plaintext(c: AdsClient) -> bool:
                found = virtual_inbound(c)
                return found is not None and all(
                    ch.filter_chain_match.transport_protocol == "raw_buffer"
                    for ch in app_chains(found)
                )

            await client.wait_for(plaintext, timeout=10)
        finally:
            await client.stop()

    asyncio.run(scenario())
