"""One VirtualService HTTP route → Envoy ``Route`` (Istio's ``route/route.go``).

Matches (uri exact/prefix/regex → ``path``/``prefix``/``safe_regex``; headers, withoutHeaders
with ``invert_match``; queryParams; method → ``:method``; authority → ``:authority``; scheme →
``:scheme``), actions (weighted clusters, redirect, direct response, rewrite), header
operations, retries, timeouts, fault injection and CORS as per-route filter config,
mirroring, decorators. Static match conditions (port, sourceLabels, sourceNamespace,
gateways) are evaluated here for the proxy the config is built for: a route that cannot
apply to it is left out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2

from pistio.api import networking as net
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import MESH_GATEWAY, VirtualServiceConfig
from pistio.pilot.model.service import Service
from pistio.pilot.networking.route_clusters import destination_cluster, parse_subset_key
from pistio.pilot.networking.route_retry import convert_retry_policy, to_duration
from pistio.xds.any_codec import pack

DEFAULT_ROUTE_NAME = "default"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
HEADER_METHOD = ":method"
HEADER_AUTHORITY = ":authority"
HEADER_SCHEME = ":scheme"

# Istio's ``grpc.SupportedGRPCStatus``: gRPC status names → codes.
GRPC_STATUS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_REDIRECT_CODES = {
    0: rc.RedirectAction.MOVED_PERMANENTLY,
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
NO_TIMEOUT = duration_pb2.Duration(seconds=0)
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# (destination, resolved host) → consistent-hash policy, or None.
HashLookup = Callable[[net.Destination, str], rc.RouteAction.HashPolicy | None]


@dataclass
class RouteContext:
    """What translating one VirtualService's routes for one proxy needs to know."""

    proxy: Proxy
    vs: VirtualServiceConfig
    listener_port: int
    # Resolves a (host, namespace) to an FQDN, finds services by FQDN.
    resolve: Callable[[str, str], str]
    service: Callable[[str], Service | None]
    hash_for: HashLookup = field(default=lambda _d, _h: None)
    gateways: frozenset[str] = frozenset({MESH_GATEWAY})
    default_retries: net.HTTPRetry | None = None


# --- matches ----------------------------------------------------------------------------


def string_matcher(match: net.StringMatch) -> string_pb2.StringMatcher | None:
    """Istio's ``ConvertToEnvoyMatch``."""
    if match.exact is not None:
        return string_pb2.StringMatcher(exact=match.exact)
    if match.prefix is not None:
        return string_pb2.StringMatcher(prefix=match.prefix)
    if match.regex is not None:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.regex))
    return None


def _is_present_match(match: net.StringMatch | None) -> bool:
    """An empty match, or the regex ``*`` (not RE2: Istio reads it as "header present")."""
    if match is None or (match.exact is None and match.prefix is None and match.regex is None):
        return True
    return match.regex == "*"


def header_matcher(name: str, match: net.StringMatch | None) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=name)
    if _is_present_match(match):
        out.present_match = True
        return out
    assert match is not None
    sm = string_matcher(match)
    if sm is not None:
        out.string_match.CopyFrom(sm)
    return out


def query_parameter_matcher(name: str, match: net.StringMatch) -> rc.QueryParameterMatcher:
    out = rc.QueryParameterMatcher(name=name)
    if _is_present_match(match):
        out.present_match = True
        return out
    sm = string_matcher(match)
    if sm is not None:
        out.string_match.CopyFrom(sm)
    return out


def translate_route_match(match: net.HTTPMatchRequest | None) -> rc.RouteMatch:
    """Istio's ``TranslateRouteMatch``. Headers are sorted by name, then the pseudo-headers
    for method, authority and scheme follow; query parameters are sorted by name."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    # TODO(jwt): "@request.auth.claims.*" header matches become dynamic metadata matchers
    # once RequestAuthentication lands.
    headers = [header_matcher(n, m) for n, m in match.headers.items()]
    for name, m in match.without_headers.items():
        hm = header_matcher(name, m)
        hm.invert_match = True
        if not _is_present_match(m):
            hm.treat_missing_header_as_empty = True
        headers.append(hm)
    headers.sort(key=lambda h: h.name)
    out.headers.extend(headers)
    if match.uri is not None:
        if match.uri.exact is not None:
            out.path = match.uri.exact
        elif match.uri.prefix is not None:
            out.prefix = match.uri.prefix
        elif match.uri.regex is not None:
            out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match.uri.regex))
    out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=not match.ignore_uri_case))
    if match.method is not None:
        out.headers.append(header_matcher(HEADER_METHOD, match.method))
    if match.authority is not None:
        out.headers.append(header_matcher(HEADER_AUTHORITY, match.authority))
    if match.scheme is not None:
        out.headers.append(header_matcher(HEADER_SCHEME, match.scheme))
    for name in sorted(match.query_params):
        out.query_parameters.append(query_parameter_matcher(name, match.query_params[name]))
    return out


def source_matches(
    match: net.HTTPMatchRequest | None, proxy: Proxy, gateways: frozenset[str], vs_ns: str
) -> bool:
    """Istio's ``sourceMatchHTTP``: match gateways, else sourceLabels and sourceNamespace."""
    if match is None:
        return True
    if match.gateways:
        return any(resolve_gateway_name(g, vs_ns) in gateways for g in match.gateways)
    if all(proxy.labels.get(k) == v for k, v in match.source_labels.items()):
        return not match.source_namespace or match.source_namespace == proxy.namespace
    return False


def resolve_gateway_name(name: str, namespace: str) -> str:
    """``mesh`` stays; ``gw`` → ``ns/gw``; ``./gw`` → ``ns/gw``; ``gw.ns.svc...`` → ``ns/gw``."""
    if name == MESH_GATEWAY:
        return name
    if "/" in name:
        ns, _, gw = name.partition("/")
        return f"{namespace}/{gw}" if ns == "." else name
    if "." not in name:
        return f"{namespace}/{name}"
    gw, _, rest = name.partition(".")
    return f"{rest.split('.', 1)[0]}/{gw}"


def is_catch_all_route(route: rc.Route) -> bool:
    """A route matching every request: prefix ``/`` or regex ``.*``, no header/query match."""
    m = route.match
    which = m.WhichOneof("path_specifier")
    catch_all = (
        (which == "prefix" and m.prefix == "/")
        or (which == "path_separated_prefix" and m.path_separated_prefix == "/")
        or (which == "safe_regex" and m.safe_regex.regex == ".*")
    )
    return catch_all and not m.headers and not m.query_parameters and not m.dynamic_metadata


# --- header operations ------------------------------------------------------------------


@dataclass
class HeaderOperations:
    request_to_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    response_to_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    request_to_remove: list[str] = field(default_factory=list)
    response_to_remove: list[str] = field(default_factory=list)
    authority: str = ""


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _header_options(
    headers: dict[str, str], append: bool
) -> tuple[list[base_pb2.HeaderValueOption], str]:
    authority = ""
    out = []
    for key in sorted(headers):
        value = headers[key]
        if _is_authority_header(key):
            authority = value  # becomes a host rewrite, not a header
        if _is_internal_header(key):
            continue
        out.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, value=value),
                append_action=_APPEND if append else _OVERWRITE,
            )
        )
    return out, authority


def translate_header_operations(headers: net.Headers) -> HeaderOperations:
    """Istio's ``TranslateHeadersOperations``: ``set`` overwrites, ``add`` appends; a set or
    added Host/:authority becomes the route's host rewrite."""
    req = headers.request or net.HeaderOperations()
    resp = headers.response or net.HeaderOperations()
    req_set, set_authority = _header_options(req.set, append=False)
    req_add, add_authority = _header_options(req.add, append=True)
    resp_set, _ = _header_options(resp.set, append=False)
    resp_add, _ = _header_options(resp.add, append=True)
    return HeaderOperations(
        request_to_add=req_set + req_add,
        response_to_add=resp_set + resp_add,
        request_to_remove=[k for k in req.remove if not _is_internal_header(k)],
        response_to_remove=[k for k in resp.remove if not _is_internal_header(k)],
        authority=set_authority or add_authority,
    )


# --- actions ------------------------------------------------------------------------------


def apply_redirect(out: rc.Route, redirect: net.HTTPRedirect, port: int, is_tls: bool) -> None:
    """Istio's ``ApplyRedirect``; an unsupported redirect code leaves the route without an
    action (Envoy rejects it, as Istio's does)."""
    action = rc.RedirectAction(host_redirect=redirect.authority, path_redirect=redirect.uri)
    if redirect.scheme:
        action.scheme_redirect = redirect.scheme
    if redirect.port is not None or redirect.derive_port is not None:
        if redirect.port is not None:
            action.port_redirect = redirect.port
        elif redirect.derive_port == "FROM_REQUEST_PORT":
            # Envoy cannot derive the port per request; routes are built per listener port.
            action.port_redirect = port
        scheme = redirect.scheme or ("https" if is_tls else "http")
        if (action.port_redirect, scheme) in ((80, "http"), (443, "https")):
            action.port_redirect = 0
    code = _REDIRECT_CODES.get(redirect.redirect_code)
    if code is None:
        return
    action.response_code = code
    out.redirect.CopyFrom(action)


def apply_direct_response(out: rc.Route, direct: net.HTTPDirectResponse) -> None:
    action = rc.DirectResponseAction(status=direct.status)
    if direct.body is not None:
        if direct.body.string is not None:
            action.body.inline_string = direct.body.string
        elif direct.body.bytes is not None:
            action.body.inline_bytes = base64.b64decode(direct.body.bytes)
    out.direct_response.CopyFrom(action)


def set_timeout(action: rc.RouteAction, timeout: net.Duration | None, proxy: Proxy | None) -> None:
    """Istio's ``setTimeout``: no timeout unless the VirtualService sets one. Envoy gets the
    same value as ``max_grpc_timeout`` (so grpc-timeout headers are honoured); proxyless
    gRPC reads ``max_stream_duration`` instead."""
    action.timeout.CopyFrom(to_duration(timeout.seconds) if timeout is not None else NO_TIMEOUT)
    if proxy is not None and proxy.is_proxyless_grpc:
        action.max_stream_duration.max_stream_duration.CopyFrom(action.timeout)
    else:
        action.max_grpc_timeout.CopyFrom(action.timeout)


def fractional_percent(value: float) -> percent_pb2.FractionalPercent:
    """A ``Percent`` (0-100, fractional) as parts per million."""
    return percent_pb2.FractionalPercent(
        numerator=int(value * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def integer_percent(value: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(
        numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def mirror_percent(route: net.HTTPRoute) -> base_pb2.RuntimeFractionalPercent | None:
    """Istio's ``MirrorPercent``: mirrorPercentage, else mirrorPercent, else 100%; 0 = off."""
    if route.mirror_percentage is not None:
        if route.mirror_percentage.value > 0:
            return base_pb2.RuntimeFractionalPercent(
                default_value=fractional_percent(route.mirror_percentage.value)
            )
        return None
    if route.mirror_percent is not None:
        if route.mirror_percent > 0:
            return base_pb2.RuntimeFractionalPercent(
                default_value=integer_percent(route.mirror_percent)
            )
        return None
    return base_pb2.RuntimeFractionalPercent(default_value=integer_percent(100))


def mirror_policy_percent(
    mirror: net.HTTPMirrorPolicy,
) -> base_pb2.RuntimeFractionalPercent | None:
    if mirror.percentage is not None:
        if mirror.percentage.value > 0:
            return base_pb2.RuntimeFractionalPercent(
                default_value=fractional_percent(mirror.percentage.value)
            )
        return None
    return base_pb2.RuntimeFractionalPercent(default_value=integer_percent(100))


def translate_fault(fault: net.HTTPFaultInjection | None) -> fault_pb2.HTTPFault | None:
    """Istio's ``TranslateFault``: fixed delays and HTTP/gRPC aborts; exponential delays are
    not supported (dropped, as Istio does)."""
    if fault is None:
        return None
    out = fault_pb2.HTTPFault()
    has = False
    if fault.delay is not None and fault.delay.fixed_delay is not None:
        delay = out.delay
        if fault.delay.percentage is not None:
            delay.percentage.CopyFrom(fractional_percent(fault.delay.percentage.value))
        else:
            delay.percentage.CopyFrom(integer_percent(fault.delay.percent))
        delay.fixed_delay.CopyFrom(to_duration(fault.delay.fixed_delay.seconds))
        has = True
    abort = fault.abort
    if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
        out_abort = out.abort
        if abort.percentage is not None:
            out_abort.percentage.CopyFrom(fractional_percent(abort.percentage.value))
        if abort.http_status is not None:
            out_abort.http_status = abort.http_status
        else:
            out_abort.grpc_status = GRPC_STATUS.get(str(abort.grpc_status), 2)
        has = True
    return out if has else None


def translate_cors(cors: net.CorsPolicy) -> cors_pb2.CorsPolicy:
    """Istio's ``TranslateCORSPolicy`` (per-route config of ``envoy.filters.http.cors``)."""
    out = cors_pb2.CorsPolicy()
    out.forward_not_matching_preflights.value = cors.unmatched_preflights != "IGNORE"
    if cors.allow_origins:
        for origin in cors.allow_origins:
            sm = string_matcher(origin)
            if sm is not None:
                out.allow_origin_string_match.append(sm)
    elif cors.allow_origin:
        out.allow_origin_string_match.extend(
            string_pb2.StringMatcher(exact=o) for o in cors.allow_origin
        )
    out.filter_enabled.default_value.CopyFrom(integer_percent(100))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    out.allow_headers = ",".join(cors.allow_headers)
    out.allow_methods = ",".join(cors.allow_methods)
    out.expose_headers = ",".join(cors.expose_headers)
    if cors.max_age is not None:
        out.max_age = str(int(cors.max_age.seconds))
    return out


def route_operation(route: rc.Route, vs_name: str, port: int) -> str:
    """Istio's ``GetRouteOperation``: ``host:port/path`` for a single cluster, else
    ``vsname:port/path`` (the decorator's tracing operation name)."""
    m = route.match
    which = m.WhichOneof("path_specifier")
    path = "/*"
    if which == "prefix":
        path = m.prefix + "*"
    elif which == "path":
        path = m.path
    elif which == "safe_regex":
        path = m.safe_regex.regex
    if route.WhichOneof("action") == "route" and route.route.cluster:
        key = parse_subset_key(route.route.cluster)
        if key is not None:
            return f"{key[3]}:{key[1]}{path}"
    return f"{vs_name}:{port}{path}"


def config_metadata(vs: VirtualServiceConfig) -> base_pb2.Metadata:
    """Istio's ``BuildConfigInfoMetadata``: which resource a route came from."""
    api_version = vs.resource.doc.api_version or "networking.istio.io/v1"
    path = f"/apis/{api_version}/namespaces/{vs.namespace}/virtual-service/{vs.name}"
    md = base_pb2.Metadata()
    md.filter_metadata["istio"].CopyFrom(struct_pb2.Struct(fields={"config": _str_value(path)}))
    return md


def _str_value(text: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=text)


# --- whole routes -------------------------------------------------------------------------


def translate_route(
    ctx: RouteContext, route: net.HTTPRoute, match: net.HTTPMatchRequest | None, ns: str
) -> rc.Route | None:
    """Istio's ``translateRoute``; None when a static condition excludes this proxy/port.

    ``ns`` is the namespace the route's short host names resolve in (the delegate's for a
    route merged from a delegate VirtualService).
    """
    if match is not None and match.port and match.port != ctx.listener_port:
        return None
    if not source_matches(match, ctx.proxy, ctx.gateways, ctx.vs.namespace):
        return None
    name = route.name
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    out = rc.Route(name=name, match=translate_route_match(match))
    out.metadata.CopyFrom(config_metadata(ctx.vs))
    if match is not None and match.stat_prefix:
        out.stat_prefix = match.stat_prefix
    authority = ""
    if route.headers is not None:
        ops = translate_header_operations(route.headers)
        out.request_headers_to_add.extend(ops.request_to_add)
        out.response_headers_to_add.extend(ops.response_to_add)
        out.request_headers_to_remove.extend(ops.request_to_remove)
        out.response_headers_to_remove.extend(ops.response_to_remove)
        authority = ops.authority
    if route.redirect is not None:
        apply_redirect(out, route.redirect, ctx.listener_port, is_tls=False)
    elif route.direct_response is not None:
        apply_direct_response(out, route.direct_response)
    else:
        _apply_route_destination(ctx, out, route, authority, ns)
    out.decorator.operation = route_operation(out, ctx.vs.name, ctx.listener_port)
    fault = translate_fault(route.fault)
    if fault is not None:
        out.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    if route.cors_policy is not None:
        out.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(translate_cors(route.cors_policy)))
    return out


def _apply_route_destination(
    ctx: RouteContext, out: rc.Route, route: net.HTTPRoute, authority: str, ns: str
) -> None:
    action = out.route
    set_timeout(action, route.timeout, ctx.proxy)
    if route.rewrite is not None:
        rewrite = route.rewrite
        if rewrite.uri_regex_rewrite is not None:
            action.regex_rewrite.pattern.regex = rewrite.uri_regex_rewrite.match
            action.regex_rewrite.substitution = rewrite.uri_regex_rewrite.rewrite
        elif rewrite.uri:
            action.prefix_rewrite = rewrite.uri
        if rewrite.authority:
            authority = rewrite.authority
    if authority:
        action.host_rewrite_literal = authority
    if route.mirror is not None:
        percent = mirror_percent(route)
        if percent is not None:
            action.request_mirror_policies.append(_mirror_policy(ctx, route.mirror, percent, ns))
    for mirror in route.mirrors:
        percent = mirror_policy_percent(mirror)
        if percent is not None and mirror.destination is not None:
            action.request_mirror_policies.append(
                _mirror_policy(ctx, mirror.destination, percent, ns)
            )
    consistent_hash = False
    if len(route.route) == 1:
        dst = route.route[0]
        host = ctx.resolve(dst.destination.host, ns) if dst.destination else ""
        action.cluster = _cluster_for(ctx, dst.destination, host)
        if dst.headers is not None:
            ops = translate_header_operations(dst.headers)
            out.request_headers_to_add.extend(ops.request_to_add)
            out.request_headers_to_remove.extend(ops.request_to_remove)
            out.response_headers_to_add.extend(ops.response_to_add)
            out.response_headers_to_remove.extend(ops.response_to_remove)
            if ops.authority and action.WhichOneof("host_rewrite_specifier") is None:
                action.host_rewrite_literal = ops.authority
        policy = ctx.hash_for(dst.destination, host) if dst.destination else None
        if policy is not None:
            action.hash_policy.append(policy)
            consistent_hash = True
    else:
        weighted = action.weighted_clusters
        for dst in route.route:
            if dst.weight == 0:
                continue  # Istio drops zero weights when there are other destinations
            host = ctx.resolve(dst.destination.host, ns) if dst.destination else ""
            cw = weighted.clusters.add(name=_cluster_for(ctx, dst.destination, host))
            cw.weight.value = dst.weight
            if dst.headers is not None:
                ops = translate_header_operations(dst.headers)
                cw.request_headers_to_add.extend(ops.request_to_add)
                cw.request_headers_to_remove.extend(ops.request_to_remove)
                cw.response_headers_to_add.extend(ops.response_to_add)
                cw.response_headers_to_remove.extend(ops.response_to_remove)
                if ops.authority:
                    cw.host_rewrite_literal = ops.authority
            policy = ctx.hash_for(dst.destination, host) if dst.destination else None
            if policy is not None:
                action.hash_policy.append(policy)
    retries = route.retries if route.retries is not None else ctx.default_retries
    retry_policy = convert_retry_policy(retries, consistent_hash)
    if retry_policy is not None:
        action.retry_policy.CopyFrom(retry_policy)


def _cluster_for(ctx: RouteContext, destination: net.Destination | None, host: str) -> str:
    return destination_cluster(destination, ctx.service(host), ctx.listener_port, host)


def _mirror_policy(
    ctx: RouteContext,
    destination: net.Destination,
    percent: base_pb2.RuntimeFractionalPercent,
    ns: str,
) -> rc.RouteAction.RequestMirrorPolicy:
    host = ctx.resolve(destination.host, ns)
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=_cluster_for(ctx, destination, host),
        runtime_fraction=percent,
        trace_sampled=wrappers_pb2.BoolValue(value=False),
    )


def build_default_route(cluster: str, operation: str) -> rc.Route:
    """A catch-all route to one cluster, named ``default`` (Istio's ``buildDefaultHTTPRoute``)."""
    out = rc.Route(name=DEFAULT_ROUTE_NAME, match=translate_route_match(None))
    out.decorator.operation = operation
    out.route.cluster = cluster
    return out


def build_default_outbound_route(
    cluster: str,
    operation: str,
    default_retries: net.HTTPRetry | None = None,
    hash_policy: rc.RouteAction.HashPolicy | None = None,
) -> rc.Route:
    """Istio's ``BuildDefaultHTTPOutboundRoute``: the default retry policy, no timeout.

    The default route uses the default retry policy with the previous-hosts predicate even
    with a hash policy (Istio computes the retry policy before adding the hash)."""
    out = build_default_route(cluster, operation)
    retry = convert_retry_policy(default_retries, False)
    if retry is not None:
        out.route.retry_policy.CopyFrom(retry)
    set_timeout(out.route, None, None)
    if hash_policy is not None:
        out.route.hash_policy.append(hash_policy)
    return out


def build_default_inbound_route(cluster: str, operation: str) -> rc.Route:
    """Istio's ``BuildDefaultHTTPInboundRoute``: no timeout, no stream duration limit."""
    out = build_default_route(cluster, operation)
    out.route.timeout.CopyFrom(NO_TIMEOUT)
    out.route.max_stream_duration.max_stream_duration.CopyFrom(NO_TIMEOUT)
    out.route.max_stream_duration.grpc_timeout_header_max.CopyFrom(NO_TIMEOUT)
    return out


def trace_operation(host: str, port: int) -> str:
    """Istio's ``telemetry.TraceOperation``: ``host:port/*``."""
    return f"{host}:{port}/*"
