"""Kubernetes Gateway API (group ``gateway.networking.k8s.io``): classes, gateways and routes.

Attribute names follow the same convention as the Istio models (snake_case in Python, the
API's camelCase in YAML). Fields the API marks required have no default, so a missing one is
a schema error; optional scalars default to None so that "unset" stays distinguishable, as
CEL rules (``has(...)``) need.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pistio.api.base import IstioModel, Struct
from pistio.api.kube import LabelSelector
from pistio.api.registry import register_spec_kind

GROUP = "gateway.networking.k8s.io"


class GatewayModel(IstioModel):
    """A Gateway API object part; ``field: null`` means unset, as in any Kubernetes object."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# --- References -------------------------------------------------------------------------------


class ParentReference(GatewayModel):
    """A route's parent: a Gateway (optionally one listener or port of it) or a Service."""

    group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: int | None = None


class BackendObjectReference(GatewayModel):
    """A backend object: a Service (port required) or another kind."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None


class LocalObjectReference(GatewayModel):
    """A reference to an object in the route's namespace (used by ExtensionRef filters)."""

    group: str
    kind: str
    name: str


class SecretObjectReference(GatewayModel):
    """A reference to a TLS certificate (a Secret unless kind says otherwise)."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None


class ParametersReference(GatewayModel):
    """Implementation-specific parameters of a GatewayClass or Gateway."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


# --- GatewayClass -----------------------------------------------------------------------------


class GatewayClassSpec(GatewayModel):
    """A GatewayClass: which controller implements Gateways of this class."""

    controller_name: str
    parameters_ref: ParametersReference | None = None
    description: str | None = None


# --- Gateway ----------------------------------------------------------------------------------


class RouteNamespaces(GatewayModel):
    """Which namespaces may attach routes to a listener."""

    from_: Literal["All", "Same", "Selector", "None"] | None = Field(None, alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(GatewayModel):
    """A route kind a listener accepts."""

    group: str | None = None
    kind: str


class AllowedRoutes(GatewayModel):
    """The routes a listener accepts: by namespace and by kind."""

    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class ObjectReferenceWithNamespace(GatewayModel):
    """A reference to a namespaced object (a CA bundle ConfigMap, for example)."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


class FrontendTLSValidation(GatewayModel):
    """How a listener validates client certificates."""

    ca_certificate_refs: list[ObjectReferenceWithNamespace] = Field(default_factory=list)
    mode: Literal["AllowValidOnly", "AllowInsecureFallback"] | None = None


class GatewayTLSConfig(GatewayModel):
    """TLS settings of a listener: terminate with certificates, or pass through."""

    mode: Literal["Terminate", "Passthrough"] | None = None
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list)
    frontend_validation: FrontendTLSValidation | None = None
    options: dict[str, str] = Field(default_factory=dict)


class Listener(GatewayModel):
    """A Gateway listener: name, port, protocol, optional hostname and TLS."""

    name: str
    hostname: str | None = None
    port: int
    protocol: str
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewaySpecAddress(GatewayModel):
    """An address requested for a Gateway."""

    type: str | None = None
    value: str | None = None


class LocalParametersReference(GatewayModel):
    """Parameters in the Gateway's namespace."""

    group: str
    kind: str
    name: str


class GatewayInfrastructure(GatewayModel):
    """Labels, annotations and parameters for the resources a Gateway is deployed as."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    parameters_ref: LocalParametersReference | None = None


class ListenerNamespaces(GatewayModel):
    """Which namespaces may attach ListenerSets to a Gateway."""

    from_: Literal["All", "Same", "Selector", "None"] | None = Field(None, alias="from")
    selector: LabelSelector | None = None


class AllowedListeners(GatewayModel):
    """Which ListenerSets may attach to a Gateway."""

    namespaces: ListenerNamespaces | None = None


class GatewayBackendTLS(GatewayModel):
    """The client certificate a Gateway presents to backends."""

    client_certificate_ref: SecretObjectReference | None = None


class GatewaySpec(GatewayModel):
    """A Gateway: listeners bound to addresses, implemented by its class's controller."""

    gateway_class_name: str
    listeners: list[Listener]
    addresses: list[GatewaySpecAddress] = Field(default_factory=list)
    infrastructure: GatewayInfrastructure | None = None
    allowed_listeners: AllowedListeners | None = None
    backend_tls: GatewayBackendTLS | None = Field(None, alias="backendTLS")
    # Gateway-wide TLS (frontend/backend): experimental and still changing shape.
    tls: Struct | None = None
    default_scope: str | None = None


# --- HTTPRoute --------------------------------------------------------------------------------

HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPPathMatch(GatewayModel):
    """How a request path is matched."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"] | None = None
    value: str | None = None


class HTTPHeaderMatch(GatewayModel):
    """A request header a route rule matches."""

    type: Literal["Exact", "RegularExpression"] | None = None
    name: str
    value: str


class HTTPQueryParamMatch(GatewayModel):
    """A query parameter a route rule matches."""

    type: Literal["Exact", "RegularExpression"] | None = None
    name: str
    value: str


class HTTPRouteMatch(GatewayModel):
    """The conditions of a route rule: path, headers, query parameters, method (all must hold)."""

    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)
    query_params: list[HTTPQueryParamMatch] = Field(default_factory=list)
    method: HTTPMethod | None = None


class HTTPHeader(GatewayModel):
    """A header name and value to set or add."""

    name: str
    value: str


class HTTPHeaderFilter(GatewayModel):
    """Modify request or response headers: set, add, remove."""

    set: list[HTTPHeader] = Field(default_factory=list)
    add: list[HTTPHeader] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class HTTPPathModifier(GatewayModel):
    """Replace the full path or the matched prefix."""

    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(GatewayModel):
    """Answer with a redirect."""

    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: Literal[301, 302, 303, 307, 308] | None = None


class HTTPURLRewriteFilter(GatewayModel):
    """Rewrite the host and/or path before forwarding."""

    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(GatewayModel):
    """A fraction of requests (numerator over denominator)."""

    numerator: int
    denominator: int | None = None


class HTTPRequestMirrorFilter(GatewayModel):
    """Mirror requests to another backend."""

    backend_ref: BackendObjectReference
    percent: int | None = None
    fraction: Fraction | None = None


class HTTPCORSFilter(GatewayModel):
    """Cross-origin resource sharing policy."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_credentials: bool | None = None
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: int | None = None


class HTTPRouteFilter(GatewayModel):
    """One filter of a route rule or backend: ``type`` names which config field is set."""

    type: Literal[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
        "ExternalAuth",
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    extension_ref: LocalObjectReference | None = None
    cors: HTTPCORSFilter | None = None
    # External authorization is experimental; its shape is still changing.
    external_auth: Struct | None = None


class HTTPBackendRef(GatewayModel):
    """A weighted backend of a route rule, with its own filters."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: list[HTTPRouteFilter] = Field(default_factory=list)


class HTTPRouteTimeouts(GatewayModel):
    """Request and per-backend-request timeouts (Gateway API duration strings)."""

    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRetry(GatewayModel):
    """Retry policy of a route rule."""

    codes: list[int] = Field(default_factory=list)
    attempts: int | None = None
    backoff: str | None = None


class CookieConfig(GatewayModel):
    """Cookie settings of session persistence."""

    lifetime_type: Literal["Permanent", "Session"] | None = None


class SessionPersistence(GatewayModel):
    """Session affinity by cookie or header."""

    session_name: str | None = None
    absolute_timeout: str | None = None
    idle_timeout: str | None = None
    type: Literal["Cookie", "Header"] | None = None
    cookie_config: CookieConfig | None = None


class HTTPRouteRule(GatewayModel):
    """A route rule: matches, filters, backends, timeouts."""

    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=list)
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(GatewayModel):
    """An HTTPRoute: how HTTP requests arriving at its parents reach backends."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=list)
    use_default_gateways: str | None = None


# --- GRPCRoute --------------------------------------------------------------------------------


class GRPCMethodMatch(GatewayModel):
    """The gRPC service and method a rule matches."""

    type: Literal["Exact", "RegularExpression"] | None = None
    service: str | None = None
    method: str | None = None


class GRPCHeaderMatch(GatewayModel):
    """A gRPC request header (metadata) a rule matches."""

    type: Literal["Exact", "RegularExpression"] | None = None
    name: str
    value: str


class GRPCRouteMatch(GatewayModel):
    """The conditions of a gRPC route rule."""

    method: GRPCMethodMatch | None = None
    headers: list[GRPCHeaderMatch] = Field(default_factory=list)


class GRPCRouteFilter(GatewayModel):
    """One filter of a gRPC route rule or backend."""

    type: Literal[
        "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: LocalObjectReference | None = None


class GRPCBackendRef(GatewayModel):
    """A weighted backend of a gRPC route rule."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None
    filters: list[GRPCRouteFilter] = Field(default_factory=list)


class GRPCRouteRule(GatewayModel):
    """A gRPC route rule."""

    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=list)
    filters: list[GRPCRouteFilter] = Field(default_factory=list)
    backend_refs: list[GRPCBackendRef] = Field(default_factory=list)
    session_persistence: SessionPersistence | None = None


class GRPCRouteSpec(GatewayModel):
    """A GRPCRoute: routing of gRPC calls by service and method."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=list)
    use_default_gateways: str | None = None


# --- TCPRoute, TLSRoute, UDPRoute -------------------------------------------------------------


class BackendRef(GatewayModel):
    """A weighted backend of a TCP, TLS or UDP route."""

    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None


class L4RouteRule(GatewayModel):
    """A TCPRoute, TLSRoute or UDPRoute rule: the backends connections are forwarded to."""

    name: str | None = None
    backend_refs: list[BackendRef] = Field(default_factory=list)


class TCPRouteSpec(GatewayModel):
    """A TCPRoute: plain TCP forwarding from a listener."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    rules: list[L4RouteRule]
    use_default_gateways: str | None = None


class TLSRouteSpec(GatewayModel):
    """A TLSRoute: TLS passthrough routing by SNI hostname."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[L4RouteRule]
    use_default_gateways: str | None = None


class UDPRouteSpec(GatewayModel):
    """A UDPRoute: UDP forwarding from a listener."""

    parent_refs: list[ParentReference] = Field(default_factory=list)
    rules: list[L4RouteRule]
    use_default_gateways: str | None = None


# --- ReferenceGrant ---------------------------------------------------------------------------


class ReferenceGrantFrom(GatewayModel):
    """Objects (group, kind, namespace) allowed to refer into this namespace."""

    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(GatewayModel):
    """Objects in this namespace that may be referred to."""

    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(GatewayModel):
    """A ReferenceGrant: permission for cross-namespace references."""

    from_: list[ReferenceGrantFrom] = Field(alias="from")
    to: list[ReferenceGrantTo]


GatewayClass = register_spec_kind(
    GROUP,
    "GatewayClass",
    ("v1", "v1beta1"),
    GatewayClassSpec,
    namespaced=False,
    plural="gatewayclasses",
    short_names=("gc",),
)
Gateway = register_spec_kind(GROUP, "Gateway", ("v1", "v1beta1"), GatewaySpec, short_names=("gtw",))
HTTPRoute = register_spec_kind(GROUP, "HTTPRoute", ("v1", "v1beta1"), HTTPRouteSpec)
GRPCRoute = register_spec_kind(GROUP, "GRPCRoute", ("v1", "v1alpha2"), GRPCRouteSpec)
TCPRoute = register_spec_kind(GROUP, "TCPRoute", ("v1alpha2", "v1"), TCPRouteSpec)
TLSRoute = register_spec_kind(GROUP, "TLSRoute", ("v1alpha2", "v1alpha3", "v1"), TLSRouteSpec)
UDPRoute = register_spec_kind(GROUP, "UDPRoute", ("v1alpha2",), UDPRouteSpec)
ReferenceGrant = register_spec_kind(
    GROUP,
    "ReferenceGrant",
    ("v1beta1", "v1alpha2", "v1"),
    ReferenceGrantSpec,
    short_names=("refgrant",),
)
