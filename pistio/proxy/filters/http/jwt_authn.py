"""Envoy's JWT authentication filter (``envoy.filters.http.jwt_authn``).

The first ``rules`` entry whose ``RouteMatch`` matches the request names the requirement
(``requires`` or ``requirement_name`` from ``requirement_map``); no matching rule: the request
passes untouched. ``bypass_cors_preflight`` lets CORS preflights through.

Requirements, as Envoy's verifiers:

- ``provider_name`` (``provider_and_audiences``): the tokens at *that* provider's locations
  must all verify with it; none → ``Jwt is missing``;
- ``requires_any``: the first child that succeeds wins; when all fail, the error reported is
  one that is neither "missing" nor "unknown issuer" if any, else "unknown issuer", else
  "missing"; an ``allow_missing`` child turns a final "missing" into success, an
  ``allow_missing_or_failed`` child any failure (Istio's RequestAuthentication is
  ``requires_any [origins-N, allow_missing]``: no token passes on, a bad one is refused);
- ``requires_all``: every child, the first failure reported;
- ``allow_missing`` / ``allow_missing_or_failed`` alone: tokens at any provider's location,
  verified by the provider of their issuer.

A token is checked in Envoy's order: parse, issuer allowed for the location it came from,
time (``nbf``/``exp`` with ``clock_skew_seconds``, default 60), audiences, signature against
the provider's inline JWKS (``local_jwks``; pistio's discovery inlines ``jwksUri`` keys as
Istio's does). Verified tokens: ``forward_payload_header`` gets the base64url payload,
``claim_to_headers`` copy claims, the token's header is removed unless ``forward``, and the
payload is written to dynamic metadata ``envoy.filters.http.jwt_authn`` under
``payload_in_metadata`` (``normalize_payload_in_metadata`` splits space-delimited claims
such as ``scope`` into lists), where RBAC ``metadata`` matchers read ``iss``, ``sub`` and
claims.

Failures answer 401 (403 for ``Audiences in Jwt are not allowed``) with the status message as
body, ``www-authenticate: Bearer realm="<scheme>://<host><path>"`` (plus
``, error="invalid_token"`` unless the token was missing) and details
``jwt_authn_access_denied{<message with _ for blanks>}``. Stats:
``http.<stat_prefix>.jwt_authn.<stat_prefix>{allowed,denied,cors_preflight_bypassed}``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import (
    RequestView,
    compile_route_match,
)
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.filters.http.jwt_token import (
    Jwk,
    Jwt,
    Status,
    parse_jwks,
    parse_jwt,
    sanitize_audience,
    verify_signature,
    verify_time,
)
from pistio.proxy.filters.http.rbac import set_metadata
from pistio.proxy.http.headers import Fields

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.stats.store import Counter, StatsStore

JWT_AUTHN_FILTER_NAME = "envoy.filters.http.jwt_authn"
DEFAULT_CLOCK_SKEW = 60
JWT_CACHE_SIZE = 100  # Envoy's default jwt_cache_config.jwt_cache_size
_CLOCK: Callable[[], float] = time.time

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication": frozenset(
        {"providers", "rules", "bypass_cors_preflight", "requirement_map", "stat_prefix"}
    ),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtProvider": frozenset(
        {"issuer", "audiences", "local_jwks", "forward", "from_headers", "from_params",
         "from_cookies", "forward_payload_header", "pad_forward_payload_header",
         "payload_in_metadata", "normalize_payload_in_metadata", "header_in_metadata",
         "clock_skew_seconds", "claim_to_headers", "clear_route_cache", "jwt_cache_config"}
    ),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtProvider.NormalizePayload": frozenset(
        {"space_delimited_claims"}
    ),
    "envoy.extensions.filters.http.jwt_authn.v3.JwtCacheConfig": frozenset(
        {"jwt_cache_size"}
    ),
    "envoy.config.core.v3.DataSource": frozenset({"inline_string", "inline_bytes",
                                                  "filename"}),
    "envoy.extensions.filters.http.jwt_authn.v3.RequirementRule": frozenset(
        {"match", "requires", "requirement_name"}
    ),
    "envoy.config.route.v3.RouteMatch": frozenset(
        {"prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers",
         "query_parameters", "grpc", "runtime_fraction"}
    ),
}

# --- compiled config -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderLocation:
    name: bytes  # lower case
    prefix: str


@dataclass(slots=True)
class Provider:
    """One ``JwtProvider``; ``cache`` keeps tokens whose signature verified (by token)."""

    name: str
    issuer: str
    audiences: frozenset[str]
    keys: tuple[Jwk, ...]
    forward: bool
    headers: tuple[HeaderLocation, ...]
    params: tuple[str, ...]
    cookies: tuple[str, ...]
    forward_payload_header: bytes
    pad_forward_payload_header: bool
    payload_in_metadata: str
    header_in_metadata: str
    space_delimited_claims: frozenset[str]
    clock_skew: int
    claim_to_headers: tuple[tuple[str, bytes], ...]
    clear_route_cache: bool
    cache_size: int
    cache: OrderedDict[str, Jwt] = field(default_factory=OrderedDict, repr=False)

    def audiences_allowed(self, audiences: tuple[str, ...]) -> bool:
        if not self.audiences:
            return True
        return any(sanitize_audience(a) in self.audiences for a in audiences)


@dataclass(frozen=True, slots=True)
class Extractor:
    """Where to look for tokens, and which issuers each place may carry (Envoy's
    ``Extractor`` for one provider or a list of them)."""

    headers: tuple[tuple[HeaderLocation, frozenset[str]], ...]
    params: tuple[tuple[str, frozenset[str]], ...]
    cookies: tuple[tuple[str, frozenset[str]], ...]
    sanitized: tuple[bytes, ...]  # headers only the filter may set (payload, claims)


def _extractor(providers: tuple[Provider, ...]) -> Extractor:
    headers: dict[HeaderLocation, set[str]] = {}
    params: dict[str, set[str]] = {}
    cookies: dict[str, set[str]] = {}
    sanitized: list[bytes] = []
    for p in providers:
        for h in p.headers:
            headers.setdefault(h, set()).add(p.issuer)
        for q in p.params:
            params.setdefault(q, set()).add(p.issuer)
        for c in p.cookies:
            cookies.setdefault(c, set()).add(p.issuer)
        if p.forward_payload_header:
            sanitized.append(p.forward_payload_header)
        sanitized.extend(h for _, h in p.claim_to_headers)
    return Extractor(tuple((k, frozenset(v)) for k, v in headers.items()),
                     tuple((k, frozenset(v)) for k, v in params.items()),
                     tuple((k, frozenset(v)) for k, v in cookies.items()),
                     tuple(dict.fromkeys(sanitized)))


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    issuers: frozenset[str]
    header: bytes | None  # the header it came from (removed unless forward)

    def issuer_allowed(self, iss: str) -> bool:
        return iss in self.issuers or "" in self.issuers


# Requirement tree nodes.
@dataclass(frozen=True, slots=True)
class ProviderReq:
    provider: Provider
    extractor: Extractor
    audiences: frozenset[str] | None = None  # provider_and_audiences


@dataclass(frozen=True, slots=True)
class AnyReq:
    children: tuple[Requirement, ...]
    allow_missing: bool
    allow_missing_or_failed: bool


@dataclass(frozen=True, slots=True)
class AllReq:
    children: tuple[Requirement, ...]


@dataclass(frozen=True, slots=True)
class AllowReq:
    """``allow_missing`` (``failed`` False) or ``allow_missing_or_failed`` over all
    providers."""

    failed: bool
    extractor: Extractor
    by_issuer: Mapping[str, Provider]
    fallback: Provider | None  # the first provider without issuer


@dataclass(frozen=True, slots=True)
class AllowAll:
    pass


Requirement = ProviderReq | AnyReq | AllReq | AllowReq | AllowAll


@dataclass(frozen=True, slots=True)
class JwtAuthnConfig:
    rules: tuple[tuple[Callable[[RequestView], bool], Requirement], ...]
    bypass_cors_preflight: bool
    stat_prefix: str
    providers: Mapping[str, Provider]


# --- compilation ---------------------------------------------------------------------------------


def unpack_jwt_authn(typed: Any, where: str) -> JwtAuthnConfig:
    msg = jwt_pb2.JwtAuthentication()
    typed.Unpack(msg)
    return compile_jwt_authn(msg, where)


def compile_jwt_authn(msg: jwt_pb2.JwtAuthentication, where: str) -> JwtAuthnConfig:
    problems = unsupported_fields(msg, _ALLOWED, where)
    providers: dict[str, Provider] = {}
    for name in sorted(msg.providers):
        try:
            providers[name] = _provider(name, msg.providers[name],
                                        f"{where}.providers[{name!r}]")
        except ConfigError as err:
            problems.extend(err.problems)
    ordered = tuple(providers[n] for n in msg.providers if n in providers)
    everything = _extractor(ordered)
    by_issuer: dict[str, Provider] = {}
    for p in ordered:
        by_issuer.setdefault(p.issuer, p)
    fallback = by_issuer.get("")

    def requirement(r: jwt_pb2.JwtRequirement, at: str) -> Requirement:
        kind = r.WhichOneof("requires_type")
        if kind in ("provider_name", "provider_and_audiences"):
            name = r.provider_name if kind == "provider_name" else \
                r.provider_and_audiences.provider_name
            p = providers.get(name)
            if p is None:
                raise ConfigError([f"{at}: Required provider ['{name}'] is not configured."])
            audiences = None
            if kind == "provider_and_audiences":
                audiences = frozenset(sanitize_audience(a)
                                      for a in r.provider_and_audiences.audiences)
            return ProviderReq(p, _extractor((p,)), audiences)
        if kind == "requires_any":
            allow_missing = allow_failed = False
            children = []
            for i, c in enumerate(r.requires_any.requirements):
                ck = c.WhichOneof("requires_type")
                if ck == "allow_missing":
                    allow_missing = True
                elif ck == "allow_missing_or_failed":
                    allow_failed = True
                else:
                    children.append(requirement(c, f"{at}.requires_any.requirements[{i}]"))
            if not children and (allow_missing or allow_failed):
                children.append(AllowReq(allow_failed, everything, by_issuer, fallback))
            return AnyReq(tuple(children), allow_missing, allow_failed)
        if kind == "requires_all":
            return AllReq(tuple(requirement(c, f"{at}.requires_all.requirements[{i}]")
                                for i, c in enumerate(r.requires_all.requirements)))
        if kind in ("allow_missing", "allow_missing_or_failed"):
            return AllowReq(kind == "allow_missing_or_failed", everything, by_issuer, fallback)
        return AllowAll()

    requirement_map: dict[str, Requirement] = {}
    for name in sorted(msg.requirement_map):
        try:
            requirement_map[name] = requirement(msg.requirement_map[name],
                                                f"{where}.requirement_map[{name!r}]")
        except ConfigError as err:
            problems.extend(err.problems)
    rules = []
    for i, rule in enumerate(msg.rules):
        at = f"{where}.rules[{i}]"
        try:
            _, check = compile_route_match(rule.match, f"{at}.match")
            which = rule.WhichOneof("requirement_type")
            if which == "requirement_name":
                req = requirement_map.get(rule.requirement_name)
                if req is None:
                    raise ConfigError([f"{at}.requirement_name: {rule.requirement_name!r} "
                                       "is not in requirement_map"])
            elif which == "requires":
                req = requirement(rule.requires, f"{at}.requires")
            else:
                req = AllowAll()
            rules.append((check, req))
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems)
    return JwtAuthnConfig(tuple(rules), msg.bypass_cors_preflight, msg.stat_prefix,
                          providers)


def _provider(name: str, p: jwt_pb2.JwtProvider, where: str) -> Provider:
    problems = []
    if p.WhichOneof("jwks_source_specifier") != "local_jwks":
        problems.append(f"{where}: only local_jwks is supported by pistio (remote_jwks is not; "
                        "the discovery inlines the keys of jwksUri)")
    source = p.local_jwks
    which = source.WhichOneof("specifier")
    text = ""
    if which == "inline_string":
        text = source.inline_string
    elif which == "inline_bytes":
        text = source.inline_bytes.decode("utf-8", "replace")
    elif which == "filename":
        try:
            with open(source.filename, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            problems.append(f"{where}.local_jwks.filename: {err}")
    headers = tuple(HeaderLocation(h.name.lower().encode("latin-1"), h.value_prefix)
                    for h in p.from_headers)
    params = tuple(p.from_params)
    cookies = tuple(p.from_cookies)
    if not headers and not params and not cookies:
        headers = (HeaderLocation(b"authorization", "Bearer "),)
        params = ("access_token",)
    for h in headers:
        if not h.name:
            problems.append(f"{where}.from_headers: a header name must not be empty")
    if problems:
        raise ConfigError(problems)
    return Provider(
        name=name,
        issuer=p.issuer,
        audiences=frozenset(sanitize_audience(a) for a in p.audiences),
        keys=parse_jwks(text),
        forward=p.forward,
        headers=headers,
        params=params,
        cookies=cookies,
        forward_payload_header=p.forward_payload_header.lower().encode("latin-1"),
        pad_forward_payload_header=p.pad_forward_payload_header,
        payload_in_metadata=p.payload_in_metadata,
        header_in_metadata=p.header_in_metadata,
        space_delimited_claims=frozenset(p.normalize_payload_in_metadata.space_delimited_claims),
        clock_skew=p.clock_skew_seconds or DEFAULT_CLOCK_SKEW,
        claim_to_headers=tuple((c.claim_name, c.header_name.lower().encode("latin-1"))
                               for c in p.claim_to_headers),
        clear_route_cache=p.clear_route_cache,
        cache_size=p.jwt_cache_config.jwt_cache_size or JWT_CACHE_SIZE,
    )


# --- verification ----------------------------------------------------------------------------------


class Verification:
    """One request's verification: the extracted data to publish, header edits."""

    __slots__ = ("s", "extracted", "clear_route_cache", "now")

    def __init__(self, s: ActiveStream) -> None:
        self.s = s
        self.extracted: dict[str, Any] = {}
        self.clear_route_cache = False
        self.now = int(_CLOCK())

    def run(self, req: Requirement) -> Status:
        if isinstance(req, ProviderReq):
            return self._authenticate(req.extractor, req.provider, req.audiences, False, False)
        if isinstance(req, AnyReq):
            statuses = []
            for child in req.children:
                status = self.run(child)
                if status is Status.OK:
                    return status
                statuses.append(status)
            final = Status.JWT_MISSED
            for status in statuses:
                if status not in (Status.JWT_MISSED, Status.UNKNOWN_ISSUER) or \
                        final is Status.JWT_MISSED:
                    final = status
            if req.allow_missing_or_failed or (req.allow_missing and final is Status.JWT_MISSED):
                return Status.OK
            return final
        if isinstance(req, AllReq):
            for child in req.children:
                status = self.run(child)
                if status is not Status.OK:
                    return status
            return Status.OK
        if isinstance(req, AllowReq):
            status = self._authenticate(req.extractor, None, None, req.failed, True, req)
            if req.failed or status is Status.JWT_MISSED:
                return Status.OK
            return status
        return Status.OK

    def _authenticate(self, ex: Extractor, provider: Provider | None,
                      audiences: frozenset[str] | None, allow_failed: bool,
                      allow_missing: bool, allow: AllowReq | None = None) -> Status:
        """Envoy's ``Authenticator``: every extracted token must verify (unless allowed to
        fail); the last status stands."""
        head = self.s.stream.head
        for name in ex.sanitized:
            head.remove(name)
        tokens = _extract(ex, self.s)
        if not tokens:
            return Status.JWT_MISSED
        status = Status.OK
        for token in reversed(tokens):  # Envoy pops them from the back
            status = self._verify_token(token, provider, audiences, allow)
            if status is not Status.OK and not allow_failed and not allow_missing:
                return status
        return status

    def _verify_token(self, token: Token, provider: Provider | None,
                      audiences: frozenset[str] | None, allow: AllowReq | None) -> Status:
        cached = provider.cache.get(token.value) if provider is not None else None
        jwt = cached if cached is not None else parse_jwt(token.value)
        if isinstance(jwt, Status):
            return jwt
        if not token.issuer_allowed(jwt.iss):
            return Status.UNKNOWN_ISSUER
        if provider is None:
            assert allow is not None
            provider = allow.by_issuer.get(jwt.iss) or allow.fallback
            if provider is None:
                return Status.UNKNOWN_ISSUER
            cached = provider.cache.get(token.value)
        status = verify_time(jwt, self.now, provider.clock_skew)
        if status is not Status.OK:
            return status
        if audiences is not None:
            allowed = not audiences or any(sanitize_audience(a) in audiences
                                           for a in jwt.audiences)
        else:
            allowed = provider.audiences_allowed(jwt.audiences)
        if not allowed:
            return Status.AUDIENCE_NOT_ALLOWED
        if cached is None:
            status = verify_signature(jwt, provider.keys)
            if status is not Status.OK:
                return status
            cache = provider.cache
            cache[token.value] = jwt
            if len(cache) > provider.cache_size:
                cache.popitem(last=False)
        self._good(jwt, token, provider)
        return Status.OK

    def _good(self, jwt: Jwt, token: Token, provider: Provider) -> None:
        head = self.s.stream.head
        if provider.forward_payload_header:
            payload = jwt.payload_b64
            if provider.pad_forward_payload_header:
                payload += "=" * (-len(payload) % 4)
            head.add(provider.forward_payload_header, payload.encode("ascii"))
        for claim, header in provider.claim_to_headers:
            value = _claim_text(jwt.payload, claim)
            if value:
                head.add(header, value.encode("utf-8"))
        if not provider.forward and token.header is not None:
            head.remove(token.header)
        if provider.header_in_metadata:
            self.extracted[provider.header_in_metadata] = dict(jwt.header)
        if provider.payload_in_metadata:
            payload_md = dict(jwt.payload)
            for claim in provider.space_delimited_claims:
                value = payload_md.get(claim)
                if isinstance(value, str):
                    payload_md[claim] = [v for v in value.split(" ") if v]
            self.extracted[provider.payload_in_metadata] = payload_md
        if provider.clear_route_cache:
            self.clear_route_cache = True


def _claim_text(payload: Mapping[str, Any], claim: str) -> str:
    value: Any = payload
    for part in claim.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value) if value >= 0 else f"{float(value):f}"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and value >= 0 else f"{value:f}"
    return ""


_JWT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def _after_prefix(value: str, start: int) -> str:
    """Envoy's ``extractJWT``: the run of base64url characters and dots after ``start``."""
    n = len(value)
    while start < n and value[start] not in _JWT_CHARS:
        start += 1
    end = start
    while end < n and value[end] in _JWT_CHARS:
        end += 1
    return value[start:end]


def _extract(ex: Extractor, s: ActiveStream) -> list[Token]:
    index = s.stream.head.index
    tokens = []
    for loc, issuers in ex.headers:
        raw = index.get(loc.name)
        if raw is None:
            continue
        value = raw.decode("latin-1")
        if loc.prefix:
            pos = value.find(loc.prefix)
            if pos < 0:
                continue
            value = _after_prefix(value, pos + len(loc.prefix))
        tokens.append(Token(value, issuers, loc.name))
    if ex.params:
        query = s.request_view().query_first_values() if "?" in s.request_view().path else {}
        for name, issuers in ex.params:
            param = query.get(name)
            if param is not None:
                tokens.append(Token(param, issuers, None))
    if ex.cookies:
        cookies = _cookies(index.get(b"cookie"))
        for name, issuers in ex.cookies:
            cookie = cookies.get(name)
            if cookie is not None:
                tokens.append(Token(cookie, issuers, None))
    return tokens


def _cookies(raw: bytes | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not raw:
        return out
    for part in raw.decode("latin-1").replace(",", ";").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name and name not in out:
            out[name] = value.strip('"')
    return out


# --- the filter ---------------------------------------------------------------------------------------

_WWW_AUTHENTICATE = b"www-authenticate"


class JwtAuthnFilter:
    __slots__ = ("name", "config", "allowed", "denied", "cors_preflight_bypassed")

    def __init__(self, name: str, config: JwtAuthnConfig, store: StatsStore,
                 stat_prefix: str) -> None:
        self.name = name
        self.config = config
        prefix = f"http.{stat_prefix}.jwt_authn.{config.stat_prefix}"
        self.allowed: Counter = store.counter(prefix + "allowed")
        self.denied: Counter = store.counter(prefix + "denied")
        self.cors_preflight_bypassed: Counter = store.counter(prefix + "cors_preflight_bypassed")

    # ``encode_headers`` is a no-op: the connection manager skips it.
    encodes = False

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        config = self.config
        head = s.stream.head
        if config.bypass_cors_preflight and head.method == b"OPTIONS" and \
                head.index.get(b"origin") and head.index.get(b"access-control-request-method"):
            self.cors_preflight_bypassed.value += 1
            return True
        view = s.request_view()
        req: Requirement | None = None
        for check, requirement in config.rules:
            if check(view):
                req = requirement
                break
        if req is None:
            return True
        verification = Verification(s)
        status = verification.run(req)
        if verification.extracted:
            set_metadata(s, JWT_AUTHN_FILTER_NAME, verification.extracted)
        if verification.clear_route_cache:
            # Envoy's clearRouteCache: the route is found again, with the claim headers.
            s._route_done = False
        if status is Status.OK:
            self.allowed.value += 1
            return True
        self.denied.value += 1
        uri = f"{s.forwarded_proto()}://{view.authority}{view.path}"
        challenge = f'Bearer realm="{uri}"'
        if status is not Status.JWT_MISSED:
            challenge += ', error="invalid_token"'
        code = 403 if status is Status.AUDIENCE_NOT_ALLOWED else 401
        s.send_local_reply(code, status.message.encode(),
                           [(_WWW_AUTHENTICATE, challenge.encode("latin-1"))],
                           details="jwt_authn_access_denied{"
                           + status.message.replace(" ", "_") + "}",
                           filter_position=position)
        return False

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        return fields
