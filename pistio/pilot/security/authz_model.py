"""One AuthorizationPolicy rule → one Envoy RBAC ``Policy`` (Istio's
``pilot/pkg/security/authz/model``).

A rule's ``from`` entries become ``principals`` (one ``and_ids`` each), its ``to`` entries
``permissions`` (one ``and_rules`` each); ``when`` conditions are appended to every entry
on the side they belong to (source keys → principals, destination keys → permissions).
Within an entry, every field is one term of the AND: its values are an ``or_ids`` /
``or_rules``, its ``not*`` values a ``not_id`` / ``not_rule`` around one. Empty sides
match anything (``any: true``).

Keys that only make sense for HTTP (paths, methods, hosts, request principals, request
headers and claims) raise :class:`HttpOnlyError` on a TCP filter: for ALLOW the rule is
dropped (the policy grants less); for DENY and AUDIT only the offending term is dropped
(the policy denies more). Istio does exactly this.

Request authentication (``requestPrincipals``, ``request.auth.*``) is matched on the
dynamic metadata Envoy's JWT filter writes: namespace ``envoy.filters.http.jwt_authn``, key
``payload`` (the verified JWT payload as a Struct), as current Istio does (older Istio read
its own ``istio_authn`` filter's metadata instead).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from pistio.api import security as sec
from pistio.xds.any_codec import pack

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "payload"
SPIFFE_PREFIX = "spiffe://"
URI_TEMPLATE_EXTENSION = "uri-template"

ALLOW = rbac_pb2.RBAC.ALLOW
DENY = rbac_pb2.RBAC.DENY
LOG = rbac_pb2.RBAC.LOG


class RuleError(ValueError):
    """A term cannot be generated (bad value, unknown key, HTTP-only on TCP)."""


class HttpOnlyError(RuleError):
    pass


# --- string and metadata matchers (Istio's authz/matcher) ------------------------------------


def regex_matcher(regex: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def string_matcher(value: str, prefix: str = "") -> string_pb2.StringMatcher:
    """Istio's StringMatcherWithPrefix: ``*`` is presence (``.+``), ``*x`` a suffix, ``x*`` a
    prefix, anything else exact; ``prefix`` is prepended (the spiffe:// of principals)."""
    if value == "*":
        return regex_matcher(".+")
    if value.startswith("*"):
        if not prefix:
            return string_pb2.StringMatcher(suffix=value[1:])
        return regex_matcher(prefix + ".*" + value[1:])
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1])
    return string_pb2.StringMatcher(exact=prefix + value)


def header_matcher(name: str, value: str, ignore_case: bool = False) -> rc.HeaderMatcher:
    if value == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    m = string_matcher(value)
    if ignore_case:
        m.ignore_case = True
    return rc.HeaderMatcher(name=name, string_match=m)


def or_value_matcher(matchers: list[value_pb2.ValueMatcher]) -> value_pb2.ValueMatcher:
    if len(matchers) == 1:
        return matchers[0]
    out = value_pb2.ValueMatcher()
    out.or_match.value_matchers.extend(matchers)
    return out


def string_or_matcher(values: Sequence[str]) -> value_pb2.ValueMatcher:
    return or_value_matcher(
        [value_pb2.ValueMatcher(string_match=string_matcher(v)) for v in values]
    )


def _path(keys: Sequence[str]) -> list[metadata_pb2.MetadataMatcher.PathSegment]:
    return [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in keys]


def jwt_claim_matcher(claim: str, m: string_pb2.StringMatcher) -> metadata_pb2.MetadataMatcher:
    """A string claim of the verified payload (``iss``, ``sub``)."""
    return metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER,
        path=_path([JWT_PAYLOAD_KEY, claim]),
        value=value_pb2.ValueMatcher(string_match=m),
    )


def jwt_claims_list_matcher(
    claims: Sequence[str], value: value_pb2.ValueMatcher
) -> metadata_pb2.MetadataMatcher:
    """Istio's MetadataListValueMatcher with extended JWT: the claim matches when it is a
    list containing a matching value, or is itself a matching value."""
    listed = value_pb2.ValueMatcher()
    listed.list_match.one_of.CopyFrom(value)
    out = metadata_pb2.MetadataMatcher(filter=JWT_FILTER, path=_path([JWT_PAYLOAD_KEY, *claims]))
    out.value.or_match.value_matchers.extend([listed, value])
    return out


# --- permission / principal constructors -------------------------------------------------------


def permission_any() -> rbac_pb2.Permission:
    return rbac_pb2.Permission(any=True)


def permission_and(rules: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    out = rbac_pb2.Permission()
    out.and_rules.rules.extend(rules)
    return out


def permission_or(rules: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    out = rbac_pb2.Permission()
    out.or_rules.rules.extend(rules)
    return out


def permission_not(rule: rbac_pb2.Permission) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=rule)


def principal_any() -> rbac_pb2.Principal:
    return rbac_pb2.Principal(any=True)


def principal_and(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    out = rbac_pb2.Principal()
    out.and_ids.ids.extend(ids)
    return out


def principal_or(ids: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    out = rbac_pb2.Principal()
    out.or_ids.ids.extend(ids)
    return out


def principal_not(pid: rbac_pb2.Principal) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=pid)


def principal_authenticated(m: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m))


def cidr_range(value: str) -> address_pb2.CidrRange:
    """Istio's AddrStrToCidrRange: an address is a full-length prefix."""
    try:
        net = ipaddress.ip_network(value, strict=False) if "/" in value else None
        if net is not None:
            addr, bits = str(ipaddress.ip_interface(value).ip), net.prefixlen
        else:
            ip = ipaddress.ip_address(value)
            addr, bits = str(ip), ip.max_prefixlen
    except ValueError as e:
        raise RuleError(f"invalid IP address or CIDR {value!r}: {e}") from None
    out = address_pb2.CidrRange(address_prefix=addr)
    out.prefix_len.value = bits
    return out


def parse_port(value: str) -> int:
    if not re.fullmatch(r"\d+", value) or int(value) > 65535:
        raise RuleError(f"invalid port {value}")
    return int(value)


# --- generators ----------------------------------------------------------------------------


PermissionFn = Callable[[str, str, bool], rbac_pb2.Permission]
PrincipalFn = Callable[[str, str, bool], rbac_pb2.Principal]
ExtendedPrincipalFn = Callable[[str, Sequence[str], bool], rbac_pb2.Principal]


def _http_only(key: str, for_tcp: bool) -> None:
    if for_tcp:
        raise HttpOnlyError(f'"{key}" is HTTP only')


def _bracketed(text: str) -> str:
    if not (text.startswith("[") and text.endswith("]")):
        raise RuleError(f"expecting format [<NAME>], but found {text}")
    return text[1:-1]


def _nested_brackets(text: str) -> list[str]:
    """``[a][b]`` → [a, b]; ``[a.b]`` → [a.b] (Istio's extractNameInNestedBrackets)."""
    found = re.fullmatch(r"(\[[^\[\]]+\])+", text)
    if not found:
        return [_bracketed(text)]
    return re.findall(r"\[([^\[\]]+)\]", text)


def _dest_ip(key: str, v: str, _tcp: bool) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_ip=cidr_range(v))


def _dest_port(key: str, v: str, _tcp: bool) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_port=parse_port(v))


def _conn_sni(key: str, v: str, _tcp: bool) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(requested_server_name=string_matcher(v))


def _host(key: str, v: str, tcp: bool) -> rbac_pb2.Permission:
    _http_only(key, tcp)
    return rbac_pb2.Permission(header=header_matcher(":authority", v, ignore_case=True))


def _method(key: str, v: str, tcp: bool) -> rbac_pb2.Permission:
    _http_only(key, tcp)
    return rbac_pb2.Permission(header=header_matcher(":method", v))


def _uri_template(value: str) -> str:
    return value.replace("{**}", "**").replace("{*}", "*")


def _path_perm(key: str, v: str, tcp: bool) -> rbac_pb2.Permission:
    _http_only(key, tcp)
    if "{*}" in v or "{**}" in v:
        cfg = uri_template_match_pb2.UriTemplateMatchConfig(path_template=_uri_template(v))
        ext = extension_pb2.TypedExtensionConfig(
            name=URI_TEMPLATE_EXTENSION, typed_config=pack(cfg)
        )
        return rbac_pb2.Permission(uri_template=ext)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_matcher(v)))


def _envoy_filter_parts(key: str) -> tuple[str, str]:
    body = key.removeprefix("experimental.").removesuffix("]")
    parts = body.split("[", 1)
    if len(parts) != 2:
        raise RuleError(f"invalid key: {key}")
    return parts[0], parts[1]


def _envoy_filter_extended(key: str, values: Sequence[str], _tcp: bool) -> rbac_pb2.Permission:
    """``experimental.envoy.filters.a.b[c]``: metadata of filter ``envoy.filters.a.b`` key
    ``c``; a value ``[v]`` matches a list containing v."""
    filt, sub = _envoy_filter_parts(key)
    matchers = []
    for v in values:
        if v.startswith("[") and v.endswith("]"):
            m = value_pb2.ValueMatcher()
            m.list_match.one_of.string_match.CopyFrom(string_matcher(v.strip("[]")))
        else:
            m = value_pb2.ValueMatcher(string_match=string_matcher(v))
        matchers.append(m)
    meta = metadata_pb2.MetadataMatcher(
        filter=filt, path=_path([sub]), value=or_value_matcher(matchers)
    )
    return rbac_pb2.Permission(metadata=meta)


def _src_ip(key: str, v: str, _tcp: bool) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(direct_remote_ip=cidr_range(v))


def _remote_ip(key: str, v: str, _tcp: bool) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(remote_ip=cidr_range(v))


def _src_namespace(key: str, v: str, _tcp: bool) -> rbac_pb2.Principal:
    return principal_authenticated(regex_matcher(f".*/ns/{v.replace('*', '.*')}/.*"))


def _src_principal(key: str, v: str, _tcp: bool) -> rbac_pb2.Principal:
    return principal_authenticated(string_matcher(v, SPIFFE_PREFIX))


def _service_account(default_ns: str) -> PrincipalFn:
    def build(key: str, v: str, _tcp: bool) -> rbac_pb2.Principal:
        ns, sep, sa = v.partition("/")
        if not sep:
            ns, sa = default_ns, v
        return principal_authenticated(regex_matcher(f"spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?"))

    return build


def _request_header(key: str, v: str, tcp: bool) -> rbac_pb2.Principal:
    _http_only(key, tcp)
    name = _bracketed(key.removeprefix("request.headers"))
    return rbac_pb2.Principal(header=header_matcher(name, v))


_MATCH_ANY = ".+"


def _request_principals(key: str, values: Sequence[str], tcp: bool) -> rbac_pb2.Principal:
    """``iss/sub`` (split at the last ``/``: issuers are URLs) with ``*`` forms, matched on
    the ``iss`` and ``sub`` claims of the verified payload."""
    _http_only(key, tcp)
    alts = []
    for value in values:
        idx = value.rfind("/")
        found = idx >= 0
        iss, sub = (value[:idx], value[idx + 1 :]) if found else (value, "")
        if value == "*":
            m_iss = m_sub = regex_matcher(_MATCH_ANY)
        elif value.startswith("*"):
            if found:
                m_iss = (
                    regex_matcher(_MATCH_ANY)
                    if iss == "*"
                    else string_pb2.StringMatcher(suffix=iss[1:])
                )
                m_sub = string_pb2.StringMatcher(exact=sub)
            else:
                m_iss, m_sub = regex_matcher(_MATCH_ANY), string_pb2.StringMatcher(suffix=value[1:])
        elif value.endswith("*"):
            if found:
                m_iss = string_pb2.StringMatcher(exact=iss)
                m_sub = (
                    regex_matcher(_MATCH_ANY)
                    if sub == "*"
                    else string_pb2.StringMatcher(prefix=sub[:-1])
                )
            else:
                m_iss, m_sub = (
                    string_pb2.StringMatcher(prefix=value[:-1]),
                    regex_matcher(_MATCH_ANY),
                )
        else:
            m_iss, m_sub = string_pb2.StringMatcher(exact=iss), string_pb2.StringMatcher(exact=sub)
        alts.append(
            principal_and(
                [
                    rbac_pb2.Principal(metadata=jwt_claim_matcher("iss", m_iss)),
                    rbac_pb2.Principal(metadata=jwt_claim_matcher("sub", m_sub)),
                ]
            )
        )
    return alts[0] if len(alts) == 1 else principal_or(alts)


def _claims(claims_of: Callable[[str], list[str]]) -> ExtendedPrincipalFn:
    def build(key: str, values: Sequence[str], tcp: bool) -> rbac_pb2.Principal:
        _http_only(key, tcp)
        meta = jwt_claims_list_matcher(claims_of(key), string_or_matcher(values))
        return rbac_pb2.Principal(metadata=meta)

    return build


_request_claims = _claims(lambda key: _nested_brackets(key.removeprefix("request.auth.claims")))
_request_audiences = _claims(lambda key: ["aud"])
_request_presenter = _claims(lambda key: ["azp"])


# --- the model -------------------------------------------------------------------------------


@dataclass
class _Term:
    """One field of an entry: key, values, not-values and how to build them."""

    key: str
    values: Sequence[str]
    not_values: Sequence[str]
    simple: Callable | None = None  # per value
    extended: Callable | None = None  # all values at once


@dataclass
class _Entry:
    terms: list[_Term] = field(default_factory=list)

    def front(self, term: _Term) -> None:
        if term.values or term.not_values:
            self.terms.insert(0, term)

    def back(self, term: _Term) -> None:
        if term.values or term.not_values:
            self.terms.append(term)


def _when_term(cond: sec.Condition, policy_ns: str) -> tuple[str, _Term]:
    """Which side a condition goes to ("perm"/"prin") and its term."""
    k, vals, nots = cond.key, cond.values, cond.not_values
    simple_perm = {
        "destination.ip": _dest_ip,
        "destination.port": _dest_port,
        "connection.sni": _conn_sni,
    }
    simple_prin = {
        "source.ip": _src_ip,
        "remote.ip": _remote_ip,
        "source.namespace": _src_namespace,
        "source.principal": _src_principal,
        "source.serviceAccount": _service_account(policy_ns),
    }
    extended_prin = {
        "request.auth.principal": _request_principals,
        "request.auth.audiences": _request_audiences,
        "request.auth.presenter": _request_presenter,
    }
    if k in simple_perm:
        return "perm", _Term(k, vals, nots, simple=simple_perm[k])
    if k.startswith("experimental.envoy.filters."):
        return "perm", _Term(k, vals, nots, extended=_envoy_filter_extended)
    if k in simple_prin:
        return "prin", _Term(k, vals, nots, simple=simple_prin[k])
    if k in extended_prin:
        return "prin", _Term(k, vals, nots, extended=extended_prin[k])
    if k.startswith("request.headers"):
        return "prin", _Term(k, vals, nots, simple=_request_header)
    if k.startswith("request.auth.claims"):
        return "prin", _Term(k, vals, nots, extended=_request_claims)
    raise RuleError(f"unknown attribute {k}")


@dataclass
class RuleModel:
    """Istio's authz model.Model for one rule: permission and principal entries."""

    permissions: list[_Entry]
    principals: list[_Entry]

    @classmethod
    def from_rule(cls, rule: sec.Rule, policy_ns: str) -> RuleModel:
        base_perm, base_prin = _Entry(), _Entry()
        for cond in rule.when:
            side, term = _when_term(cond, policy_ns)
            (base_perm if side == "perm" else base_prin).back(term)
        principals = []
        for frm in rule.from_:
            entry = _Entry(list(base_prin.terms))
            s = frm.source
            if s is not None:
                entry.front(_Term("source.ip", s.ip_blocks, s.not_ip_blocks, simple=_src_ip))
                entry.front(
                    _Term(
                        "remote.ip", s.remote_ip_blocks, s.not_remote_ip_blocks, simple=_remote_ip
                    )
                )
                entry.front(
                    _Term("source.namespace", s.namespaces, s.not_namespaces, simple=_src_namespace)
                )
                entry.front(
                    _Term(
                        "source.serviceAccount",
                        s.service_accounts,
                        s.not_service_accounts,
                        simple=_service_account(policy_ns),
                    )
                )
                entry.front(
                    _Term(
                        "request.auth.principal",
                        s.request_principals,
                        s.not_request_principals,
                        extended=_request_principals,
                    )
                )
                entry.front(
                    _Term("source.principal", s.principals, s.not_principals, simple=_src_principal)
                )
            principals.append(entry)
        if not rule.from_:
            principals.append(base_prin)
        permissions = []
        for to in rule.to:
            entry = _Entry(list(base_perm.terms))
            o = to.operation
            if o is not None:
                entry.front(_Term("destination.port", o.ports, o.not_ports, simple=_dest_port))
                entry.front(_Term("path", o.paths, o.not_paths, simple=_path_perm))
                entry.front(_Term("method", o.methods, o.not_methods, simple=_method))
                entry.front(_Term("host", o.hosts, o.not_hosts, simple=_host))
            permissions.append(entry)
        if not rule.to:
            permissions.append(base_perm)
        return cls(permissions, principals)

    def generate(self, for_tcp: bool, action: int) -> rbac_pb2.Policy:
        """The RBAC policy; raises RuleError when an ALLOW rule cannot be generated."""
        policy = rbac_pb2.Policy()
        for entry in self.permissions:
            parts = [p for t in entry.terms for p in _generate(t, for_tcp, action, principal=False)]
            policy.permissions.append(permission_and(parts or [permission_any()]))
        for entry in self.principals:
            parts = [p for t in entry.terms for p in _generate(t, for_tcp, action, principal=True)]
            policy.principals.append(principal_and(parts or [principal_any()]))
        return policy


def _checked(action: int, build: Callable[[], object]) -> object | None:
    """ALLOW propagates errors (the rule is dropped); DENY/AUDIT drop just this value."""
    try:
        return build()
    except RuleError:
        if action == ALLOW:
            raise
        return None


def _generate(term: _Term, for_tcp: bool, action: int, principal: bool) -> list:
    either_or = principal_or if principal else permission_or
    negate = principal_not if principal else permission_not
    out = []
    if term.extended is not None:
        for values, wrap in ((term.values, None), (term.not_values, negate)):
            if not values:
                continue
            built = _checked(action, lambda v=values: term.extended(term.key, v, for_tcp))
            if built is not None:
                out.append(wrap(built) if wrap else built)
        return out
    for values, wrap in ((term.values, None), (term.not_values, negate)):
        alts = [
            b
            for v in values
            if (b := _checked(action, lambda v=v: term.simple(term.key, v, for_tcp))) is not None
        ]
        if alts:
            out.append(wrap(either_or(alts)) if wrap else either_or(alts))
    return out
