"""Metrics: the ``istio.metadata_exchange`` and ``istio.stats`` filters (Istio's
``mergeMetrics``, ``generateStatsConfig`` and ``buildHTTP/TCPTelemetryFilter``).

Metrics providers come from the Telemetry resources in scope, else the mesh's
``defaultProviders.metrics``; a level that names providers replaces its parent's, one that
names none inherits them. Overrides accumulate root → namespace → workload, later ones
winning per metric and tag; ``ALL_METRICS`` expands to every standard metric, and disabling
``ALL_METRICS`` for a mode removes the stats filter from that side of the proxy.

Each ``prometheus`` provider in scope gives an ``istio.stats`` filter whose configuration is
Istio's ``stats.PluginConfig`` as a TypedStruct: the HTTP filter just before the router, the
network filter just before ``tcp_proxy``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, struct_pb2
from udpa.type.v1 import typed_struct_pb2

from pistio.api.mesh import MeshConfig
from pistio.api.telemetry import Metrics, MetricSelector
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.telemetry.providers import default_providers, fetch_provider
from pistio.pilot.telemetry.resolver import applicable_telemetry, memo
from pistio.xds.any_codec import pack

STATS_FILTER = "istio.stats"
METADATA_EXCHANGE_FILTER = "istio.metadata_exchange"
STATS_CONFIG_TYPE = "type.googleapis.com/stats.PluginConfig"
PEER_METADATA_CONFIG_TYPE = "type.googleapis.com/io.istio.http.peer_metadata.Config"

CLIENT = "CLIENT"
SERVER = "SERVER"

# Istio's metricToPrometheusMetric: the standard metrics without their ``istio_`` prefix.
PROMETHEUS_METRIC_NAMES: dict[str, str] = {
    "REQUEST_COUNT": "requests_total",
    "REQUEST_DURATION": "request_duration_milliseconds",
    "REQUEST_SIZE": "request_bytes",
    "RESPONSE_SIZE": "response_bytes",
    "TCP_OPENED_CONNECTIONS": "tcp_connections_opened_total",
    "TCP_CLOSED_CONNECTIONS": "tcp_connections_closed_total",
    "TCP_SENT_BYTES": "tcp_sent_bytes_total",
    "TCP_RECEIVED_BYTES": "tcp_received_bytes_total",
    "GRPC_REQUEST_MESSAGES": "request_messages_total",
    "GRPC_RESPONSE_MESSAGES": "response_messages_total",
}
ALL_METRICS: tuple[str, ...] = tuple(sorted(PROMETHEUS_METRIC_NAMES))


@dataclass(frozen=True, slots=True)
class TagOverride:
    name: str
    remove: bool
    value: str = ""  # a CEL expression when not removing


@dataclass(frozen=True, slots=True)
class MetricOverride:
    name: str  # Istio's enum name (REQUEST_COUNT) or a custom metric's name
    disabled: bool
    tags: tuple[TagOverride, ...]


@dataclass(frozen=True, slots=True)
class ModeMetrics:
    """One side (client = outbound, server = inbound) of one provider."""

    disabled: bool = False
    overrides: tuple[MetricOverride, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderMetrics:
    client: ModeMetrics = field(default_factory=ModeMetrics)
    server: ModeMetrics = field(default_factory=ModeMetrics)
    reporting_interval: float | None = None  # seconds

    def for_side(self, inbound: bool) -> ModeMetrics:
        return self.server if inbound else self.client


def _modes(mode: str) -> tuple[str, ...]:
    return (mode,) if mode in (CLIENT, SERVER) else (CLIENT, SERVER)


def _is_all_metrics(match: MetricSelector | None) -> bool:
    if match is None or match.custom_metric is not None:
        return match is None
    return match.metric is None or match.metric == "ALL_METRICS"


def _matches(match: MetricSelector | None) -> tuple[str, ...]:
    if match is not None and match.custom_metric is not None:
        return (match.custom_metric,)
    if match is None or match.metric is None or match.metric == "ALL_METRICS":
        return ALL_METRICS
    return (match.metric,)


def merge_metrics(metrics: Sequence[Metrics], mesh: MeshConfig) -> dict[str, ProviderMetrics]:
    """Provider name → its merged metrics configuration (Istio's ``mergeMetrics``)."""
    defaults = default_providers(mesh, "metrics")
    # provider → mode → metric → (disabled or None, {tag: (remove, value)})
    providers: dict[str, dict[str, dict[str, tuple[bool | None, dict[str, tuple[bool, str]]]]]]
    providers = {} if metrics else {name: {} for name in defaults}
    in_scope = list(defaults)
    for m in metrics:
        if m.providers:
            in_scope = [p.name for p in m.providers]
    scope = set(in_scope)
    parent = list(defaults)
    disabled_all: set[tuple[str, str]] = set()
    intervals: dict[str, float] = {}
    for m in metrics:
        names = [p.name for p in m.providers] or parent
        parent = names
        for provider in names:
            if provider not in scope:
                continue  # a higher level's provider that a lower level replaced
            if m.reporting_interval is not None:
                intervals[provider] = m.reporting_interval.seconds
            modes = providers.setdefault(provider, {CLIENT: {}, SERVER: {}})
            for override in m.overrides:
                match = override.match
                mode_names = _modes(match.mode if match is not None else "CLIENT_AND_SERVER")
                if _is_all_metrics(match) and override.disabled:
                    disabled_all.update((provider, mode) for mode in mode_names)
                    continue
                for mode in mode_names:
                    # root namespace disables all, a namespace enables some again
                    disabled_all.discard((provider, mode))
                    per_metric = modes.setdefault(mode, {})
                    for metric in _matches(match):
                        was_disabled, tags = per_metric.get(metric, (None, {}))
                        if override.disabled is not None:
                            was_disabled = override.disabled
                        tags = dict(tags)
                        for tag, op in override.tag_overrides.items():
                            tags[tag] = (op.operation == "REMOVE", op.value)
                        per_metric[metric] = (was_disabled, tags)
    out: dict[str, ProviderMetrics] = {}
    for provider, modes in providers.items():
        sides: dict[str, ModeMetrics] = {}
        for mode in (CLIENT, SERVER):
            if (provider, mode) in disabled_all:
                sides[mode] = ModeMetrics(disabled=True)
                continue
            overrides = tuple(
                MetricOverride(
                    name=metric,
                    disabled=bool(disabled),
                    tags=tuple(
                        TagOverride(tag, remove, "" if remove else value)
                        for tag, (remove, value) in sorted(tags.items())
                    ),
                )
                for metric, (disabled, tags) in sorted(modes.get(mode, {}).items())
            )
            sides[mode] = ModeMetrics(overrides=overrides)
        out[provider] = ProviderMetrics(sides[CLIENT], sides[SERVER], intervals.get(provider))
    return out


def _duration_text(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def stats_plugin_config(config: ProviderMetrics, inbound: bool) -> dict[str, Any] | None:
    """Istio's stats ``PluginConfig`` (JSON field names) for one side; None when that side's
    metrics are disabled (no filter at all)."""
    side = config.for_side(inbound)
    if side.disabled:
        return None
    # Inbound (and gateway) stats must not take the destination service from the Host
    # header: it is whatever the client wrote.
    out: dict[str, Any] = {"disable_host_header_fallback": inbound}
    if config.reporting_interval is not None:
        out["tcp_reporting_duration"] = _duration_text(config.reporting_interval)
    entries = []
    for override in side.overrides:
        entry: dict[str, Any] = {"name": PROMETHEUS_METRIC_NAMES.get(override.name, override.name)}
        dimensions = {t.name: t.value for t in override.tags if not t.remove}
        removed = [t.name for t in override.tags if t.remove]
        if dimensions:
            entry["dimensions"] = dimensions
        if removed:
            entry["tags_to_remove"] = removed
        if override.disabled:
            entry["drop"] = True
        entries.append(entry)
    if entries:
        out["metrics"] = entries
    return out


def typed_struct(type_url: str, value: dict[str, Any]) -> any_pb2.Any:
    """``udpa.type.v1.TypedStruct``: a configuration given as JSON for a type the xDS
    client knows and the control plane need not compile."""
    body = struct_pb2.Struct()
    body.update(value)
    return pack(typed_struct_pb2.TypedStruct(type_url=type_url, value=body))


def metadata_exchange_config(inbound: bool) -> dict[str, Any]:
    """Istio's peer metadata filter: discover the peer from its headers (or, upstream, from
    the endpoint's workload metadata) and send our own."""
    if inbound:
        return {
            "downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "downstream_propagation": [{"istio_headers": {}}],
        }
    return {
        "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
        "upstream_propagation": [{"istio_headers": {}}],
    }


@functools.cache
def _metadata_exchange_any(inbound: bool) -> any_pb2.Any:
    return typed_struct(PEER_METADATA_CONFIG_TYPE, metadata_exchange_config(inbound))


def metadata_exchange_filter(inbound: bool) -> hcm_pb2.HttpFilter:
    """Always first in a sidecar's HTTP filter chain (Istio's ``appendMxFilter``)."""
    return hcm_pb2.HttpFilter(
        name=METADATA_EXCHANGE_FILTER, typed_config=_metadata_exchange_any(inbound)
    )


def _stats_configs(ctx: PushContext, proxy: Proxy, inbound: bool) -> tuple[any_pb2.Any, ...]:
    applied = applicable_telemetry(ctx, proxy)

    def build() -> tuple[any_pb2.Any, ...]:
        merged = merge_metrics(applied.metrics, ctx.mesh)
        out = []
        for name in sorted(merged):
            provider = fetch_provider(ctx.mesh, name)
            if provider is None or provider.prometheus is None:
                continue  # only Prometheus metrics have a filter (Istio ignores others)
            config = stats_plugin_config(merged[name], inbound)
            if config is not None:
                out.append(typed_struct(STATS_CONFIG_TYPE, config))
        return tuple(out)

    return memo(ctx, ("stats", applied.key, inbound), build)


def http_stats_filters(ctx: PushContext, proxy: Proxy, inbound: bool) -> list[hcm_pb2.HttpFilter]:
    """The ``istio.stats`` HTTP filters of one connection manager (none when metrics are off)."""
    return [
        hcm_pb2.HttpFilter(name=STATS_FILTER, typed_config=config)
        for config in _stats_configs(ctx, proxy, inbound)
    ]


def tcp_stats_filters(ctx: PushContext, proxy: Proxy, inbound: bool) -> list[lc.Filter]:
    """The ``istio.stats`` network filters that go before a ``tcp_proxy``."""
    return [
        lc.Filter(name=STATS_FILTER, typed_config=config)
        for config in _stats_configs(ctx, proxy, inbound)
    ]
