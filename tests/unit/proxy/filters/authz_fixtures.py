"""Builders for the security filters' tests: Envoy RBAC / jwt_authn / ext_authz protos, RSA
keys and tokens, and a listener whose connection manager runs given HTTP filters."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, string_pb2, value_pb2
from google.protobuf import empty_pb2

from tests.unit.proxy.http_fixtures import http_listener, pack

RBAC_NAME = "envoy.filters.http.rbac"


def exact(v: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=v)


def prefix(v: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(prefix=v)


def perm_path(m: string_pb2.StringMatcher) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=m))


def perm_method(method: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=rc.HeaderMatcher(name=":method", string_match=exact(method)))


ANY_PERM = rbac_pb2.Permission(any=True)
ANY_PRINCIPAL = rbac_pb2.Principal(any=True)


def policy(perms: Sequence[rbac_pb2.Permission] = (ANY_PERM,),
           principals: Sequence[rbac_pb2.Principal] = (ANY_PRINCIPAL,)) -> rbac_pb2.Policy:
    return rbac_pb2.Policy(permissions=list(perms), principals=list(principals))


def rbac(action: int, **policies: rbac_pb2.Policy) -> rbac_pb2.RBAC:
    return rbac_pb2.RBAC(action=action, policies=policies)


def http_rbac(rules: rbac_pb2.RBAC | None = None, shadow: rbac_pb2.RBAC | None = None,
              shadow_prefix: str = "") -> http_rbac_pb2.RBAC:
    msg = http_rbac_pb2.RBAC(shadow_rules_stat_prefix=shadow_prefix)
    if rules is not None:
        msg.rules.CopyFrom(rules)
    if shadow is not None:
        msg.shadow_rules.CopyFrom(shadow)
    return msg


def jwt_claim(claim: str, value: str) -> rbac_pb2.Principal:
    """Istio's requestPrincipals / claims form: metadata of jwt_authn, path [payload, claim]."""
    return rbac_pb2.Principal(metadata=metadata_pb2.MetadataMatcher(
        filter="envoy.filters.http.jwt_authn",
        path=[metadata_pb2.MetadataMatcher.PathSegment(key="payload"),
              metadata_pb2.MetadataMatcher.PathSegment(key=claim)],
        value=value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
            value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(
                one_of=value_pb2.ValueMatcher(string_match=exact(value)))),
            value_pb2.ValueMatcher(string_match=exact(value)),
        ]))))


# --- JWT ---------------------------------------------------------------------------------------


class Issuer:
    """An RSA signing key with its JWKS."""

    def __init__(self, iss: str = "https://issuer.example", kid: str = "k1") -> None:
        self.iss = iss
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=kid, alg="RS256", use="sig")
        self.jwks = json.dumps({"keys": [jwk]})

    def token(self, **claims: Any) -> str:
        body = {"iss": self.iss, "sub": "alice", "exp": int(time.time()) + 3600, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


def istio_jwt_authn(*providers: jwt_pb2.JwtProvider) -> jwt_pb2.JwtAuthentication:
    """What Istio generates for RequestAuthentication: origins-N, each {provider OR
    allow_missing}, ANDed, ORed with each provider alone."""
    names = [f"origins-{i}" for i in range(len(providers))]
    inner = [jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=[
        jwt_pb2.JwtRequirement(provider_name=n),
        jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())])) for n in names]
    if len(inner) == 1:
        requires = inner[0]
    else:
        requires = jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[*(jwt_pb2.JwtRequirement(provider_name=n) for n in names),
                          jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(
                              requirements=inner))]))
    return jwt_pb2.JwtAuthentication(
        providers=dict(zip(names, providers, strict=True)),
        rules=[jwt_pb2.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requires)],
        bypass_cors_preflight=True,
    )


def provider(iss: str, jwks: str, **fields: Any) -> jwt_pb2.JwtProvider:
    p = jwt_pb2.JwtProvider(issuer=iss, payload_in_metadata="payload", **fields)
    p.local_jwks.inline_string = jwks
    p.normalize_payload_in_metadata.space_delimited_claims.extend(["permission", "scope"])
    return p


# --- a listener running given filters -----------------------------------------------------------


def listener_with_filters(name: str, port: int, filters: Sequence[tuple[str, Any]],
                          **kw: Any) -> listener_pb2.Listener:
    """``http_listener`` with ``filters`` (name, typed message) put before the router."""
    base = http_listener(name, port, **kw)
    hcm = hcm_pb2.HttpConnectionManager()
    base.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    router = hcm.http_filters[-1]
    del hcm.http_filters[:]
    for fname, msg in filters:
        hcm.http_filters.add(name=fname, typed_config=pack(msg))
    hcm.http_filters.append(router)
    return listener_pb2.Listener(
        name=name, address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="127.0.0.1", port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                           typed_config=pack(hcm))])])
