"""API model: security.istio.io — PeerAuthentication, RequestAuthentication, AuthorizationPolicy.

v1 and v1beta1 carry the same schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from pistio.api.base import Duration, IstioModel, proto_enum
from pistio.api.registry import register_spec_kind
from pistio.api.type_v1beta1 import PolicyTargetReference, WorkloadSelector

GROUP = "security.istio.io"
VERSIONS = ("v1", "v1beta1")

# --- PeerAuthentication ---------------------------------------------------------------------


def _port_key(value: Any) -> Any:
    # map<uint32, ...>: JSON writes the keys as strings, YAML usually as numbers.
    if isinstance(value, str):
        if not re.fullmatch(r"\d+", value):
            raise PydanticCustomError(
                "port_key", 'port "{value}" is not a number', {"value": value}
            )
        return int(value)
    return value


PortKey = Annotated[int, BeforeValidator(_port_key)]

MutualTLSMode = proto_enum("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


class MutualTLS(IstioModel):
    """PeerAuthentication.MutualTLS: the mTLS mode a workload accepts."""

    mode: MutualTLSMode = "UNSET"


class PeerAuthentication(IstioModel):
    """Istio's PeerAuthentication spec: which mTLS mode inbound traffic must use."""

    selector: WorkloadSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: dict[PortKey, MutualTLS] = Field(default_factory=dict)


# --- RequestAuthentication -------------------------------------------------------------------


class JWTHeader(IstioModel):
    """Istio's JWTHeader: a header a JWT is read from, with an optional prefix to strip."""

    name: str = ""
    prefix: str = ""


class ClaimToHeader(IstioModel):
    """Istio's ClaimToHeader: copy a verified JWT claim into a request header."""

    header: str = ""
    claim: str = ""


class JWTRule(IstioModel):
    """Istio's JWTRule: how to validate JWTs from one issuer."""

    issuer: str = ""
    audiences: list[str] = Field(default_factory=list)
    # The proto field is jwks_uri; its JSON name is jwksUri and the original spelling is
    # accepted too (the CRD lists both).
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    output_payload_to_header: str = ""
    from_cookies: list[str] = Field(default_factory=list)
    forward_original_token: bool = False
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    timeout: Duration | None = None
    space_delimited_claims: list[str] = Field(default_factory=list)


class RequestAuthentication(IstioModel):
    """Istio's RequestAuthentication spec: which JWTs a workload accepts."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    jwt_rules: list[JWTRule] = Field(default_factory=list)


# --- AuthorizationPolicy ----------------------------------------------------------------------


class Source(IstioModel):
    """Istio's authorization Source: who sends the request."""

    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    service_accounts: list[str] = Field(default_factory=list)
    not_service_accounts: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)


class Operation(IstioModel):
    """Istio's authorization Operation: what the request does (host, port, method, path)."""

    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    ports: list[str] = Field(default_factory=list)
    not_ports: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class Condition(IstioModel):
    """Istio's authorization Condition: an attribute key and the values it must (not) have."""

    key: str = ""
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class RuleFrom(IstioModel):
    """Rule.From: one set of request sources."""

    source: Source | None = None


class RuleTo(IstioModel):
    """Rule.To: one set of request operations."""

    operation: Operation | None = None


class Rule(IstioModel):
    """Istio's authorization Rule: sources, operations and conditions a request must match."""

    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class ExtensionProvider(IstioModel):
    """AuthorizationPolicy.ExtensionProvider: the external authorizer of a CUSTOM policy."""

    name: str = ""


AuthorizationAction = proto_enum("ALLOW", "DENY", "AUDIT", "CUSTOM")


class AuthorizationPolicy(IstioModel):
    """Istio's AuthorizationPolicy spec: access control on workloads."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    action: AuthorizationAction = "ALLOW"
    provider: ExtensionProvider | None = None


PeerAuthenticationObject = register_spec_kind(
    GROUP, "PeerAuthentication", VERSIONS, PeerAuthentication, short_names=("pa",)
)
RequestAuthenticationObject = register_spec_kind(
    GROUP, "RequestAuthentication", VERSIONS, RequestAuthentication, short_names=("ra",)
)
AuthorizationPolicyObject = register_spec_kind(
    GROUP,
    "AuthorizationPolicy",
    VERSIONS,
    AuthorizationPolicy,
    plural="authorizationpolicies",
    short_names=("ap",),
)
