"""Validation of Gateway API kinds: the rules of the Gateway API CRDs.

The Kubernetes API server checks Gateway API objects against the CRDs' OpenAPI schemas
(patterns, bounds, list sizes) and CEL rules (``x-kubernetes-validations``). Messages are the
CRDs' own; the path is the field at fault (the API server often reports a parent list).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pistio.api import gateway_api as gw
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.registry import validates

GROUP = gw.GROUP

# Patterns of the CRDs' string types.
HOSTNAME_RE = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PRECISE_HOSTNAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECTION_NAME_RE = PRECISE_HOSTNAME_RE
NAMESPACE_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GROUP_RE = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KIND_RE = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
CONTROLLER_RE = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
PROTOCOL_RE = (
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]+$"
)
ADDRESS_TYPE_RE = (
    r"^Hostname|IPAddress|NamedAddress|[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
DURATION_RE = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
HEADER_NAME_RE = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$"
PATH_CHARS_RE = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"
GRPC_SERVICE_RE = r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$"
GRPC_METHOD_RE = r"^[A-Za-z_][A-Za-z_0-9]*$"

MAX_WEIGHT = 1_000_000


# --- Schema-level helpers (OpenAPI: pattern, bounds, sizes) ----------------------------------


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def check_pattern(
    errs: FieldErrors,
    path: str,
    value: str | None,
    pattern: str,
    max_len: int = 253,
    min_len: int = 1,
) -> bool:
    """An OpenAPI string check: length bounds, then the pattern. True when valid."""
    if value is None:
        return True
    if len(value) < min_len:
        errs.error(path, f'Invalid value: "{value}": should be at least {min_len} chars long')
        return False
    if len(value) > max_len:
        errs.error(path, f"Too long: may not be more than {max_len} bytes")
        return False
    if not re.search(pattern, value):
        errs.error(path, f"Invalid value: \"{value}\": should match '{pattern}'")
        return False
    return True


def check_length(errs: FieldErrors, path: str, value: str | None, lo: int, hi: int) -> None:
    if value is None:
        return
    if len(value) < lo:
        errs.error(path, f'Invalid value: "{value}": should be at least {lo} chars long')
    elif len(value) > hi:
        errs.error(path, f"Too long: may not be more than {hi} bytes")


def check_range(errs: FieldErrors, path: str, value: int | None, lo: int, hi: int) -> None:
    if value is None:
        return
    if value < lo:
        errs.error(path, f"Invalid value: {value}: should be greater than or equal to {lo}")
    elif value > hi:
        errs.error(path, f"Invalid value: {value}: should be less than or equal to {hi}")


def check_items(
    errs: FieldErrors, path: str, items: Sequence[Any], max_items: int, min_items: int = 0
) -> None:
    if len(items) < min_items:
        errs.error(path, f"Invalid value: {len(items)}: should have at least {min_items} items")
    elif len(items) > max_items:
        errs.error(path, f"Too many: {len(items)}: must have at most {max_items} items")


def check_unique_keys(errs: FieldErrors, path: str, keys: Iterable[str], field: str) -> None:
    """A ``listType=map`` list: each key may appear once."""
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            errs.error(f"{path}[{i}].{field}", f'Duplicate value: "{key}"')
        seen.add(key)


# --- References -----------------------------------------------------------------------------


def check_parent_ref(errs: FieldErrors, path: str, ref: gw.ParentReference) -> None:
    check_pattern(errs, f"{path}.group", ref.group, GROUP_RE, min_len=0)
    check_pattern(errs, f"{path}.kind", ref.kind, KIND_RE, max_len=63)
    check_pattern(errs, f"{path}.namespace", ref.namespace, NAMESPACE_RE, max_len=63)
    check_length(errs, f"{path}.name", ref.name, 1, 253)
    check_pattern(errs, f"{path}.sectionName", ref.section_name, SECTION_NAME_RE)
    check_range(errs, f"{path}.port", ref.port, 1, 65535)


def _parent_key(ref: gw.ParentReference) -> tuple[str, str, str, str]:
    return (
        ref.group if ref.group is not None else GROUP,
        ref.kind or "Gateway",
        ref.namespace or "",
        ref.name,
    )


def check_parent_refs(errs: FieldErrors, path: str, refs: list[gw.ParentReference]) -> None:
    check_items(errs, path, refs, 32)
    for i, ref in enumerate(refs):
        check_parent_ref(errs, f"{path}[{i}]", ref)
    # Two references to the same parent must each pick a distinct section (listener) or port.
    # The standard-channel CRDs speak of sectionName only; the experimental ones, which add
    # port-based attachment, of "sectionName or port".
    by_parent: dict[tuple[str, str, str, str], list[int]] = {}
    for i, ref in enumerate(refs):
        by_parent.setdefault(_parent_key(ref), []).append(i)
    for indexes in by_parent.values():
        if len(indexes) < 2:
            continue
        picks = [(refs[i].section_name or "", refs[i].port or 0) for i in indexes]
        what = "sectionName or port" if any(port for _, port in picks) else "sectionName"
        if any(p == ("", 0) for p in picks):
            errs.error(
                path,
                f"{what} must be specified when parentRefs includes 2 or more references to "
                "the same parent",
            )
        elif len(set(picks)) != len(picks):
            errs.error(
                path,
                f"{what} must be unique when parentRefs includes 2 or more references to the "
                "same parent",
            )


def check_backend_object(
    errs: FieldErrors,
    path: str,
    ref: gw.BackendObjectReference | gw.HTTPBackendRef | gw.GRPCBackendRef | gw.BackendRef,
) -> None:
    check_pattern(errs, f"{path}.group", ref.group, GROUP_RE, min_len=0)
    check_pattern(errs, f"{path}.kind", ref.kind, KIND_RE, max_len=63)
    check_length(errs, f"{path}.name", ref.name, 1, 253)
    check_pattern(errs, f"{path}.namespace", ref.namespace, NAMESPACE_RE, max_len=63)
    check_range(errs, f"{path}.port", ref.port, 1, 65535)
    is_service = not ref.group and (ref.kind or "Service") == "Service"
    if is_service and ref.port is None:
        errs.error(path, "Must have port for Service reference")


def check_backend_ref(
    errs: FieldErrors, path: str, ref: gw.HTTPBackendRef | gw.GRPCBackendRef | gw.BackendRef
) -> None:
    check_backend_object(errs, path, ref)
    check_range(errs, f"{path}.weight", ref.weight, 0, MAX_WEIGHT)


def check_hostnames(errs: FieldErrors, path: str, hostnames: list[str]) -> None:
    check_items(errs, path, hostnames, 16)
    for i, host in enumerate(hostnames):
        check_pattern(errs, f"{path}[{i}]", host, HOSTNAME_RE)


def check_rule_names(errs: FieldErrors, path: str, names: list[str | None]) -> None:
    counts = Counter(n for n in names if n is not None)
    for i, name in enumerate(names):
        check_pattern(errs, f"{path}[{i}].name", name, SECTION_NAME_RE)
    if any(c > 1 for c in counts.values()):
        errs.error(path, "Rule name must be unique within the route")


def check_total_matches(errs: FieldErrors, path: str, counts: list[int]) -> None:
    if sum(counts) >= 128:
        errs.error(
            path,
            "While 16 rules and 64 matches per rule are allowed, the total number of matches "
            "across all rules in a route must be less than 128",
        )


# --- GatewayClass ---------------------------------------------------------------------------


@validates(GROUP, "GatewayClass")
def validate_gateway_class(res: Resource, errs: FieldErrors) -> None:
    spec: gw.GatewayClassSpec = res.spec
    check_pattern(errs, "spec.controllerName", spec.controller_name, CONTROLLER_RE)
    check_length(errs, "spec.description", spec.description, 0, 64)
    if ref := spec.parameters_ref:
        check_pattern(errs, "spec.parametersRef.group", ref.group, GROUP_RE, min_len=0)
        check_pattern(errs, "spec.parametersRef.kind", ref.kind, KIND_RE, max_len=63)
        check_length(errs, "spec.parametersRef.name", ref.name, 1, 253)
        check_pattern(errs, "spec.parametersRef.namespace", ref.namespace, NAMESPACE_RE, 63)


# --- Gateway --------------------------------------------------------------------------------


def _check_tls(errs: FieldErrors, path: str, tls: gw.GatewayTLSConfig) -> None:
    check_items(errs, f"{path}.certificateRefs", tls.certificate_refs, 64)
    for i, ref in enumerate(tls.certificate_refs):
        p = f"{path}.certificateRefs[{i}]"
        check_pattern(errs, f"{p}.group", ref.group, GROUP_RE, min_len=0)
        check_pattern(errs, f"{p}.kind", ref.kind, KIND_RE, max_len=63)
        check_length(errs, f"{p}.name", ref.name, 1, 253)
        check_pattern(errs, f"{p}.namespace", ref.namespace, NAMESPACE_RE, max_len=63)
    if len(tls.options) > 16:
        errs.error(f"{path}.options", f"Too many: {len(tls.options)}: must have at most 16 items")
    if (tls.mode or "Terminate") == "Terminate" and not tls.certificate_refs and not tls.options:
        errs.error(path, "certificateRefs or options must be specified when mode is Terminate")


def _check_listener(errs: FieldErrors, path: str, listener: gw.Listener) -> None:
    check_pattern(errs, f"{path}.name", listener.name, SECTION_NAME_RE)
    check_pattern(errs, f"{path}.hostname", listener.hostname, HOSTNAME_RE)
    check_range(errs, f"{path}.port", listener.port, 1, 65535)
    check_pattern(errs, f"{path}.protocol", listener.protocol, PROTOCOL_RE, max_len=255)
    protocol = listener.protocol
    if protocol in ("HTTP", "TCP", "UDP") and listener.tls is not None:
        errs.error(f"{path}.tls", "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
    if protocol == "HTTPS" and listener.tls is not None and listener.tls.mode == "Passthrough":
        errs.error(f"{path}.tls.mode", "tls mode must be Terminate for protocol HTTPS")
    if protocol in ("TCP", "UDP") and listener.hostname:
        errs.error(
            f"{path}.hostname", "hostname must not be specified for protocols ['TCP', 'UDP']"
        )
    if listener.tls is not None:
        _check_tls(errs, f"{path}.tls", listener.tls)
    if (allowed := listener.allowed_routes) is not None:
        check_items(errs, f"{path}.allowedRoutes.kinds", allowed.kinds, 8)
        for i, k in enumerate(allowed.kinds):
            p = f"{path}.allowedRoutes.kinds[{i}]"
            check_pattern(errs, f"{p}.group", k.group, GROUP_RE, min_len=0)
            check_pattern(errs, f"{p}.kind", k.kind, KIND_RE, max_len=63)


def _listener_key(listener: gw.Listener) -> tuple[int, str, str | None]:
    return (listener.port, listener.protocol, listener.hostname)


@validates(GROUP, "Gateway")
def validate_gateway(res: Resource, errs: FieldErrors) -> None:
    spec: gw.GatewaySpec = res.spec
    check_length(errs, "spec.gatewayClassName", spec.gateway_class_name, 1, 253)
    check_items(errs, "spec.listeners", spec.listeners, 64, min_items=1)
    for i, listener in enumerate(spec.listeners):
        _check_listener(errs, f"spec.listeners[{i}]", listener)
    names = Counter(listener.name for listener in spec.listeners)
    keys = Counter(_listener_key(listener) for listener in spec.listeners)
    for i, listener in enumerate(spec.listeners):
        if names[listener.name] > 1:
            errs.error(
                f"spec.listeners[{i}].name", "Listener name must be unique within the Gateway"
            )
        if keys[_listener_key(listener)] > 1:
            errs.error(
                f"spec.listeners[{i}]",
                "Combination of port, protocol and hostname must be unique for each listener",
            )
    _check_addresses(errs, spec.addresses)


def _check_addresses(errs: FieldErrors, addresses: list[gw.GatewaySpecAddress]) -> None:
    check_items(errs, "spec.addresses", addresses, 16)
    seen: Counter[tuple[str, str]] = Counter(
        (a.type or "IPAddress", a.value) for a in addresses if a.value is not None
    )
    for i, a in enumerate(addresses):
        path = f"spec.addresses[{i}]"
        kind = a.type or "IPAddress"
        check_pattern(errs, f"{path}.type", a.type, ADDRESS_TYPE_RE)
        check_length(errs, f"{path}.value", a.value, 1, 253)
        if kind == "Hostname" and a.value and not re.search(HOSTNAME_RE, a.value):
            errs.error(
                f"{path}.value",
                f"Hostname value must only contain valid characters (matching {HOSTNAME_RE})",
            )
        if a.value is not None and seen[(kind, a.value)] > 1 and kind in ("IPAddress", "Hostname"):
            errs.error(f"{path}.value", f"{kind} values must be unique")


# --- Route filters ----------------------------------------------------------------------------

# filter type → the config field that goes with it (attribute, YAML name).
_FILTER_FIELDS = {
    "RequestHeaderModifier": ("request_header_modifier", "requestHeaderModifier"),
    "ResponseHeaderModifier": ("response_header_modifier", "responseHeaderModifier"),
    "RequestMirror": ("request_mirror", "requestMirror"),
    "RequestRedirect": ("request_redirect", "requestRedirect"),
    "URLRewrite": ("url_rewrite", "urlRewrite"),
    "ExtensionRef": ("extension_ref", "extensionRef"),
    "CORS": ("cors", "cors"),
    "ExternalAuth": ("external_auth", "externalAuth"),
}


def _check_filter_fields(
    errs: FieldErrors, path: str, f: gw.HTTPRouteFilter | gw.GRPCRouteFilter
) -> None:
    """Exactly the config field that matches ``type`` is set."""
    for ftype, (attr, name) in _FILTER_FIELDS.items():
        if not hasattr(f, attr):
            continue
        present = getattr(f, attr) is not None
        if f.type == ftype and not present:
            errs.error(path, f"filter.{name} must be specified for {ftype} filter.type")
        elif f.type != ftype and present:
            errs.error(
                f"{path}.{name}", f"filter.{name} must be nil if the filter.type is not {ftype}"
            )


def _check_header_filter(errs: FieldErrors, path: str, hf: gw.HTTPHeaderFilter) -> None:
    for field, headers in (("set", hf.set), ("add", hf.add)):
        check_items(errs, f"{path}.{field}", headers, 16)
        for i, h in enumerate(headers):
            check_pattern(errs, f"{path}.{field}[{i}].name", h.name, HEADER_NAME_RE, max_len=256)
            check_length(errs, f"{path}.{field}[{i}].value", h.value, 1, 4096)
        check_unique_keys(errs, f"{path}.{field}", (h.name for h in headers), "name")
    check_items(errs, f"{path}.remove", hf.remove, 16)
    seen: set[str] = set()
    for i, name in enumerate(hf.remove):
        if name in seen:
            errs.error(f"{path}.remove[{i}]", f'Duplicate value: "{name}"')
        seen.add(name)


def _check_path_modifier(errs: FieldErrors, path: str, m: gw.HTTPPathModifier) -> None:
    if m.type == "ReplaceFullPath" and m.replace_full_path is None:
        errs.error(path, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'")
    if m.replace_full_path is not None and m.type != "ReplaceFullPath":
        errs.error(path, "type must be 'ReplaceFullPath' when replaceFullPath is set")
    if m.type == "ReplacePrefixMatch" and m.replace_prefix_match is None:
        errs.error(
            path, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'"
        )
    if m.replace_prefix_match is not None and m.type != "ReplacePrefixMatch":
        errs.error(path, "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set")
    check_length(errs, f"{path}.replaceFullPath", m.replace_full_path, 0, 1024)
    check_length(errs, f"{path}.replacePrefixMatch", m.replace_prefix_match, 0, 1024)


def _check_mirror(errs: FieldErrors, path: str, m: gw.HTTPRequestMirrorFilter) -> None:
    check_backend_object(errs, f"{path}.backendRef", m.backend_ref)
    check_range(errs, f"{path}.percent", m.percent, 0, 100)
    if m.percent is not None and m.fraction is not None:
        errs.error(
            path, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"
        )
    if (fr := m.fraction) is not None:
        check_range(errs, f"{path}.fraction.numerator", fr.numerator, 0, 2**31 - 1)
        check_range(errs, f"{path}.fraction.denominator", fr.denominator, 1, 2**31 - 1)
        if fr.numerator > (fr.denominator if fr.denominator is not None else 100):
            errs.error(f"{path}.fraction", "numerator must be less than or equal to denominator")


def check_http_filter(errs: FieldErrors, path: str, f: gw.HTTPRouteFilter) -> None:
    _check_filter_fields(errs, path, f)
    if f.request_header_modifier is not None:
        _check_header_filter(errs, f"{path}.requestHeaderModifier", f.request_header_modifier)
    if f.response_header_modifier is not None:
        _check_header_filter(errs, f"{path}.responseHeaderModifier", f.response_header_modifier)
    if f.request_mirror is not None:
        _check_mirror(errs, f"{path}.requestMirror", f.request_mirror)
    if (r := f.request_redirect) is not None:
        p = f"{path}.requestRedirect"
        check_pattern(errs, f"{p}.hostname", r.hostname, PRECISE_HOSTNAME_RE)
        check_range(errs, f"{p}.port", r.port, 1, 65535)
        if r.path is not None:
            _check_path_modifier(errs, f"{p}.path", r.path)
    if (w := f.url_rewrite) is not None:
        check_pattern(errs, f"{path}.urlRewrite.hostname", w.hostname, PRECISE_HOSTNAME_RE)
        if w.path is not None:
            _check_path_modifier(errs, f"{path}.urlRewrite.path", w.path)


def check_http_filter_list(errs: FieldErrors, path: str, filters: list[gw.HTTPRouteFilter]) -> None:
    check_items(errs, path, filters, 16)
    for i, f in enumerate(filters):
        check_http_filter(errs, f"{path}[{i}]", f)
    types = Counter(f.type for f in filters)
    if types["RequestRedirect"] and types["URLRewrite"]:
        errs.error(
            path,
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, "
            "but not both",
        )
    for ftype in (
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
    ):
        if types[ftype] > 1:
            errs.error(path, f"{ftype} filter cannot be repeated")


def _replaces_prefix(filters: list[gw.HTTPRouteFilter]) -> tuple[bool, bool]:
    """Whether a RequestRedirect / URLRewrite filter replaces the matched prefix."""

    def uses(m: gw.HTTPPathModifier | None) -> bool:
        return (
            m is not None and m.type == "ReplacePrefixMatch" and m.replace_prefix_match is not None
        )

    redirect = any(
        f.request_redirect is not None and uses(f.request_redirect.path) for f in filters
    )
    rewrite = any(f.url_rewrite is not None and uses(f.url_rewrite.path) for f in filters)
    return redirect, rewrite


# --- HTTPRoute --------------------------------------------------------------------------------


def _check_path_match(errs: FieldErrors, path: str, m: gw.HTTPPathMatch) -> None:
    kind = m.type or "PathPrefix"
    value = m.value if m.value is not None else "/"
    check_length(errs, f"{path}.value", m.value, 0, 1024)
    if kind not in ("Exact", "PathPrefix"):
        return
    vpath = f"{path}.value"
    where = "when type one of ['Exact', 'PathPrefix']"
    if not value.startswith("/"):
        errs.error(vpath, f"value must be an absolute path and start with '/' {where}")
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            errs.error(vpath, f"must not contain '{bad}' {where}")
    for bad in ("/..", "/."):
        if value.endswith(bad):
            errs.error(vpath, f"must not end with '{bad}' {where}")
    if value and not re.search(PATH_CHARS_RE, value):
        errs.error(
            vpath,
            f"must only contain valid characters (matching {PATH_CHARS_RE}) for types "
            "['Exact', 'PathPrefix']",
        )


def _check_header_matches(
    errs: FieldErrors,
    path: str,
    headers: list[gw.HTTPHeaderMatch] | list[gw.GRPCHeaderMatch],
    max_name: int = 256,
) -> None:
    check_items(errs, path, headers, 16)
    for i, h in enumerate(headers):
        check_pattern(errs, f"{path}[{i}].name", h.name, HEADER_NAME_RE, max_len=max_name)
        check_length(errs, f"{path}[{i}].value", h.value, 1, 4096)
    check_unique_keys(errs, path, (h.name for h in headers), "name")


def _check_http_match(errs: FieldErrors, path: str, m: gw.HTTPRouteMatch) -> None:
    if m.path is not None:
        _check_path_match(errs, f"{path}.path", m.path)
    _check_header_matches(errs, f"{path}.headers", m.headers)
    check_items(errs, f"{path}.queryParams", m.query_params, 16)
    for i, q in enumerate(m.query_params):
        check_pattern(errs, f"{path}.queryParams[{i}].name", q.name, HEADER_NAME_RE, max_len=256)
        check_length(errs, f"{path}.queryParams[{i}].value", q.value, 1, 1024)
    check_unique_keys(errs, f"{path}.queryParams", (q.name for q in m.query_params), "name")


def _check_timeouts(errs: FieldErrors, path: str, t: gw.HTTPRouteTimeouts) -> None:
    ok_request = check_pattern(errs, f"{path}.request", t.request, DURATION_RE)
    ok_backend = check_pattern(errs, f"{path}.backendRequest", t.backend_request, DURATION_RE)
    if not (ok_request and ok_backend) or t.request is None or t.backend_request is None:
        return
    request, backend = gateway_duration(t.request), gateway_duration(t.backend_request)
    if request != 0 and backend > request:
        errs.error(path, "backendRequest timeout cannot be longer than request timeout")


def gateway_duration(text: str) -> float:
    """Seconds in a Gateway API duration (``1h30m``, ``500ms``); the syntax is pre-checked."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", text))


def _check_http_rule(errs: FieldErrors, path: str, rule: gw.HTTPRouteRule) -> None:
    check_items(errs, f"{path}.matches", rule.matches, 64)
    for i, m in enumerate(rule.matches):
        _check_http_match(errs, f"{path}.matches[{i}]", m)
    check_http_filter_list(errs, f"{path}.filters", rule.filters)
    check_items(errs, f"{path}.backendRefs", rule.backend_refs, 16)
    for i, b in enumerate(rule.backend_refs):
        bpath = f"{path}.backendRefs[{i}]"
        check_backend_ref(errs, bpath, b)
        check_http_filter_list(errs, f"{bpath}.filters", b.filters)
    if rule.backend_refs and any(f.request_redirect is not None for f in rule.filters):
        errs.error(path, "RequestRedirect filter must not be used together with backendRefs")
    one_prefix = (
        len(rule.matches) == 1
        and rule.matches[0].path is not None
        and (rule.matches[0].path.type or "PathPrefix") == "PathPrefix"
    ) or not rule.matches  # no matches defaults to a single PathPrefix "/" match
    redirect, rewrite = _replaces_prefix(rule.filters)
    for used, name in ((redirect, "RequestRedirect"), (rewrite, "URLRewrite")):
        if used and not one_prefix:
            errs.error(
                path,
                f"When using {name} filter with path.replacePrefixMatch, exactly one PathPrefix "
                "match must be specified",
            )
    for b in rule.backend_refs:
        redirect, rewrite = _replaces_prefix(b.filters)
        for used, name in ((redirect, "RequestRedirect"), (rewrite, "URLRewrite")):
            if used and not one_prefix:
                errs.error(
                    path,
                    f"Within backendRefs, when using {name} filter with path.replacePrefixMatch, "
                    "exactly one PathPrefix match must be specified",
                )
    if rule.timeouts is not None:
        _check_timeouts(errs, f"{path}.timeouts", rule.timeouts)
    if (r := rule.retry) is not None:
        for i, code in enumerate(r.codes):
            check_range(errs, f"{path}.retry.codes[{i}]", code, 400, 599)
        check_range(errs, f"{path}.retry.attempts", r.attempts, 0, 2**31 - 1)
        check_pattern(errs, f"{path}.retry.backoff", r.backoff, DURATION_RE)
    if rule.session_persistence is not None:
        _check_session_persistence(errs, f"{path}.sessionPersistence", rule.session_persistence)


def _check_session_persistence(errs: FieldErrors, path: str, sp: gw.SessionPersistence) -> None:
    check_length(errs, f"{path}.sessionName", sp.session_name, 1, 128)
    check_pattern(errs, f"{path}.absoluteTimeout", sp.absolute_timeout, DURATION_RE)
    check_pattern(errs, f"{path}.idleTimeout", sp.idle_timeout, DURATION_RE)
    permanent = sp.cookie_config is not None and sp.cookie_config.lifetime_type == "Permanent"
    if permanent and sp.absolute_timeout is None:
        errs.error(path, "AbsoluteTimeout must be specified when cookie lifetimeType is Permanent")


@validates(GROUP, "HTTPRoute")
def validate_http_route(res: Resource, errs: FieldErrors) -> None:
    spec: gw.HTTPRouteSpec = res.spec
    check_parent_refs(errs, "spec.parentRefs", spec.parent_refs)
    check_hostnames(errs, "spec.hostnames", spec.hostnames)
    check_items(errs, "spec.rules", spec.rules, 16)
    for i, rule in enumerate(spec.rules):
        _check_http_rule(errs, f"spec.rules[{i}]", rule)
    check_rule_names(errs, "spec.rules", [r.name for r in spec.rules])
    check_total_matches(errs, "spec.rules", [len(r.matches) for r in spec.rules])


# --- GRPCRoute --------------------------------------------------------------------------------


def _check_grpc_filter_list(
    errs: FieldErrors, path: str, filters: list[gw.GRPCRouteFilter]
) -> None:
    check_items(errs, path, filters, 16)
    for i, f in enumerate(filters):
        fpath = f"{path}[{i}]"
        _check_filter_fields(errs, fpath, f)
        if f.request_header_modifier is not None:
            _check_header_filter(errs, f"{fpath}.requestHeaderModifier", f.request_header_modifier)
        if f.response_header_modifier is not None:
            _check_header_filter(
                errs, f"{fpath}.responseHeaderModifier", f.response_header_modifier
            )
        if f.request_mirror is not None:
            _check_mirror(errs, f"{fpath}.requestMirror", f.request_mirror)
    types = Counter(f.type for f in filters)
    for ftype in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        if types[ftype] > 1:
            errs.error(path, f"{ftype} filter cannot be repeated")


def _check_grpc_method(errs: FieldErrors, path: str, m: gw.GRPCMethodMatch) -> None:
    if not m.service and not m.method:
        errs.error(path, "One or both of 'service' or 'method' must be specified")
    check_length(errs, f"{path}.service", m.service, 0, 1024)
    check_length(errs, f"{path}.method", m.method, 0, 1024)
    if (m.type or "Exact") != "Exact":
        return
    if m.service and not re.search(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", m.service, re.I):
        errs.error(
            f"{path}.service",
            f"service must only contain valid characters (matching {GRPC_SERVICE_RE})",
        )
    if m.method and not re.search(GRPC_METHOD_RE, m.method):
        errs.error(
            f"{path}.method",
            f"method must only contain valid characters (matching {GRPC_METHOD_RE})",
        )


@validates(GROUP, "GRPCRoute")
def validate_grpc_route(res: Resource, errs: FieldErrors) -> None:
    spec: gw.GRPCRouteSpec = res.spec
    check_parent_refs(errs, "spec.parentRefs", spec.parent_refs)
    check_hostnames(errs, "spec.hostnames", spec.hostnames)
    check_items(errs, "spec.rules", spec.rules, 16)
    for i, rule in enumerate(spec.rules):
        path = f"spec.rules[{i}]"
        check_items(errs, f"{path}.matches", rule.matches, 64)
        for j, m in enumerate(rule.matches):
            if m.method is not None:
                _check_grpc_method(errs, f"{path}.matches[{j}].method", m.method)
            _check_header_matches(errs, f"{path}.matches[{j}].headers", m.headers)
        _check_grpc_filter_list(errs, f"{path}.filters", rule.filters)
        check_items(errs, f"{path}.backendRefs", rule.backend_refs, 16)
        for j, b in enumerate(rule.backend_refs):
            check_backend_ref(errs, f"{path}.backendRefs[{j}]", b)
            _check_grpc_filter_list(errs, f"{path}.backendRefs[{j}].filters", b.filters)
        if rule.session_persistence is not None:
            _check_session_persistence(errs, f"{path}.sessionPersistence", rule.session_persistence)
    check_rule_names(errs, "spec.rules", [r.name for r in spec.rules])
    check_total_matches(errs, "spec.rules", [len(r.matches) for r in spec.rules])


# --- TCPRoute, TLSRoute, UDPRoute -------------------------------------------------------------


def _check_l4_rules(
    errs: FieldErrors,
    rules: list[gw.L4RouteRule],
    min_backends: int,
) -> None:
    check_items(errs, "spec.rules", rules, 16, min_items=1)
    for i, rule in enumerate(rules):
        path = f"spec.rules[{i}].backendRefs"
        check_items(errs, path, rule.backend_refs, 16, min_items=min_backends)
        for j, b in enumerate(rule.backend_refs):
            check_backend_ref(errs, f"{path}[{j}]", b)
    check_rule_names(errs, "spec.rules", [r.name for r in rules])


@validates(GROUP, "TCPRoute")
def validate_tcp_route(res: Resource, errs: FieldErrors) -> None:
    spec: gw.TCPRouteSpec = res.spec
    check_parent_refs(errs, "spec.parentRefs", spec.parent_refs)
    _check_l4_rules(errs, spec.rules, min_backends=1)


@validates(GROUP, "TLSRoute")
def validate_tls_route(res: Resource, errs: FieldErrors) -> None:
    spec: gw.TLSRouteSpec = res.spec
    check_parent_refs(errs, "spec.parentRefs", spec.parent_refs)
    check_hostnames(errs, "spec.hostnames", spec.hostnames)
    _check_l4_rules(errs, spec.rules, min_backends=1)


@validates(GROUP, "UDPRoute")
def validate_udp_route(res: Resource, errs: FieldErrors) -> None:
    spec: gw.UDPRouteSpec = res.spec
    check_parent_refs(errs, "spec.parentRefs", spec.parent_refs)
    _check_l4_rules(errs, spec.rules, min_backends=1)


# --- ReferenceGrant ---------------------------------------------------------------------------


@validates(GROUP, "ReferenceGrant")
def validate_reference_grant(res: Resource, errs: FieldErrors) -> None:
    spec: gw.ReferenceGrantSpec = res.spec
    check_items(errs, "spec.from", spec.from_, 16, min_items=1)
    for i, f in enumerate(spec.from_):
        check_pattern(errs, f"spec.from[{i}].group", f.group, GROUP_RE, min_len=0)
        check_pattern(errs, f"spec.from[{i}].kind", f.kind, KIND_RE, max_len=63)
        check_pattern(errs, f"spec.from[{i}].namespace", f.namespace, NAMESPACE_RE, max_len=63)
    check_items(errs, "spec.to", spec.to, 16, min_items=1)
    for i, t in enumerate(spec.to):
        check_pattern(errs, f"spec.to[{i}].group", t.group, GROUP_RE, min_len=0)
        check_pattern(errs, f"spec.to[{i}].kind", t.kind, KIND_RE, max_len=63)
        check_length(errs, f"spec.to[{i}].name", t.name, 1, 253)
