"""The typed configs of Istio's telemetry filters, compiled (and NACKed) once per config.

Istio sends both filters as a ``TypedStruct`` (``udpa.type.v1`` or ``xds.type.v3``): an inner
type URL and a JSON ``Struct`` value.

- ``istio.metadata_exchange`` — ``io.istio.http.peer_metadata.Config``: which discovery methods
  find the peer (``istio_headers``, ``workload_discovery``) upstream or downstream, and which
  propagation methods announce this proxy (``istio_headers``).
- ``istio.stats`` (HTTP and network) — ``stats.PluginConfig``: ``disable_host_header_fallback``,
  ``tcp_reporting_duration`` and the Telemetry overrides in ``metrics`` (``drop``,
  ``tags_to_remove``, ``dimensions`` whose values are CEL expressions).

Field names are accepted in proto (``snake_case``) or JSON (``camelCase``) spelling; anything
else is refused with its path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, json_format
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2 as xds_typed_struct_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.stats.istio_metrics import (
    HTTP_METRICS,
    METRIC_NAMES,
    STANDARD_LABELS,
    TCP_METRICS,
)

UDPA_TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
XDS_TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
TYPED_STRUCT_TYPES = frozenset({UDPA_TYPED_STRUCT, XDS_TYPED_STRUCT})
PEER_METADATA_TYPE = "type.googleapis.com/io.istio.http.peer_metadata.Config"
STATS_TYPE = "type.googleapis.com/stats.PluginConfig"
METADATA_EXCHANGE_NAME = "istio.metadata_exchange"
STATS_NAME = "istio.stats"
DEFAULT_TCP_REPORTING = 15.0
# Valid Istio metric names in overrides that pistio's stats never produce.
GRPC_MESSAGE_METRICS = frozenset({"request_messages_total", "response_messages_total"})

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def unpack_typed_struct(typed: any_pb2.Any, path: str) -> tuple[str, dict[str, Any]]:
    """(inner type URL, value as plain JSON) of a TypedStruct ``Any``."""
    if typed.type_url == UDPA_TYPED_STRUCT:
        msg: Any = udpa_typed_struct_pb2.TypedStruct()
    elif typed.type_url == XDS_TYPED_STRUCT:
        msg = xds_typed_struct_pb2.TypedStruct()
    else:
        raise ConfigError(f"{path}: {typed.type_url or 'no typed_config'} is not a TypedStruct")
    if not typed.Unpack(msg):
        raise ConfigError(f"{path}: cannot decode {typed.type_url}")
    return msg.type_url, json_format.MessageToDict(msg.value)


def _fields(value: Any, allowed: frozenset[str], path: str, problems: list[str]
            ) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: expected an object")
        return {}
    out = {}
    for key, v in value.items():
        name = _snake(key)
        if name not in allowed:
            problems.append(f"{path}.{key}: unknown field (allowed: {', '.join(sorted(allowed))})")
            continue
        out[name] = v
    return out


def _bool(value: Any, path: str, problems: list[str]) -> bool:
    if not isinstance(value, bool):
        problems.append(f"{path}: expected a boolean")
        return False
    return value


# --- istio.metadata_exchange ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MetadataExchangeConfig:
    downstream_headers: bool = False  # discover the downstream peer from request headers
    upstream_headers: bool = False  # ... the upstream peer from response headers
    upstream_workload: bool = False  # ... or from the endpoint's EDS metadata
    downstream_workload: bool = False  # (no workload source downstream: nothing to do)
    propagate_downstream: bool = False  # announce ourselves in the response
    propagate_upstream: bool = False  # ... in the upstream request
    skip_external_clusters: bool = False
    shared_with_upstream: bool = False


_MX_FIELDS = frozenset({"upstream_discovery", "downstream_discovery", "upstream_propagation",
                        "downstream_propagation", "shared_with_upstream", "additional_labels"})
_DISCOVERY = frozenset({"istio_headers", "workload_discovery"})
_PROPAGATION = frozenset({"istio_headers"})
_ISTIO_HEADERS = frozenset({"skip_external_clusters"})


def compile_metadata_exchange(value: Mapping[str, Any], path: str) -> MetadataExchangeConfig:
    problems: list[str] = []
    cfg = _fields(value, _MX_FIELDS, path, problems)
    found: dict[str, bool] = {}
    skip_external = False
    for direction in ("upstream", "downstream"):
        for i, method in enumerate(cfg.get(f"{direction}_discovery") or []):
            here = f"{path}.{direction}_discovery[{i}]"
            m = _fields(method, _DISCOVERY, here, problems)
            if len(m) != 1:
                problems.append(f"{here}: exactly one of istio_headers, workload_discovery")
            for kind, body in m.items():
                _fields(body or {}, frozenset(), f"{here}.{kind}", problems)
                found[f"{direction}_{'headers' if kind == 'istio_headers' else 'workload'}"] = True
        for i, method in enumerate(cfg.get(f"{direction}_propagation") or []):
            here = f"{path}.{direction}_propagation[{i}]"
            m = _fields(method, _PROPAGATION, here, problems)
            if len(m) != 1:
                problems.append(f"{here}: needs istio_headers")
            for kind, body in m.items():
                opts = _fields(body or {}, _ISTIO_HEADERS, f"{here}.{kind}", problems)
                if "skip_external_clusters" in opts:
                    skip_external |= _bool(opts["skip_external_clusters"],
                                           f"{here}.{kind}.skip_external_clusters", problems)
                found[f"propagate_{direction}"] = True
    if cfg.get("additional_labels"):
        problems.append(f"{path}.additional_labels: not supported by pistio")
    shared = False
    if "shared_with_upstream" in cfg:
        shared = _bool(cfg["shared_with_upstream"], f"{path}.shared_with_upstream", problems)
    if problems:
        raise ConfigError(problems)
    return MetadataExchangeConfig(skip_external_clusters=skip_external,
                                  shared_with_upstream=shared, **found)


# --- istio.stats ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MetricOverride:
    """What the overrides do to one metric: dropped, labels removed, labels set by CEL."""

    drop: bool = False
    removed: frozenset[str] = frozenset()
    # (label, program) in order: standard labels keep their place, new ones are appended.
    dimensions: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class StatsConfig:
    disable_host_header_fallback: bool = False
    tcp_reporting_duration: float = DEFAULT_TCP_REPORTING
    # metric short name ("requests_total") → its overrides; absent: standard labels.
    overrides: Mapping[str, MetricOverride] = field(default_factory=dict)

    @property
    def has_dimensions(self) -> bool:
        return any(o.dimensions for o in self.overrides.values())


_STATS_FIELDS = frozenset({"disable_host_header_fallback", "tcp_reporting_duration", "metrics",
                           "reporter"})
_METRIC_FIELDS = frozenset({"name", "dimensions", "tags_to_remove", "drop"})


def _duration(value: Any, path: str, problems: list[str]) -> float:
    if isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError:
            seconds = -1.0
        if seconds > 0:
            return seconds
    problems.append(f"{path}: expected a positive duration such as \"15s\"")
    return DEFAULT_TCP_REPORTING


def _compile_cel(text: str, path: str, problems: list[str]) -> Any:
    try:
        from pistio.proxy.cel import CelError, compile_expression
    except ImportError:  # pragma: no cover - the CEL package ships with pistio
        problems.append(f"{path}: CEL expressions are not available")
        return None
    try:
        return compile_expression(text)
    except CelError as err:
        problems.append(f"{path}: {err}")
        return None


def compile_stats_config(value: Mapping[str, Any], path: str) -> StatsConfig:
    problems: list[str] = []
    cfg = _fields(value, _STATS_FIELDS, path, problems)
    fallback = False
    if "disable_host_header_fallback" in cfg:
        fallback = _bool(cfg["disable_host_header_fallback"],
                         f"{path}.disable_host_header_fallback", problems)
    tcp_reporting = DEFAULT_TCP_REPORTING
    if "tcp_reporting_duration" in cfg:
        tcp_reporting = _duration(cfg["tcp_reporting_duration"],
                                  f"{path}.tcp_reporting_duration", problems)
    reporter = cfg.get("reporter", "UNSPECIFIED")
    if reporter not in ("UNSPECIFIED", 0):
        problems.append(f"{path}.reporter: {reporter!r} is not supported (only UNSPECIFIED: "
                        "the listener's direction decides)")
    drops: set[str] = set()
    removed: dict[str, set[str]] = {}
    dims: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(cfg.get("metrics") or []):
        here = f"{path}.metrics[{i}]"
        m = _fields(entry, _METRIC_FIELDS, here, problems)
        name = m.get("name", "")
        if name in GRPC_MESSAGE_METRICS:
            continue  # Istio's streaming-gRPC message counts: pistio emits no such series
        if name and name not in METRIC_NAMES:
            problems.append(f"{here}.name: {name!r} is not a standard Istio metric (one of "
                            f"{', '.join(METRIC_NAMES)}); custom metrics are not supported")
            continue
        targets = (name,) if name else METRIC_NAMES
        if m.get("drop"):
            if _bool(m["drop"], f"{here}.drop", problems):
                drops.update(targets)
            continue
        for j, tag in enumerate(m.get("tags_to_remove") or []):
            if tag not in STANDARD_LABELS:
                problems.append(f"{here}.tags_to_remove[{j}]: {tag!r} is not a standard label")
                continue
            for t in targets:
                removed.setdefault(t, set()).add(tag)
        dimensions = m.get("dimensions") or {}
        if not isinstance(dimensions, Mapping):
            problems.append(f"{here}.dimensions: expected an object")
            continue
        for tag in sorted(dimensions):  # deterministic order for new labels, as Istio
            expr = dimensions[tag]
            if not isinstance(expr, str) or not expr:
                problems.append(f"{here}.dimensions.{tag}: expected a CEL expression")
                continue
            program = _compile_cel(expr, f"{here}.dimensions.{tag}", problems)
            if program is None:
                continue
            for t in targets:
                dims.setdefault(t, {})[tag] = program
                removed.get(t, set()).discard(tag)
    if problems:
        raise ConfigError(problems)
    overrides = {}
    for name in METRIC_NAMES:
        if name in drops or name in removed or name in dims:
            overrides[name] = MetricOverride(
                drop=name in drops,
                removed=frozenset(removed.get(name, ())),
                dimensions=tuple((dims.get(name) or {}).items()),
            )
    return StatsConfig(fallback, tcp_reporting, overrides)


def compile_istio_filter(typed: any_pb2.Any, filter_name: str, path: str, *,
                         network: bool = False) -> MetadataExchangeConfig | StatsConfig:
    """Compile one Istio telemetry filter's TypedStruct; :class:`ConfigError` (a NACK) for an
    inner type pistio does not run or a bad value."""
    inner, value = unpack_typed_struct(typed, path)
    if inner == STATS_TYPE:
        return compile_stats_config(value, f"{path}.value")
    if inner == PEER_METADATA_TYPE and not network:
        return compile_metadata_exchange(value, f"{path}.value")
    kind = "network" if network else "HTTP"
    raise ConfigError(f"{path}: {kind} filter {filter_name!r} with TypedStruct type "
                      f"{inner or '(none)'} is not supported by pistio")


__all__ = ["HTTP_METRICS", "TCP_METRICS", "MetadataExchangeConfig", "MetricOverride",
           "StatsConfig", "compile_istio_filter", "compile_metadata_exchange",
           "compile_stats_config", "unpack_typed_struct"]
