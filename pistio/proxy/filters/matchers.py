"""Envoy's RBAC engine (``envoy.config.rbac.v3.RBAC``), compiled once into closures, shared by
the HTTP and the network RBAC filters; and the ``MetadataMatcher`` / ``ValueMatcher`` that
RBAC and ext_authz's ``filter_enabled_metadata`` read dynamic metadata with.

A policy matches when *any* of its permissions and *any* of its principals match. Policies
are tried in name order (Envoy keeps them in a sorted map) and the first match names the
"effective policy". ``ALLOW`` allows on a match, ``DENY`` denies on a match, ``LOG`` always
allows (and only says whether the request is to be logged).

Each permission or principal becomes a ``Check``: a function of an :class:`AuthzContext`
returning a bool. What the checks read, as Envoy does:

- ``header`` / ``url_path``: the request headers (``:path`` without query for ``url_path``);
  on a TCP connection there are no headers (a header matcher sees an absent header, a path
  matcher never matches);
- ``destination_ip`` / ``destination_port(_range)``: the connection's local address (the
  original destination on captured connections);
- ``source_ip`` and ``direct_remote_ip``: the socket's peer; ``remote_ip``: the client
  address the connection manager settled on (``x-forwarded-for`` under Envoy's rules,
  pistio.proxy.http.header_sanitizing; the peer on TCP connections);
- ``authenticated``: the peer certificate of a TLS connection (URI SAN, then subject);
  no TLS: no match; no ``principal_name``: any TLS peer;
- ``requested_server_name``: the SNI; ``metadata``: the stream's dynamic metadata;
  ``filter_state``: the stream's filter state (string values).

CIDR ranges are kept as integers (network, mask); the addresses of a request are parsed once,
on first use.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, value_pb2

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import (
    RequestView,
    compile_header_matcher,
    compile_string_matcher,
)

ALLOW = rbac_pb2.RBAC.ALLOW
DENY = rbac_pb2.RBAC.DENY
LOG = rbac_pb2.RBAC.LOG
_ACTION_NAMES = {ALLOW: "ALLOW", DENY: "DENY", LOG: "LOG"}
_URI_TEMPLATE_TYPE = uri_template_match_pb2.UriTemplateMatchConfig.DESCRIPTOR.full_name


# --- what a check reads ---------------------------------------------------------------------------


def _ip_int(text: str | None) -> tuple[int, int] | None:
    """(version, integer) of an address, ``None`` when it is not an IP (a pipe, nothing)."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def _host_port(address: Any) -> tuple[str | None, int | None]:
    if isinstance(address, tuple):
        return str(address[0]), int(address[1])
    if isinstance(address, str) and address:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        return host, int(port) if port.isdigit() else None
    return None, None


class AuthzContext:
    """The facts one RBAC evaluation reads: a request (or ``None`` on a TCP connection), its
    connection (its remote address already the client's, after ``x-forwarded-for``), and the
    stream's metadata."""

    __slots__ = ("request", "conn", "metadata", "filter_state", "_remote", "_direct",
                 "_local", "_dst_port")

    def __init__(
        self,
        request: RequestView | None,
        conn: DownstreamConnectionInfo,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        filter_state: Mapping[str, str] | None = None,
    ) -> None:
        self.request = request
        self.conn = conn
        self.metadata = metadata
        self.filter_state = filter_state
        self._remote: tuple[int, int] | None | bool = False  # False: not parsed yet
        self._direct: tuple[int, int] | None | bool = False
        self._local: tuple[int, int] | None | bool = False
        self._dst_port: int | None | bool = False

    def direct_ip(self) -> tuple[int, int] | None:
        v = self._direct
        if v is False:
            v = self._direct = _ip_int(_host_port(self.conn.direct_remote_address)[0])
        return v  # type: ignore[return-value]

    def remote_ip(self) -> tuple[int, int] | None:
        v = self._remote
        if v is False:
            v = self._remote = _ip_int(_host_port(self.conn.remote_address)[0])
        return v  # type: ignore[return-value]

    def local_ip(self) -> tuple[int, int] | None:
        v = self._local
        if v is False:
            v = self._local = _ip_int(_host_port(self.conn.local_address)[0])
        return v  # type: ignore[return-value]

    def local_port(self) -> int | None:
        v = self._dst_port
        if v is False:
            v = self._dst_port = _host_port(self.conn.local_address)[1]
        return v  # type: ignore[return-value]


Check = Callable[[AuthzContext], bool]


def _always(_: AuthzContext) -> bool:
    return True


def _never(_: AuthzContext) -> bool:
    return False


# --- metadata and value matchers -------------------------------------------------------------------

ValueCheck = Callable[[Any], bool]
_MISSING = object()


def compile_value_matcher(vm: value_pb2.ValueMatcher, where: str) -> ValueCheck:
    """Envoy's ``ValueMatcher`` over a JSON-like value (``_MISSING`` when the path is absent);
    dict/list values are what a ``google.protobuf.Struct`` holds."""
    kind = vm.WhichOneof("match_pattern")
    if kind == "null_match":
        return lambda v: v is None
    if kind == "double_match":
        dm = vm.double_match
        which = dm.WhichOneof("match_pattern")
        if which == "range":
            lo, hi = dm.range.start, dm.range.end
            return lambda v: _is_number(v) and lo <= v < hi
        if which == "exact":
            want = dm.exact
            return lambda v: _is_number(v) and v == want
        raise ConfigError([f"{where}.double_match: needs range or exact"])
    if kind == "string_match":
        check = compile_string_matcher(vm.string_match, f"{where}.string_match")
        return lambda v: isinstance(v, str) and check(v)
    if kind == "bool_match":
        want_bool = vm.bool_match
        return lambda v: isinstance(v, bool) and v == want_bool
    if kind == "present_match":
        if not vm.present_match:
            return lambda v: False
        return lambda v: v is not _MISSING
    if kind == "list_match":
        if not vm.list_match.HasField("one_of"):
            raise ConfigError([f"{where}.list_match: needs one_of"])
        one = compile_value_matcher(vm.list_match.one_of, f"{where}.list_match.one_of")
        return lambda v: isinstance(v, list) and any(one(item) for item in v)
    if kind == "or_match":
        subs = tuple(compile_value_matcher(m, f"{where}.or_match.value_matchers[{i}]")
                     for i, m in enumerate(vm.or_match.value_matchers))
        if len(subs) < 2:
            raise ConfigError([f"{where}.or_match: needs at least 2 value_matchers"])
        return lambda v: any(s(v) for s in subs)
    raise ConfigError([f"{where}: a value matcher needs one of null_match, double_match, "
                       "string_match, bool_match, present_match, list_match, or_match"])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True, slots=True)
class MetadataMatcher:
    """A compiled ``MetadataMatcher``: the value at ``filter`` / ``path`` of the dynamic
    metadata, tested by ``value`` (an absent value only matches ``invert``ed matchers)."""

    filter: str
    path: tuple[str, ...]
    value: ValueCheck
    invert: bool

    def matches(self, metadata: Mapping[str, Mapping[str, Any]] | None) -> bool:
        v: Any = _MISSING
        if metadata is not None:
            v = metadata.get(self.filter, _MISSING)
            for key in self.path:
                if not isinstance(v, Mapping):
                    v = _MISSING
                    break
                v = v.get(key, _MISSING)
        if isinstance(v, Mapping):
            v = _MISSING  # a Struct is not a primitive value: nothing matches it
        return self.value(v) != self.invert


def compile_metadata_matcher(mm: metadata_pb2.MetadataMatcher, where: str) -> MetadataMatcher:
    if not mm.filter:
        raise ConfigError([f"{where}.filter: must not be empty"])
    path = []
    for i, seg in enumerate(mm.path):
        if seg.WhichOneof("segment") != "key" or not seg.key:
            raise ConfigError([f"{where}.path[{i}]: needs a key"])
        path.append(seg.key)
    if not path:
        raise ConfigError([f"{where}.path: must not be empty"])
    if not mm.HasField("value"):
        raise ConfigError([f"{where}.value: is required"])
    value = compile_value_matcher(mm.value, f"{where}.value")
    return MetadataMatcher(mm.filter, tuple(path), value, mm.invert)


# --- permissions and principals ------------------------------------------------------------------


def _cidr(c: Any, where: str) -> tuple[int, int, int]:
    """``CidrRange`` → (version, network int, prefix mask int)."""
    try:
        net = ipaddress.ip_network(f"{c.address_prefix}/{c.prefix_len.value}", strict=False)
    except ValueError as err:
        raise ConfigError([f"{where}: {err}"]) from None
    bits = net.max_prefixlen
    mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
    return net.version, int(net.network_address), mask


def _cidr_check(c: Any, where: str, get: Callable[[AuthzContext], tuple[int, int] | None]
                ) -> Check:
    version, network, mask = _cidr(c, where)

    def check(ctx: AuthzContext) -> bool:
        ip = get(ctx)
        return ip is not None and ip[0] == version and ip[1] & mask == network

    return check


def _header_check(hm: Any, where: str) -> Check:
    matcher = compile_header_matcher(hm, where)
    absent = matcher.matches_value(None)
    on_request = matcher.matches_request

    def check(ctx: AuthzContext) -> bool:
        request = ctx.request
        return absent if request is None else on_request(request)

    return check


def _path_check(pm: Any, where: str) -> Check:
    if pm.WhichOneof("rule") != "path":
        raise ConfigError([f"{where}: a path matcher needs path"])
    match = compile_string_matcher(pm.path, f"{where}.path")

    def check(ctx: AuthzContext) -> bool:
        request = ctx.request
        return request is not None and match(request.path_only)

    return check


def _uri_template_check(ext: Any, where: str) -> Check:
    typed = ext.typed_config
    if typed.type_url.rsplit("/", 1)[-1] != _URI_TEMPLATE_TYPE:
        raise ConfigError([f"{where}: path matcher {ext.name!r} ({typed.type_url}) is not "
                           "supported (only envoy.path.match.uri_template.uri_template_matcher)"])
    cfg = uri_template_match_pb2.UriTemplateMatchConfig()
    typed.Unpack(cfg)
    regex = uri_template_regex(cfg.path_template, where)

    def check(ctx: AuthzContext) -> bool:
        request = ctx.request
        return request is not None and regex.fullmatch(request.path_only) is not None

    return check


_PCHAR = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"


def uri_template_regex(template: str, where: str) -> re.Pattern[str]:
    """Envoy's URI template (``/a/*/b/**``, ``{name}``, ``{name=**}``) as a regex: ``*``
    is one path segment, ``**`` any number of segments (only last)."""
    if not template.startswith("/"):
        raise ConfigError([f"{where}.path_template: must start with '/'"])
    parts = []
    segments = template[1:].split("/")
    for i, seg in enumerate(segments):
        inner = seg
        if seg.startswith("{") and seg.endswith("}"):
            name, _, pattern = seg[1:-1].partition("=")
            inner = pattern or "*"
        if inner == "**":
            if i != len(segments) - 1:
                raise ConfigError([f"{where}.path_template: '**' must be the last segment"])
            parts.append(f"(?:{_PCHAR}|/)*")
        elif inner == "*":
            parts.append(f"{_PCHAR}+")
        elif "*" in inner or "{" in inner or "}" in inner:
            raise ConfigError([f"{where}.path_template: bad segment {seg!r}"])
        else:
            parts.append(re.escape(inner))
    return re.compile("/" + "/".join(parts))


def _all(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda ctx: all(c(ctx) for c in checks)


def _any(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda ctx: any(c(ctx) for c in checks)


def compile_permission(p: rbac_pb2.Permission, where: str) -> Check:
    kind = p.WhichOneof("rule")
    if kind == "any":
        if not p.any:
            raise ConfigError([f"{where}.any: must be true"])
        return _always
    if kind in ("and_rules", "or_rules"):
        rules = getattr(p, kind).rules
        checks = tuple(compile_permission(r, f"{where}.{kind}.rules[{i}]")
                       for i, r in enumerate(rules))
        if not checks:
            raise ConfigError([f"{where}.{kind}.rules: must not be empty"])
        return _all(checks) if kind == "and_rules" else _any(checks)
    if kind == "not_rule":
        inner = compile_permission(p.not_rule, f"{where}.not_rule")
        return lambda ctx: not inner(ctx)
    if kind == "header":
        return _header_check(p.header, f"{where}.header")
    if kind == "url_path":
        return _path_check(p.url_path, f"{where}.url_path")
    if kind == "uri_template":
        return _uri_template_check(p.uri_template, f"{where}.uri_template")
    if kind == "destination_ip":
        return _cidr_check(p.destination_ip, f"{where}.destination_ip", AuthzContext.local_ip)
    if kind == "destination_port":
        port = p.destination_port
        return lambda ctx: ctx.local_port() == port
    if kind == "destination_port_range":
        lo, hi = p.destination_port_range.start, p.destination_port_range.end
        return lambda ctx: (port := ctx.local_port()) is not None and lo <= port < hi
    if kind == "requested_server_name":
        sni = compile_string_matcher(p.requested_server_name,
                                     f"{where}.requested_server_name")
        return lambda ctx: sni(ctx.conn.requested_server_name or "")
    if kind == "metadata":
        mm = compile_metadata_matcher(p.metadata, f"{where}.metadata")
        return lambda ctx: mm.matches(ctx.metadata)
    if kind is None:
        raise ConfigError([f"{where}: a permission needs a rule"])
    raise ConfigError([f"{where}.{kind}: permission rule not supported by pistio"])


def compile_principal(p: rbac_pb2.Principal, where: str) -> Check:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        if not p.any:
            raise ConfigError([f"{where}.any: must be true"])
        return _always
    if kind in ("and_ids", "or_ids"):
        ids = getattr(p, kind).ids
        checks = tuple(compile_principal(r, f"{where}.{kind}.ids[{i}]")
                       for i, r in enumerate(ids))
        if not checks:
            raise ConfigError([f"{where}.{kind}.ids: must not be empty"])
        return _all(checks) if kind == "and_ids" else _any(checks)
    if kind == "not_id":
        inner = compile_principal(p.not_id, f"{where}.not_id")
        return lambda ctx: not inner(ctx)
    if kind == "authenticated":
        return _authenticated_check(p.authenticated, f"{where}.authenticated")
    if kind in ("source_ip", "direct_remote_ip"):
        return _cidr_check(getattr(p, kind), f"{where}.{kind}", AuthzContext.direct_ip)
    if kind == "remote_ip":
        return _cidr_check(p.remote_ip, f"{where}.remote_ip", AuthzContext.remote_ip)
    if kind == "header":
        return _header_check(p.header, f"{where}.header")
    if kind == "url_path":
        return _path_check(p.url_path, f"{where}.url_path")
    if kind == "metadata":
        mm = compile_metadata_matcher(p.metadata, f"{where}.metadata")
        return lambda ctx: mm.matches(ctx.metadata)
    if kind == "filter_state":
        fs = p.filter_state
        if fs.WhichOneof("matcher") != "string_match":
            raise ConfigError([f"{where}.filter_state: only string_match is supported"])
        key = fs.key
        check = compile_string_matcher(fs.string_match, f"{where}.filter_state.string_match")

        def filter_state(ctx: AuthzContext) -> bool:
            state = ctx.filter_state
            value = state.get(key) if state is not None else None
            return value is not None and check(value)

        return filter_state
    if kind is None:
        raise ConfigError([f"{where}: a principal needs an identifier"])
    raise ConfigError([f"{where}.{kind}: principal identifier not supported by pistio"])


def _is_tls(conn: DownstreamConnectionInfo) -> bool:
    return conn.tls_version is not None or conn.peer_uri_san is not None


def _authenticated_check(a: rbac_pb2.Principal.Authenticated, where: str) -> Check:
    if not a.HasField("principal_name"):
        return lambda ctx: _is_tls(ctx.conn)
    match = compile_string_matcher(a.principal_name, f"{where}.principal_name")

    def check(ctx: AuthzContext) -> bool:
        conn = ctx.conn
        if not _is_tls(conn):
            return False
        # Envoy: any URI SAN of the peer certificate, else its subject.
        uri = conn.peer_uri_san
        if uri is not None and match(uri):
            return True
        return match(conn.peer_subject or "")

    return check


# --- policies and the engine -------------------------------------------------------------------------

_POLICY_FIELDS = frozenset({"permissions", "principals"})


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permission: Check
    principal: Check

    def matches(self, ctx: AuthzContext) -> bool:
        return self.permission(ctx) and self.principal(ctx)


@dataclass(frozen=True, slots=True)
class RbacEngine:
    """One ``RBAC`` message: the action and its policies in name order."""

    action: int
    policies: tuple[Policy, ...]

    def matched_policy(self, ctx: AuthzContext) -> str | None:
        for policy in self.policies:
            if policy.matches(ctx):
                return policy.name
        return None

    def evaluate(self, ctx: AuthzContext) -> tuple[bool, str | None]:
        """(allowed, effective policy id) as Envoy's ``handleAction``; LOG always allows."""
        matched = self.matched_policy(ctx)
        if self.action == ALLOW:
            return matched is not None, matched
        if self.action == DENY:
            return matched is None, matched
        return True, matched

    @property
    def action_name(self) -> str:
        return _ACTION_NAMES.get(self.action, str(self.action))


def compile_rules_and_shadow(msg: Any, where: str, problems: list[str]
                             ) -> tuple[RbacEngine | None, RbacEngine | None]:
    """The ``rules`` and ``shadow_rules`` that the HTTP and network RBAC filters share;
    problems are appended to ``problems`` so one NACK names them all."""
    engines: list[RbacEngine | None] = []
    for field_name in ("rules", "shadow_rules"):
        engine = None
        if msg.HasField(field_name):
            try:
                engine = compile_rbac(getattr(msg, field_name), f"{where}.{field_name}")
            except ConfigError as err:
                problems.extend(err.problems)
        engines.append(engine)
    return engines[0], engines[1]


def compile_rbac(rbac: rbac_pb2.RBAC, where: str) -> RbacEngine:
    """Compile an ``envoy.config.rbac.v3.RBAC``; ``ConfigError`` names every problem."""
    problems: list[str] = []
    if rbac.HasField("audit_logging_options"):
        problems.append(f"{where}.audit_logging_options: field not supported by pistio")
    if rbac.action not in _ACTION_NAMES:
        problems.append(f"{where}.action: {rbac.action} is not supported (ALLOW, DENY, LOG)")
    policies = []
    for name in sorted(rbac.policies):
        at = f"{where}.policies[{name!r}]"
        pol = rbac.policies[name]
        for fd, _ in pol.ListFields():
            if fd.name not in _POLICY_FIELDS:
                problems.append(f"{at}.{fd.name}: field not supported by pistio (CEL "
                                "conditions are not implemented)")
        try:
            if not pol.permissions:
                raise ConfigError([f"{at}.permissions: must not be empty"])
            if not pol.principals:
                raise ConfigError([f"{at}.principals: must not be empty"])
            perm = _any(tuple(compile_permission(p, f"{at}.permissions[{i}]")
                              for i, p in enumerate(pol.permissions)))
            princ = _any(tuple(compile_principal(p, f"{at}.principals[{i}]")
                               for i, p in enumerate(pol.principals)))
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        policies.append(Policy(name, perm, princ))
    if problems:
        raise ConfigError(problems)
    return RbacEngine(rbac.action, tuple(policies))


def response_detail(policy_id: str | None) -> str:
    """``rbac_access_denied_matched_policy[<id>]``, blanks replaced (Envoy's access-log-safe
    form); ``none`` when no policy matched."""
    name = policy_id or "none"
    return "rbac_access_denied_matched_policy[" + re.sub(r"\s", "_", name) + "]"


def string_list_matcher(patterns: Any, where: str) -> Callable[[str], bool]:
    """A ``ListStringMatcher``: any pattern matches."""
    checks = tuple(compile_string_matcher(p, f"{where}.patterns[{i}]")
                   for i, p in enumerate(patterns))
    return lambda v: any(c(v) for c in checks)


__all__ = [
    "ALLOW", "DENY", "LOG", "AuthzContext", "Check", "MetadataMatcher", "Policy",
    "RbacEngine", "compile_metadata_matcher", "compile_permission", "compile_principal",
    "compile_rbac", "compile_value_matcher", "response_detail", "string_list_matcher",
]
