"""Validation of VirtualService, as Istio's validating webhook applies it."""

from __future__ import annotations

import base64
import binascii
import math
import re
from http import HTTPStatus
from typing import Any

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    host_matches,
    host_subset_of,
    is_dns1123_label,
    is_ip,
    validate_fqdn,
    validate_http_header_name,
    validate_http_header_value,
    validate_ip_or_cidr,
    validate_percent,
    validate_percentage,
    validate_string_regexp,
    validate_wildcard_domain,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_destination,
    check_duration,
    check_export_to,
    check_labels,
    check_oneof,
    check_port,
    go_list,
)
from pistio.config.validation.registry import validates

MESH_GATEWAY = "mesh"
JWT_CLAIM_PREFIX = "@request.auth.claims."

# Values Envoy accepts in x-envoy-retry-on and x-envoy-retry-grpc-on.
RETRY_ON_POLICIES = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
)
GRPC_STATUSES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
KB = 1024
MB = 1024 * KB


def _gateway_names(names: list[str], path: str, errs: FieldErrors) -> None:
    """Istio's validateGatewayNames: ``namespace/name``, or a name (legacy ``name.namespace``)."""
    for i, name in enumerate(names):
        p = f"{path}[{i}]"
        ns, sep, gw = name.partition("/")
        if not sep:
            if "." in name:
                parts = name.split(".")
                errs.warn(
                    p,
                    f'using legacy gatewayName format "{name}"; prefer the <namespace>/<name> '
                    f'format: "{parts[1]}/{parts[0]}"',
                )
            if err := validate_fqdn(name):
                errs.error(p, err)
            continue
        if not ns or not gw:
            errs.error(p, "config namespace and gateway name cannot be empty")
        if not is_dns1123_label(ns):
            errs.error(p, f'invalid value for namespace: "{ns}"')
        if not is_dns1123_label(gw):
            errs.error(p, f'invalid value for gateway name: "{gw}"')


def _http_status(status: int) -> str | None:
    # Istio accepts 600 although its message says 599.
    if status < 200 or status > 600:
        return f"HTTP status {status} is not in range 200-599"
    return None


def _go_f(value: float) -> str:
    """A float as Go's %f prints it."""
    return f"{value:f}"


def _string_match(
    sm: n.StringMatch | None,
    where: str,
    path: str,
    errs: FieldErrors,
    allow_empty_prefix: bool = False,
) -> None:
    """Istio's validateStringMatch (and validateStringMatchRegexp for URIs)."""
    if sm is None:
        return
    check_oneof(sm, path, errs, "exact", "prefix", "regex")
    if sm.prefix is not None and sm.prefix == "" and not allow_empty_prefix:
        errs.error(f"{path}.prefix", f'"{where}": prefix string match should not be empty')
    if sm.regex is not None:
        if sm.regex == "":
            errs.error(f"{path}.regex", f'"{where}": regex string match should not be empty')
        elif err := validate_string_regexp(sm.regex, where):
            errs.error(f"{path}.regex", err)


def _is_jwt_claim(name: str) -> bool:
    """A header match key naming a JWT claim (``@request.auth.claims.<claim>``)."""
    return name.startswith(JWT_CLAIM_PREFIX) and len(name) > len(JWT_CLAIM_PREFIX)


def _header_name_or_claim(name: str) -> str | None:
    if _is_jwt_claim(name):
        return None
    return validate_http_header_name(name)


def _match_request(m: n.HTTPMatchRequest, path: str, errs: FieldErrors) -> None:
    for name, header in m.headers.items():
        p = f"{path}.headers.{name}"
        if err := _header_name_or_claim(name):
            errs.error(p, err)
        _string_match(header, "headers", p, errs)
    for name, header in m.without_headers.items():
        p = f"{path}.withoutHeaders.{name}"
        if err := _header_name_or_claim(name):
            errs.error(p, err)
        # "*" is not a regex here: it means "header present".
        if header.regex != "*":
            _string_match(header, "withoutHeaders", p, errs)
    # An empty URI prefix is valid (it matches every path); other empty prefixes are not.
    _string_match(m.uri, "uri", f"{path}.uri", errs, allow_empty_prefix=True)
    _string_match(m.scheme, "scheme", f"{path}.scheme", errs)
    _string_match(m.method, "method", f"{path}.method", errs)
    _string_match(m.authority, "authority", f"{path}.authority", errs)
    for name, qp in m.query_params.items():
        _string_match(qp, "queryParams", f"{path}.queryParams.{name}", errs)
    if m.port:
        check_port(m.port, f"{path}.port", errs)
    check_labels(m.source_labels, f"{path}.sourceLabels", errs)
    _gateway_names(m.gateways, f"{path}.gateways", errs)
    if m.source_namespace and not is_dns1123_label(m.source_namespace):
        errs.error(
            f"{path}.sourceNamespace", f"sourceNamespace match {m.source_namespace} is invalid"
        )


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _set_header_name(name: str) -> str | None:
    """A request header that may be added or set (the authority is checked separately)."""
    if name == "":
        return "header name cannot be empty"
    if _is_internal_header(name) and not _is_authority_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def _other_header_name(name: str) -> str | None:
    """A header removed from requests, or changed in responses."""
    if name == "":
        return "header name cannot be empty"
    if name.lower() == "host":
        return f'invalid header "{name}": cannot set Host header'
    if _is_internal_header(name):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def _headers(h: n.Headers | None, path: str, errs: FieldErrors) -> None:
    if h is None:
        return
    for side, ops in (("request", h.request), ("response", h.response)):
        if ops is None:
            continue
        name_check = _set_header_name if side == "request" else _other_header_name
        for op in ("add", "set"):
            for name, value in getattr(ops, op).items():
                p = f"{path}.{side}.{op}.{name}"
                if err := name_check(name):
                    errs.error(p, err)
                if err := validate_http_header_value(value):
                    errs.error(p, err)
        for i, name in enumerate(ops.remove):
            if err := _other_header_name(name):
                errs.error(f"{path}.{side}.remove[{i}]", err)


def _authority_rewrite(route: n.HTTPRoute, path: str, errs: FieldErrors) -> None:
    """The authority may be rewritten in one place only (rewrite.authority or a header)."""
    current = route.rewrite.authority if route.rewrite else ""
    req = route.headers.request if route.headers else None
    if req is None:
        return
    for op in ("set", "add"):
        for name, value in getattr(req, op).items():
            if not _is_authority_header(name):
                continue
            if current:
                errs.error(
                    f"{path}.headers.request.{op}.{name}",
                    f'authority header cannot be set multiple times: have "{current}", attempting to set "{value}"',
                )
                return
            current = value


def _route_conflicts(r: n.HTTPRoute, p: str, delegate_vs: bool, errs: FieldErrors) -> None:
    if r.delegate is not None and not delegate_vs:
        # A root route only delegates.
        if r.redirect is not None:
            errs.error(f"{p}.redirect", f"root HTTP route {r.name} must not specify redirect")
        if r.route:
            errs.error(f"{p}.route", f"root HTTP route {r.name} must not specify route")
        return
    if delegate_vs and r.delegate is not None:
        errs.error(f"{p}.delegate", "delegate HTTP route cannot contain delegate")
    if r.redirect is not None:
        if r.route:
            errs.error(f"{p}.route", "HTTP route cannot contain both route and redirect")
        if r.fault is not None:
            errs.error(f"{p}.fault", "HTTP route cannot contain both fault and redirect")
        if r.rewrite is not None:
            errs.error(f"{p}.rewrite", "HTTP route rule cannot contain both rewrite and redirect")
        if r.direct_response is not None:
            errs.error(
                f"{p}.directResponse",
                "HTTP route rule cannot contain both direct_response and redirect",
            )
    elif r.direct_response is not None:
        if r.route:
            errs.error(f"{p}.route", "HTTP route cannot contain both route and direct_response")
        if r.fault is not None:
            errs.error(f"{p}.fault", "HTTP route cannot contain both fault and direct_response")
        if r.rewrite is not None:
            errs.error(
                f"{p}.rewrite", "HTTP route rule cannot contain both rewrite and direct_response"
            )
    elif not r.route:
        errs.error(p, "HTTP route, redirect or direct_response is required")
    if r.mirror is not None and r.mirrors:
        errs.error(f"{p}.mirrors", "HTTP route cannot contain both mirror and mirrors")


def _cors(c: n.CorsPolicy | None, p: str, errs: FieldErrors) -> None:
    if c is None:
        return
    for i, origin in enumerate(c.allow_origins):
        op = f"{p}.allowOrigins[{i}]"
        check_oneof(origin, op, errs, "exact", "prefix", "regex")
        value = origin.exact or origin.prefix or origin.regex or ""
        if value == "":
            errs.error(op, "'' is not a valid match type for CORS allow origins")
        elif origin.regex is not None and (
            err := validate_string_regexp(origin.regex, "corsPolicy.allowOrigins")
        ):
            errs.error(f"{op}.regex", err)
    for i, method in enumerate(c.allow_methods):
        if method not in HTTP_METHODS:
            errs.error(f"{p}.allowMethods[{i}]", f'"{method}" is not a supported HTTP method')
    for field, names in (("allowHeaders", c.allow_headers), ("exposeHeaders", c.expose_headers)):
        for i, name in enumerate(names):
            if name != "*" and (err := validate_http_header_name(name)):
                errs.error(f"{p}.{field}[{i}]", err)
    if c.max_age is not None:
        check_duration(c.max_age, f"{p}.maxAge", errs)
        if c.max_age.seconds != math.floor(c.max_age.seconds):
            errs.error(f"{p}.maxAge", "max_age duration is accurate only to seconds precision")


def _fault(f: n.HTTPFaultInjection | None, p: str, errs: FieldErrors) -> None:
    if f is None:
        return
    if f.abort is None and f.delay is None:
        errs.error(p, "HTTP fault injection must have an abort and/or a delay")
    if (a := f.abort) is not None:
        ap = f"{p}.abort"
        check_oneof(a, ap, errs, "http_status", "grpc_status", "http2_error")
        if a.percentage is not None and (err := validate_percentage(a.percentage.value)):
            errs.error(f"{ap}.percentage.value", err)
        if a.http_status is not None:
            if err := _http_status(a.http_status):
                errs.error(f"{ap}.httpStatus", err)
        elif a.grpc_status is not None:
            if a.grpc_status not in GRPC_STATUSES:
                errs.error(
                    f"{ap}.grpcStatus",
                    f'gRPC status "{a.grpc_status}" is not supported. See '
                    "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of "
                    "supported codes, for example 'NOT_FOUND'",
                )
        elif a.http2_error is not None:
            errs.error(f"{ap}.http2Error", "HTTP/2 abort fault injection not supported yet")
        else:
            errs.warn(ap, "abort configured, but error type not set")
    if (d := f.delay) is not None:
        dp = f"{p}.delay"
        check_oneof(d, dp, errs, "fixed_delay", "exponential_delay")
        if d.percentage is not None and (err := validate_percentage(d.percentage.value)):
            errs.error(f"{dp}.percentage.value", err)
        if err := validate_percent(d.percent):
            errs.error(f"{dp}.percent", err)
        check_duration(d.fixed_delay, f"{dp}.fixedDelay", errs)
        if d.exponential_delay is not None:
            check_duration(d.exponential_delay, f"{dp}.exponentialDelay", errs)
            errs.error(f"{dp}.exponentialDelay", "exponentialDelay not supported yet")


def _redirect(r: n.HTTPRedirect | None, p: str, errs: FieldErrors) -> None:
    if r is None:
        return
    check_oneof(r, p, errs, "port", "derive_port")
    # Istio 1.31's prefixRewrite also makes a redirect meaningful.
    target = (r.uri, r.authority, r.scheme, r.prefix_rewrite)
    if not any(target) and r.port is None and r.derive_port is None:
        errs.error(p, "redirect must specify URI, authority, scheme, or port")
    if r.redirect_code and not 300 <= r.redirect_code <= 399:
        errs.error(
            f"{p}.redirectCode", f"{r.redirect_code} is not a valid redirect code, must be 3xx"
        )
    if r.scheme and r.scheme not in ("http", "https"):
        errs.error(f"{p}.scheme", 'invalid redirect scheme, must be "http" or "https"')
    if r.port:
        check_port(r.port, f"{p}.port", errs)


def _direct_response(d: n.HTTPDirectResponse | None, p: str, errs: FieldErrors) -> None:
    if d is None:
        return
    if (body := d.body) is not None:
        check_oneof(body, f"{p}.body", errs, "string", "bytes")
        size = 0
        if body.string is not None:
            size = len(body.string.encode())
        elif body.bytes is not None:
            try:
                size = len(base64.b64decode(body.bytes, validate=True))
            except (binascii.Error, ValueError):
                errs.error(f"{p}.body.bytes", "invalid base64 data")
        if size > MB:
            errs.error(
                f"{p}.body",
                "large direct_responses may impact control plane performance, must be less than 1MB",
            )
        elif size > 100 * KB:
            errs.warn(f"{p}.body", "large direct_responses may impact control plane performance")
    if err := _http_status(d.status):
        errs.error(f"{p}.status", err)


def _retries(r: n.HTTPRetry | None, p: str, errs: FieldErrors) -> None:
    if r is None:
        return
    if r.attempts < 0:
        errs.error(f"{p}.attempts", "attempts cannot be negative")
    if r.attempts == 0 and (
        r.per_try_timeout is not None or r.retry_on or r.retry_remote_localities is not None
    ):
        errs.error(p, "http retry policy configured when attempts are set to 0 (disabled)")
    check_duration(r.per_try_timeout, f"{p}.perTryTimeout", errs)
    check_duration(r.backoff, f"{p}.backoff", errs)
    if r.retry_on:
        for policy in r.retry_on.split(","):
            if policy in RETRY_ON_POLICIES or _is_http_status_code(policy):
                continue
            errs.error(f"{p}.retryOn", f'"{policy}" is not a valid retryOn policy')


def _is_http_status_code(text: str) -> bool:
    if not text.isdigit():
        return False
    try:
        HTTPStatus(int(text))
    except ValueError:
        return False
    return True


def _rewrite(r: n.HTTPRewrite | None, p: str, errs: FieldErrors) -> None:
    if r is None:
        return
    if r.uri and r.uri_regex_rewrite is not None:
        errs.error(p, "rewrite may only contain one of URI or UriRegexRewrite")
    if not r.uri and r.uri_regex_rewrite is None and not r.authority:
        errs.error(
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
            "Only one of URI or UriRegexRewrite may be specified",
        )
    if (rr := r.uri_regex_rewrite) is not None:
        rp = f"{p}.uriRegexRewrite"
        if not rr.match or not rr.rewrite:
            errs.error(rp, "UriRegexRewrite requires both Rewrite and Match fields to be specified")
        elif err := validate_string_regexp(rr.match, "HTTPRewrite.UriRegexRewrite.Match"):
            errs.error(f"{rp}.match", err)


def _mirror_percentage(value: float, what: str, path: str, errs: FieldErrors) -> None:
    """A mirrored share of traffic lies in [0, 100]; ``what`` names it as Istio does."""
    if value > 100:
        errs.error(path, f"{what} must have a max value of 100 (it has {_go_f(value)})")
    if value < 0:
        errs.error(path, f"{what} must have a min value of 0 (it has {_go_f(value)})")


def _mirrors(mirrors: list[n.HTTPMirrorPolicy], p: str, errs: FieldErrors) -> None:
    for i, m in enumerate(mirrors):
        mp = f"{p}[{i}]"
        if m.destination is None:
            errs.error(f"{mp}.destination", "destination is required for mirrors")
            continue
        check_destination(m.destination, f"{mp}.destination", errs)
        if m.percentage is not None:
            _mirror_percentage(
                m.percentage.value, "mirror percentage", f"{mp}.percentage.value", errs
            )


def _weighted(dests: list[Any], p: str, errs: FieldErrors, http: bool) -> None:
    """Istio's validate(HTTP)RouteDestinations: each destination valid, weights >= 0, total > 0."""
    total = 0
    for i, d in enumerate(dests):
        dp = f"{p}[{i}]"
        if d.destination is None:
            errs.error(f"{dp}.destination", "destination is required")
        if http:
            _headers(d.headers, f"{dp}.headers", errs)
        check_destination(d.destination, f"{dp}.destination", errs)
        if d.weight < 0:
            errs.error(f"{dp}.weight", f"weight {d.weight} < 0")
        total += d.weight
    if len(dests) > 1 and total == 0:
        errs.error(p, "total destination weight = 0")


def _http_route(r: n.HTTPRoute, p: str, delegate_vs: bool, errs: FieldErrors) -> None:
    _route_conflicts(r, p, delegate_vs, errs)
    for j, m in enumerate(r.match):
        _match_request(m, f"{p}.match[{j}]", errs)
    _headers(r.headers, f"{p}.headers", errs)
    _cors(r.cors_policy, f"{p}.corsPolicy", errs)
    _fault(r.fault, f"{p}.fault", errs)
    if r.mirror_percent is not None:
        if r.mirror_percent > 100:
            errs.error(
                f"{p}.mirrorPercent",
                f"mirror_percent must have a max value of 100 (it has {r.mirror_percent})",
            )
        errs.warn(
            f"{p}.mirrorPercent",
            'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead',
        )
    if r.mirror_percentage is not None:
        _mirror_percentage(
            r.mirror_percentage.value, "mirror_percentage", f"{p}.mirrorPercentage.value", errs
        )
    check_destination(r.mirror, f"{p}.mirror", errs)
    _mirrors(r.mirrors, f"{p}.mirrors", errs)
    _redirect(r.redirect, f"{p}.redirect", errs)
    _direct_response(r.direct_response, f"{p}.directResponse", errs)
    _retries(r.retries, f"{p}.retries", errs)
    _rewrite(r.rewrite, f"{p}.rewrite", errs)
    _authority_rewrite(r, p, errs)
    _weighted(r.route, f"{p}.route", errs, http=True)
    check_duration(r.timeout, f"{p}.timeout", errs)


def _sni_host(
    sni: str, vs: n.VirtualService, bound_to_gateway: bool, path: str, errs: FieldErrors
) -> None:
    err = _vs_host_error(sni, bound_to_gateway, sni=True)
    if err:
        if is_ip(sni):
            errs.warn(
                path,
                f'using an IP address ("{sni}") goes against SNI spec and most clients do not support this',
            )
        else:
            errs.error(path, err)
        return
    if not any(host_subset_of(sni, h) for h in vs.hosts):
        errs.error(
            path,
            f'SNI host "{sni}" is not a compatible subset of any of the virtual service hosts: '
            f"[{', '.join(vs.hosts)}]",
        )


def _l4_match_common(m: Any, p: str, errs: FieldErrors) -> None:
    for k, subnet in enumerate(m.destination_subnets):
        if err := validate_ip_or_cidr(subnet):
            errs.error(f"{p}.destinationSubnets[{k}]", err)
    if m.port:
        check_port(m.port, f"{p}.port", errs)
    check_labels(m.source_labels, f"{p}.sourceLabels", errs)
    _gateway_names(m.gateways, f"{p}.gateways", errs)


def _tls_route(
    r: n.TLSRoute, p: str, vs: n.VirtualService, bound_to_gateway: bool, errs: FieldErrors
) -> None:
    if not r.match:
        errs.error(f"{p}.match", "TLS route must have at least one match condition")
    for j, m in enumerate(r.match):
        mp = f"{p}.match[{j}]"
        if not m.sni_hosts:
            errs.error(f"{mp}.sniHosts", "TLS match must have at least one SNI host")
        for k, sni in enumerate(m.sni_hosts):
            _sni_host(sni, vs, bound_to_gateway, f"{mp}.sniHosts[{k}]", errs)
        _l4_match_common(m, mp, errs)
    if not r.route:
        errs.error(f"{p}.route", "TLS route is required")
    _weighted(r.route, f"{p}.route", errs, http=False)


def _tcp_route(r: n.TCPRoute, p: str, errs: FieldErrors) -> None:
    for j, m in enumerate(r.match):
        _l4_match_common(m, f"{p}.match[{j}]", errs)
    if not r.route:
        errs.error(f"{p}.route", "TCP route is required")
    _weighted(r.route, f"{p}.route", errs, http=False)


def _vs_host_error(host: str, bound_to_gateway: bool, sni: bool) -> str | None:
    """Hosts of gateway-bound VirtualServices may be Istio's auto-generated SNI names."""
    if bound_to_gateway and sni and host.split(".", 1)[0] == "outbound_":
        if re.search(r"outbound_.([0-8].*).*", host):
            return None
        return f'domain name "{host}" invalid (label "outbound_" invalid)'
    return validate_wildcard_domain(host)


def _route_name(route: Any, i: int) -> str:
    name = getattr(route, "name", "")
    return f'"{name}"' if isinstance(route, n.HTTPRoute) and name else f"#{i}"


def _match_name(match: Any, j: int) -> str:
    name = getattr(match, "name", "")
    return f'"{name}"' if isinstance(match, n.HTTPMatchRequest) and name else f"#{j}"


def _unreachable_rules(routes: list[Any], p: str, errs: FieldErrors) -> None:
    """Istio's warnings for rules after a catch-all and for matches repeated from earlier rules."""
    seen: dict[str, int] = {}
    empty_seen = False
    for i, route in enumerate(routes):
        if not route.match:
            if empty_seen:
                errs.warn(
                    f"{p}[{i}]",
                    f"virtualService rule {_route_name(route, i)} not used (only the last rule can have no matches)",
                )
            empty_seen = True
            continue
        duplicates = 0
        for j, match in enumerate(route.match):
            key = repr(
                match.model_dump(
                    exclude={"name"} if isinstance(match, n.HTTPMatchRequest) else set()
                )
            )
            if key in seen:
                dup = seen[key]
                errs.warn(
                    f"{p}[{i}].match[{j}]",
                    f"virtualService rule {_route_name(route, i)} match {_match_name(match, j)} is not used "
                    f"(duplicate/overlapping match in rule {_route_name(routes[dup], dup)})",
                )
                duplicates += 1
            else:
                seen[key] = i
        if duplicates == len(route.match):
            errs.warn(
                f"{p}[{i}]",
                f"virtualService rule {_route_name(route, i)} not used (all matches used by prior rules)",
            )


@validates(GROUP, "VirtualService")
def validate_virtual_service(res: Resource, errs: FieldErrors) -> None:
    vs: n.VirtualService = res.spec
    delegate_vs = not vs.hosts
    if delegate_vs:
        if vs.gateways:
            errs.error("spec.gateways", "delegate virtual service must have no gateways specified")
        if vs.tls:
            errs.error("spec.tls", "delegate virtual service must have no tls route specified")
        if vs.tcp:
            errs.error("spec.tcp", "delegate virtual service must have no tcp route specified")

    bound_to_gateway = bool(vs.gateways) and MESH_GATEWAY not in vs.gateways
    applies_to_mesh = not bound_to_gateway
    _gateway_names(vs.gateways, "spec.gateways", errs)

    if not bound_to_gateway:
        # JWT claim routing needs the request authentication that only gateways run.
        for i, r in enumerate(vs.http):
            for j, m in enumerate(r.match):
                for field, headers in (
                    ("headers", m.headers),
                    ("withoutHeaders", m.without_headers),
                ):
                    for key in headers:
                        if _is_jwt_claim(key):
                            errs.error(
                                f"spec.http[{i}].match[{j}].{field}.{key}",
                                f"JWT claim based routing (key: {key}) is only supported for gateway, "
                                f"found no gateways: {go_list(vs.gateways)}",
                            )

    sni = any(m.sni_hosts for r in vs.tls for m in r.match)
    all_valid = True
    for i, host in enumerate(vs.hosts):
        err = _vs_host_error(host, bound_to_gateway, sni)
        if err:
            if not is_ip(host):
                errs.error(f"spec.hosts[{i}]", err)
                all_valid = False
        elif applies_to_mesh and host == "*":
            errs.error(
                f"spec.hosts[{i}]",
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            )
            all_valid = False
    if all_valid:
        for i, a in enumerate(vs.hosts):
            for j in range(i + 1, len(vs.hosts)):
                if host_matches(a, vs.hosts[j]):
                    errs.error(
                        f"spec.hosts[{j}]",
                        f"duplicate hosts in virtual service: {a} & {vs.hosts[j]}",
                    )

    if not vs.http and not vs.tcp and not vs.tls:
        errs.error("spec", "http, tcp or tls must be provided in virtual service")
    for i, r in enumerate(vs.http):
        _http_route(r, f"spec.http[{i}]", delegate_vs, errs)
    for i, r in enumerate(vs.tls):
        _tls_route(r, f"spec.tls[{i}]", vs, bound_to_gateway, errs)
    for i, r in enumerate(vs.tcp):
        _tcp_route(r, f"spec.tcp[{i}]", errs)
    check_export_to(res, vs.export_to, errs)

    _unreachable_rules(vs.http, "spec.http", errs)
    _unreachable_rules(vs.tcp, "spec.tcp", errs)
    _unreachable_rules(vs.tls, "spec.tls", errs)
