"""Checks shared by many kinds, in the words of Istio's validating webhook.

Each function returns None when the value is valid, or the reason it is not.
"""

from __future__ import annotations

import ipaddress
import re

from pistio.api.base import Duration
from pistio.config import protocol

DNS1123_LABEL_MAX = 63
_DNS1123_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_DNS1123_LABEL = re.compile(
    r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$"
)
_K8S_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")
_K8S_SUBDOMAIN = re.compile(
    r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def validate_duration(d: Duration) -> str | None:
    """Istio's ValidateDuration: at least 1ms, millisecond precision."""
    if d.seconds < 0.001 - 1e-12:
        return "duration must be greater than 1ms"
    if abs(round(d.seconds * 1000) - d.seconds * 1000) > 1e-6:
        return "only durations to ms precision are supported"
    return None


def validate_duration_range(d: Duration, minimum: float, maximum: float) -> str | None:
    if d.seconds > maximum or d.seconds < minimum:
        return f"time {d} must be >{_fmt_seconds(minimum)} and <{_fmt_seconds(maximum)}"
    return None


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h0m0s"
    if seconds >= 1 and seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds * 1000:g}ms"


def validate_port(port: int) -> str | None:
    if 1 <= port <= 65535:
        return None
    return f"port number {port} must be in the range 1..65535"


def is_dns1123_label(label: str) -> bool:
    return len(label) <= DNS1123_LABEL_MAX and bool(_DNS1123_LABEL.match(label))


def is_wildcard_dns1123_label(label: str) -> bool:
    return len(label) <= DNS1123_LABEL_MAX and bool(_WILDCARD_DNS1123_LABEL.match(label))


def check_dns1123_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f'domain name "{name}" too long (max 255)'
    if not name:
        return "empty domain name not allowed"
    return None


def validate_dns1123_labels(domain: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if tld.lstrip("+-").isdigit():
        return f'domain name "{domain}" invalid (top level domain "{tld}" cannot be all-numeric)'
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot, as in "istio.io."
        if not is_dns1123_label(label):
            return f'domain name "{domain}" invalid (label "{label}" invalid)'
    return None


def validate_fqdn(fqdn: str) -> str | None:
    return check_dns1123_preconditions(fqdn) or validate_dns1123_labels(fqdn)


def validate_wildcard_domain(domain: str) -> str | None:
    """A host that may start with a wildcard label (``*``, ``*.example.com``, ``*-foo.com``)."""
    if err := check_dns1123_preconditions(domain):
        return err
    first, _, rest = domain.partition(".")
    if not is_wildcard_dns1123_label(first):
        return f'domain name "{domain}" invalid (label "{first}" invalid)'
    if rest:
        return validate_dns1123_labels(rest)
    return None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def validate_ip_or_cidr(text: str) -> str | None:
    """Istio's ValidateIPSubnet: an address, or an address with a prefix length."""
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f'"{text}" is not a valid CIDR block'
        return None
    if not is_ip(text):
        return f'"{text}" is not a valid IP address'
    return None


def validate_label_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) > 2:
        return f'invalid tag key: "{key}"'
    if len(parts) == 2 and not _K8S_SUBDOMAIN.match(parts[0]):
        return f'invalid tag key: "{key}"'
    name = parts[-1]
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return f'invalid tag key: "{key}"'
    return None


def validate_labels(labels: dict[str, str]) -> list[str]:
    """Istio's labels.Instance.Validate: every key a qualified name, every value a label value."""
    errors = []
    for key, value in labels.items():
        if err := validate_label_key(key):
            errors.append(err)
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(f'invalid tag value: "{value}"')
    return errors


def is_k8s_label_name(name: str) -> bool:
    """An RFC 1123 label as Kubernetes checks it (lower case), e.g. a namespace name."""
    return len(name) <= 63 and bool(_K8S_LABEL.match(name))


K8S_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
K8S_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)


def is_k8s_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(_K8S_SUBDOMAIN.match(name))


def validate_regex(expr: str) -> str | None:
    """Envoy compiles route regexes with RE2; Python's engine agrees on the syntax users write.

    RE2 rejects backreferences and lookaround, so they are refused here too.
    """
    if re.search(r"\(\?[=!<]|\\[1-9]", expr):
        return (
            f'"{expr}" is not a valid regex: lookaround and backreferences are not supported by RE2'
        )
    try:
        re.compile(expr)
    except re.error as exc:
        return f'"{expr}" is not a valid regex: {exc}'
    return None


# --- Ports and protocols -------------------------------------------------------------------

def parse_protocol(name: str) -> str | None:
    """Istio's protocol.Parse (case-insensitive); None for a name Istio does not know."""
    found = protocol.parse_protocol(name)
    return None if found.is_unsupported else found.value


def is_http_protocol(name: str) -> bool:
    return protocol.parse_protocol(name).is_http


def is_tls_protocol(name: str) -> bool:
    return protocol.parse_protocol(name).is_tls


def is_tcp_protocol(name: str) -> bool:
    return protocol.parse_protocol(name).is_tcp


def validate_protocol(name: str) -> str | None:
    """Istio's ValidateProtocol: empty means sniffing; otherwise a known protocol name."""
    if name and parse_protocol(name) is None:
        return f"unsupported protocol: {name}"
    return None


def validate_port_name(name: str) -> str | None:
    """Istio's ValidatePortName: a DNS-1123 label."""
    if not is_dns1123_label(name):
        return f"invalid port name: {name}"
    return None


# --- Addresses -----------------------------------------------------------------------------

UNIX_ADDRESS_PREFIX = "unix://"


def validate_ip_address(addr: str) -> str | None:
    """Istio's ValidateIPAddress: a plain IPv4 or IPv6 address."""
    if not is_ip(addr):
        return f"{addr} is not a valid IP"
    return None


def validate_unix_address(addr: str) -> str | None:
    """Istio's ValidateUnixAddress: an absolute file path, or an abstract socket (``@name``)."""
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):
        return None
    if not addr.startswith("/") or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


# --- Hosts ---------------------------------------------------------------------------------


def validate_partial_wildcard(host: str) -> str | None:
    """A wildcard is only allowed as the whole host or as a leading ``*.`` label."""
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f'partial wildcard "{host}" not allowed'
    return None


def _sidecar_or_gateway_hostname(hostname: str, is_gateway: bool) -> list[str]:
    errors = []
    if hostname != "*" and "." not in hostname:
        errors.append("short names (non FQDN) are not allowed")
    err = validate_wildcard_domain(hostname)
    # Gateways also accept an IP address as the host.
    if err and not (is_gateway and is_ip(hostname)):
        errors.append(err)
    if err := validate_partial_wildcard(hostname):
        errors.append(err)
    return errors


def validate_namespace_slash_hostname(hostname: str, is_gateway: bool) -> list[str]:
    """Istio's ValidateNamespaceSlashWildcardHostname, for Gateway and Sidecar hosts.

    Sidecar hosts must be ``namespace/dnsName``; gateways also accept a bare host.
    """
    ns, sep, name = hostname.partition("/")
    if not sep:
        if is_gateway:
            return _sidecar_or_gateway_hostname(hostname, True)
        return ["host must be of form namespace/dnsName"]
    errors = []
    if not ns or not name:
        errors.append("config namespace and dnsName in host entry cannot be empty")
    special = ("*", ".") if is_gateway else ("*", ".", "~")
    if ns not in special and not is_dns1123_label(ns):
        where = "gateway" if is_gateway else "sidecar"
        errors.append(f'invalid namespace value "{ns}" in {where}')
    return errors + _sidecar_or_gateway_hostname(name, is_gateway)


def host_matches(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: the two hosts (either may be a wildcard) overlap."""
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw and bw:
        return a[1:].endswith(b[1:]) if len(a) >= len(b) else b[1:].endswith(a[1:])
    if aw:
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """Istio's host.Name.SubsetOf: every name matched by ``a`` is matched by ``b``."""
    if b.startswith("*"):
        if a.startswith("*"):
            return len(b) <= len(a) and a[1:].endswith(b[1:])
        return a.endswith(b[1:])
    if a.startswith("*"):
        return False
    return a == b


# --- exportTo, selectors, target references ------------------------------------------------


def _visibility_error(value: str) -> str | None:
    if value in (".", "*"):
        return None
    if value == "~":
        return "exportTo ~ (none) is not allowed for Istio configuration objects"
    if not is_dns1123_label(value):
        return "only .,*, or a valid DNS 1123 label is allowed as exportTo entry"
    return None


def validate_export_to(
    namespace: str,
    export_to: list[str],
    is_service_entry: bool = False,
    is_destination_rule_with_selector: bool = False,
) -> list[tuple[int | None, str]]:
    """Istio's validateExportTo. Returns (index of the offending entry or None, reason)."""
    out: list[tuple[int | None, str]] = []
    if not export_to:
        return out
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        key = namespace if entry == "." else entry  # "." and the own namespace are the same
        if key in seen:
            if key != entry:
                out.append(
                    (i, f"duplicate entries in exportTo: . and current namespace {namespace}")
                )
            else:
                out.append((i, f"duplicate entries in exportTo for entry {entry}"))
            continue
        if is_service_entry and entry == "~":
            seen.add(key)
        elif err := _visibility_error(entry):
            out.append((i, err))
        else:
            seen.add(key)
    if is_destination_rule_with_selector and seen:
        if namespace in seen:
            if len(seen) > 1:
                out.append(
                    (
                        None,
                        "destination rule with workload selector cannot have multiple entries in exportTo",
                    )
                )
        else:
            out.append(
                (
                    None,
                    "destination rule with workload selector cannot have exportTo beyond current namespace",
                )
            )
    if "*" in seen and len(export_to) > 1:
        out.append(
            (None, "cannot have both public (*) and non-public exportTo values for a resource")
        )
    if "~" in seen and len(export_to) > 1:
        out.append((None, "cannot export service entry to no one (~) and someone"))
    return out


def validate_selector_labels(labels: dict[str, str]) -> list[tuple[str, str]]:
    """Istio's workload selector checks: (label key, reason) for empty keys and wildcards."""
    out = []
    for key, value in labels.items():
        if key == "":
            out.append((key, f'empty key is not supported in selector: "{key}={value}"'))
        if "*" in key or "*" in value:
            out.append((key, f'wildcard is not supported in selector: "{key}={value}"'))
    return out


WORKLOAD_SELECTOR_NO_LABELS = "workload selector specified without labels"


def validate_target_ref(
    group: str, kind: str, name: str, namespace: str, allowed: tuple[tuple[str, str], ...]
) -> list[tuple[str, str]]:
    """Istio's validatePolicyTargetReference: (field, reason) pairs.

    ``allowed`` lists (group, kind); the core group is written "" (or "core").
    """
    out = []
    if not name:
        out.append(("name", "targetRef name must be set"))
    if namespace:
        out.append(
            (
                "namespace",
                "targetRef namespace must not be set; cross namespace referencing is not supported",
            )
        )
    canonical = group or "core"
    if not any((g or "core") == canonical and k == kind for g, k in allowed):
        names = ", ".join(f"{g or 'core'}/{k}" for g, k in allowed)
        out.append(("kind", f"targetRef must be to one of [{names}] but was {group}/{kind}"))
    return out


# --- HTTP headers --------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def validate_http_header_name(name: str) -> str | None:
    if name == "":
        return "header name cannot be empty"
    if not _HEADER_NAME.match(name):
        return f"header name {name} is not a valid header name"
    return None


def _envoy_header_format_error(value: str) -> str | None:
    """Envoy's header formatter syntax: ``%VAR%``, ``%VAR(args)%``, ``%%`` for a literal."""
    state = "literal"
    pos = 0
    while pos < len(value):
        ch = value[pos]
        nxt = value[pos + 1] if pos + 1 < len(value) else None
        if state == "literal":
            if ch == "%":
                if nxt is None:
                    return "invalid header configuration. Un-escaped %"
                if nxt == "%":
                    pos += 1
                else:
                    state = "name"
        elif state == "name":
            if ch == "%":
                state = "literal"
            elif ch == "(":
                state = "array"
        elif state == "array":
            if ch == "[":
                state = "expect_string"
            elif ch != " ":
                state = "string"
        elif state == "delim":
            if ch == ",":
                state = "expect_string"
            elif ch == "]":
                state = "args_end"
            elif ch != " ":
                return "invalid header configuration. Expecting ',', ']', or whitespace"
        elif state == "expect_string":
            if ch == '"':
                state = "string"
            elif ch != " ":
                return "invalid header configuration. Expecting '\"'"
        elif state == "string":
            if ch == "\\":
                if nxt is None:
                    return "invalid header configuration. Un-terminated backslash in JSON string"
                pos += 1
            elif ch == ")":
                state = "var_end"
            elif ch == '"':
                state = "delim"
        elif state == "args_end":
            if ch == ")":
                state = "var_end"
            elif ch != " ":
                return "invalid header configuration. Expecting ')' or whitespace after '{}', but found '{}'"
        elif state == "var_end":
            if ch == "%":
                state = "literal"
            elif ch != " ":
                return "invalid header configuration. Expecting '%' or whitespace after"
        pos += 1
    if state != "literal":
        return f"invalid header configuration. Un-terminated variable expression '{value}'"
    return None


def validate_http_header_value(value: str) -> str | None:
    """Istio's ValidateHTTPHeaderValue: no control characters, well-formed ``%VAR%`` syntax."""
    if _HEADER_VALUE_FORBIDDEN.search(value):
        return f"header value configuration {value} is invalid"
    if err := _envoy_header_format_error(value):
        return f"header value configuration: {err}"
    return None


# --- Numbers -------------------------------------------------------------------------------


def go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it (``100``, ``0.5``, ``1e-05``)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", text)


def validate_percent(value: int) -> str | None:
    """Istio's ValidatePercent for integer percentages."""
    if value < 0 or value > 100:
        return f"percentage {value} is not in range 0..100"
    return None


def validate_percentage(value: float) -> str | None:
    """Istio's validatePercentage for a Percent message: 0, or 0.0001..100."""
    if value < 0.0 or value > 100.0 or 0.0 < value < 0.0001:
        return f"percentage {go_float(value)} is neither 0.0, nor in range [0.0001, 100.0]"
    return None


# --- RE2 regexes ---------------------------------------------------------------------------

_RE2_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?>|\\[1-9]|[*+?}][+]")
RE2_HINT = "Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"


def re2_error(expr: str) -> str | None:
    """Why RE2 (as Go's regexp package) would refuse ``expr``, or None if it compiles.

    Python's engine accepts a superset of RE2; lookaround, backreferences, atomic groups and
    possessive quantifiers are refused as RE2 refuses them.
    """
    if m := _RE2_UNSUPPORTED.search(expr):
        return f"error parsing regexp: invalid or unsupported Perl syntax: `{m.group(0)}`"
    try:
        re.compile(expr)
    except re.error as exc:
        return f"error parsing regexp: {exc.msg}: `{expr}`"
    return None


def validate_string_regexp(expr: str, where: str) -> str | None:
    """Istio's validateStringRegexp: at most 1024 characters and valid RE2 syntax."""
    if len(expr) > 1024:
        return f'"{where}": regex is too large, max length allowed is 1024'
    if err := re2_error(expr):
        return f'"{where}": {err}; {RE2_HINT}'
    return None
