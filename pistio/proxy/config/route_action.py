"""What a matched route does, as frozen data: Envoy's ``RouteAction``, ``RedirectAction``,
``DirectResponseAction``, header mutations and the per-route filter configs pistio runs
(``envoy.filters.http.fault``, ``envoy.filters.http.cors``).

Durations are seconds as ``float``. Where Envoy distinguishes "unset" from "disabled",
``None`` is unset and ``0.0`` is disabled (``RouteAction.timeout`` is never unset: Envoy's
default is 15 s). The pure helpers at the end (rewritten path, redirect ``Location``,
weighted cluster pick, shadow host, retry back-off) are what the router runs per request.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import any_pb2, duration_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import (
    ALWAYS,
    NEVER,
    Fraction,
    HeaderMatcher,
    PathMatch,
    RequestView,
    ValueCheck,
    compile_fraction,
    compile_header_matchers,
    compile_regex_matcher,
    compile_runtime_fraction,
    compile_string_matcher,
    strip_query_and_fragment,
)
from pistio.proxy.config.unsupported import field_path, unsupported_fields

DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_NUM_RETRIES = 1
DEFAULT_BACKOFF_BASE = 0.025
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
EMPTY_MAPPING: Mapping[str, object] = MappingProxyType({})


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def type_name(any_msg: any_pb2.Any) -> str:
    return any_msg.type_url.rpartition("/")[2]


# --- header mutations -------------------------------------------------------------------


class AppendAction(enum.IntEnum):
    """``HeaderValueOption.HeaderAppendAction``."""

    APPEND_IF_EXISTS_OR_ADD = 0
    ADD_IF_ABSENT = 1
    OVERWRITE_IF_EXISTS_OR_ADD = 2
    OVERWRITE_IF_EXISTS = 3


@dataclass(frozen=True, slots=True)
class HeaderToAdd:
    name: str  # lower-case
    value: str
    action: AppendAction
    keep_empty_value: bool


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """One level's ``*_headers_to_remove`` and ``*_headers_to_add``; Envoy removes first."""

    remove: tuple[str, ...] = ()
    add: tuple[HeaderToAdd, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)


NO_MUTATION = HeaderMutation()


def _header_value_text(value: str, where: str) -> str:
    """Header values are Envoy formatter strings: ``%%`` is a literal ``%``; a command
    operator such as ``%REQ(x)%`` needs the formatter, which routes do not support yet."""
    if "%" not in value:
        return value
    if value.replace("%%", "").count("%"):
        raise ConfigError([f"{where}: header value {value!r} uses command operators, "
                           "not supported by pistio"])
    return value.replace("%%", "%")


def compile_header_mutation(
    to_add: Iterable[base_pb2.HeaderValueOption],
    to_remove: Iterable[str],
    where: str,
    kind: str,
) -> HeaderMutation:
    """``kind`` is ``request`` or ``response``; pseudo-headers and (for requests) ``host``
    may be neither added nor removed, as Envoy enforces."""
    problems: list[str] = []
    removes: list[str] = []
    for i, name in enumerate(to_remove):
        low = name.lower()
        if low.startswith(":") or (kind == "request" and low == "host"):
            problems.append(f"{field_path(where, kind)}_headers_to_remove[{i}]: {name!r}: "
                            ":-prefixed or host headers may not be removed")
        else:
            removes.append(low)
    adds: list[HeaderToAdd] = []
    for i, hvo in enumerate(to_add):
        at = f"{field_path(where, kind)}_headers_to_add[{i}]"
        name = hvo.header.key.lower()
        if not name:
            problems.append(f"{at}.header.key: must not be empty")
            continue
        if name.startswith(":") or (kind == "request" and name == "host"):
            problems.append(f"{at}: {hvo.header.key!r}: "
                            ":-prefixed or host headers may not be modified")
            continue
        if hvo.HasField("append") and hvo.append_action != 0:
            problems.append(f"{at}: append and append_action are mutually exclusive")
            continue
        if hvo.HasField("append"):
            action = (AppendAction.APPEND_IF_EXISTS_OR_ADD if hvo.append.value
                      else AppendAction.OVERWRITE_IF_EXISTS_OR_ADD)
        else:
            action = AppendAction(hvo.append_action)
        raw = hvo.header.raw_value
        try:
            text = raw.decode("latin-1") if raw else hvo.header.value
            value = _header_value_text(text, at)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        adds.append(HeaderToAdd(name, value, action, hvo.keep_empty_value))
    if problems:
        raise ConfigError(problems)
    return HeaderMutation(tuple(removes), tuple(adds))


# --- retries ------------------------------------------------------------------------------


class RetryOn(enum.IntFlag):
    """Envoy's ``x-envoy-retry-on`` / ``x-envoy-retry-grpc-on`` conditions."""

    NONE = 0
    FIVE_XX = enum.auto()
    GATEWAY_ERROR = enum.auto()
    RESET = enum.auto()
    RESET_BEFORE_REQUEST = enum.auto()
    CONNECT_FAILURE = enum.auto()
    ENVOY_RATELIMITED = enum.auto()
    RETRIABLE_4XX = enum.auto()
    REFUSED_STREAM = enum.auto()
    RETRIABLE_STATUS_CODES = enum.auto()
    RETRIABLE_HEADERS = enum.auto()
    HTTP3_POST_CONNECT_FAILURE = enum.auto()
    GRPC_CANCELLED = enum.auto()
    GRPC_DEADLINE_EXCEEDED = enum.auto()
    GRPC_INTERNAL = enum.auto()
    GRPC_RESOURCE_EXHAUSTED = enum.auto()
    GRPC_UNAVAILABLE = enum.auto()


RETRY_ON_NAMES: Mapping[str, RetryOn] = MappingProxyType({
    "5xx": RetryOn.FIVE_XX,
    "gateway-error": RetryOn.GATEWAY_ERROR,
    "reset": RetryOn.RESET,
    "reset-before-request": RetryOn.RESET_BEFORE_REQUEST,
    "connect-failure": RetryOn.CONNECT_FAILURE,
    "envoy-ratelimited": RetryOn.ENVOY_RATELIMITED,
    "retriable-4xx": RetryOn.RETRIABLE_4XX,
    "refused-stream": RetryOn.REFUSED_STREAM,
    "retriable-status-codes": RetryOn.RETRIABLE_STATUS_CODES,
    "retriable-headers": RetryOn.RETRIABLE_HEADERS,
    "http3-post-connect-failure": RetryOn.HTTP3_POST_CONNECT_FAILURE,
    "cancelled": RetryOn.GRPC_CANCELLED,
    "deadline-exceeded": RetryOn.GRPC_DEADLINE_EXCEEDED,
    "internal": RetryOn.GRPC_INTERNAL,
    "resource-exhausted": RetryOn.GRPC_RESOURCE_EXHAUSTED,
    "unavailable": RetryOn.GRPC_UNAVAILABLE,
})


def parse_retry_on(text: str) -> tuple[RetryOn, list[str]]:
    """Flags for a comma-separated condition list, and the names Envoy does not know (the
    router uses this for ``x-envoy-retry-on`` too, where unknown names are ignored)."""
    flags = RetryOn.NONE
    unknown: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        flag = RETRY_ON_NAMES.get(name)
        if flag is None:
            unknown.append(name)
        else:
            flags |= flag
    return flags, unknown


# Conditions decided from a response's headers whatever its status (``retriable-headers``
# and the gRPC ones: a trailers-only response carries grpc-status in its headers).
_HEADER_DRIVEN_RETRY_ON = (RetryOn.RETRIABLE_HEADERS | RetryOn.GRPC_CANCELLED
                           | RetryOn.GRPC_DEADLINE_EXCEEDED | RetryOn.GRPC_INTERNAL
                           | RetryOn.GRPC_RESOURCE_EXHAUSTED | RetryOn.GRPC_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``RetryPolicy``; back-off defaults to 25 ms base and 10 × base maximum."""

    retry_on: RetryOn
    num_retries: int = DEFAULT_NUM_RETRIES
    per_try_timeout: float = 0.0  # 0: the attempt may use the whole route timeout
    base_interval: float = DEFAULT_BACKOFF_BASE
    max_interval: float = 10 * DEFAULT_BACKOFF_BASE
    retriable_status_codes: frozenset[int] = frozenset()
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    # previous_hosts predicate: retry on a host not tried yet.
    avoid_previous_hosts: bool = False
    host_selection_retry_max_attempts: int = 1
    # previous_priorities retry priority: its update_frequency, 0 when not configured.
    previous_priorities_update_frequency: int = 0
    # Derived once, for the request path (plain ints and sets, no enum arithmetic):
    # ``retry_on`` as an int; the statuses retriable by their code alone; whether a response's
    # headers can make it retriable (retriable-headers, gRPC conditions), whatever its status.
    retry_on_bits: int = field(init=False, repr=False, compare=False)
    retriable_statuses: frozenset[int] = field(init=False, repr=False, compare=False)
    header_driven: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        on = int(self.retry_on)
        statuses: set[int] = set()
        if on & RetryOn.FIVE_XX:
            statuses.update(range(500, 600))
        if on & RetryOn.GATEWAY_ERROR:
            statuses.update((502, 503, 504))
        if on & RetryOn.RETRIABLE_4XX:
            statuses.add(409)
        if on & RetryOn.RETRIABLE_STATUS_CODES:
            statuses.update(self.retriable_status_codes)
        object.__setattr__(self, "retry_on_bits", on)
        object.__setattr__(self, "retriable_statuses", frozenset(statuses))
        object.__setattr__(self, "header_driven", bool(on & _HEADER_DRIVEN_RETRY_ON))


_PREVIOUS_HOSTS_TYPE = previous_hosts_pb2.PreviousHostsPredicate.DESCRIPTOR.full_name
_PREVIOUS_PRIORITIES_TYPE = (
    previous_priorities_config_pb2.PreviousPrioritiesConfig.DESCRIPTOR.full_name
)


def compile_retry_policy(p: rc.RetryPolicy, where: str) -> RetryPolicy:
    problems: list[str] = []
    flags, unknown = parse_retry_on(p.retry_on)
    if unknown:
        problems.append(f"{where}.retry_on: unknown retry condition(s) {', '.join(unknown)}")
    base = DEFAULT_BACKOFF_BASE
    max_interval = 10 * base
    if p.HasField("retry_back_off"):
        bo = p.retry_back_off
        base = seconds(bo.base_interval)
        if base <= 0:
            problems.append(f"{where}.retry_back_off.base_interval: must be greater than 0")
        base = max(base, 0.001)  # Envoy rounds intervals under 1 ms up to 1 ms
        max_interval = seconds(bo.max_interval) if bo.HasField("max_interval") else 10 * base
        if max_interval < base:
            problems.append(f"{where}.retry_back_off.max_interval: must be at least "
                            "base_interval")
    avoid_previous = False
    for i, pred in enumerate(p.retry_host_predicate):
        at = f"{where}.retry_host_predicate[{i}]"
        kind = type_name(pred.typed_config) if pred.HasField("typed_config") else ""
        if kind == _PREVIOUS_HOSTS_TYPE or (
            not kind and pred.name == "envoy.retry_host_predicates.previous_hosts"
        ):
            avoid_previous = True
        else:
            problems.append(f"{at}: retry host predicate {pred.name or kind!r} not supported "
                            "by pistio")
    update_frequency = 0
    if p.HasField("retry_priority"):
        prio = p.retry_priority
        if type_name(prio.typed_config) != _PREVIOUS_PRIORITIES_TYPE:
            problems.append(f"{where}.retry_priority: {prio.name!r} not supported by pistio")
        else:
            cfg = previous_priorities_config_pb2.PreviousPrioritiesConfig()
            prio.typed_config.Unpack(cfg)
            if cfg.update_frequency <= 0:
                problems.append(f"{where}.retry_priority: update_frequency must be > 0")
            update_frequency = cfg.update_frequency
    retriable_headers: tuple[HeaderMatcher, ...] = ()
    retriable_request_headers: tuple[HeaderMatcher, ...] = ()
    try:
        retriable_headers = compile_header_matchers(p.retriable_headers,
                                                    f"{where}.retriable_headers")
        retriable_request_headers = compile_header_matchers(
            p.retriable_request_headers, f"{where}.retriable_request_headers")
    except ConfigError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return RetryPolicy(
        retry_on=flags,
        num_retries=p.num_retries.value if p.HasField("num_retries") else DEFAULT_NUM_RETRIES,
        per_try_timeout=seconds(p.per_try_timeout),
        base_interval=base,
        max_interval=max_interval,
        retriable_status_codes=frozenset(p.retriable_status_codes),
        retriable_headers=retriable_headers,
        retriable_request_headers=retriable_request_headers,
        avoid_previous_hosts=avoid_previous,
        host_selection_retry_max_attempts=max(p.host_selection_retry_max_attempts, 1),
        previous_priorities_update_frequency=update_frequency,
    )


# --- hashing, mirroring, rewrites --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """``RegexMatchAndSubstitute``: every match of ``pattern`` replaced (RE2 GlobalReplace);
    ``\\0``-``\\9`` in the substitution are capture groups."""

    pattern: re.Pattern[str]
    substitution: str  # RE2 form, kept for config dumps
    template: str  # the same substitution in Python's re.sub syntax

    def apply(self, text: str) -> str:
        return self.pattern.sub(self.template, text)


def compile_regex_rewrite(r: regex_pb2.RegexMatchAndSubstitute, where: str) -> RegexRewrite:
    pattern = compile_regex_matcher(r.pattern, f"{where}.pattern")
    template: list[str] = []
    sub = r.substitution
    i = 0
    while i < len(sub):
        c = sub[i]
        if c == "\\" and i + 1 < len(sub) and sub[i + 1].isdigit():
            group = int(sub[i + 1])
            if group > pattern.groups:
                raise ConfigError([f"{where}.substitution: {sub!r} refers to group {group}, "
                                   f"the pattern has {pattern.groups}"])
            template.append(f"\\g<{group}>")
            i += 2
        elif c == "\\" and i + 1 < len(sub) and sub[i + 1] == "\\":
            template.append("\\\\")
            i += 2
        elif c == "\\":
            raise ConfigError([f"{where}.substitution: {sub!r}: invalid rewrite escape"])
        else:
            template.append(c)
            i += 1
    return RegexRewrite(pattern, sub, "".join(template))


@dataclass(frozen=True, slots=True)
class HeaderHash:
    header_name: str
    regex_rewrite: RegexRewrite | None = None
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class CookieHash:
    name: str
    ttl: float | None = None  # set: generate the cookie when absent
    path: str = ""
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class SourceIpHash:
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class QueryParameterHash:
    name: str
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class FilterStateHash:
    key: str
    terminal: bool = False


HashPolicy = HeaderHash | CookieHash | SourceIpHash | QueryParameterHash | FilterStateHash


def compile_hash_policy(h: rc.RouteAction.HashPolicy, where: str) -> HashPolicy | None:
    kind = h.WhichOneof("policy_specifier")
    t = h.terminal
    if kind == "header":
        rw = None
        if h.header.HasField("regex_rewrite"):
            rw = compile_regex_rewrite(h.header.regex_rewrite, f"{where}.header.regex_rewrite")
        return HeaderHash(h.header.header_name.lower(), rw, t)
    if kind == "cookie":
        ttl = seconds(h.cookie.ttl) if h.cookie.HasField("ttl") else None
        return CookieHash(h.cookie.name, ttl, h.cookie.path, t)
    if kind == "connection_properties":
        # source_ip: false hashes nothing (Envoy skips the policy).
        return SourceIpHash(t) if h.connection_properties.source_ip else None
    if kind == "query_parameter":
        return QueryParameterHash(h.query_parameter.name, t)
    if kind == "filter_state":
        return FilterStateHash(h.filter_state.key, t)
    raise ConfigError([f"{where}: a hash policy needs a policy specifier"])


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """``RequestMirrorPolicy``: a fire-and-forget copy to ``cluster`` for the ``fraction``
    of requests, its authority suffixed ``-shadow`` unless told not to."""

    cluster: str
    fraction: Fraction = ALWAYS
    trace_sampled: bool | None = None
    disable_shadow_host_suffix_append: bool = False
    host_rewrite_literal: str = ""


def compile_mirror_policy(m: rc.RouteAction.RequestMirrorPolicy, where: str) -> MirrorPolicy:
    if not m.cluster:
        raise ConfigError([f"{where}.cluster: must not be empty"])
    return MirrorPolicy(
        cluster=m.cluster,
        fraction=compile_runtime_fraction(m.runtime_fraction)
        if m.HasField("runtime_fraction") else ALWAYS,
        trace_sampled=m.trace_sampled.value if m.HasField("trace_sampled") else None,
        disable_shadow_host_suffix_append=m.disable_shadow_host_suffix_append,
        host_rewrite_literal=m.host_rewrite_literal,
    )


# --- per-filter configs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed_delay: float | None  # None with header_controlled: x-envoy-fault-delay-request
    header_controlled: bool
    fraction: Fraction


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int | None
    grpc_status: int | None
    header_controlled: bool  # x-envoy-fault-abort-request / -abort-grpc-request
    fraction: Fraction


@dataclass(frozen=True, slots=True)
class HttpFault:
    """``envoy.filters.http.fault`` ``HTTPFault``; runtime keys are not consulted."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str = ""
    headers: tuple[HeaderMatcher, ...] = ()
    downstream_nodes: frozenset[str] = frozenset()
    max_active_faults: int | None = None


def _fault_fraction(msg: common_fault_pb2.FaultDelay | fault_pb2.FaultAbort) -> Fraction:
    # An unset percentage is 0/100: the fault never fires (Envoy's default).
    return compile_fraction(msg.percentage) if msg.HasField("percentage") else NEVER


def compile_http_fault(f: fault_pb2.HTTPFault, where: str) -> HttpFault:
    problems: list[str] = []
    delay = abort = None
    if f.HasField("delay"):
        d = f.delay
        kind = d.WhichOneof("fault_delay_secifier")
        if kind is None:
            problems.append(f"{where}.delay: needs fixed_delay or header_delay")
        delay = FaultDelay(
            seconds(d.fixed_delay) if kind == "fixed_delay" else None,
            kind == "header_delay",
            _fault_fraction(d),
        )
    if f.HasField("abort"):
        a = f.abort
        kind = a.WhichOneof("error_type")
        if kind is None:
            problems.append(f"{where}.abort: needs http_status, grpc_status or header_abort")
        if kind == "http_status" and not 200 <= a.http_status < 600:
            problems.append(f"{where}.abort.http_status: {a.http_status} not in [200, 600)")
        abort = FaultAbort(
            a.http_status if kind == "http_status" else None,
            a.grpc_status if kind == "grpc_status" else None,
            kind == "header_abort",
            _fault_fraction(a),
        )
    headers: tuple[HeaderMatcher, ...] = ()
    try:
        headers = compile_header_matchers(f.headers, f"{where}.headers")
    except ConfigError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return HttpFault(
        delay=delay,
        abort=abort,
        upstream_cluster=f.upstream_cluster,
        headers=headers,
        downstream_nodes=frozenset(f.downstream_nodes),
        max_active_faults=f.max_active_faults.value if f.HasField("max_active_faults") else None,
    )


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """``envoy.filters.http.cors`` per-route ``CorsPolicy``."""

    allow_origin: tuple[ValueCheck, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool | None = None
    allow_private_network_access: bool | None = None
    filter_enabled: Fraction = ALWAYS
    shadow_enabled: Fraction | None = None
    forward_not_matching_preflights: bool = True

    def origin_allowed(self, origin: str) -> bool:
        return any(check(origin) for check in self.allow_origin)


def compile_cors_policy(c: cors_pb2.CorsPolicy, where: str) -> CorsPolicy:
    origins = tuple(
        compile_string_matcher(sm, f"{where}.allow_origin_string_match[{i}]")
        for i, sm in enumerate(c.allow_origin_string_match)
    )
    return CorsPolicy(
        allow_origin=origins,
        allow_methods=c.allow_methods,
        allow_headers=c.allow_headers,
        expose_headers=c.expose_headers,
        max_age=c.max_age,
        allow_credentials=c.allow_credentials.value if c.HasField("allow_credentials") else None,
        allow_private_network_access=c.allow_private_network_access.value
        if c.HasField("allow_private_network_access") else None,
        filter_enabled=compile_runtime_fraction(c.filter_enabled)
        if c.HasField("filter_enabled") else ALWAYS,
        shadow_enabled=compile_runtime_fraction(c.shadow_enabled)
        if c.HasField("shadow_enabled") else None,
        forward_not_matching_preflights=c.forward_not_matching_preflights.value
        if c.HasField("forward_not_matching_preflights") else True,
    )


def _compile_local_rate_limit(msg: local_rate_limit_pb2.LocalRateLimit, where: str) -> object:
    # That module builds on this one's header mutations, hence the late import.
    from pistio.proxy.config.local_rate_limit import compile_local_rate_limit
    return compile_local_rate_limit(msg, where)


# A per-filter config: the filters decide which is theirs by type (LocalRateLimitConfig is
# pistio.proxy.config.local_rate_limit's).
FilterConfig = HttpFault | CorsPolicy | object
_PER_FILTER_COMPILERS: Mapping[str, tuple[type, Callable[..., FilterConfig]]] = {
    fault_pb2.HTTPFault.DESCRIPTOR.full_name: (fault_pb2.HTTPFault, compile_http_fault),
    cors_pb2.CorsPolicy.DESCRIPTOR.full_name: (cors_pb2.CorsPolicy, compile_cors_policy),
    local_rate_limit_pb2.LocalRateLimit.DESCRIPTOR.full_name: (
        local_rate_limit_pb2.LocalRateLimit, _compile_local_rate_limit),
}
_FILTER_CONFIG_TYPE = rc.FilterConfig.DESCRIPTOR.full_name


def compile_per_filter_configs(
    configs: Mapping[str, any_pb2.Any], where: str
) -> Mapping[str, FilterConfig | None]:
    """``typed_per_filter_config``; None marks a filter disabled for this scope
    (``FilterConfig.disabled``). Unknown configs are rejected unless marked optional."""
    out: dict[str, FilterConfig | None] = {}
    problems: list[str] = []
    for name in sorted(configs):
        at = f"{field_path(where, 'typed_per_filter_config')}[{name!r}]"
        any_msg = configs[name]
        optional = False
        if type_name(any_msg) == _FILTER_CONFIG_TYPE:
            wrapper = rc.FilterConfig()
            any_msg.Unpack(wrapper)
            if wrapper.disabled:
                out[name] = None
                continue
            any_msg, optional = wrapper.config, wrapper.is_optional
        entry = _PER_FILTER_COMPILERS.get(type_name(any_msg))
        if entry is None:
            if not optional:
                problems.append(f"{at}: per-route config {type_name(any_msg)!r} not "
                                "supported by pistio")
            continue
        msg_type, compile_fn = entry
        msg = msg_type()
        if not any_msg.Unpack(msg):
            problems.append(f"{at}: cannot decode {type_name(any_msg)}")
            continue
        bad = unsupported_fields(msg, PER_FILTER_ALLOWED, at)
        if bad:
            problems.extend(bad)
            continue
        try:
            out[name] = compile_fn(msg, at)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return MappingProxyType(out) if out else EMPTY_MAPPING  # type: ignore[return-value]


PER_FILTER_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.fault.v3.HTTPFault": frozenset({
        "delay", "abort", "upstream_cluster", "headers", "downstream_nodes",
        "max_active_faults", "delay_percent_runtime", "abort_percent_runtime",
        "delay_duration_runtime", "abort_http_status_runtime", "max_active_faults_runtime",
        "abort_grpc_status_runtime", "disable_downstream_cluster_stats",
    }),
    "envoy.extensions.filters.common.fault.v3.FaultDelay": frozenset({
        "fixed_delay", "header_delay", "percentage",
    }),
    "envoy.extensions.filters.http.fault.v3.FaultAbort": frozenset({
        "http_status", "grpc_status", "header_abort", "percentage",
    }),
    "envoy.extensions.filters.http.cors.v3.CorsPolicy": frozenset({
        "allow_origin_string_match", "allow_methods", "allow_headers", "expose_headers",
        "max_age", "allow_credentials", "filter_enabled", "shadow_enabled",
        "allow_private_network_access", "forward_not_matching_preflights",
    }),
    "envoy.config.route.v3.HeaderMatcher": frozenset({
        "name", "exact_match", "safe_regex_match", "range_match", "present_match",
        "prefix_match", "suffix_match", "contains_match", "string_match", "invert_match",
        "treat_missing_header_as_empty",
    }),
    "envoy.type.matcher.v3.StringMatcher": frozenset({
        "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case",
    }),
    "envoy.type.matcher.v3.RegexMatcher": frozenset({"regex", "google_re2"}),
    "envoy.config.core.v3.RuntimeFractionalPercent": frozenset({
        "default_value", "runtime_key",
    }),
}


# --- the actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    name: str
    weight: int
    request_headers: HeaderMutation = NO_MUTATION
    response_headers: HeaderMutation = NO_MUTATION
    host_rewrite_literal: str = ""
    per_filter_config: Mapping[str, FilterConfig | None] = field(
        default_factory=lambda: EMPTY_MAPPING
    )


@dataclass(frozen=True, slots=True)
class WeightedClusters:
    clusters: tuple[ClusterWeight, ...]
    total_weight: int
    # Take the random number from this request header when it holds an integer.
    header_name: str = ""


@dataclass(frozen=True, slots=True)
class MaxStreamDuration:
    max_stream_duration: float | None = None
    grpc_timeout_header_max: float | None = None  # 0: no cap on grpc-timeout
    grpc_timeout_header_offset: float | None = None


_CLUSTER_NOT_FOUND_CODES = {
    rc.RouteAction.SERVICE_UNAVAILABLE: 503,
    rc.RouteAction.NOT_FOUND: 404,
    rc.RouteAction.INTERNAL_SERVER_ERROR: 500,
}


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Forward upstream: which cluster, how to rewrite, how long to wait, how to retry."""

    cluster: str = ""
    cluster_header: str = ""
    weighted_clusters: WeightedClusters | None = None
    cluster_not_found_response_code: int = 503
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite_literal: str = ""
    auto_host_rewrite: bool = False
    host_rewrite_header: str = ""
    host_rewrite_path_regex: RegexRewrite | None = None
    append_x_forwarded_host: bool = False
    timeout: float = DEFAULT_ROUTE_TIMEOUT  # 0: no timeout
    idle_timeout: float | None = None  # None: the connection manager's stream idle timeout
    retry_policy: RetryPolicy | None = None
    mirror_policies: tuple[MirrorPolicy, ...] = ()
    hash_policies: tuple[HashPolicy, ...] = ()
    max_grpc_timeout: float | None = None  # set: honour grpc-timeout (0 = uncapped)
    grpc_timeout_offset: float | None = None
    max_stream_duration: MaxStreamDuration | None = None
    # Upgrade type (lower-case) → enabled.
    upgrades: Mapping[str, bool] = field(default_factory=lambda: EMPTY_MAPPING)
    include_request_attempt_count: bool = False
    include_attempt_count_in_response: bool = False
    per_request_buffer_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class RedirectAction:
    scheme: str = ""  # "" keeps the request's scheme (https_redirect compiles to "https")
    host: str = ""
    port: int = 0
    path: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


_REDIRECT_CODES = {
    rc.RedirectAction.MOVED_PERMANENTLY: 301,
    rc.RedirectAction.FOUND: 302,
    rc.RedirectAction.SEE_OTHER: 303,
    rc.RedirectAction.TEMPORARY_REDIRECT: 307,
    rc.RedirectAction.PERMANENT_REDIRECT: 308,
}


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled ``Route``: exactly one of ``action``, ``redirect``, ``direct_response``.

    ``request_headers``/``response_headers`` are the route, virtual host and route
    configuration levels in the order Envoy applies them; ``per_filter_config`` is already
    the most specific config per filter (route over virtual host over route configuration).
    """

    name: str
    matches: Callable[[RequestView], bool]
    path_match: PathMatch
    virtual_host: str
    action: RouteAction | None = None
    redirect: RedirectAction | None = None
    direct_response: DirectResponse | None = None
    request_headers: tuple[HeaderMutation, ...] = ()
    response_headers: tuple[HeaderMutation, ...] = ()
    # most_specific_header_mutations_wins: the weighted cluster's level goes last, not first.
    most_specific_header_mutations_wins: bool = False
    per_filter_config: Mapping[str, FilterConfig | None] = field(
        default_factory=lambda: EMPTY_MAPPING
    )
    decorator_operation: str = ""
    decorator_propagate: bool = True
    stat_prefix: str = ""
    # Derived once, for the request path: the non-empty mutation levels; the propagated
    # decorator as header bytes; whether the router's request edits come down to that header
    # (no mutation, host or path rewrite).
    request_levels: tuple[HeaderMutation, ...] = field(init=False, repr=False, compare=False)
    response_levels: tuple[HeaderMutation, ...] = field(init=False, repr=False, compare=False)
    decorator_header: bytes | None = field(init=False, repr=False, compare=False)
    simple_request_edits: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        request_levels = tuple(level for level in self.request_headers if level)
        object.__setattr__(self, "request_levels", request_levels)
        object.__setattr__(self, "response_levels",
                           tuple(level for level in self.response_headers if level))
        object.__setattr__(self, "decorator_header",
                           self.decorator_operation.encode("latin-1")
                           if self.decorator_operation and self.decorator_propagate else None)
        a = self.action
        object.__setattr__(self, "simple_request_edits", a is not None and not request_levels
                           and not a.host_rewrite_literal and not a.host_rewrite_header
                           and a.host_rewrite_path_regex is None and a.prefix_rewrite is None
                           and a.regex_rewrite is None)

    def config_for(self, filter_name: str, own: object) -> object:
        """What the filter ``filter_name`` runs with here: the most specific
        ``typed_per_filter_config`` for its name (None: disabled here), else ``own``."""
        if filter_name in self.per_filter_config:
            return self.filter_config(filter_name)
        return own

    def filter_config(self, filter_name: str, cluster: ClusterWeight | None = None
                      ) -> FilterConfig | None:
        """The most specific config of ``filter_name`` (a weighted cluster's wins)."""
        if cluster is not None and filter_name in cluster.per_filter_config:
            return cluster.per_filter_config[filter_name]
        return self.per_filter_config.get(filter_name)

    def request_header_mutations(self, cluster: ClusterWeight | None = None
                                 ) -> tuple[HeaderMutation, ...]:
        """Request header levels in application order, with the weighted cluster's level."""
        if cluster is None or not cluster.request_headers:
            return self.request_levels
        return _with_cluster_level(self, self.request_levels, cluster.request_headers)

    def response_header_mutations(self, cluster: ClusterWeight | None = None
                                  ) -> tuple[HeaderMutation, ...]:
        if cluster is None or not cluster.response_headers:
            return self.response_levels
        return _with_cluster_level(self, self.response_levels, cluster.response_headers)


def _with_cluster_level(route: Route, levels: tuple[HeaderMutation, ...],
                        cluster_level: HeaderMutation) -> tuple[HeaderMutation, ...]:
    if not cluster_level:
        return levels
    if route.most_specific_header_mutations_wins:
        return (*levels, cluster_level)
    return (cluster_level, *levels)


def _duration_or_none(msg: object, name: str) -> float | None:
    return seconds(getattr(msg, name)) if msg.HasField(name) else None  # type: ignore[attr-defined]


def compile_route_action(
    a: rc.RouteAction,
    where: str,
    vhost_retry: RetryPolicy | None,
    vhost_mirrors: tuple[MirrorPolicy, ...],
    vhost_flags: dict[str, object],
) -> RouteAction:
    problems: list[str] = []

    def attempt(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except ConfigError as e:
            problems.extend(e.problems)
            return None

    kind = a.WhichOneof("cluster_specifier")
    weighted = None
    if kind is None:
        problems.append(f"{where}: needs cluster, cluster_header or weighted_clusters")
    elif kind == "cluster" and not a.cluster:
        problems.append(f"{where}.cluster: must not be empty")
    elif kind == "weighted_clusters":
        weighted = attempt(lambda: compile_weighted_clusters(a.weighted_clusters,
                                                             f"{where}.weighted_clusters"))
    if a.prefix_rewrite and a.HasField("regex_rewrite"):
        problems.append(f"{where}: cannot specify both prefix_rewrite and regex_rewrite")
    regex_rewrite = None
    if a.HasField("regex_rewrite"):
        regex_rewrite = attempt(lambda: compile_regex_rewrite(a.regex_rewrite,
                                                              f"{where}.regex_rewrite"))
    host_path_regex = None
    if a.HasField("host_rewrite_path_regex"):
        host_path_regex = attempt(lambda: compile_regex_rewrite(
            a.host_rewrite_path_regex, f"{where}.host_rewrite_path_regex"))
    retry = vhost_retry
    if a.HasField("retry_policy"):
        retry = attempt(lambda: compile_retry_policy(a.retry_policy, f"{where}.retry_policy"))
    mirrors: list[MirrorPolicy] = []
    for i, m in enumerate(a.request_mirror_policies):
        mp = attempt(lambda m=m, i=i: compile_mirror_policy(
            m, f"{where}.request_mirror_policies[{i}]"))
        if mp is not None:
            mirrors.append(mp)  # type: ignore[arg-type]
    hashes: list[HashPolicy] = []
    for i, h in enumerate(a.hash_policy):
        hp = attempt(lambda h=h, i=i: compile_hash_policy(h, f"{where}.hash_policy[{i}]"))
        if hp is not None:
            hashes.append(hp)  # type: ignore[arg-type]
    upgrades: dict[str, bool] = {}
    for uc in a.upgrade_configs:
        upgrades[uc.upgrade_type.lower()] = uc.enabled.value if uc.HasField("enabled") else True
    msd = None
    if a.HasField("max_stream_duration"):
        m = a.max_stream_duration
        msd = MaxStreamDuration(
            _duration_or_none(m, "max_stream_duration"),
            _duration_or_none(m, "grpc_timeout_header_max"),
            _duration_or_none(m, "grpc_timeout_header_offset"),
        )
    if problems:
        raise ConfigError(problems)
    return RouteAction(
        cluster=a.cluster,
        cluster_header=a.cluster_header.lower(),
        weighted_clusters=weighted,  # type: ignore[arg-type]
        cluster_not_found_response_code=_CLUSTER_NOT_FOUND_CODES.get(
            a.cluster_not_found_response_code, 503),
        prefix_rewrite=a.prefix_rewrite if a.prefix_rewrite else None,
        regex_rewrite=regex_rewrite,  # type: ignore[arg-type]
        host_rewrite_literal=a.host_rewrite_literal,
        auto_host_rewrite=a.auto_host_rewrite.value,
        host_rewrite_header=a.host_rewrite_header.lower(),
        host_rewrite_path_regex=host_path_regex,  # type: ignore[arg-type]
        append_x_forwarded_host=a.append_x_forwarded_host,
        timeout=seconds(a.timeout) if a.HasField("timeout") else DEFAULT_ROUTE_TIMEOUT,
        idle_timeout=_duration_or_none(a, "idle_timeout"),
        retry_policy=retry,  # type: ignore[arg-type]
        mirror_policies=tuple(mirrors) if a.request_mirror_policies else vhost_mirrors,
        hash_policies=tuple(hashes),
        max_grpc_timeout=_duration_or_none(a, "max_grpc_timeout"),
        grpc_timeout_offset=_duration_or_none(a, "grpc_timeout_offset"),
        max_stream_duration=msd,
        upgrades=MappingProxyType(upgrades) if upgrades else EMPTY_MAPPING,
        **vhost_flags,  # type: ignore[arg-type]
    )


def compile_weighted_clusters(w: rc.WeightedCluster, where: str) -> WeightedClusters:
    problems: list[str] = []
    clusters: list[ClusterWeight] = []
    for i, cw in enumerate(w.clusters):
        at = f"{where}.clusters[{i}]"
        if not cw.name:
            problems.append(f"{at}.name: must not be empty")
            continue
        try:
            clusters.append(ClusterWeight(
                name=cw.name,
                weight=cw.weight.value,
                request_headers=compile_header_mutation(
                    cw.request_headers_to_add, cw.request_headers_to_remove, at, "request"),
                response_headers=compile_header_mutation(
                    cw.response_headers_to_add, cw.response_headers_to_remove, at, "response"),
                host_rewrite_literal=cw.host_rewrite_literal,
                per_filter_config=compile_per_filter_configs(cw.typed_per_filter_config, at),
            ))
        except ConfigError as e:
            problems.extend(e.problems)
    total = sum(c.weight for c in clusters)
    if not w.clusters:
        problems.append(f"{where}.clusters: must not be empty")
    elif not problems and total == 0:
        problems.append(f"{where}: sum of weights in the weighted_cluster must be greater than 0")
    if w.HasField("total_weight") and w.total_weight.value != total and not problems:
        problems.append(f"{where}: sum of weights ({total}) must equal total_weight "
                        f"({w.total_weight.value})")
    if problems:
        raise ConfigError(problems)
    return WeightedClusters(tuple(clusters), total, w.header_name.lower())


def compile_redirect(r: rc.RedirectAction, where: str) -> RedirectAction:
    regex_rewrite = None
    if r.HasField("regex_rewrite"):
        regex_rewrite = compile_regex_rewrite(r.regex_rewrite, f"{where}.regex_rewrite")
    scheme = "https" if r.https_redirect else r.scheme_redirect.lower()
    which = r.WhichOneof("path_rewrite_specifier")
    return RedirectAction(
        scheme=scheme,
        host=r.host_redirect,
        port=r.port_redirect,
        path=r.path_redirect if which == "path_redirect" else None,
        prefix_rewrite=r.prefix_rewrite if which == "prefix_rewrite" else None,
        regex_rewrite=regex_rewrite,
        response_code=_REDIRECT_CODES.get(r.response_code, 301),
        strip_query=r.strip_query,
    )


def compile_direct_response(d: rc.DirectResponseAction, where: str, max_body: int
                            ) -> DirectResponse:
    if not 200 <= d.status < 600:
        raise ConfigError([f"{where}.status: {d.status} not in [200, 600)"])
    body = b""
    if d.HasField("body"):
        kind = d.body.WhichOneof("specifier")
        if kind == "inline_string":
            body = d.body.inline_string.encode()
        elif kind == "inline_bytes":
            body = d.body.inline_bytes
        elif kind is not None:
            raise ConfigError([f"{where}.body.{kind}: field not supported by pistio"])
    if len(body) > max_body:
        raise ConfigError([f"{where}.body: response body size is {len(body)} bytes; maximum is "
                           f"{max_body}"])
    return DirectResponse(d.status, body)


# --- per-request helpers --------------------------------------------------------------------


def rewritten_path(route: Route, path: str) -> str | None:
    """The upstream ``:path`` after ``prefix_rewrite``/``regex_rewrite``; None when the route
    rewrites nothing. ``path`` is the request's raw path; the query string is kept."""
    action = route.action
    if action is None:
        return None
    return _rewrite(route.path_match, action.prefix_rewrite, action.regex_rewrite, path)


def _rewrite(pm: PathMatch, prefix_rewrite: str | None, regex_rewrite: RegexRewrite | None,
             path: str) -> str | None:
    if prefix_rewrite is not None:
        # The matched part is the prefix, the exact path, or (regex) the whole path.
        if pm.kind in ("prefix", "path_separated_prefix", "path"):
            matched = len(pm.value)
        else:
            matched = len(strip_query_and_fragment(path))
        return prefix_rewrite + path[matched:]
    if regex_rewrite is not None:
        just_path = strip_query_and_fragment(path)
        return regex_rewrite.apply(just_path) + path[len(just_path):]
    return None


def pick_weighted_cluster(wc: WeightedClusters, random_value: int) -> ClusterWeight:
    """Envoy's pick: ``random % total`` falls in one cluster's ``[begin, begin+weight)``."""
    selected = random_value % wc.total_weight
    begin = 0
    for cluster in wc.clusters:
        end = begin + cluster.weight
        if selected < end:
            return cluster
        begin = end
    return wc.clusters[-1]  # unreachable: total is the sum of the weights


def port_start(host: str) -> int:
    """Index of the ``:`` before a port in an authority, or -1 (Envoy's ``getPortStart``:
    the last colon, unless it sits inside an IPv6 literal's brackets)."""
    colon = host.rfind(":")
    if colon < 0:
        return -1
    bracket = host.rfind("]")
    if bracket < 0 or bracket < colon:
        return colon
    return -1


def shadow_host(authority: str) -> str:
    """A mirrored request's authority: ``-shadow`` after the host, before any port."""
    at = port_start(authority)
    if at < 0:
        return authority + "-shadow"
    return f"{authority[:at]}-shadow{authority[at:]}"


def redirect_location(route: Route, request: RequestView,
                      forwarded_proto: str | None = None) -> str:
    """The ``Location`` of a redirect route (Envoy's ``newUri``).

    ``forwarded_proto`` is ``x-forwarded-proto`` as the connection manager set it; it
    defaults to the request's scheme.
    """
    r = route.redirect
    assert r is not None
    proto = request.scheme if forwarded_proto is None else forwarded_proto
    scheme = r.scheme or proto
    port = f":{r.port}" if r.port else ""
    host = r.host or _redirect_host(request.authority, proto, scheme, port)
    path = request.path
    if r.path is not None:
        if "?" in r.path:
            new_path = r.path  # its own query wins and is never stripped
        else:
            query = _query_part(path)
            new_path = r.path if r.strip_query else r.path + query
    else:
        new_path = _rewrite(route.path_match, r.prefix_rewrite, r.regex_rewrite, path) or path
        if r.strip_query:
            new_path = strip_query_and_fragment(new_path)
    return f"{scheme}://{host}{port}{new_path}"


def _query_part(path: str) -> str:
    q = path.find("?")
    return path[q:] if q >= 0 else ""


def _redirect_host(authority: str, proto: str, new_scheme: str, new_port: str) -> str:
    """Drop the request's port when a new port is set, or when the scheme changes away from
    the default port of the old one (``http://h:80`` → ``https://h``)."""
    if not authority:
        return authority
    if authority[0] == "[":
        end = authority.rfind("]:")
        end = end + 1 if end >= 0 else -1
    else:
        end = authority.rfind(":")
    if end < 0:
        return authority
    port = authority[end:]
    remove = bool(new_port)
    if new_scheme != proto:
        remove = remove or (proto == "https" and port == ":443")
        remove = remove or (proto == "http" and port == ":80")
    return authority[:end] if remove else authority


def retry_backoff(policy: RetryPolicy, retry_index: int, random_value: int) -> float:
    """Seconds to wait before retry ``retry_index`` (0 for the first retry): Envoy's jittered
    exponential back-off, uniformly in ``[0, min(base * 2**n, max))`` at 1 ms granularity."""
    base_ms = max(int(policy.base_interval * 1000), 1)
    max_ms = max(int(policy.max_interval * 1000), base_ms)
    ceiling = min(base_ms << min(retry_index, 62), max_ms)
    return (random_value % ceiling) / 1000.0
