"""RequestAuthentication → envoy.filters.http.jwt_authn: providers, requirements, token
locations, outputs, and JWKS fetched by the discovery over real HTTP (cache, fake JWKS on
failure, refresh, OpenID discovery)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from google.protobuf import json_format

from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security.jwks import JwksResolver, fake_jwks
from pistio.pilot.security.proto_validate import validate_message
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import (
    bookinfo_endpoints,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)
from tests.unit.pilot.security.helpers import chains_for_port, http_filters, inbound
from tests.unit.pilot.security.jwks_server import JwksServer, jwks, jwks_server

INLINE = jwks("inline")


def request_authn(name: str, rules: str, selector: str = "", ns: str = "default") -> str:
    sel = f"  selector:\n    matchLabels: {{app: {selector}}}\n" if selector else ""
    return (
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{sel}  jwtRules:\n{rules}"
    )


def jwt_config(
    yaml: str, resolver: JwksResolver | None = None, app: str = "productpage"
) -> jwt_pb2.JwtAuthentication | None:
    push = PushContext(
        parse_configs(yaml), bookinfo_services(), bookinfo_endpoints(), jwks_resolver=resolver
    )
    chain = chains_for_port(inbound(push=push, proxy=sidecar_proxy(app, None)), 9080)[-1]
    found = [f for f in http_filters(chain) if f.name == "envoy.filters.http.jwt_authn"]
    if not found:
        return None
    (f,) = found
    cfg = unpack(f.typed_config)
    assert validate_message(cfg) == []
    return cfg


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with jwks_server() as s:
        yield s


def test_single_provider_with_every_option() -> None:
    rules = f"""  - issuer: testing@secure.istio.io
    audiences: [bookstore]
    jwks: '{INLINE}'
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: [my_token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - header: x-jwt-group
      claim: group
    spaceDelimitedClaims: [roles]
"""
    cfg = jwt_config(request_authn("jwt", rules, selector="productpage"))
    got = json_format.MessageToDict(cfg)
    assert got == {
        "providers": {
            "origins-0": {
                "issuer": "testing@secure.istio.io",
                "audiences": ["bookstore"],
                "localJwks": {"inlineString": INLINE},
                "forward": True,
                "fromHeaders": [{"name": "x-jwt-assertion", "valuePrefix": "Bearer "}],
                "fromParams": ["my_token"],
                "fromCookies": ["session"],
                "forwardPayloadHeader": "x-jwt-payload",
                "payloadInMetadata": "payload",
                "normalizePayloadInMetadata": {
                    "spaceDelimitedClaims": ["permission", "roles", "scope"]
                },
                "claimToHeaders": [{"headerName": "x-jwt-group", "claimName": "group"}],
            }
        },
        "rules": [
            {
                "match": {"prefix": "/"},
                "requires": {
                    "requiresAny": {
                        "requirements": [{"providerName": "origins-0"}, {"allowMissing": {}}]
                    }
                },
            }
        ],
        "bypassCorsPreflight": True,
    }
    # The selector: reviews has no JWT filter.
    assert jwt_config(request_authn("jwt", rules, selector="productpage"), app="reviews") is None


def test_several_providers_sorted_by_issuer() -> None:
    yaml = "---\n".join(
        [
            request_authn("b", f"  - issuer: zeta\n    jwks: '{INLINE}'\n"),
            request_authn("mesh", f"  - issuer: alpha\n    jwks: '{INLINE}'\n", ns="istio-system"),
        ]
    )
    cfg = jwt_config(yaml)
    assert [cfg.providers[n].issuer for n in ("origins-0", "origins-1")] == ["alpha", "zeta"]
    requires = json_format.MessageToDict(cfg.rules[0].requires)
    optional = [
        {"requiresAny": {"requirements": [{"providerName": f"origins-{i}"}, {"allowMissing": {}}]}}
        for i in (0, 1)
    ]
    assert requires == {
        "requiresAny": {
            "requirements": [
                {"providerName": "origins-0"},
                {"providerName": "origins-1"},
                {"requiresAll": {"requirements": optional}},
            ]
        }
    }


def test_jwks_uri_is_fetched_and_inlined(server: JwksServer) -> None:
    resolver = JwksResolver()
    cfg = jwt_config(
        request_authn("jwt", f"  - issuer: {server.url}\n    jwksUri: {server.jwks_uri}\n"),
        resolver,
    )
    assert cfg.providers["origins-0"].local_jwks.inline_string == server.body
    assert server.requests == 1
    # Cached: the next push context does not fetch again.
    jwt_config(
        request_authn("jwt", f"  - issuer: {server.url}\n    jwksUri: {server.jwks_uri}\n"),
        resolver,
    )
    assert server.requests == 1


def test_openid_discovery_when_no_jwks_uri(server: JwksServer) -> None:
    cfg = jwt_config(request_authn("jwt", f"  - issuer: {server.url}\n"), JwksResolver())
    assert json.loads(cfg.providers["origins-0"].local_jwks.inline_string)["keys"][0]["kid"] == "k1"


def test_unreachable_jwks_gives_fake_keys_then_recovers(server: JwksServer) -> None:
    server.status = 500
    changes: list[int] = []
    resolver = JwksResolver(on_change=lambda: changes.append(1), retry_interval=0.05)
    yaml = request_authn("jwt", f"  - issuer: {server.url}\n    jwksUri: {server.jwks_uri}\n")
    cfg = jwt_config(yaml, resolver)
    # No key a real token is signed with: tokens fail verification (401), never pass.
    assert cfg.providers["origins-0"].local_jwks.inline_string == fake_jwks(server.jwks_uri)
    server.status = 200

    async def refresh_until_changed() -> None:
        task = asyncio.create_task(resolver.run())
        try:
            async with asyncio.timeout(10):
                while not changes:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()

    asyncio.run(refresh_until_changed())
    assert jwt_config(yaml, resolver).providers["origins-0"].local_jwks.inline_string == server.body


def test_refresh_notices_rotated_keys(server: JwksServer) -> None:
    resolver = JwksResolver(refresh_interval=0.0)
    assert resolver.resolve("iss", server.jwks_uri) == jwks("k1")
    assert resolver.refresh_once() is False  # same keys
    server.body = jwks("k2")
    assert resolver.refresh_once() is True
    assert resolver.resolve("iss", server.jwks_uri) == jwks("k2")


def test_unused_entries_are_evicted(server: JwksServer) -> None:
    resolver = JwksResolver(eviction=0.0, refresh_interval=3600)
    resolver.resolve("iss", server.jwks_uri)
    assert resolver.due(now=10**12) == []
    resolver.resolve("iss", server.jwks_uri)
    assert server.requests == 2  # evicted, so fetched again
