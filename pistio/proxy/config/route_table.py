"""RouteConfiguration → RouteTable: Envoy's virtual host selection and route lookup.

Virtual host selection follows Envoy's ``RouteMatcher``: the ``:authority`` is lower-cased
(ASCII) and, when the route configuration sets ``ignore_port_in_host_matching`` (Istio does
for sidecars), cut at its port (the last ``:`` outside IPv6 brackets); otherwise the port
stays part of the host and must appear in a domain (``reviews:9080``). Then:

1. an exact domain;
2. suffix wildcards (``*.foo.com``, ``*-bar.foo.com``), longest first;
3. prefix wildcards (``foo.*``, ``foo-*``), longest first;
4. the one ``*`` virtual host.

A wildcard never matches an empty part (``*.foo.com`` does not take ``.foo.com``). Domains
must be unique (case-insensitively) across the configuration and only one virtual host may
be ``*``; anything else is rejected, as Envoy does. Within a virtual host the first route
whose match succeeds wins.

``RouteTable.compile`` checks every set field against what pistio implements and raises
one ``ConfigError`` naming each unsupported or invalid field, for the agent's NACK.
Accepted without effect here: ``metadata`` (informational to Envoy's core too) and
runtime keys (pistio has no runtime layer; defaults apply). ``validate_clusters`` is kept
with ``clusters`` (every cluster the routes name) for the agent to check against CDS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_action import (
    EMPTY_MAPPING,
    FilterConfig,
    HeaderMutation,
    MirrorPolicy,
    RetryPolicy,
    Route,
    compile_direct_response,
    compile_header_mutation,
    compile_mirror_policy,
    compile_per_filter_configs,
    compile_redirect,
    compile_retry_policy,
    compile_route_action,
    port_start,
)
from pistio.proxy.config.route_match import (
    PathMatch,
    RequestView,
    ascii_lower,
    compile_route_match,
)
from pistio.proxy.config.unsupported import field_path, unsupported_fields

T = TypeVar("T")

_MISS: object = object()
_VHOST_CACHE_SIZE = 1024

# Envoy's default for max_direct_response_body_size_bytes.
DEFAULT_MAX_DIRECT_RESPONSE_BODY = 4096


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]

    def match(self, request: RequestView) -> Route | None:
        """The first route matching ``request``, or None (Envoy answers 404)."""
        for route in self.routes:
            if route.matches(request):
                return route
        return None


_WildcardTables = tuple[tuple[int, Mapping[str, VirtualHost]], ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    """A compiled ``RouteConfiguration``; immutable, shared by every stream of a worker."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    ignore_port_in_host_matching: bool
    exact: Mapping[str, VirtualHost]
    suffixes: _WildcardTables  # (length of the part after "*", {suffix: vhost}), longest first
    prefixes: _WildcardTables
    default: VirtualHost | None
    validate_clusters: bool
    internal_only_headers: tuple[bytes, ...]  # lower-case, as the header index keys
    clusters: frozenset[str]  # every cluster a route names (for validate_clusters, warming)
    # authority → its virtual host, filled as requests arrive (bounded: authorities come
    # from clients); the selection is a pure function of the authority.
    _vhost_cache: dict[str, VirtualHost | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def compile(cls, config: route_pb2.RouteConfiguration) -> RouteTable:
        """Compile ``config`` or raise one ``ConfigError`` listing every problem."""
        return _compile(config)

    def select_virtual_host(self, authority: str) -> VirtualHost | None:
        cache = self._vhost_cache
        vh = cache.get(authority, _MISS)  # type: ignore[arg-type]
        if vh is not _MISS:
            return vh
        vh = self._select_virtual_host(authority)
        if len(cache) >= _VHOST_CACHE_SIZE:
            cache.clear()
        cache[authority] = vh
        return vh

    def _select_virtual_host(self, authority: str) -> VirtualHost | None:
        vh = self.exact.get(authority)
        # Fast path: the authority as sent is already a lower-case domain without a port.
        if vh is not None and (not self.ignore_port_in_host_matching
                               or port_start(authority) < 0):
            return vh
        host = authority
        if self.ignore_port_in_host_matching:
            at = port_start(host)
            if at >= 0:
                host = host[:at]
        host = ascii_lower(host)
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        size = len(host)
        for length, table in self.suffixes:
            if length < size:
                vh = table.get(host[size - length:])
                if vh is not None:
                    return vh
        for length, table in self.prefixes:
            if length < size:
                vh = table.get(host[:length])
                if vh is not None:
                    return vh
        return self.default

    def route(self, request: RequestView) -> Route | None:
        """The route for ``request``: its virtual host's first matching route."""
        vh = self.select_virtual_host(request.authority)
        return vh.match(request) if vh is not None else None


# --- what pistio implements ---------------------------------------------------------------------

_HEADER_MUTATION_FIELDS = frozenset({
    "request_headers_to_add", "request_headers_to_remove",
    "response_headers_to_add", "response_headers_to_remove",
})
_RETRY_POLICY_FIELDS = frozenset({
    # per_try_idle_timeout is not: NACKed (not enforced by pistio's router).
    "retry_on", "num_retries", "per_try_timeout", "retry_priority",
    "retry_host_predicate", "host_selection_retry_max_attempts", "retriable_status_codes",
    "retry_back_off", "retriable_headers", "retriable_request_headers",
})

ROUTE_CONFIG_ALLOWED: Mapping[str, frozenset[str]] = MappingProxyType({
    "envoy.config.route.v3.RouteConfiguration": frozenset({
        "name", "virtual_hosts", "internal_only_headers", "most_specific_header_mutations_wins",
        "validate_clusters", "max_direct_response_body_size_bytes", "request_mirror_policies",
        "ignore_port_in_host_matching", "typed_per_filter_config", "metadata",
    }) | _HEADER_MUTATION_FIELDS,
    "envoy.config.route.v3.VirtualHost": frozenset({
        "name", "domains", "routes", "typed_per_filter_config", "include_request_attempt_count",
        "include_attempt_count_in_response", "retry_policy", "per_request_buffer_limit_bytes",
        "request_mirror_policies", "metadata",
    }) | _HEADER_MUTATION_FIELDS,
    "envoy.config.route.v3.Route": frozenset({
        "name", "match", "route", "redirect", "direct_response", "metadata", "decorator",
        "typed_per_filter_config", "per_request_buffer_limit_bytes", "stat_prefix",
    }) | _HEADER_MUTATION_FIELDS,
    "envoy.config.route.v3.RouteMatch": frozenset({
        "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive",
        "runtime_fraction", "headers", "query_parameters", "grpc",
    }),
    "envoy.config.route.v3.RouteAction": frozenset({
        "cluster", "cluster_header", "weighted_clusters", "cluster_not_found_response_code",
        "prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "auto_host_rewrite",
        "host_rewrite_header", "host_rewrite_path_regex", "append_x_forwarded_host", "timeout",
        "idle_timeout", "retry_policy", "request_mirror_policies", "hash_policy",
        "max_grpc_timeout", "grpc_timeout_offset", "upgrade_configs", "max_stream_duration",
    }),
    "envoy.config.route.v3.WeightedCluster": frozenset({"clusters", "total_weight",
                                                        "header_name"}),
    "envoy.config.route.v3.WeightedCluster.ClusterWeight": frozenset({
        "name", "weight", "typed_per_filter_config", "host_rewrite_literal",
    }) | _HEADER_MUTATION_FIELDS,
    "envoy.config.route.v3.RetryPolicy": _RETRY_POLICY_FIELDS,
    "envoy.config.route.v3.RetryPolicy.RetryBackOff": frozenset({"base_interval",
                                                                 "max_interval"}),
    "envoy.config.route.v3.RetryPolicy.RetryHostPredicate": frozenset({"name", "typed_config"}),
    "envoy.config.route.v3.RetryPolicy.RetryPriority": frozenset({"name", "typed_config"}),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": frozenset({
        "cluster", "runtime_fraction", "trace_sampled", "disable_shadow_host_suffix_append",
        "host_rewrite_literal",
    }),
    "envoy.config.route.v3.RouteAction.HashPolicy": frozenset({
        "header", "cookie", "connection_properties", "query_parameter", "filter_state",
        "terminal",
    }),
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": frozenset({"header_name",
                                                                      "regex_rewrite"}),
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": frozenset({"name", "ttl", "path"}),
    "envoy.config.route.v3.RouteAction.UpgradeConfig": frozenset({"upgrade_type", "enabled"}),
    "envoy.config.route.v3.RouteAction.MaxStreamDuration": frozenset({
        "max_stream_duration", "grpc_timeout_header_max", "grpc_timeout_header_offset",
    }),
    "envoy.config.route.v3.RedirectAction": frozenset({
        "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
        "prefix_rewrite", "regex_rewrite", "response_code", "strip_query",
    }),
    "envoy.config.route.v3.DirectResponseAction": frozenset({"status", "body"}),
    "envoy.config.core.v3.DataSource": frozenset({"inline_bytes", "inline_string"}),
    "envoy.config.route.v3.Decorator": frozenset({"operation", "propagate"}),
    "envoy.config.route.v3.HeaderMatcher": frozenset({
        "name", "exact_match", "safe_regex_match", "range_match", "present_match",
        "prefix_match", "suffix_match", "contains_match", "string_match", "invert_match",
        "treat_missing_header_as_empty",
    }),
    "envoy.config.route.v3.QueryParameterMatcher": frozenset({"name", "string_match",
                                                              "present_match"}),
    "envoy.type.matcher.v3.StringMatcher": frozenset({
        "exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case",
    }),
    "envoy.type.matcher.v3.RegexMatcher": frozenset({"regex", "google_re2"}),
    "envoy.type.matcher.v3.RegexMatchAndSubstitute": frozenset({"pattern", "substitution"}),
    "envoy.config.core.v3.RuntimeFractionalPercent": frozenset({"default_value",
                                                                "runtime_key"}),
    "envoy.config.core.v3.HeaderValueOption": frozenset({
        "header", "append", "append_action", "keep_empty_value",
    }),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value", "raw_value"}),
})


# --- compilation ------------------------------------------------------------------------


class _Problems:
    """Collects problems so one NACK names all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def run(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except ConfigError as e:
            self.items.extend(e.problems)
            return None


def _compile(config: route_pb2.RouteConfiguration) -> RouteTable:
    root = f"RouteConfiguration {config.name}: "
    problems = _Problems()
    problems.items.extend(unsupported_fields(config, ROUTE_CONFIG_ALLOWED, root))
    max_body = (config.max_direct_response_body_size_bytes.value
                if config.HasField("max_direct_response_body_size_bytes")
                else DEFAULT_MAX_DIRECT_RESPONSE_BODY)
    top = _Level(
        request=problems.run(compile_header_mutation, config.request_headers_to_add,
                             config.request_headers_to_remove, root, "request"),
        response=problems.run(compile_header_mutation, config.response_headers_to_add,
                              config.response_headers_to_remove, root, "response"),
        filters=problems.run(compile_per_filter_configs, config.typed_per_filter_config,
                             root),
        mirrors=_mirrors(problems, config.request_mirror_policies, root),
    )
    most_specific_wins = config.most_specific_header_mutations_wins
    vhosts: list[VirtualHost] = []
    for i, vh in enumerate(config.virtual_hosts):
        where = field_path(root, f"virtual_hosts[{i}]")
        compiled = _compile_virtual_host(vh, where, top, most_specific_wins, max_body, problems)
        if compiled is not None:
            vhosts.append(compiled)
    exact: dict[str, VirtualHost] = {}
    suffixes: dict[int, dict[str, VirtualHost]] = {}
    prefixes: dict[int, dict[str, VirtualHost]] = {}
    default: VirtualHost | None = None
    for vh in vhosts:
        for domain in vh.domains:
            d = ascii_lower(domain)
            if d == "*":
                if default is not None:
                    problems.items.append(f"{root}only a single wildcard domain is permitted "
                                          f"(virtual hosts {default.name!r} and {vh.name!r})")
                default = vh
                continue
            if d.startswith("*"):
                table, key = suffixes.setdefault(len(d) - 1, {}), d[1:]
            elif d.endswith("*"):
                table, key = prefixes.setdefault(len(d) - 1, {}), d[:-1]
            else:
                table, key = exact, d
            if key in table:
                problems.items.append(f"{root}only unique values for domains are permitted: "
                                      f"duplicate entry of domain {d!r} in virtual host "
                                      f"{vh.name!r}")
            table[key] = vh
    if problems.items:
        raise ConfigError(list(dict.fromkeys(problems.items)))
    clusters: set[str] = set()
    for vh in vhosts:
        for route in vh.routes:
            a = route.action
            if a is None:
                continue
            if a.cluster:
                clusters.add(a.cluster)
            if a.weighted_clusters is not None:
                clusters.update(c.name for c in a.weighted_clusters.clusters)
            clusters.update(m.cluster for m in a.mirror_policies)
    return RouteTable(
        name=config.name,
        virtual_hosts=tuple(vhosts),
        ignore_port_in_host_matching=config.ignore_port_in_host_matching,
        exact=MappingProxyType(exact),
        suffixes=_longest_first(suffixes),
        prefixes=_longest_first(prefixes),
        default=default,
        validate_clusters=config.validate_clusters.value,
        internal_only_headers=tuple(h.lower().encode("latin-1")
                                    for h in config.internal_only_headers),
        clusters=frozenset(clusters),
    )


def _longest_first(tables: dict[int, dict[str, VirtualHost]]) -> _WildcardTables:
    return tuple((n, MappingProxyType(tables[n])) for n in sorted(tables, reverse=True))


@dataclass(frozen=True, slots=True)
class _Level:
    """What an enclosing level (route configuration, virtual host) hands to its routes."""

    request: HeaderMutation | None
    response: HeaderMutation | None
    filters: Mapping[str, FilterConfig | None] | None
    mirrors: tuple[MirrorPolicy, ...]


def _mirrors(
    problems: _Problems, policies: Iterable[rc.RouteAction.RequestMirrorPolicy], where: str
) -> tuple[MirrorPolicy, ...]:
    out: list[MirrorPolicy] = []
    for i, m in enumerate(policies):
        mp = problems.run(compile_mirror_policy, m,
                          field_path(where, f"request_mirror_policies[{i}]"))
        if mp is not None:
            out.append(mp)
    return tuple(out)


def _compile_virtual_host(
    vh: rc.VirtualHost,
    where: str,
    top: _Level,
    most_specific_wins: bool,
    max_body: int,
    problems: _Problems,
) -> VirtualHost | None:
    if not vh.name:
        problems.items.append(f"{where}.name: must not be empty")
    if not vh.domains:
        problems.items.append(f"{where}.domains: must not be empty")
    level = _Level(
        request=problems.run(compile_header_mutation, vh.request_headers_to_add,
                             vh.request_headers_to_remove, where, "request"),
        response=problems.run(compile_header_mutation, vh.response_headers_to_add,
                              vh.response_headers_to_remove, where, "response"),
        filters=problems.run(compile_per_filter_configs, vh.typed_per_filter_config, where),
        mirrors=_mirrors(problems, vh.request_mirror_policies, where) or top.mirrors,
    )
    retry: RetryPolicy | None = None
    if vh.HasField("retry_policy"):
        retry = problems.run(compile_retry_policy, vh.retry_policy, f"{where}.retry_policy")
    flags = {
        "include_request_attempt_count": vh.include_request_attempt_count,
        "include_attempt_count_in_response": vh.include_attempt_count_in_response,
        "per_request_buffer_limit_bytes": vh.per_request_buffer_limit_bytes.value
        if vh.HasField("per_request_buffer_limit_bytes") else None,
    }
    routes: list[Route] = []
    for j, r in enumerate(vh.routes):
        route = _compile_route(r, f"{where}.routes[{j}]", vh.name, level, top, retry, flags,
                               most_specific_wins, max_body, problems)
        if route is not None:
            routes.append(route)
    return VirtualHost(vh.name, tuple(vh.domains), tuple(routes))


def _compile_route(
    r: rc.Route,
    where: str,
    vhost_name: str,
    vhost: _Level,
    top: _Level,
    vhost_retry: RetryPolicy | None,
    vhost_flags: dict[str, object],
    most_specific_wins: bool,
    max_body: int,
    problems: _Problems,
) -> Route | None:
    compiled_match = problems.run(compile_route_match, r.match, f"{where}.match")
    request = problems.run(compile_header_mutation, r.request_headers_to_add,
                           r.request_headers_to_remove, where, "request")
    response = problems.run(compile_header_mutation, r.response_headers_to_add,
                            r.response_headers_to_remove, where, "response")
    filters = problems.run(compile_per_filter_configs, r.typed_per_filter_config, where)
    # Keep compiling after a bad match so one NACK names every problem of the route.
    path_match, matches = compiled_match or (PathMatch("prefix", "/", True), None)
    kind = r.WhichOneof("action")
    action = redirect = direct = None
    if kind == "route":
        flags = dict(vhost_flags)
        if r.HasField("per_request_buffer_limit_bytes"):
            flags["per_request_buffer_limit_bytes"] = r.per_request_buffer_limit_bytes.value
        action = problems.run(compile_route_action, r.route, f"{where}.route", vhost_retry,
                              vhost.mirrors, flags)
    elif kind == "redirect":
        redirect = problems.run(compile_redirect, r.redirect, f"{where}.redirect")
    elif kind == "direct_response":
        direct = problems.run(compile_direct_response, r.direct_response,
                              f"{where}.direct_response", max_body)
    elif kind is None:
        problems.items.append(f"{where}: needs one of route, redirect, direct_response")
    if matches is None or (action is None and redirect is None and direct is None):
        return None
    # Envoy applies route, then virtual host, then route configuration headers, so the
    # broader level has the last word; most_specific_header_mutations_wins reverses that.
    levels_req = tuple(m for m in (request, vhost.request, top.request) if m)
    levels_resp = tuple(m for m in (response, vhost.response, top.response) if m)
    if most_specific_wins:
        levels_req, levels_resp = levels_req[::-1], levels_resp[::-1]
    merged_filters: dict[str, FilterConfig | None] = {}
    for level_filters in (top.filters, vhost.filters, filters):
        if level_filters:
            merged_filters.update(level_filters)
    return Route(
        name=r.name,
        matches=matches,
        path_match=path_match,
        virtual_host=vhost_name,
        action=action,
        redirect=redirect,
        direct_response=direct,
        request_headers=levels_req,
        response_headers=levels_resp,
        most_specific_header_mutations_wins=most_specific_wins,
        per_filter_config=MappingProxyType(merged_filters) if merged_filters else EMPTY_MAPPING,
        decorator_operation=r.decorator.operation,
        decorator_propagate=r.decorator.propagate.value
        if r.decorator.HasField("propagate") else True,
        stat_prefix=r.stat_prefix,
    )
