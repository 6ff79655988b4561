"""RequestAuthentication → ``envoy.filters.http.jwt_authn`` (Istio's
``authn.convertToEnvoyJwtConfig``).

Every jwtRule of every RequestAuthentication that applies to the workload becomes one
provider ``origins-<i>`` (rules sorted by issuer), with the JWKS inlined
(``local_jwks.inline_string``: the rule's ``jwks`` or what the discovery fetched from
``jwksUri``). The requirement lets a request without a token pass (authorization decides)
and rejects a present but invalid one:

- one provider: ``requires_any [provider, allow_missing]``;
- several: ``requires_any [p0, p1, ..., requires_all [requires_any [p_i, allow_missing]...]]``
  (the outer alternatives cover providers sharing a token location).

Each provider writes the verified payload to dynamic metadata ``envoy.filters.http.jwt_authn``
→ ``payload`` (``payload_in_metadata``), with ``scope`` and ``permission`` (plus
``spaceDelimitedClaims``) split into lists, which is what RBAC matches
(``requestPrincipals`` = ``iss/sub``, ``request.auth.claims[...]``).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import empty_pb2

from pistio.api import security as sec
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security.jwks import DEFAULT_TIMEOUT, JwksResolver, default_resolver
from pistio.pilot.security.policies import REQUEST_AUTHENTICATION, policies_for_workload
from pistio.xds.any_codec import pack

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_IN_METADATA = "payload"
DEFAULT_SPACE_DELIMITED_CLAIMS = ("permission", "scope")


def jwt_rules_for(push: PushContext, namespace: str, labels: dict[str, str]) -> list[sec.JWTRule]:
    rules: list[sec.JWTRule] = []
    for res in policies_for_workload(push, REQUEST_AUTHENTICATION, namespace, labels):
        rules.extend(res.spec.jwt_rules)
    return sorted(rules, key=lambda r: r.issuer)  # stable: Istio's SortBy issuer


def resolver_of(push: PushContext) -> JwksResolver:
    found = getattr(push, "jwks_resolver", None)
    return found if isinstance(found, JwksResolver) else default_resolver()


def _provider(push: PushContext, rule: sec.JWTRule, clear_route_cache: bool) -> jwt_pb2.JwtProvider:
    provider = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=rule.audiences,
        forward=rule.forward_original_token,
        forward_payload_header=rule.output_payload_to_header,
        payload_in_metadata=PAYLOAD_IN_METADATA,
        clear_route_cache=clear_route_cache,
        from_params=rule.from_params,
        from_cookies=rule.from_cookies,
    )
    claims = sorted(set(rule.space_delimited_claims) | set(DEFAULT_SPACE_DELIMITED_CLAIMS))
    provider.normalize_payload_in_metadata.space_delimited_claims.extend(claims)
    for c in rule.output_claim_to_headers:
        provider.claim_to_headers.add(header_name=c.header, claim_name=c.claim)
    for h in rule.from_headers:
        provider.from_headers.add(name=h.name, value_prefix=h.prefix)
    if rule.jwks:
        jwks = rule.jwks
    else:
        timeout = rule.timeout.seconds if rule.timeout is not None else DEFAULT_TIMEOUT
        jwks = resolver_of(push).resolve(rule.issuer, rule.jwks_uri, timeout)
    provider.local_jwks.inline_string = jwks
    return provider


def _requires_provider(name: str) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(provider_name=name)


def build_jwt_authentication(
    push: PushContext, rules: list[sec.JWTRule], clear_route_cache: bool = False
) -> jwt_pb2.JwtAuthentication | None:
    if not rules:
        return None
    out = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    inner_and: list[jwt_pb2.JwtRequirement] = []
    outer_or: list[jwt_pb2.JwtRequirement] = []
    for i, rule in enumerate(rules):
        name = f"origins-{i}"
        out.providers[name].CopyFrom(_provider(push, rule, clear_route_cache))
        optional = jwt_pb2.JwtRequirement()
        optional.requires_any.requirements.extend(
            [_requires_provider(name), jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())]
        )
        inner_and.append(optional)
        outer_or.append(_requires_provider(name))
    rule = out.rules.add(match=rc.RouteMatch(prefix="/"))
    if len(inner_and) == 1:
        rule.requires.CopyFrom(inner_and[0])
    else:
        all_of = jwt_pb2.JwtRequirement()
        all_of.requires_all.requirements.extend(inner_and)
        rule.requires.requires_any.requirements.extend([*outer_or, all_of])
    return out


def jwt_http_filter(
    push: PushContext, namespace: str, labels: dict[str, str], sidecar: bool = True
) -> hcm_pb2.HttpFilter | None:
    """The JWT filter of a workload's inbound HTTP chains; None without RequestAuthentication.
    Gateways clear the route cache (claims may drive routing); sidecars do not."""
    cfg = build_jwt_authentication(push, jwt_rules_for(push, namespace, labels), not sidecar)
    if cfg is None:
        return None
    return hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(cfg))
