"""Validation rules for networking.istio.io kinds, as Istio's validating webhook applies them.

Each check reports at the field it is about; reasons are Istio's. Istio's warnings are warnings.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from pistio.api import networking as n
from pistio.api import type_v1beta1
from pistio.api.base import Duration, IstioModel
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    UNIX_ADDRESS_PREFIX,
    WORKLOAD_SELECTOR_NO_LABELS,
    host_matches,
    host_subset_of,
    is_dns1123_label,
    is_http_protocol,
    is_ip,
    is_tcp_protocol,
    is_tls_protocol,
    parse_protocol,
    re2_error,
    validate_duration,
    validate_export_to,
    validate_fqdn,
    validate_http_header_name,
    validate_http_header_value,
    validate_ip_address,
    validate_ip_or_cidr,
    validate_labels,
    validate_namespace_slash_hostname,
    validate_partial_wildcard,
    validate_percent,
    validate_percentage,
    validate_port,
    validate_port_name,
    validate_protocol,
    validate_selector_labels,
    validate_string_regexp,
    validate_target_ref,
    validate_unix_address,
    validate_wildcard_domain,
)
from pistio.config.validation.registry import validates

GROUP = "networking.istio.io"
MESH_GATEWAY = "mesh"
JWT_CLAIM_PREFIX = "@request.auth.claims."
HCM_FILTER = "envoy.filters.network.http_connection_manager"

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
# Cipher suites Envoy's BoringSSL accepts for TLS 1.0-1.2.
CIPHER_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES256-SHA",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA",
        "DES-CBC3-SHA",
    }
)
# Old Envoy filter names and their current names.
DEPRECATED_FILTER_NAMES = {
    "envoy.http_connection_manager": HCM_FILTER,
    "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
    "envoy.router": "envoy.filters.http.router",
    "envoy.cors": "envoy.filters.http.cors",
    "envoy.fault": "envoy.filters.http.fault",
    "envoy.lua": "envoy.filters.http.lua",
    "envoy.ext_authz": "envoy.filters.http.ext_authz",
    "envoy.rbac": "envoy.filters.http.rbac",
    "envoy.grpc_web": "envoy.filters.http.grpc_web",
    "envoy.gzip": "envoy.filters.http.gzip",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
}
ENVOY_FILTER_TARGET_KINDS = (
    ("", "Service"),
    (GROUP, "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
)
AUTOALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"
KB = 1024
MB = 1024 * KB


# --- Small shared checks -------------------------------------------------------------------


def _go_list(items: Iterable[str]) -> str:
    """A string slice as Go's %v prints it."""
    return "[" + " ".join(items) + "]"


def _q(text: str) -> str:
    """A string as Go's %q prints it (for the plain text users write)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _oneof(obj: IstioModel, path: str, errs: FieldErrors, *fields: str) -> None:
    """A proto oneof: at most one member may be set."""
    set_ = [f for f in fields if getattr(obj, f) is not None]
    if len(set_) > 1:
        names = ", ".join(type(obj).model_fields[f].alias or f for f in fields)
        errs.error(path, f"only one of {names} can be set")


def _duration(d: Duration | None, path: str, errs: FieldErrors) -> None:
    if d is not None and (err := validate_duration(d)):
        errs.error(path, err)


def _port(number: int, path: str, errs: FieldErrors) -> None:
    if err := validate_port(number):
        errs.error(path, err)


def _labels(labels: dict[str, str], path: str, errs: FieldErrors) -> None:
    for key, value in labels.items():
        for err in validate_labels({key: value}):
            errs.error(f"{path}.{key}", err)


def _export_to(res: Resource, export_to: list[str], errs: FieldErrors, **kw: bool) -> None:
    for index, err in validate_export_to(res.namespace or "", export_to, **kw):
        errs.error("spec.exportTo" if index is None else f"spec.exportTo[{index}]", err)


def _alpha_selector(
    sel: n.WorkloadSelector | None, path: str, errs: FieldErrors, warn_prefix: str
) -> None:
    """Istio's ValidateAlphaWorkloadSelector (Sidecar, ServiceEntry, EnvoyFilter)."""
    if sel is None:
        return
    for key, err in validate_selector_labels(sel.labels):
        errs.error(f"{path}.labels.{key}" if key else f"{path}.labels", err)
    if not sel.labels:
        errs.warn(
            path,
            f"{warn_prefix}: {WORKLOAD_SELECTOR_NO_LABELS}, will be applied to all services in namespace",
        )


def _beta_selector(sel: type_v1beta1.WorkloadSelector | None, path: str, errs: FieldErrors) -> None:
    """Istio's validateWorkloadSelector for istio.type.v1beta1.WorkloadSelector."""
    if sel is None:
        return
    for key, err in validate_selector_labels(sel.match_labels):
        errs.error(f"{path}.matchLabels.{key}" if key else f"{path}.matchLabels", err)
    if not sel.match_labels:
        errs.warn(path, WORKLOAD_SELECTOR_NO_LABELS)


def _subset_name(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


def _destination(d: n.Destination | None, path: str, errs: FieldErrors) -> None:
    """Istio's validateDestination."""
    if d is None:
        return
    if d.host == "*":
        errs.error(f"{path}.host", f"invalid destination host {d.host}")
    elif err := validate_wildcard_domain(d.host):
        errs.error(f"{path}.host", err)
    if d.subset and (err := _subset_name(d.subset)):
        errs.error(f"{path}.subset", err)
    if d.port is not None:
        _port(d.port.number, f"{path}.port.number", errs)


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


# --- VirtualService ------------------------------------------------------------------------


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
    _oneof(sm, path, errs, "exact", "prefix", "regex")
    if sm.prefix is not None and sm.prefix == "" and not allow_empty_prefix:
        errs.error(f"{path}.prefix", f'"{where}": prefix string match should not be empty')
    if sm.regex is not None:
        if sm.regex == "":
            errs.error(f"{path}.regex", f'"{where}": regex string match should not be empty')
        elif err := validate_string_regexp(sm.regex, where):
            errs.error(f"{path}.regex", err)


def _header_name_or_claim(name: str) -> str | None:
    if name.startswith(JWT_CLAIM_PREFIX) and len(name) > len(JWT_CLAIM_PREFIX):
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
        _port(m.port, f"{path}.port", errs)
    _labels(m.source_labels, f"{path}.sourceLabels", errs)
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
        _oneof(origin, op, errs, "exact", "prefix", "regex")
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
        _duration(c.max_age, f"{p}.maxAge", errs)
        if c.max_age.seconds != math.floor(c.max_age.seconds):
            errs.error(f"{p}.maxAge", "max_age duration is accurate only to seconds precision")


def _fault(f: n.HTTPFaultInjection | None, p: str, errs: FieldErrors) -> None:
    if f is None:
        return
    if f.abort is None and f.delay is None:
        errs.error(p, "HTTP fault injection must have an abort and/or a delay")
    if (a := f.abort) is not None:
        ap = f"{p}.abort"
        _oneof(a, ap, errs, "http_status", "grpc_status", "http2_error")
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
        _oneof(d, dp, errs, "fixed_delay", "exponential_delay")
        if d.percentage is not None and (err := validate_percentage(d.percentage.value)):
            errs.error(f"{dp}.percentage.value", err)
        if err := validate_percent(d.percent):
            errs.error(f"{dp}.percent", err)
        _duration(d.fixed_delay, f"{dp}.fixedDelay", errs)
        if d.exponential_delay is not None:
            _duration(d.exponential_delay, f"{dp}.exponentialDelay", errs)
            errs.error(f"{dp}.exponentialDelay", "exponentialDelay not supported yet")


def _redirect(r: n.HTTPRedirect | None, p: str, errs: FieldErrors) -> None:
    if r is None:
        return
    _oneof(r, p, errs, "port", "derive_port")
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
        _port(r.port, f"{p}.port", errs)


def _direct_response(d: n.HTTPDirectResponse | None, p: str, errs: FieldErrors) -> None:
    if d is None:
        return
    if (body := d.body) is not None:
        _oneof(body, f"{p}.body", errs, "string", "bytes")
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
    _duration(r.per_try_timeout, f"{p}.perTryTimeout", errs)
    _duration(r.backoff, f"{p}.backoff", errs)
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


def _mirrors(mirrors: list[n.HTTPMirrorPolicy], p: str, errs: FieldErrors) -> None:
    for i, m in enumerate(mirrors):
        mp = f"{p}[{i}]"
        if m.destination is None:
            errs.error(f"{mp}.destination", "destination is required for mirrors")
            continue
        _destination(m.destination, f"{mp}.destination", errs)
        if m.percentage is not None:
            value = m.percentage.value
            if value > 100:
                errs.error(
                    f"{mp}.percentage.value",
                    f"mirror percentage must have a max value of 100 (it has {_go_f(value)})",
                )
            if value < 0:
                errs.error(
                    f"{mp}.percentage.value",
                    f"mirror percentage must have a min value of 0 (it has {_go_f(value)})",
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
        _destination(d.destination, f"{dp}.destination", errs)
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
        value = r.mirror_percentage.value
        if value > 100:
            errs.error(
                f"{p}.mirrorPercentage.value",
                f"mirror_percentage must have a max value of 100 (it has {_go_f(value)})",
            )
        if value < 0:
            errs.error(
                f"{p}.mirrorPercentage.value",
                f"mirror_percentage must have a min value of 0 (it has {_go_f(value)})",
            )
    _destination(r.mirror, f"{p}.mirror", errs)
    _mirrors(r.mirrors, f"{p}.mirrors", errs)
    _redirect(r.redirect, f"{p}.redirect", errs)
    _direct_response(r.direct_response, f"{p}.directResponse", errs)
    _retries(r.retries, f"{p}.retries", errs)
    _rewrite(r.rewrite, f"{p}.rewrite", errs)
    _authority_rewrite(r, p, errs)
    _weighted(r.route, f"{p}.route", errs, http=True)
    _duration(r.timeout, f"{p}.timeout", errs)


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
        _port(m.port, f"{p}.port", errs)
    _labels(m.source_labels, f"{p}.sourceLabels", errs)
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
                        if key.startswith(JWT_CLAIM_PREFIX) and len(key) > len(JWT_CLAIM_PREFIX):
                            errs.error(
                                f"spec.http[{i}].match[{j}].{field}.{key}",
                                f"JWT claim based routing (key: {key}) is only supported for gateway, "
                                f"found no gateways: {_go_list(vs.gateways)}",
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
    _export_to(res, vs.export_to, errs)

    _unreachable_rules(vs.http, "spec.http", errs)
    _unreachable_rules(vs.tcp, "spec.tcp", errs)
    _unreachable_rules(vs.tls, "spec.tls", errs)


# --- DestinationRule -----------------------------------------------------------------------


def _client_tls(t: n.ClientTLSSettings | None, p: str, errs: FieldErrors) -> None:
    """Istio's ValidateTLS for upstream TLS settings."""
    if t is None:
        return
    if t.insecure_skip_verify:
        if t.mode == "SIMPLE" and (t.ca_certificates or t.credential_name or t.subject_alt_names):
            errs.error(
                p,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            )
        if t.mode == "MUTUAL" and (t.ca_certificates or t.subject_alt_names):
            errs.error(
                p,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            )
    if t.mode in ("SIMPLE", "MUTUAL") and t.credential_name:
        # Credentials come from the named secret; files may not be given as well.
        if t.client_certificate or t.ca_certificates or t.private_key or t.ca_crl:
            errs.error(
                p,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            )
        return
    if t.mode == "MUTUAL":
        if not t.client_certificate:
            errs.error(f"{p}.clientCertificate", "client certificate required for mutual tls")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "private key required for mutual tls")


def _outlier(o: n.OutlierDetection | None, p: str, errs: FieldErrors) -> None:
    if o is None:
        return
    _duration(o.base_ejection_time, f"{p}.baseEjectionTime", errs)
    if o.consecutive_errors:
        errs.warn(
            f"{p}.consecutiveErrors",
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        )
    if not o.split_external_local_origin_errors and (o.consecutive_local_origin_failures or 0) > 0:
        errs.error(
            f"{p}.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        )
    _duration(o.interval, f"{p}.interval", errs)
    if err := validate_percent(o.max_ejection_percent):
        errs.error(f"{p}.maxEjectionPercent", err)
    if err := validate_percent(o.min_health_percent):
        errs.error(f"{p}.minHealthPercent", err)


def _connection_pool(c: n.ConnectionPoolSettings | None, p: str, errs: FieldErrors) -> None:
    if c is None:
        return
    if c.http is None and c.tcp is None:
        errs.error(p, "connection pool must have at least one field")
        return
    if (h := c.http) is not None:
        hp = f"{p}.http"
        for field, value, what in (
            ("http1MaxPendingRequests", h.http1_max_pending_requests, "http1 max pending requests"),
            ("http2MaxRequests", h.http2_max_requests, "http2 max requests"),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            ("maxConcurrentStreams", h.max_concurrent_streams, "max concurrent streams"),
        ):
            if value < 0:
                errs.error(f"{hp}.{field}", f"{what} must be non-negative")
        _duration(h.idle_timeout, f"{hp}.idleTimeout", errs)
        if (ka2 := h.http2_keep_alive) is not None:
            _duration(ka2.interval, f"{hp}.http2KeepAlive.interval", errs)
            _duration(ka2.timeout, f"{hp}.http2KeepAlive.timeout", errs)
        if h.h2_upgrade_policy == "UPGRADE" and h.use_client_protocol:
            errs.error(
                f"{hp}.useClientProtocol",
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            )
    if (t := c.tcp) is not None:
        tp = f"{p}.tcp"
        if t.max_connections < 0:
            errs.error(f"{tp}.maxConnections", "max connections must be non-negative")
        _duration(t.connect_timeout, f"{tp}.connectTimeout", errs)
        _duration(t.max_connection_duration, f"{tp}.maxConnectionDuration", errs)
        _duration(t.idle_timeout, f"{tp}.idleTimeout", errs)
        if (ka := t.tcp_keepalive) is not None:
            _duration(ka.time, f"{tp}.tcpKeepalive.time", errs)
            _duration(ka.interval, f"{tp}.tcpKeepalive.interval", errs)


def _is_prime(x: int) -> bool:
    """Envoy's primality check for Maglev table sizes."""
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def _locality_path_parts(locality: str) -> list[str] | None:
    parts = locality.split("/", 2)
    return None if any(part == "" for part in parts) else parts


def _localities_error(localities: list[str]) -> str | None:
    """Istio's validateLocalities: wildcards only at the end, no overlapping localities."""
    tree: dict[str, Any] = {}
    for loc in localities:
        stars = loc.count("*")
        if stars and (stars > 1 or not loc.endswith("*")):
            return f"locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in tree:
            return f"locality {loc} overlap with previous specified ones"
        parts = _locality_path_parts(loc)
        if parts is None:
            return f"locality {loc} must not contain empty region/zone/subzone info"
        overlap = f"locality {loc} overlap with previous specified ones"
        region = parts[0]
        if len(parts) == 1:
            if region in tree:
                return overlap
            tree[region] = "*"
            continue
        zones = tree.setdefault(region, {})
        if zones == "*" or "*" in zones:
            return overlap
        zone = parts[1]
        if len(parts) == 2:
            if zone in zones:
                return overlap
            zones[zone] = "*"
            continue
        subzones = zones.setdefault(zone, set())
        if subzones == "*" or "*" in subzones or parts[2] in subzones:
            return overlap
        subzones.add(parts[2])
    return None


TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)


def _locality_lb(
    lb: n.LocalityLoadBalancerSetting | None, outlier: Any, p: str, errs: FieldErrors
) -> None:
    """Istio's ValidateLocalityLbSetting."""
    if lb is None:
        return
    if lb.distribute and lb.failover:
        errs.error(p, "can not simultaneously specify 'distribute' and 'failover'")
        return
    if lb.failover and lb.failover_priority:
        for i, label in enumerate(lb.failover_priority):
            if label in TOPOLOGY_LABELS:
                errs.error(
                    f"{p}.failoverPriority[{i}]",
                    f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'",
                )
                return
    for i, dist in enumerate(lb.distribute):
        dp = f"{p}.distribute[{i}]"
        if any(w <= 0 or w > 100 for w in dist.to.values()):
            errs.error(f"{dp}.to", "locality weight must be in range [1, 100]")
            return
        total = sum(dist.to.values())
        if total != 100:
            errs.error(f"{dp}.to", f"total locality weight {total} != 100")
            return
        if err := _localities_error(list(dist.to)):
            errs.error(f"{dp}.to", err)
    if err := _localities_error([d.from_ for d in lb.distribute]):
        errs.error(f"{p}.distribute", err)
    if (lb.failover or lb.failover_priority) and outlier is None:
        errs.warn(p, "outlier detection policy must be provided for failover")
    for i, fo in enumerate(lb.failover):
        fp = f"{p}.failover[{i}]"
        if fo.from_ == fo.to:
            errs.error(fp, "locality lb failover settings must specify different regions")
        if "/" in fo.from_ or "/" in fo.to:
            errs.error(fp, "locality lb failover only specify region")
        if "*" in fo.from_ or "*" in fo.to:
            errs.error(fp, "locality lb failover region should not contain '*' wildcard")


def _zone_aware_lb(za: n.ZoneAwareLoadBalancerSetting | None, p: str, errs: FieldErrors) -> None:
    """Zone-aware balancing handles region/zone/subzone itself; failover names regions only."""
    if za is None:
        return
    for i, label in enumerate(za.failover_priority):
        if label in TOPOLOGY_LABELS:
            errs.error(
                f"{p}.failoverPriority[{i}]",
                f"failoverPriority must not include topology label '{label}' with zone aware load balancing",
            )
    for i, fo in enumerate(za.failover):
        fp = f"{p}.failover[{i}]"
        if fo.from_ == fo.to:
            errs.error(fp, "locality lb failover settings must specify different regions")
        if "/" in fo.from_ or "/" in fo.to:
            errs.error(fp, "locality lb failover only specify region")
        if "*" in fo.from_ or "*" in fo.to:
            errs.error(fp, "locality lb failover region should not contain '*' wildcard")


def _load_balancer(
    lb: n.LoadBalancerSettings | None, outlier: Any, p: str, errs: FieldErrors
) -> None:
    if lb is None:
        return
    _oneof(lb, p, errs, "simple", "consistent_hash")
    if (ch := lb.consistent_hash) is not None:
        cp = f"{p}.consistentHash"
        _oneof(
            ch,
            cp,
            errs,
            "http_header_name",
            "http_cookie",
            "use_source_ip",
            "http_query_parameter_name",
        )
        _oneof(ch, cp, errs, "ring_hash", "maglev")
        if ch.http_cookie is not None and not ch.http_cookie.name:
            errs.error(f"{cp}.httpCookie.name", "name required for HttpCookie")
        if ch.minimum_ring_size:
            errs.warn(
                f"{cp}.minimumRingSize",
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            )
            if ch.ring_hash is not None or ch.maglev is not None:
                errs.error(
                    f"{cp}.minimumRingSize",
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                )
        if (ml := ch.maglev) is not None:
            mp = f"{cp}.maglev.tableSize"
            if ml.table_size == 0:
                errs.error(mp, "tableSize must be set for maglev")
            if ml.table_size >= 5000011:
                errs.error(mp, "tableSize must be less than 5000011 for maglev")
            if not _is_prime(ml.table_size):
                errs.error(mp, "tableSize must be a prime number for maglev")
    _locality_lb(lb.locality_lb_setting, outlier, f"{p}.localityLbSetting", errs)
    _zone_aware_lb(lb.zone_aware_lb_setting, f"{p}.zoneAwareLbSetting", errs)
    _duration(lb.warmup_duration_secs, f"{p}.warmupDurationSecs", errs)
    if (w := lb.warmup) is not None:
        wp = f"{p}.warmup"
        if w.duration is None:
            errs.error(f"{wp}.duration", "required field is missing")
        _duration(w.duration, f"{wp}.duration", errs)
        if w.minimum_percent is not None and not 0 <= w.minimum_percent <= 100:
            errs.error(f"{wp}.minimumPercent", "minimumPercent must be in range [0.0, 100.0]")
        if w.aggression is not None and w.aggression < 1:
            errs.error(f"{wp}.aggression", "aggression must be greater than or equal to 1")


def _port_policies(pls: list[n.PortTrafficPolicy], p: str, errs: FieldErrors) -> None:
    for i, t in enumerate(pls):
        tp = f"{p}[{i}]"
        if t.port is None:
            errs.error(f"{tp}.port", "portTrafficPolicy must have valid port")
        if (
            t.outlier_detection is None
            and t.connection_pool is None
            and t.load_balancer is None
            and t.tls is None
        ):
            errs.error(tp, "port traffic policy must have at least one field")
            continue
        _outlier(t.outlier_detection, f"{tp}.outlierDetection", errs)
        _connection_pool(t.connection_pool, f"{tp}.connectionPool", errs)
        _load_balancer(t.load_balancer, t.outlier_detection, f"{tp}.loadBalancer", errs)
        _client_tls(t.tls, f"{tp}.tls", errs)


def _tunnel(t: n.TunnelSettings | None, p: str, errs: FieldErrors) -> None:
    if t is None:
        return
    if t.protocol and t.protocol not in ("CONNECT", "POST"):
        errs.error(f"{p}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
    fqdn_err = validate_fqdn(t.target_host)
    ip_err = validate_ip_address(t.target_host)
    if fqdn_err and ip_err:
        errs.error(
            f"{p}.targetHost",
            f"tunnel target host must be valid FQDN or IP address: {fqdn_err}; {ip_err}",
        )
    if err := validate_port(t.target_port):
        errs.error(f"{p}.targetPort", f"tunnel target port is invalid: {err}")


def _traffic_policy(tp: n.TrafficPolicy | None, p: str, errs: FieldErrors) -> None:
    if tp is None:
        return
    if (
        tp.outlier_detection is None
        and tp.connection_pool is None
        and tp.load_balancer is None
        and tp.tls is None
        and not tp.port_level_settings
        and tp.tunnel is None
        and tp.proxy_protocol is None
        and tp.retry_budget is None
    ):
        errs.error(p, "traffic policy must have at least one field")
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        errs.error(p, "tunnel and proxyProtocol must not be set together")
        return
    _outlier(tp.outlier_detection, f"{p}.outlierDetection", errs)
    _connection_pool(tp.connection_pool, f"{p}.connectionPool", errs)
    _load_balancer(tp.load_balancer, tp.outlier_detection, f"{p}.loadBalancer", errs)
    _client_tls(tp.tls, f"{p}.tls", errs)
    _port_policies(tp.port_level_settings, f"{p}.portLevelSettings", errs)
    _tunnel(tp.tunnel, f"{p}.tunnel", errs)
    if (
        (rb := tp.retry_budget) is not None
        and rb.percent is not None
        and not 0 <= rb.percent <= 100
    ):
        errs.error(f"{p}.retryBudget.percent", "percent must be in range [0.0, 100.0]")


@validates(GROUP, "DestinationRule")
def validate_destination_rule(res: Resource, errs: FieldErrors) -> None:
    dr: n.DestinationRule = res.spec
    if err := validate_wildcard_domain(dr.host):
        errs.error("spec.host", err)
    _traffic_policy(dr.traffic_policy, "spec.trafficPolicy", errs)
    names: set[str] = set()
    for i, s in enumerate(dr.subsets):
        sp = f"spec.subsets[{i}]"
        if s.name in names:
            errs.error(f"{sp}.name", f"duplicate subset names: {s.name}")
        names.add(s.name)
        if err := _subset_name(s.name):
            errs.error(f"{sp}.name", err)
        _labels(s.labels, f"{sp}.labels", errs)
        _traffic_policy(s.traffic_policy, f"{sp}.trafficPolicy", errs)
    _export_to(
        res, dr.export_to, errs, is_destination_rule_with_selector=dr.workload_selector is not None
    )
    _beta_selector(dr.workload_selector, "spec.workloadSelector", errs)


# --- Gateway -------------------------------------------------------------------------------


def _server_tls(t: n.ServerTLSSettings, p: str, errs: FieldErrors) -> None:
    """Istio's validateTLSOptions for gateway servers and sidecar ingress listeners."""
    if t.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not t.cipher_suites:
        errs.warn(
            f"{p}.minProtocolVersion",
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        )
    invalid = sorted({c for c in t.cipher_suites if c not in CIPHER_SUITES})
    seen: set[str] = set()
    duplicate: set[str] = set()
    for c in t.cipher_suites:
        if c in CIPHER_SUITES:
            (duplicate if c in seen else seen).add(c)
    if invalid:
        errs.warn(f"{p}.cipherSuites", f"ignoring invalid cipher suites: {_go_list(invalid)}")
    if duplicate:
        errs.warn(
            f"{p}.cipherSuites", f"ignoring duplicate cipher suites: {_go_list(sorted(duplicate))}"
        )

    named = [
        f
        for f, v in (
            ("credentialName", t.credential_name),
            ("credentialNames", t.credential_names),
            ("tlsCertificates", t.tls_certificates),
        )
        if v
    ]
    if len(named) > 1:
        errs.error(p, "only one of credentialName, credentialNames, or tlsCertificates can be set")

    if t.mode == "ISTIO_MUTUAL":
        # The workload certificate is used: no other credentials may be given.
        for field, value, what in (
            ("serverCertificate", t.server_certificate, "server certificate"),
            ("privateKey", t.private_key, "private key"),
            ("caCertificates", t.ca_certificates, "CA bundle"),
            ("credentialName", t.credential_name, "credentialName"),
        ):
            if value:
                errs.error(f"{p}.{field}", f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    if t.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (
        t.ca_crl or t.server_certificate or t.private_key or t.ca_certificates or t.credential_name
    ):
        errs.warn(p, f"{t.mode} mode does not use certificates, they will be ignored")
    if t.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and (
        t.credential_name or t.credential_names
    ):
        return  # credentials are fetched from the named secrets
    if t.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and t.tls_certificates:
        for i, cert in enumerate(t.tls_certificates):
            if not cert.server_certificate:
                errs.error(
                    f"{p}.tlsCertificates[{i}].serverCertificate",
                    f"{_mode_word(t.mode)} TLS requires a server certificate",
                )
            if not cert.private_key:
                errs.error(
                    f"{p}.tlsCertificates[{i}].privateKey",
                    f"{_mode_word(t.mode)} TLS requires a private key",
                )
        if (
            t.mode != "SIMPLE"
            and not t.ca_certificates
            and not any(c.ca_certificates for c in t.tls_certificates)
        ):
            errs.error(f"{p}.caCertificates", "MUTUAL TLS requires a client CA bundle")
        return
    if t.mode == "SIMPLE":
        if not t.server_certificate:
            errs.error(f"{p}.serverCertificate", "SIMPLE TLS requires a server certificate")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "SIMPLE TLS requires a private key")
    elif t.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        if not t.server_certificate:
            errs.error(f"{p}.serverCertificate", "MUTUAL TLS requires a server certificate")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "MUTUAL TLS requires a private key")
        if not t.ca_certificates:
            errs.error(f"{p}.caCertificates", "MUTUAL TLS requires a client CA bundle")
    if t.ca_crl and t.mode == "SIMPLE":
        errs.error(f"{p}.caCrl", "CRL is not supported with SIMPLE TLS")


def _mode_word(mode: str) -> str:
    return "SIMPLE" if mode == "SIMPLE" else "MUTUAL"


def _port_text(port: n.Port) -> str:
    """A Port as Go's %v prints a proto message (for Istio's "port name must be set")."""
    parts = []
    if port.number:
        parts.append(f"number:{port.number}")
    if port.protocol:
        parts.append(f'protocol:"{port.protocol}"')
    if port.target_port:
        parts.append(f"target_port:{port.target_port}")
    return " ".join(parts)


def _server(s: n.Server, p: str, errs: FieldErrors) -> None:
    if not s.hosts:
        errs.error(f"{p}.hosts", "server config must contain at least one host")
    for i, host in enumerate(s.hosts):
        for err in validate_namespace_slash_hostname(host, is_gateway=True):
            errs.error(f"{p}.hosts[{i}]", err)

    unix_bind = s.bind.startswith(UNIX_ADDRESS_PREFIX)
    port_ok = s.port is not None
    if s.port is None:
        errs.error(f"{p}.port", "port is required")
    else:
        pp = f"{p}.port"
        if parse_protocol(s.port.protocol) is None:
            port_ok = False
            errs.error(
                f"{pp}.protocol",
                f'invalid protocol "{s.port.protocol}", supported protocols are HTTP, HTTP2, GRPC, '
                "GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
            )
        # A server bound to a Unix socket has port number 0.
        if (s.port.number > 0 or not unix_bind) and (err := validate_port(s.port.number)):
            port_ok = False
            errs.error(f"{pp}.number", err)
        if s.port.target_port > 0:
            port_ok = False
            errs.error(f"{pp}.targetPort", "targetPort has no impact on Gateways")
        if not s.port.name:
            port_ok = False
            errs.error(f"{pp}.name", f"port name must be set: {_port_text(s.port)}")

    if unix_bind:
        if err := validate_unix_address(s.bind[len(UNIX_ADDRESS_PREFIX) :]):
            errs.error(f"{p}.bind", err)
        if s.port is not None and s.port.number != 0:
            errs.error(
                f"{p}.bind", f"port number must be 0 for unix domain socket: {_port_text(s.port)}"
            )
    elif s.bind and (err := validate_ip_address(s.bind)):
        errs.error(f"{p}.bind", err)

    if s.tls is not None:
        _server_tls(s.tls, f"{p}.tls", errs)

    if port_ok and s.port is not None:
        proto = s.port.protocol
        if is_tls_protocol(proto) and s.tls is None:
            errs.error(f"{p}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        elif not is_tls_protocol(proto) and s.tls is not None:
            if is_http_protocol(proto):
                # Only httpsRedirect makes sense on a plain-text HTTP server.
                passthrough = s.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if (
                    not passthrough
                    or s.tls.ca_certificates
                    or s.tls.private_key
                    or s.tls.server_certificate
                ):
                    errs.error(
                        f"{p}.tls", "server cannot have TLS settings for plain text HTTP ports"
                    )
            else:
                errs.error(f"{p}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")


@validates(GROUP, "Gateway")
def validate_gateway(res: Resource, errs: FieldErrors) -> None:
    gw: n.Gateway = res.spec
    if res.name and not is_dns1123_label(res.name):
        errs.error("metadata.name", f"invalid gateway name: {_q(res.name)}")
    if not gw.servers:
        errs.error("spec.servers", "gateway must have at least one server")
    names: set[str] = set()
    for i, s in enumerate(gw.servers):
        p = f"spec.servers[{i}]"
        _server(s, p, errs)
        if s.port is None:
            continue
        if s.port.name in names:
            errs.error(
                f"{p}.port.name",
                f"port names in servers must be unique: duplicate name {s.port.name}",
            )
        names.add(s.port.name)
        if not is_http_protocol(s.port.protocol) and s.tls is not None and s.tls.https_redirect:
            errs.warn(
                f"{p}.tls.httpsRedirect", "tls.httpsRedirect should only be used with http servers"
            )


# --- ServiceEntry and WorkloadEntry --------------------------------------------------------


def _workload_entry(
    we: n.WorkloadEntry, p: str, errs: FieldErrors, service_ports: set[str] | None, allow_fqdn: bool
) -> None:
    """Istio's validateWorkloadEntry (a WorkloadEntry, or a STATIC ServiceEntry endpoint)."""
    addr = we.address
    if not addr:
        if not we.network:
            errs.error(f"{p}.address", "address is required")
            return
        errs.warn(f"{p}.address", f'address is unset with network "{we.network}"')
    unix = addr.startswith(UNIX_ADDRESS_PREFIX)
    if unix:
        if err := validate_unix_address(addr[len(UNIX_ADDRESS_PREFIX) :]):
            errs.error(f"{p}.address", err)
        if we.ports:
            errs.error(f"{p}.ports", f"unix endpoint {addr} must not include ports")
    elif addr and not is_ip(addr):
        if not allow_fqdn:
            errs.error(f"{p}.address", f'endpoint address "{addr}" is not a valid IP address')
        elif validate_fqdn(addr):
            errs.error(
                f"{p}.address", f'endpoint address "{addr}" is not a valid FQDN or an IP address'
            )
    _endpoint_ports(we, p, errs, service_ports)
    _labels(we.labels, f"{p}.labels", errs)
    if unix and service_ports is not None and len(service_ports) != 1:
        errs.error(p, "exactly 1 service port required for unix endpoints")


def _endpoint_ports(
    we: n.WorkloadEntry, p: str, errs: FieldErrors, service_ports: set[str] | None
) -> None:
    for name, port in we.ports.items():
        pp = f"{p}.ports.{name}"
        if service_ports is not None and name not in service_ports:
            errs.error(pp, f"endpoint port {port} is not defined by the service entry")
        if err := validate_port_name(name):
            errs.error(pp, err)
        _port(port, pp, errs)


@validates(GROUP, "WorkloadEntry")
def validate_workload_entry(res: Resource, errs: FieldErrors) -> None:
    _workload_entry(res.spec, "spec", errs, None, allow_fqdn=True)


def _auto_allocates(res: Resource) -> bool:
    """Istio allocates addresses to ServiceEntries unless the label opts out."""
    return res.metadata.labels.get(AUTOALLOCATE_LABEL, "").lower() != "false"


@validates(GROUP, "ServiceEntry")
def validate_service_entry(res: Resource, errs: FieldErrors) -> None:
    se: n.ServiceEntry = res.spec
    _alpha_selector(se.workload_selector, "spec.workloadSelector", errs, "service entry")
    if se.workload_selector is not None and se.endpoints:
        errs.error("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")

    if not se.hosts:
        errs.error("spec.hosts", "service entry must have at least one host")
    for i, host in enumerate(se.hosts):
        p = f"spec.hosts[{i}]"
        if host == "*":
            errs.error(p, f"invalid host {host}")
            continue
        if err := validate_wildcard_domain(host):
            errs.error(p, err)
        if warn := validate_partial_wildcard(host):
            errs.warn(p, warn)

    cidr = False
    for i, addr in enumerate(se.addresses):
        cidr = cidr or "/" in addr
        if err := validate_ip_or_cidr(addr):
            errs.error(f"spec.addresses[{i}]", err)
    if cidr and se.resolution not in ("NONE", "STATIC"):
        errs.error(
            "spec.resolution", "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )

    port_names: set[str] = set()
    port_numbers: set[int] = set()
    auto = _auto_allocates(res)
    for i, port in enumerate(se.ports):
        p = f"spec.ports[{i}]"
        if port.name in port_names:
            errs.error(f"{p}.name", f'service entry port name "{port.name}" already defined')
        port_names.add(port.name)
        if port.number in port_numbers:
            errs.error(f"{p}.number", f"service entry port {port.number} already defined")
        port_numbers.add(port.number)
        if port.target_port:
            _port(port.target_port, f"{p}.targetPort", errs)
            if se.resolution == "NONE":
                errs.warn(
                    f"{p}.targetPort", "targetPort has no effect when resolution mode is NONE"
                )
        if not se.addresses and not auto and port.protocol in ("", "TCP"):
            errs.warn(
                f"{p}.protocol",
                "addresses are required for ports serving TCP (or unset) protocol when "
                "ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
            )
        if err := validate_port_name(port.name):
            errs.error(f"{p}.name", err)
        if err := validate_protocol(port.protocol):
            errs.error(f"{p}.protocol", err)
        _port(port.number, f"{p}.number", errs)

    _resolution_rules(se, errs, port_names)

    # Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports (unless NONE).
    if se.resolution != "NONE" and len(se.hosts) > 1:
        for i, port in enumerate(se.ports):
            if not is_http_protocol(port.protocol) and not is_tls_protocol(port.protocol):
                errs.error(
                    f"spec.ports[{i}].protocol",
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                )
                break

    _export_to(res, se.export_to, errs, is_service_entry=True)


def _resolution_rules(se: n.ServiceEntry, errs: FieldErrors, port_names: set[str]) -> None:
    if se.resolution == "NONE":
        if se.endpoints:
            errs.error("spec.endpoints", "no endpoints should be provided for resolution type none")
        if se.workload_selector is not None:
            errs.warn(
                "spec.workloadSelector",
                "workloadSelector should not be set when resolution mode is NONE",
            )
        return
    if se.resolution == "DYNAMIC_DNS":
        # Destinations are resolved from the requested host name at request time.
        if se.endpoints:
            errs.error("spec.endpoints", "endpoints cannot be set for resolution mode DYNAMIC_DNS")
        if se.addresses:
            errs.error("spec.addresses", "addresses cannot be set for resolution mode DYNAMIC_DNS")
        return
    if se.resolution == "STATIC":
        for i, ep in enumerate(se.endpoints):
            _workload_entry(ep, f"spec.endpoints[{i}]", errs, port_names, allow_fqdn=False)
        return
    # DNS and DNS_ROUND_ROBIN
    if not se.endpoints:
        for i, host in enumerate(se.hosts):
            if host != "*" and validate_fqdn(host):
                errs.error(
                    f"spec.hosts[{i}]",
                    f"hosts must be FQDN if no endpoints are provided for resolution mode {se.resolution}",
                )
    if se.resolution == "DNS_ROUND_ROBIN" and len(se.endpoints) > 1:
        errs.error(
            "spec.endpoints",
            f"there must only be 0 or 1 endpoint for resolution mode {se.resolution}",
        )
    for i, ep in enumerate(se.endpoints):
        p = f"spec.endpoints[{i}]"
        if not is_ip(ep.address) and validate_fqdn(ep.address):
            errs.error(
                f"{p}.address",
                f'endpoint address "{ep.address}" is not a valid FQDN or an IP address',
            )
        _labels(ep.labels, f"{p}.labels", errs)
        _endpoint_ports(ep, p, errs, port_names)
    if se.workload_selector is not None:
        errs.warn(
            "spec.workloadSelector",
            f"workloadSelector should not be set when resolution mode is {se.resolution}",
        )
    if se.addresses and len(se.hosts) > 1 and any(is_tcp_protocol(pt.protocol) for pt in se.ports):
        errs.warn(
            "spec.hosts",
            "service entry can not have more than one host specified simultaneously with address and tcp port",
        )


# --- WorkloadGroup -------------------------------------------------------------------------


@validates(GROUP, "WorkloadGroup")
def validate_workload_group(res: Resource, errs: FieldErrors) -> None:
    wg: n.WorkloadGroup = res.spec
    if wg.template is None:
        errs.error("spec.template", "template is required")
    if wg.metadata is not None:
        for key, value in wg.metadata.labels.items():
            for err in validate_labels({key: value}):
                errs.error(f"spec.metadata.labels.{key}", f"invalid labels: {err}")
    if wg.probe is not None:
        _probe(wg.probe, "spec.probe", errs)


def _probe(pr: n.ReadinessProbe, p: str, errs: FieldErrors) -> None:
    for field, value in (
        ("periodSeconds", pr.period_seconds),
        ("initialDelaySeconds", pr.initial_delay_seconds),
        ("timeoutSeconds", pr.timeout_seconds),
        ("successThreshold", pr.success_threshold),
        ("failureThreshold", pr.failure_threshold),
    ):
        if value < 0:
            errs.error(f"{p}.{field}", f"{field} must be non-negative")
    _oneof(pr, p, errs, "http_get", "tcp_socket", "exec", "grpc")
    if (h := pr.http_get) is not None:
        _port(h.port, f"{p}.httpGet.port", errs)
        if h.scheme and h.scheme not in ("HTTP", "HTTPS"):
            errs.error(f"{p}.httpGet.scheme", 'httpGet.scheme must be one of "HTTPS", "HTTP"')
        for i, header in enumerate(h.http_headers):
            if err := validate_http_header_name(header.name):
                errs.error(f"{p}.httpGet.httpHeaders[{i}].name", err)
    elif pr.tcp_socket is not None:
        _port(pr.tcp_socket.port, f"{p}.tcpSocket.port", errs)
    elif pr.exec is not None:
        if not pr.exec.command:
            errs.error(f"{p}.exec.command", "exec.command is required")
    elif pr.grpc is not None:
        _port(pr.grpc.port, f"{p}.grpc.port", errs)
    else:
        errs.error(p, "unknown health check method <nil>")


# --- Sidecar -------------------------------------------------------------------------------

DEFAULT_ENDPOINT_HOSTS = ("127.0.0.1", "0.0.0.0", "::1", "::")


def _split_host_port(text: str) -> tuple[str, str] | str:
    """Go's net.SplitHostPort: (host, port), or the reason it fails."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return f"address {text}: missing ']' in address"
        host, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            return f"address {text}: missing port in address"
        return host, rest[1:]
    if ":" not in text:
        return f"address {text}: missing port in address"
    host, _, port = text.rpartition(":")
    if ":" in host:
        return f"address {text}: too many colons in address"
    return host, port


def _default_endpoint(ep: str, p: str, errs: FieldErrors) -> None:
    if ep.startswith(UNIX_ADDRESS_PREFIX):
        if err := validate_unix_address(ep[len(UNIX_ADDRESS_PREFIX) :]):
            errs.error(p, err)
        return
    split = _split_host_port(ep)
    host, port = ("", "") if isinstance(split, str) else split
    if isinstance(split, str):
        errs.error(p, split)
    if host and host not in DEFAULT_ENDPOINT_HOSTS:
        errs.error(
            p,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,"
            "unix://filepath or unset",
        )
    if not port.lstrip("+-").isdigit():
        errs.error(
            p,
            f'sidecar: defaultEndpoint port ({port}) is not a number: strconv.Atoi: parsing "{port}": invalid syntax',
        )
    else:
        _port(int(port), p, errs)


def _sidecar_port(
    port: n.SidecarPort, bind: str, p: str, errs: FieldErrors, egress: bool, capture_mode: str
) -> None:
    if port.name and (err := validate_port_name(port.name)):
        errs.error(f"{p}.port.name", err)
    if err := validate_protocol(port.protocol):
        errs.error(f"{p}.port.protocol", err)
    if egress and port.number == 0:
        # A listener on a Unix domain socket.
        if not bind.startswith(UNIX_ADDRESS_PREFIX):
            errs.error(
                f"{p}.bind",
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            )
        elif err := validate_unix_address(bind[len(UNIX_ADDRESS_PREFIX) :]):
            errs.error(f"{p}.bind", err)
        if capture_mode not in ("DEFAULT", "NONE"):
            errs.error(
                f"{p}.captureMode",
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            )
        return
    _port(port.number, f"{p}.port.number", errs)
    if bind and (err := validate_ip_address(bind)):
        errs.error(f"{p}.bind", err)


def _ingress(ingress: list[n.IstioIngressListener], errs: FieldErrors) -> None:
    ports: set[int] = set()
    for i, li in enumerate(ingress):
        p = f"spec.ingress[{i}]"
        if li.port is None:
            errs.error(f"{p}.port", "sidecar: port is required for ingress listeners")
            continue
        if li.port.target_port > 0:
            errs.error(f"{p}.port.targetPort", "targetPort has no impact on Sidecars")
        _sidecar_port(li.port, li.bind, p, errs, egress=False, capture_mode=li.capture_mode)
        if li.port.number in ports:
            errs.error(f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique")
        ports.add(li.port.number)
        if li.default_endpoint:
            _default_endpoint(li.default_endpoint, f"{p}.defaultEndpoint", errs)
        if (t := li.tls) is not None:
            tp = f"{p}.tls"
            if t.subject_alt_names:
                errs.error(
                    f"{tp}.subjectAltNames",
                    "sidecar: subjectAltNames is not supported in ingress tls",
                )
            if t.https_redirect:
                errs.error(f"{tp}.httpsRedirect", "sidecar: httpsRedirect is not supported")
            if t.credential_name:
                errs.error(
                    f"{tp}.credentialName", "sidecar: credentialName is not currently supported"
                )
            if t.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                errs.error(
                    f"{tp}.mode",
                    f"configuration is invalid: cannot set mode to {t.mode} in sidecar ingress tls",
                )
            _server_tls(t, tp, errs)
        _connection_pool(li.connection_pool, f"{p}.connectionPool", errs)
        if (
            li.connection_pool is not None
            and li.connection_pool.http is not None
            and not is_http_protocol(li.port.protocol)
        ):
            errs.warn(
                f"{p}.connectionPool.http",
                f"sidecar: HTTP connection pool settings are configured for port {li.port.number} "
                f'("{li.port.name}") but its protocol is not HTTP ({li.port.protocol}); only TCP settings will apply',
            )


def _egress(res: Resource, egress: list[n.IstioEgressListener], errs: FieldErrors) -> None:
    ports: set[int] = set()
    sockets: set[str] = set()
    catch_all = False
    for i, li in enumerate(egress):
        p = f"spec.egress[{i}]"
        if li.port is None:
            # Only one listener may omit the port, and it must come last.
            if catch_all:
                errs.error(p, "sidecar: egress can have only one listener with empty port")
                continue
            if i == len(egress) - 1:
                catch_all = True
            else:
                errs.error(
                    p,
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                )
        else:
            if li.port.target_port > 0:
                errs.error(f"{p}.port.targetPort", "targetPort has no impact on Sidecars")
            _sidecar_port(li.port, li.bind, p, errs, egress=True, capture_mode=li.capture_mode)
            if li.port.number == 0:
                if li.bind in sockets:
                    errs.error(
                        f"{p}.bind",
                        "sidecar: unix domain socket values for listeners must be unique",
                    )
                sockets.add(li.bind)
            else:
                if li.port.number in ports:
                    errs.error(
                        f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique"
                    )
                ports.add(li.port.number)
        _egress_hosts(res, li.hosts, f"{p}.hosts", errs)


def _egress_hosts(res: Resource, hosts: list[str], p: str, errs: FieldErrors) -> None:
    if not hosts:
        errs.error(p, "sidecar: egress listener must contain at least one host")
        return
    by_ns: dict[str, set[str]] = {}
    for i, host in enumerate(hosts):
        hp = f"{p}[{i}]"
        ns, sep, svc = host.partition("/")
        if sep:
            if ns == ".":
                ns = res.namespace or ""
            svcs = by_ns.setdefault(ns, set())
            if (svc != "*" and (svc in svcs or "*" in svcs)) or (svc == "*" and svcs):
                errs.warn(hp, f"duplicated egress host: {host}")
            svcs.add(svc)
        for err in validate_namespace_slash_hostname(host, is_gateway=False):
            errs.error(hp, err)
    if "*" in by_ns.get("*", set()) and len(by_ns) != 1:
        errs.warn(p, "`*/*` host select all resources, no other hosts can be added")


@validates(GROUP, "Sidecar")
def validate_sidecar(res: Resource, errs: FieldErrors) -> None:
    sc: n.Sidecar = res.spec
    _alpha_selector(sc.workload_selector, "spec.workloadSelector", errs, "sidecar")
    if (
        not sc.egress
        and not sc.ingress
        and sc.outbound_traffic_policy is None
        and sc.inbound_connection_pool is None
    ):
        errs.error("spec", "sidecar: empty configuration provided")
        return
    _ingress(sc.ingress, errs)
    _connection_pool(sc.inbound_connection_pool, "spec.inboundConnectionPool", errs)
    _egress(res, sc.egress, errs)
    if (otp := sc.outbound_traffic_policy) is not None and (proxy := otp.egress_proxy) is not None:
        p = "spec.outboundTrafficPolicy.egressProxy"
        if otp.mode != "ALLOW_ANY":
            errs.error(
                p,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            )
            return
        if err := validate_fqdn(proxy.host):
            errs.error(f"{p}.host", err)
        if proxy.port is None:
            errs.error(f"{p}.port", "sidecar: egress_proxy port must be non-nil")
            return
        _destination(proxy, p, errs)


# --- EnvoyFilter ---------------------------------------------------------------------------

LISTENER_CLASS = ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER")
ROUTE_CLASS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")


def _envoy_patch(cp: n.EnvoyConfigObjectPatch, p: str, errs: FieldErrors) -> None:
    if cp.apply_to == "INVALID":
        errs.error(f"{p}.applyTo", "Envoy filter: missing applyTo")
        return
    if cp.patch is None:
        errs.error(f"{p}.patch", "Envoy filter: missing patch")
        return
    if cp.patch.operation == "INVALID":
        errs.error(f"{p}.patch.operation", "Envoy filter: missing patch operation")
        return
    if cp.patch.operation != "REMOVE" and cp.patch.value is None:
        errs.error(f"{p}.patch.value", "Envoy filter: missing patch value for non-remove operation")
        return
    m = cp.match
    version = m.proxy.proxy_version if m is not None and m.proxy is not None else ""
    if version and (err := re2_error(version)):
        errs.error(
            f"{p}.match.proxy.proxyVersion",
            f"Envoy filter: invalid regex for proxy version, [{err}]",
        )
        return
    if m is None:
        return
    mp = f"{p}.match"
    _oneof(m, mp, errs, "listener", "route_configuration", "cluster", "waypoint")
    if (m.waypoint is not None) != (m.context == "WAYPOINT") and (
        m.waypoint is not None or m.listener or m.route_configuration or m.cluster
    ):
        errs.error(mp, "only support waypointMatch when context is WAYPOINT")
    if m.waypoint is not None:
        if m.waypoint.port_number > 65535:
            errs.error(f"{mp}.waypoint.portNumber", "port must be between 1-65535")
        _filter_match(cp, m.waypoint.filter, f"{mp}.waypoint.filter", errs)
        return
    has_object = (
        m.listener is not None or m.route_configuration is not None or m.cluster is not None
    )
    if not has_object:
        return
    if cp.apply_to in LISTENER_CLASS:
        if m.listener is None:
            errs.error(
                mp,
                "Envoy filter: applyTo for listener class objects cannot have non listener match",
            )
            return
        fc = m.listener.filter_chain
        _filter_match(cp, fc.filter if fc else None, f"{mp}.listener.filterChain.filter", errs)
    elif cp.apply_to in ROUTE_CLASS:
        if m.route_configuration is None:
            errs.error(
                mp,
                "Envoy filter: applyTo for http route class objects cannot have non route configuration match",
            )
    elif cp.apply_to == "CLUSTER" and m.cluster is None:
        errs.error(
            mp, "Envoy filter: applyTo for cluster class objects cannot have non cluster match"
        )


def _filter_match(
    cp: n.EnvoyConfigObjectPatch, f: n.FilterMatch | None, fp: str, errs: FieldErrors
) -> None:
    """The network filter (and HTTP sub-filter) a listener or waypoint patch matches."""
    if f is None:
        return
    if cp.apply_to in ("LISTENER", "FILTER_CHAIN"):
        # An error in principle; Istio keeps it a warning for compatibility.
        errs.warn(fp, f"Envoy filter: filter match has no effect when used with {cp.apply_to}")
    if not f.name:
        errs.error(f"{fp}.name", "Envoy filter: filter match has no name to match on")
        return
    if f.sub_filter is not None:
        if cp.apply_to != "HTTP_FILTER":
            errs.error(
                f"{fp}.subFilter",
                "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
            )
            return
        if f.name not in (HCM_FILTER, "envoy.http_connection_manager"):
            errs.error(
                f"{fp}.subFilter",
                f"Envoy filter: subfilter match requires filter match with {HCM_FILTER}",
            )
            return
        if not f.sub_filter.name:
            errs.error(
                f"{fp}.subFilter.name", "Envoy filter: subfilter match has no name to match on"
            )
            return
    for path, name in (
        (f"{fp}.name", f.name),
        (f"{fp}.subFilter.name", f.sub_filter.name if f.sub_filter else ""),
    ):
        if name in DEPRECATED_FILTER_NAMES:
            errs.warn(
                path,
                f'using deprecated filter name "{name}"; use "{DEPRECATED_FILTER_NAMES[name]}" instead',
            )


@validates(GROUP, "EnvoyFilter")
def validate_envoy_filter(res: Resource, errs: FieldErrors) -> None:
    ef: n.EnvoyFilter = res.spec
    errs.warn(
        "spec",
        "EnvoyFilter exposes internal implementation details that may change at any time. "
        "Prefer other APIs if possible, and exercise extreme caution, especially around upgrades.",
    )
    _alpha_selector(ef.workload_selector, "spec.workloadSelector", errs, "Envoy filter")
    if ef.workload_selector is not None and ef.target_refs:
        errs.error("spec", "only one of targetRefs or workloadSelector can be set")
    for i, ref in enumerate(ef.target_refs):
        for field, err in validate_target_ref(
            ref.group, ref.kind, ref.name, ref.namespace or "", ENVOY_FILTER_TARGET_KINDS
        ):
            errs.error(f"spec.targetRefs[{i}].{field}", err)
    for i, cp in enumerate(ef.config_patches):
        _envoy_patch(cp, f"spec.configPatches[{i}]", errs)


# --- ProxyConfig ---------------------------------------------------------------------------


@validates(GROUP, "ProxyConfig")
def validate_proxy_config(res: Resource, errs: FieldErrors) -> None:
    pc: n.ProxyConfig = res.spec
    _beta_selector(pc.selector, "spec.selector", errs)
    if pc.concurrency is not None and pc.concurrency < 0:
        errs.error("spec.concurrency", "concurrency must be greater than or equal to 0")
