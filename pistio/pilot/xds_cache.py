"""Istio's XdsCache: generated resources memoized by exactly what they depend on.

Generated config is a pure function of (push context, the proxy's *relevant* attributes).
Thousands of sidecars differ in pod name, IP and labels, but their outbound clusters, routes
and listeners depend only on a few of those attributes, so proxies that agree on them share
the same :class:`pistio.xds.generator.Resource` objects, which also carry the serialization
and version hash: the transport encodes each shared resource once.

- :func:`proxy_scope` is the key of a proxy's outbound config (Istio keys its caches by
  namespace, Sidecar scope, DestinationRules, EnvoyFilters, ... the same way): flavour,
  namespace and DNS domain, the Sidecar that applies, which selector-bearing configs
  (DestinationRules, EnvoyFilters, Sidecars, policies) and which VirtualService ``sourceLabels``
  match its labels, its locality, its IP families, and its own address only where a
  headless service lists it. Labels count only through those matches, and only when a
  ``failoverPriority`` compares labels do they count in full.
- :class:`XdsCache` holds one table per output type. It lives with a push context and is
  handed on to the next one type by type: a table survives only while every input of its
  type is unchanged (same services, endpoints, mesh config and config objects of every kind
  the type reads), so an edit to a VirtualService rebuilds routes and listeners but
  reuses clusters and endpoints, as Istio's cache invalidation by config key does.

Per-proxy config (inbound clusters and listeners, which depend on the proxy's own service
instances) is not cached here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext, labels_match
from pistio.pilot.model.service import Resolution
from pistio.pilot.networking.endpoint_builder import proxy_locality
from pistio.pilot.telemetry.tracing import tracing_identity

T = TypeVar("T")

# Output types (cache tables).
CDS = "cds"
EDS = "eds"
LDS = "lds"
RDS = "rds"

# Config kinds an output type is known NOT to read; every other kind counts as an input, so
# a kind added later is covered by default. Sidecar clusters and endpoints do not depend on
# VirtualServices (Istio's CDS does not either, for sidecars).
IGNORED_KINDS: dict[str, frozenset[str]] = {
    CDS: frozenset({"VirtualService"}),
    EDS: frozenset({"VirtualService"}),
    LDS: frozenset(),
    RDS: frozenset(),
}

# Positions in a proxy_scope() key that EDS reads directly.
SCOPE_LOCALITY = 5
SCOPE_SOURCE = 8
SCOPE_LABELS = 9

_CACHE_KEY = "xds_cache"
_SCOPE_INDEX_KEY = "xds_scope_index"


class XdsCache:
    """Tables of generated outputs, one per output type, for one push context (or a chain
    of push contexts whose inputs for that type did not change)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Hashable, Any]] = {}
        self.hits = 0
        self.misses = 0

    def table(self, kind: str) -> dict[Hashable, Any]:
        table = self.tables.get(kind)
        if table is None:
            table = self.tables[kind] = {}
        return table

    def get_or_build(self, kind: str, key: Hashable, build: Callable[[], T]) -> T:
        table = self.table(kind)
        try:
            value = table[key]
        except KeyError:
            self.misses += 1
            value = table[key] = build()
            return value
        self.hits += 1
        return value


def cache_of(ctx: PushContext) -> XdsCache:
    """The push context's cache (created on first use)."""
    cache = ctx.memo.get(_CACHE_KEY)
    if cache is None:
        cache = ctx.memo[_CACHE_KEY] = XdsCache()
    return cache


def inherit(previous: PushContext | None, ctx: PushContext) -> None:
    """Hand the previous push context's tables to ``ctx`` for every output type whose
    inputs are the same in both (compared by identity or value, never guessed from what a
    push request says changed)."""
    if previous is None or previous is ctx:
        return
    old = previous.memo.get(_CACHE_KEY)
    if not isinstance(old, XdsCache):
        return
    cache = cache_of(ctx)
    for kind, table in old.tables.items():
        if kind not in cache.tables and _inputs(previous, kind) == _inputs(ctx, kind):
            cache.tables[kind] = table


def _inputs(ctx: PushContext, kind: str) -> tuple[Any, ...]:
    """Everything an output type reads from a push context. Services and endpoints are
    compared by identity (the registries keep unchanged objects), config resources likewise
    (the config store keeps unchanged objects), the mesh config by value."""
    ignored = IGNORED_KINDS.get(kind, frozenset())
    configs = tuple(r for r in ctx.configs if r.kind not in ignored)
    return (
        ctx.mesh,
        ctx.domain_suffix,
        ctx.root_namespace,
        tuple(ctx.services),
        ctx.all_endpoints,
        configs,
    )


# --- the proxy's relevant attributes ---------------------------------------------------------


class _ScopeIndex:
    """What of a proxy's labels and addresses the config of one push context can depend on."""

    def __init__(self, ctx: PushContext) -> None:
        self.selectors: list[tuple[str, str, str, dict[str, str]]] = []
        for res in ctx.configs:
            selector = _selector_labels(res.doc.data.get("spec"))
            if selector:
                self.selectors.append((res.kind, res.namespace or "", res.name, selector))
        self.source_labels: list[dict[str, str]] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for res in ctx.configs_of("VirtualService"):
            for labels in _values_of(res.doc.data.get("spec"), "sourceLabels"):
                if isinstance(labels, dict) and labels:
                    key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
                    if key not in seen:
                        seen.add(key)
                        self.source_labels.append(dict(key))
        self.labels_in_full = _mentions_failover_priority(ctx)
        # Addresses of headless-service endpoints: a sidecar gets no listener for its own.
        self.headless_ips: set[str] = set()
        for svc in ctx.services:
            if svc.resolution is Resolution.PASSTHROUGH:
                self.headless_ips.update(e.address for e in ctx.endpoints(svc.hostname))


def _scope_index(ctx: PushContext) -> _ScopeIndex:
    index = ctx.memo.get(_SCOPE_INDEX_KEY)
    if index is None:
        index = ctx.memo[_SCOPE_INDEX_KEY] = _ScopeIndex(ctx)
    return index


def proxy_scope(ctx: PushContext, proxy: Proxy) -> tuple[Hashable, ...]:
    """The key of a proxy's outbound config: two proxies with the same key get the same
    outbound clusters, endpoints, routes and outbound listeners from ``ctx``."""
    index = _scope_index(ctx)
    sidecar = ctx.sidecar_for(proxy)
    labels = proxy.labels
    matched = tuple(
        (kind, ns, name) for kind, ns, name, sel in index.selectors if labels_match(sel, labels)
    )
    source = tuple(labels_match(sel, labels) for sel in index.source_labels)
    own_ip = proxy.ip_addresses[0] if proxy.ip_addresses else ""
    return (  # SCOPE_LOCALITY and SCOPE_LABELS index into this
        proxy.type,
        proxy.generator,
        proxy.namespace,
        proxy.dns_domain,
        _ip_families(proxy.ip_addresses),
        proxy_locality(proxy),
        (sidecar.namespace or "", sidecar.name) if sidecar is not None else None,
        matched,
        source,
        tuple(sorted(labels.items())) if index.labels_in_full else None,
        own_ip if own_ip in index.headless_ips else "",
        # Span tags name the workload (canonical service, revision): only when tracing is on.
        tracing_identity(ctx, proxy),
    )


def cluster_scope(scope: tuple) -> tuple:
    """A scope without the VirtualService ``sourceLabels`` matches, which clusters and
    endpoints do not read (so adding such a VirtualService keeps their cache entries)."""
    return (*scope[:SCOPE_SOURCE], None, *scope[SCOPE_SOURCE + 1 :])


def _ip_families(ips: tuple[str, ...]) -> tuple[bool, bool]:
    v4 = v6 = False
    for ip in ips:
        try:
            version = ipaddress.ip_address(ip).version
        except ValueError:
            continue
        v4 |= version == 4
        v6 |= version == 6
    return v4, v6


def _selector_labels(spec: Any) -> dict[str, str]:
    """The labels of a workload selector, whatever the kind calls it: ``workloadSelector``
    (DestinationRule ``matchLabels``, Sidecar and EnvoyFilter ``labels``) or ``selector``
    (PeerAuthentication, AuthorizationPolicy, Telemetry, WasmPlugin ...)."""
    if not isinstance(spec, dict):
        return {}
    for field in ("workloadSelector", "selector"):
        sel = spec.get(field)
        if isinstance(sel, dict):
            labels = sel.get("matchLabels", sel.get("labels"))
            if isinstance(labels, dict) and labels:
                return {str(k): str(v) for k, v in labels.items()}
    return {}


def _values_of(node: Any, field: str) -> Iterator[Any]:
    """Every value of ``field`` anywhere in a YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == field:
                yield value
            else:
                yield from _values_of(value, field)
    elif isinstance(node, list):
        for item in node:
            yield from _values_of(item, field)


def _mentions_failover_priority(ctx: PushContext) -> bool:
    """``failoverPriority`` compares the proxy's labels with endpoints' labels."""
    setting = ctx.mesh.locality_lb_setting
    if setting is not None and setting.failover_priority:
        return True
    return any(
        value
        for res in ctx.configs_of("DestinationRule")
        for value in _values_of(res.doc.data.get("spec"), "failoverPriority")
    )


_SCOPE_ATTRIBUTE = "xds_scope"


def connection_scope(ctx: PushContext, proxy: Proxy, attributes: dict[str, Any]) -> tuple:
    """:func:`proxy_scope`, computed once per connection and push context (the generators
    of one push share it through the connection's attributes)."""
    cached = attributes.get(_SCOPE_ATTRIBUTE)
    if cached is not None and cached[0] == ctx.version:
        return cached[1]
    scope = proxy_scope(ctx, proxy)
    # The version, not the context: an idle connection must not keep old contexts alive.
    attributes[_SCOPE_ATTRIBUTE] = (ctx.version, scope)
    return scope
