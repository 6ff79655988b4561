"""Validation rules for security kinds: PeerAuthentication, RequestAuthentication,
AuthorizationPolicy — Istio's webhook rules, plus its CRDs' CEL rules where the webhook has none.

The selector/targetRef checks here are shared by every policy kind (Telemetry and WasmPlugin
import them too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from pistio.api.security import (
    AuthorizationPolicy,
    JWTRule,
    Operation,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Source,
)
from pistio.api.type_v1beta1 import PolicyTargetReference, WorkloadSelector
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import is_ip, validate_duration
from pistio.config.validation.registry import validates

GROUP = "security.istio.io"


def is_set(model: BaseModel, field: str) -> bool:
    """Whether the input wrote the field (a proto3 ``[]`` or ``{}`` is not the same as absent)."""
    return field in model.model_fields_set


# --- Selector and target references (shared by all policy kinds) ------------------------------

# Istio's allowedTargetRefs, in its own order and spelling (group/version/kind).
_ALLOWED_TARGETS = (
    ("core", "v1", "Service"),
    ("networking.istio.io", "v1", "ServiceEntry"),
    ("gateway.networking.k8s.io", "v1", "Gateway"),
    ("gateway.networking.k8s.io", "v1", "GatewayClass"),
)
_ALLOWED_TARGETS_TEXT = "[" + " ".join("/".join(t) for t in _ALLOWED_TARGETS) + "]"


def check_workload_selector(
    selector: WorkloadSelector | None, path: str, errs: FieldErrors
) -> None:
    if selector is None:
        return
    labels = f"{path}.matchLabels"
    for key, value in selector.match_labels.items():
        if key == "":
            errs.error(labels, f'empty key is not supported in selector: "={value}"')
        if "*" in key or "*" in value:
            errs.error(f"{labels}.{key}", f'wildcard is not supported in selector: "{key}={value}"')
    if not selector.match_labels:
        errs.warn(path, "workload selector specified without labels")


def check_target_ref(ref: PolicyTargetReference, path: str, errs: FieldErrors) -> None:
    if not ref.name:
        errs.error(f"{path}.name", "targetRef name must be set")
    if ref.namespace:
        errs.error(
            f"{path}.namespace",
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        )
    group = ref.group or "core"
    if not any(g == group and k == ref.kind for g, _, k in _ALLOWED_TARGETS):
        errs.error(
            f"{path}.kind",
            f"targetRef must be to one of {_ALLOWED_TARGETS_TEXT} but was {ref.group}/{ref.kind}",
        )


def check_policy_scope(spec: Any, errs: FieldErrors, base: str = "spec") -> None:
    """selector, targetRef and targetRefs: each valid, and at most one of them set."""
    selector = spec.selector
    target_ref = getattr(spec, "target_ref", None)
    target_refs = getattr(spec, "target_refs", [])
    chosen = [selector is not None, target_ref is not None, bool(target_refs)]
    if sum(chosen) > 1:
        where = "targetRefs" if target_refs else "targetRef"
        errs.error(f"{base}.{where}", "only one of targetRefs or workloadSelector can be set")
    check_workload_selector(selector, f"{base}.selector", errs)
    if target_ref is not None:
        check_target_ref(target_ref, f"{base}.targetRef", errs)
    for i, ref in enumerate(target_refs):
        check_target_ref(ref, f"{base}.targetRefs[{i}]", errs)


DRY_RUN = "istio.io/dry-run"
_GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}


def check_dry_run_annotation(res: Resource, errs: FieldErrors, action: str | None = None) -> None:
    """Only AuthorizationPolicy (ALLOW or DENY) may carry istio.io/dry-run, with a boolean."""
    value = res.metadata.annotations.get(DRY_RUN)
    if value is None:
        return
    path = f"metadata.annotations.{DRY_RUN}"
    where = f"{res.namespace or ''}/{res.name}"
    if action is None:
        errs.error(
            path, f"{where} has unsupported annotation {DRY_RUN}, please remove the annotation"
        )
    elif action not in ("ALLOW", "DENY"):
        errs.error(
            path,
            f"the annotation {DRY_RUN} currently only supports action ALLOW/DENY, "
            f"found action {action} in {where}",
        )
    elif value not in _GO_BOOLS:
        errs.error(
            path,
            f"{where} has annotation {DRY_RUN} with invalid value ({value}): "
            f'strconv.ParseBool: parsing "{value}": invalid syntax',
        )


# --- PeerAuthentication -------------------------------------------------------------------------


@validates(GROUP, "PeerAuthentication")
def validate_peer_authentication(res: Resource, errs: FieldErrors) -> None:
    spec: PeerAuthentication = res.spec
    check_dry_run_annotation(res, errs)
    no_labels = spec.selector is None or not spec.selector.match_labels
    if spec.port_level_mtls and no_labels:
        errs.error(
            "spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS"
        )
    if is_set(spec, "port_level_mtls") and not spec.port_level_mtls:
        errs.error(
            "spec.portLevelMtls", "port level mTLS, if defined, must have at least one element"
        )
    for port in spec.port_level_mtls:
        if not 1 <= port <= 65535:
            errs.error(f"spec.portLevelMtls.{port}", "port must be in range 1..65535")
    check_workload_selector(spec.selector, "spec.selector", errs)


# --- RequestAuthentication ----------------------------------------------------------------------

_STRICT_HEADER_NAME = re.compile(r"^[-A-Za-z0-9]+$")


@validates(GROUP, "RequestAuthentication")
def validate_request_authentication(res: Resource, errs: FieldErrors) -> None:
    spec: RequestAuthentication = res.spec
    check_dry_run_annotation(res, errs)
    check_policy_scope(spec, errs)
    for i, rule in enumerate(spec.jwt_rules):
        _check_jwt_rule(rule, f"spec.jwtRules[{i}]", errs)


def _check_jwt_rule(rule: JWTRule, path: str, errs: FieldErrors) -> None:
    for k, audience in enumerate(rule.audiences):
        if not audience:
            errs.error(f"{path}.audiences[{k}]", "audience must be non-empty string")
    if not rule.issuer and not rule.jwks_uri:
        errs.error(f"{path}.issuer", "issuer or jwksUri must be non-empty string")
    if rule.jwks_uri and rule.jwks:
        # The CRD's rule; the webhook itself lets jwks win silently.
        errs.error(path, "only one of jwks or jwksUri can be set")
    if rule.jwks_uri and (err := check_jwks_uri(rule.jwks_uri)):
        errs.error(f"{path}.jwksUri", err)
    if rule.jwks and (err := check_jwks(rule.jwks)):
        errs.error(f"{path}.jwks", f"jwks parse error: {err}")
    for k, header in enumerate(rule.from_headers):
        if not header.name:
            errs.error(
                f"{path}.fromHeaders[{k}].name", "location header name must be non-empty string"
            )
    for k, param in enumerate(rule.from_params):
        if not param:
            errs.error(f"{path}.fromParams[{k}]", "location query must be non-empty string")
    for k, cookie in enumerate(rule.from_cookies):
        if not cookie:
            errs.error(f"{path}.fromCookies[{k}]", "cookie name must be non-empty string")
    for k, out in enumerate(rule.output_claim_to_headers):
        where = f"{path}.outputClaimToHeaders[{k}]"
        if not out.claim or not out.header:
            errs.error(
                where, "outputClaimToHeaders header and claim value must be non-empty string"
            )
        elif not _STRICT_HEADER_NAME.match(out.header):
            errs.error(f"{where}.header", f"header name {out.header} is not a valid header name")
    if rule.timeout is not None and (err := validate_duration(rule.timeout)):
        errs.error(f"{path}.timeout", err)


def check_jwks_uri(uri: str) -> str | None:
    """Istio's ParseJwksURI: an http or https URL."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        return f'parse "{uri}": net/url: invalid control character in URL'
    try:
        parts = urlsplit(uri)
    except ValueError:  # unbalanced IPv6 brackets
        return f"parse \"{uri}\": missing ']' in host"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        port = parts.netloc.rpartition(":")[2]
        if not port.isdigit():
            return f'parse "{uri}": invalid port ":{port}" after host'
    if parts.scheme not in ("http", "https"):
        return f'URI scheme "{parts.scheme}" is not supported'
    return None


# Members a JWK of each key type must have (RFC 7518 section 6).
_JWK_REQUIRED = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}


def check_jwks(text: str) -> str | None:
    """An inline JWKS must be a JSON Web Key Set (or a single JWK), as the JWT filter reads it."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return f"failed to unmarshal JWK set: {exc}"
    if not isinstance(doc, dict):
        return "failed to unmarshal JWK set: expected a JSON object"
    if "keys" in doc:
        keys = doc["keys"]
        if not isinstance(keys, list):
            return 'failed to unmarshal JWK set: "keys" must be an array'
    else:
        keys = [doc]
    for n, key in enumerate(keys):
        if not isinstance(key, dict):
            return f"failed to parse key #{n}: expected a JSON object"
        kty = key.get("kty")
        if not isinstance(kty, str) or not kty:
            return f'failed to parse key #{n}: missing "kty"'
        if kty not in _JWK_REQUIRED:
            return f"failed to parse key #{n}: invalid key type from JSON ({kty})"
        missing = [m for m in _JWK_REQUIRED[kty] if not isinstance(key.get(m), str) or not key[m]]
        if missing:
            return (
                f'failed to parse key #{n}: required field "{missing[0]}" is missing for {kty} key'
            )
    return None


# --- AuthorizationPolicy --------------------------------------------------------------------

_RULES_NEEDED = (
    "action without `rules` is meaningless as it will never be triggered, "
    "add an empty rule `{}` if you want it be triggered for every request"
)

# Source fields: (attribute, JSON name, Istio's name in messages).
_SOURCE_FIELDS = (
    ("principals", "principals", "Principals"),
    ("request_principals", "requestPrincipals", "RequestPrincipals"),
    ("namespaces", "namespaces", "Namespaces"),
    ("service_accounts", "serviceAccounts", "ServiceAccounts"),
    ("ip_blocks", "ipBlocks", "IpBlocks"),
    ("remote_ip_blocks", "remoteIpBlocks", "RemoteIpBlocks"),
    ("not_principals", "notPrincipals", "NotPrincipals"),
    ("not_request_principals", "notRequestPrincipals", "NotRequestPrincipals"),
    ("not_namespaces", "notNamespaces", "NotNamespaces"),
    ("not_service_accounts", "notServiceAccounts", "NotServiceAccounts"),
    ("not_ip_blocks", "notIpBlocks", "NotIpBlocks"),
    ("not_remote_ip_blocks", "notRemoteIpBlocks", "NotRemoteIpBlocks"),
)
_OPERATION_FIELDS = (
    ("ports", "ports", "Ports"),
    ("methods", "methods", "Methods"),
    ("paths", "paths", "Paths"),
    ("hosts", "hosts", "Hosts"),
    ("not_ports", "notPorts", "NotPorts"),
    ("not_methods", "notMethods", "NotMethods"),
    ("not_paths", "notPaths", "NotPaths"),
    ("not_hosts", "notHosts", "NotHosts"),
)
# Source fields a CUSTOM policy cannot match on (the external authorizer sees no peer identity).
_NOT_WITH_CUSTOM = (
    ("namespaces", "namespaces", "From.Namespaces"),
    ("not_namespaces", "notNamespaces", "From.NotNamespaces"),
    ("service_accounts", "serviceAccounts", "From.ServiceAccounts"),
    ("not_service_accounts", "notServiceAccounts", "From.NotServiceAccounts"),
    ("principals", "principals", "From.Principals"),
    ("not_principals", "notPrincipals", "From.NotPrincipals"),
    ("request_principals", "requestPrincipals", "From.RequestPrincipals"),
    ("not_request_principals", "notRequestPrincipals", "From.NotRequestPrincipals"),
)
_IP_FIELDS = (
    ("ip_blocks", "ipBlocks"),
    ("not_ip_blocks", "notIpBlocks"),
    ("remote_ip_blocks", "remoteIpBlocks"),
    ("not_remote_ip_blocks", "notRemoteIpBlocks"),
)
_PEER_FIELDS = ("principals", "not_principals", "namespaces", "not_namespaces")
_SA_FIELDS = ("service_accounts", "not_service_accounts")

DENY_HTTP_ONLY_WARNING = (
    "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to "
    "the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port"
)


@validates(GROUP, "AuthorizationPolicy")
def validate_authorization_policy(res: Resource, errs: FieldErrors) -> None:
    spec: AuthorizationPolicy = res.spec
    check_dry_run_annotation(res, errs, spec.action)
    check_policy_scope(spec, errs)
    if spec.action == "CUSTOM":
        _check_custom(spec, errs)
    if spec.provider is not None and spec.action != "CUSTOM":
        errs.error(
            "spec.provider", f"`provider` must not be with non CUSTOM action, found {spec.action}"
        )
    if spec.action == "DENY" and not spec.rules:
        errs.error("spec.rules", f"DENY {_RULES_NEEDED}")
    for i, rule in enumerate(spec.rules):
        _check_rule(rule, i, spec.action, errs)


def _check_custom(spec: AuthorizationPolicy, errs: FieldErrors) -> None:
    if not spec.rules:
        errs.error("spec.rules", f"CUSTOM {_RULES_NEEDED}")
    elif spec.provider is None or not spec.provider.name:
        errs.error("spec.provider.name", "`provider.name` must not be empty")
    for i, rule in enumerate(spec.rules):
        for j, frm in enumerate(rule.from_):
            if frm.source is None:
                continue
            for attr, json_name, label in _NOT_WITH_CUSTOM:
                if getattr(frm.source, attr):
                    errs.error(
                        f"spec.rules[{i}].from[{j}].source.{json_name}",
                        f"{label} is currently not supported with CUSTOM action",
                    )
        for k, cond in enumerate(rule.when):
            key = cond.key
            if key in ("source.namespace", "source.serviceAccount", "source.principal") or (
                key.startswith("request.auth.")
            ):
                errs.error(
                    f"spec.rules[{i}].when[{k}].key",
                    f"{key} is currently not supported with CUSTOM action",
                )


def _check_rule(rule: Rule, i: int, action: str, errs: FieldErrors) -> None:
    path = f"spec.rules[{i}]"
    from_exists = to_exists = tcp_in_from = tcp_in_to = False

    if is_set(rule, "from_") and not rule.from_:
        errs.error(f"{path}.from", f"`from` must not be empty, found at rule {i}")
    for j, frm in enumerate(rule.from_):
        where = f"{path}.from[{j}].source"
        if frm.source is None:
            errs.error(where, f"`from.source` must not be nil, found at rule {i}")
            continue
        from_exists = True
        _check_source(frm.source, i, where, errs)
        # Any field but requestPrincipals also applies to plain TCP traffic.
        tcp_in_from = tcp_in_from or any(
            getattr(frm.source, attr) for attr, _, _ in _SOURCE_FIELDS if "request" not in attr
        )

    if is_set(rule, "to") and not rule.to:
        errs.error(f"{path}.to", f"`to` must not be empty, found at rule {i}")
    for j, to in enumerate(rule.to):
        where = f"{path}.to[{j}].operation"
        if to.operation is None:
            errs.error(where, f"`to.operation` must not be nil, found at rule {i}")
            continue
        to_exists = True
        _check_operation(to.operation, i, where, errs)
        tcp_in_to = tcp_in_to or bool(to.operation.ports or to.operation.not_ports)

    for k, cond in enumerate(rule.when):
        where = f"{path}.when[{k}]"
        if not cond.key:
            errs.error(f"{where}.key", "`key` must not be empty")
        elif not cond.values and not cond.not_values:
            errs.error(
                where, f"at least one of `values` or `notValues` must be set for key {cond.key}"
            )
        else:
            _check_condition_values(cond.key, cond.values, "value", f"{where}.values", errs)
            _check_condition_values(
                cond.key, cond.not_values, "notValue", f"{where}.notValues", errs
            )

    http_only = (from_exists and not to_exists and not tcp_in_from) or (to_exists and not tcp_in_to)
    if action == "DENY" and http_only:
        errs.warn(path, DENY_HTTP_ONLY_WARNING)


def _check_source(src: Source, i: int, path: str, errs: FieldErrors) -> None:
    if any(getattr(src, a) for a in _PEER_FIELDS) and any(getattr(src, a) for a in _SA_FIELDS):
        errs.error(
            path, f"cannot set serviceAccounts with namespaces or principals, found at rule {i}"
        )
    if not any(getattr(src, attr) for attr, _, _ in _SOURCE_FIELDS):
        errs.error(path, f"`from.source` must not be empty, found at rule {i}")
    for attr, json_name in _IP_FIELDS:
        for k, value in enumerate(getattr(src, attr)):
            # Istio checks the address even when empty, so "" gets both errors.
            if err := check_ip(value):
                errs.error(f"{path}.{json_name}[{k}]", err)
    for attr, json_name, label in _SOURCE_FIELDS:
        values = getattr(src, attr)
        if attr in _SA_FIELDS:
            if found := check_service_accounts(label, values):
                k, err = found
                errs.error(f"{path}.{json_name}" + (f"[{k}]" if k is not None else ""), err)
        elif (k := _first_empty(values)) is not None:
            errs.error(f"{path}.{json_name}[{k}]", f"empty value not allowed, found in {label}")


def _check_operation(op: Operation, i: int, path: str, errs: FieldErrors) -> None:
    if not any(getattr(op, attr) for attr, _, _ in _OPERATION_FIELDS):
        errs.error(path, f"`to.operation` must not be empty, found at rule {i}")
    for attr, json_name in (("ports", "ports"), ("not_ports", "notPorts")):
        for k, port in enumerate(getattr(op, attr)):
            if err := check_port(port):
                errs.error(f"{path}.{json_name}[{k}]", err)
    for attr, json_name, label in _OPERATION_FIELDS:
        if (k := _first_empty(getattr(op, attr))) is not None:
            errs.error(f"{path}.{json_name}[{k}]", f"empty value not allowed, found in {label}")
    for attr, json_name, label in (
        ("paths", "paths", "Paths"),
        ("not_paths", "notPaths", "NotPaths"),
    ):
        if found := check_path_templates(label, getattr(op, attr)):
            k, err = found
            errs.error(f"{path}.{json_name}[{k}]", err)


def _first_empty(values: Sequence[str]) -> int | None:
    return next((k for k, v in enumerate(values) if v == ""), None)


# --- Attribute checks (Istio's pkg/config/security) --------------------------------------------


def check_ip(value: str) -> str | None:
    """An IP address or a CIDR range, as Go's netip parses them."""
    if "/" not in value:
        return None if is_ip(value) else f"bad IP address ({value})"
    addr, _, bits = value.rpartition("/")
    if not is_ip(addr):
        return f'bad CIDR range ({value}): netip.ParsePrefix("{value}"): {_addr_problem(addr)}'
    if not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
        return f'bad CIDR range ({value}): netip.ParsePrefix("{value}"): bad bits after slash: "{bits}"'
    if int(bits) > (32 if ":" not in addr else 128):
        return f'bad CIDR range ({value}): netip.ParsePrefix("{value}"): prefix length out of range'
    return None


def _addr_problem(addr: str) -> str:
    if addr and re.fullmatch(r"[0-9.]+", addr):
        fields = addr.split(".")
        if len(fields) < 4:
            return f'ParseAddr("{addr}"): IPv4 address too short'
        if len(fields) > 4:
            return f'ParseAddr("{addr}"): IPv4 address too long'
        if any(f and int(f) > 255 for f in fields):
            return f'ParseAddr("{addr}"): IPv4 field has value >255'
    return f'ParseAddr("{addr}"): unable to parse IP'


def check_port(port: str) -> str | None:
    """A port as a decimal string, at most 65535 (Go's ParseUint errors kept as Istio shows them)."""
    if not port.isascii() or not port.isdigit():
        return f'bad port ({port}): strconv.ParseUint: parsing "{port}": invalid syntax'
    if int(port) > 0xFFFFFFFF:
        return f'bad port ({port}): strconv.ParseUint: parsing "{port}": value out of range'
    if int(port) > 65535:
        return f"bad port ({port}): <nil>"
    return None


def check_service_accounts(label: str, values: Sequence[str]) -> tuple[int | None, str] | None:
    """Istio's CheckServiceAccount: the first problem, with the index it was found at."""
    if len(values) > 16:
        return None, "may not have more than 16 values"
    for k, value in enumerate(values):
        form = "expected format 'serviceAccount' or 'namespace/serviceAccount'"
        if value == "":
            return k, f"empty value not allowed, found in {label}"
        if "*" in value:
            return k, f"wildcard not allowed, found in {label}"
        if value.count("/") > 1:
            return k, f'{form}, found "{value}" in {label}'
        if len(value) > 320:
            return k, f'value cannot exceed 320 characters, found "{value}" in {label}'
        ns, slash, sa = value.partition("/")
        if slash and not ns:
            return k, f'{form}, found empty namespace "{value}" in {label}'
        if slash and not sa:
            return k, f'{form}, found empty serviceAccount "{value}" in {label}'
    return None


_PCHAR_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")


def check_path_templates(label: str, paths: Sequence[str]) -> tuple[int, str] | None:
    """Istio's CheckValidPathTemplate: {*} and {**} segments only, {**} last."""
    for k, raw in enumerate(paths):
        templated = "{*}" in raw or "{**}" in raw
        path = raw.strip("/")
        seen_any = False
        for glob in path.split("/"):
            if glob in ("{*}", "{**}"):
                if seen_any:
                    return k, (
                        f"invalid or unsupported path {path}, found in {label}. "
                        "{**} is not the last operator"
                    )
                seen_any = glob == "{**}"
                continue
            if "{" in glob or "}" in glob:
                return k, (
                    f"invalid or unsupported path {path}, found in {label}. "
                    "Contains '{' or '}' beyond a supported path template"
                )
            if templated and not _PCHAR_LITERAL.match(glob):
                return k, (
                    f"invalid or unsupported path {path}, found in {label}. "
                    f"Contains segment {glob} with invalid string literal"
                )
    return None


def _check_condition_values(
    key: str, values: Sequence[str], label: str, path: str, errs: FieldErrors
) -> None:
    """Istio's ValidateAttribute for one of a condition's value lists."""
    prefix = f"invalid `{label}` for `key` {key}"
    if (k := _first_empty(values)) is not None:
        errs.error(f"{path}[{k}]", f"{prefix}: empty value not allowed, found in {key}")
        return
    kind = attribute_kind(key)
    if isinstance(kind, tuple):  # the key itself is wrong
        errs.error(path, f"{prefix}: {kind[1]}")
    elif kind == "ip":
        for k, value in enumerate(values):
            if err := check_ip(value):
                errs.error(f"{path}[{k}]", f"{prefix}: {err}")
    elif kind == "port":
        for k, value in enumerate(values):
            if err := check_port(value):
                errs.error(f"{path}[{k}]", f"{prefix}: {err}")
    elif kind == "serviceAccount" and (found := check_service_accounts(key, values)):
        k, err = found
        errs.error(path + (f"[{k}]" if k is not None else ""), f"{prefix}: {err}")


_MAP_KEY_PREFIXES = (
    "request.headers",
    "request.experimental.inline.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
)
_PLAIN_KEYS = {
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "connection.sni",
}


def attribute_kind(key: str) -> str | tuple[str, str]:
    """What a condition key's values are (``"ip"``, ``"port"``, ...), or ("error", reason)."""
    if any(key.startswith(p) for p in _MAP_KEY_PREFIXES):
        opening = key.find("[")
        if key.endswith("]") and 0 < opening < len(key) - 2:
            return "string"
        return "error", f"bad key ({key}): should have format a[b]"
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return "ip"
    if key == "destination.port":
        return "port"
    if key == "source.serviceAccount":
        return "serviceAccount"
    if key in _PLAIN_KEYS:
        return "string"
    if key == "destination.namespace":
        return "error", f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return "error", f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return "error", f"deprecated attribute {key}: only supported in v1alpha1"
    return "error", f"unknown attribute: {key}"
