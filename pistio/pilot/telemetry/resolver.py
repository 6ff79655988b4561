"""Which Telemetry resources apply to a proxy (Istio's ``Telemetries.applicableTelemetries``).

In order, later entries overriding earlier ones: the root namespace's mesh-wide Telemetry
(no selector, no targetRefs), the proxy's namespace-wide one, then every Telemetry of the
proxy's namespace that selects it: by ``selector.matchLabels`` (sidecars and gateways) or by
``targetRefs`` naming its Gateway (gateways and waypoints). Telemetries are taken oldest
first (creation time, then name); when a namespace has several without a selector, the
oldest one is the namespace's and the others are ignored, with a warning, as Istio does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from pistio.api.telemetry import AccessLogging, Metrics, Telemetry, Tracing
from pistio.config.resource import Resource
from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext, labels_match

log = logging.getLogger("pistio.discovery.telemetry")

T = TypeVar("T")

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
_MEMO_KEY = "telemetry"
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a configuration problem once per process, not on every push and proxy."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def memo(ctx: PushContext, key: Hashable, build: Callable[[], T]) -> T:
    """A value derived from ``ctx`` alone plus ``key``, computed once per push context."""
    table = ctx.memo.get(_MEMO_KEY)
    if table is None:
        table = ctx.memo[_MEMO_KEY] = {}
    try:
        return table[key]
    except KeyError:
        value = table[key] = build()
        return value


@dataclass(frozen=True, slots=True)
class AppliedTelemetry:
    """The Telemetry settings in scope for a proxy, root namespace first.

    ``key`` names the resources that contributed (memo key of everything derived from them);
    ``logging`` keeps one group per resource, since access-log providers are merged level by
    level.
    """

    key: tuple[str, ...]
    metrics: tuple[Metrics, ...]
    logging: tuple[tuple[AccessLogging, ...], ...]
    tracing: tuple[Tracing, ...]


def _has_scope(spec: Telemetry) -> bool:
    """True when the Telemetry names workloads (selector or targetRefs)."""
    selected = spec.selector is not None and bool(spec.selector.match_labels)
    return selected or bool(spec.target_refs) or spec.target_ref is not None


class TelemetryIndex:
    """Telemetry resources by namespace, oldest first, built once per push context."""

    def __init__(self, ctx: PushContext) -> None:
        self.root = ctx.root_namespace
        by_ns: dict[str, list[Resource]] = defaultdict(list)
        ordered = sorted(
            ctx.configs_of("Telemetry"),
            key=lambda r: (r.metadata.creation_timestamp or "", r.name),
        )
        for res in ordered:
            by_ns[res.namespace or "default"].append(res)
        self.by_namespace = dict(by_ns)
        self.namespace_wide: dict[str, Resource] = {}
        for ns, items in self.by_namespace.items():
            wide = [r for r in items if not _has_scope(r.spec)]
            if not wide:
                continue
            self.namespace_wide[ns] = wide[0]
            if len(wide) > 1:
                others = ", ".join(r.name for r in wide[1:])
                warn_once(
                    f"Telemetry: namespace {ns} has more than one Telemetry without a selector; "
                    f"{wide[0].name} (the oldest) applies, {others} ignored"
                )


def telemetry_index(ctx: PushContext) -> TelemetryIndex:
    return memo(ctx, "index", lambda: TelemetryIndex(ctx))


def _targets(res: Resource, proxy: Proxy) -> bool:
    """Istio's policy matcher: ``targetRefs`` attach to gateways (and waypoints) by their
    Gateway name; ``selector`` to sidecars and gateways by labels (not to waypoints)."""
    spec: Telemetry = res.spec
    refs = list(spec.target_refs) + ([spec.target_ref] if spec.target_ref is not None else [])
    if not refs:
        if proxy.type is NodeType.WAYPOINT:
            return False
        labels = spec.selector.match_labels if spec.selector is not None else {}
        return labels_match(labels, proxy.labels)
    gateway = proxy.labels.get(GATEWAY_NAME_LABEL, "")
    ns = res.namespace or "default"
    for ref in refs:
        if ref.kind != "Gateway" or (ref.group or GATEWAY_API_GROUP) != GATEWAY_API_GROUP:
            continue
        if gateway and ref.name == gateway and (ref.namespace or ns) == proxy.namespace:
            return True
    return False


def applicable_telemetry(ctx: PushContext, proxy: Proxy) -> AppliedTelemetry:
    """The Telemetry resources that apply to ``proxy``, merged in Istio's order."""
    index = telemetry_index(ctx)
    namespace = proxy.config_namespace
    chosen: list[Resource] = []
    root = index.namespace_wide.get(index.root)
    if root is not None:
        chosen.append(root)
    if namespace != index.root:
        wide = index.namespace_wide.get(namespace)
        if wide is not None:
            chosen.append(wide)
    for res in index.by_namespace.get(namespace, ()):
        if _has_scope(res.spec) and _targets(res, proxy):
            chosen.append(res)
    key = tuple(f"{r.namespace or 'default'}/{r.name}" for r in chosen)
    return memo(ctx, ("applied", key), lambda: _applied(key, chosen))


def _applied(key: tuple[str, ...], chosen: list[Resource]) -> AppliedTelemetry:
    specs: list[Telemetry] = [r.spec for r in chosen]
    return AppliedTelemetry(
        key=key,
        metrics=tuple(m for s in specs for m in s.metrics),
        logging=tuple(tuple(s.access_logging) for s in specs if s.access_logging),
        tracing=tuple(t for s in specs for t in s.tracing),
    )
