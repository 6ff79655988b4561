"""Checks shared by many kinds, in the words of Istio's validating webhook.

Each function returns None when the value is valid, or the reason it is not.
"""

from __future__ import annotations

import ipaddress
import re

from pistio.api.base import Duration

DNS1123_LABEL_MAX = 63
_DNS1123_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_DNS1123_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$")
_K8S_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")
_K8S_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
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
        return f'"{expr}" is not a valid regex: lookaround and backreferences are not supported by RE2'
    try:
        re.compile(expr)
    except re.error as exc:
        return f'"{expr}" is not a valid regex: {exc}'
    return None
