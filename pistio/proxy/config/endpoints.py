"""Envoy's ``ClusterLoadAssignment`` compiled into immutable per-priority host sets, and the
pure arithmetic of priority levels and locality weights.

Envoy groups a cluster's endpoints by *priority* (0 is the most preferred) and, inside a
priority, by *locality* (region/zone/sub-zone) with an optional locality weight. The share of
traffic each priority receives — the *priority load* — follows from how available each level
is: a level's health score is ``min(100, overprovisioning_factor × healthy / total)`` (integer
percent, factor 140 by default), and load spills to lower levels as that score drops below 100.
When the scores of all levels sum to less than 100, they are normalised to that sum; integer
rounding residue goes to the first level that has any health. Degraded hosts form a second
tier that only receives the load healthy hosts cannot take.

Health is runtime state (EDS status, outlier ejection), so this module computes loads from
counts; the load balancer calls it whenever a host's health changes, not per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import json_format

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.unsupported import unsupported_fields

DEFAULT_OVERPROVISIONING_FACTOR = 140
TRANSPORT_SOCKET_MATCH_KEY = "envoy.transport_socket_match"

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.config.endpoint.v3.ClusterLoadAssignment": frozenset(
        {"cluster_name", "endpoints", "policy"}
    ),
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": frozenset(
        {"overprovisioning_factor", "weighted_priority_health"}
    ),
    "envoy.config.endpoint.v3.LocalityLbEndpoints": frozenset(
        {"locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"}
    ),
    "envoy.config.endpoint.v3.LbEndpoint": frozenset(
        {"endpoint", "health_status", "metadata", "load_balancing_weight"}
    ),
    "envoy.config.endpoint.v3.Endpoint": frozenset({"address", "hostname"}),
    "envoy.config.core.v3.Address": frozenset({"socket_address"}),
    "envoy.config.core.v3.SocketAddress": frozenset({"address", "port_value", "protocol"}),
}

# EDS health statuses (``envoy.config.core.v3.HealthStatus``) as Envoy's load balancer sees
# them: UNKNOWN counts as healthy (no health checking), DEGRADED is a second tier, the rest
# (UNHEALTHY, DRAINING, TIMEOUT) are not used unless the priority is in panic.
_HEALTHY_STATUSES = frozenset({health_check_pb2.UNKNOWN, health_check_pb2.HEALTHY})
_DEGRADED_STATUSES = frozenset({health_check_pb2.DEGRADED})


@dataclass(frozen=True, slots=True)
class Locality:
    """``envoy.config.core.v3.Locality``: where an endpoint runs."""

    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.region, self.zone, self.sub_zone) if p)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One ``LbEndpoint``: an upstream address with its EDS health, weight and metadata."""

    address: str
    port: int
    health_status: int = health_check_pb2.UNKNOWN
    weight: int = 1
    locality: Locality = Locality()
    priority: int = 0
    hostname: str = ""
    # filter_metadata as plain JSON values, read-only.
    metadata: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def eds_healthy(self) -> bool:
        return self.health_status in _HEALTHY_STATUSES

    @property
    def eds_degraded(self) -> bool:
        return self.health_status in _DEGRADED_STATUSES

    @property
    def tls_mode(self) -> str | None:
        """Istio's ``tlsMode`` label (``istio`` or ``disabled``) used to pick a transport
        socket through ``transport_socket_matches``."""
        value = self.metadata.get(TRANSPORT_SOCKET_MATCH_KEY, {}).get("tlsMode")
        return value if isinstance(value, str) else None

    @property
    def address_key(self) -> str:
        """``ip:port``: the host's identity (also the ring-hash and maglev key)."""
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class LocalityGroup:
    """A ``LocalityLbEndpoints`` entry: the endpoints of one locality at one priority."""

    locality: Locality
    weight: int  # 0 when the CLA gives none (then locality weighting ignores the group)
    endpoints: tuple[EndpointConfig, ...]


@dataclass(frozen=True, slots=True)
class HostSet:
    """All endpoints at one priority, in EDS order, and their locality groups."""

    priority: int
    localities: tuple[LocalityGroup, ...]
    endpoints: tuple[EndpointConfig, ...]


@dataclass(frozen=True, slots=True)
class LoadAssignment:
    """A compiled ``ClusterLoadAssignment``: host sets indexed by priority (dense; a priority
    with no endpoints is an empty set, as in Envoy)."""

    cluster_name: str
    priorities: tuple[HostSet, ...]
    overprovisioning_factor: int = DEFAULT_OVERPROVISIONING_FACTOR
    weighted_priority_health: bool = False

    @property
    def endpoints(self) -> tuple[EndpointConfig, ...]:
        return tuple(e for hs in self.priorities for e in hs.endpoints)


def compile_load_assignment(
    cla: endpoint_pb2.ClusterLoadAssignment, path: str | None = None
) -> LoadAssignment:
    """Compile a CLA (from EDS or a cluster's inline ``load_assignment``); raise
    ``ConfigError`` naming every field pistio does not implement."""
    path = path if path is not None else f"ClusterLoadAssignment {cla.cluster_name}: "
    problems = unsupported_fields(cla, _ALLOWED, path)
    groups_by_priority: dict[int, list[LocalityGroup]] = {}
    for i, group in enumerate(cla.endpoints):
        locality = Locality(group.locality.region, group.locality.zone, group.locality.sub_zone)
        endpoints: list[EndpointConfig] = []
        for j, lb in enumerate(group.lb_endpoints):
            ep = _compile_endpoint(lb, locality, group.priority, f"{path}endpoints[{i}]"
                                   f".lb_endpoints[{j}]", problems)
            if ep is not None:
                endpoints.append(ep)
        weight = (
            group.load_balancing_weight.value if group.HasField("load_balancing_weight") else 0
        )
        groups_by_priority.setdefault(group.priority, []).append(
            LocalityGroup(locality, weight, tuple(endpoints))
        )
    if problems:
        raise ConfigError(problems)
    top = max(groups_by_priority, default=-1)
    priorities = tuple(
        HostSet(
            p,
            tuple(groups_by_priority.get(p, ())),
            tuple(e for g in groups_by_priority.get(p, ()) for e in g.endpoints),
        )
        for p in range(top + 1)
    )
    factor = DEFAULT_OVERPROVISIONING_FACTOR
    if cla.policy.HasField("overprovisioning_factor"):
        factor = cla.policy.overprovisioning_factor.value
    return LoadAssignment(
        cla.cluster_name,
        priorities or (HostSet(0, (), ()),),
        factor,
        cla.policy.weighted_priority_health,
    )


def _compile_endpoint(
    lb: endpoint_components_pb2.LbEndpoint,
    locality: Locality,
    priority: int,
    path: str,
    problems: list[str],
) -> EndpointConfig | None:
    sock = lb.endpoint.address.socket_address
    if not lb.endpoint.address.HasField("socket_address"):
        problems.append(f"{path}.endpoint.address: only socket_address is supported")
        return None
    if sock.protocol != 0:  # TCP
        problems.append(f"{path}.endpoint.address.socket_address.protocol: only TCP is supported")
    weight = lb.load_balancing_weight.value if lb.HasField("load_balancing_weight") else 1
    metadata = {
        key: MappingProxyType(json_format.MessageToDict(value))
        for key, value in lb.metadata.filter_metadata.items()
    }
    return EndpointConfig(
        address=sock.address,
        port=sock.port_value,
        health_status=lb.health_status,
        weight=weight or 1,
        locality=locality,
        priority=priority,
        hostname=lb.endpoint.hostname,
        metadata=MappingProxyType(metadata),
    )


# --- priority load ---------------------------------------------------------------------------


def availability(available: int, total: int, overprovisioning_factor: int) -> int:
    """A level's (or locality's) integer health score: ``min(100, factor × available / total)``
    with ``factor`` in percent (140 means 1.4). Counts may be host counts or weights."""
    if total <= 0:
        return 0
    return min(100, overprovisioning_factor * available // total)


@dataclass(frozen=True, slots=True)
class PriorityLoad:
    """Percent of traffic per priority, split into the healthy and degraded tiers; the two
    tuples sum to 100 together."""

    healthy: tuple[int, ...]
    degraded: tuple[int, ...]


def priority_load(
    health: Sequence[int], degraded: Sequence[int] | None = None
) -> PriorityLoad:
    """Distribute 100% over priorities given each level's health (and degraded) score.

    Normalised total availability is ``min(100, Σ health + Σ degraded)``; each level takes
    ``score × 100 / normalised`` of what is left, healthy tiers first; rounding residue goes
    to the first level with a non-zero healthy share (else degraded). With no availability
    at all, P0 gets everything (the caller decides about panic).
    """
    degraded = list(degraded) if degraded is not None else [0] * len(health)
    n = len(health)
    normalized = min(100, sum(health) + sum(degraded))
    if normalized == 0:
        return PriorityLoad(tuple([100] + [0] * (n - 1)), tuple([0] * n))
    healthy_load, first_healthy, remaining = _distribute(health, 100, normalized)
    degraded_load, first_degraded, remaining = _distribute(degraded, remaining, normalized)
    if remaining:
        if first_healthy >= 0:
            healthy_load[first_healthy] += remaining
        else:
            degraded_load[first_degraded] += remaining
    return PriorityLoad(tuple(healthy_load), tuple(degraded_load))


def _distribute(
    scores: Sequence[int], total_load: int, normalized: int
) -> tuple[list[int], int, int]:
    out = [0] * len(scores)
    first = -1
    for i, score in enumerate(scores):
        if score and first < 0:
            first = i
        out[i] = min(total_load, score * 100 // normalized)
        total_load -= out[i]
    return out, first, total_load


def total_panic_load(host_counts: Sequence[int]) -> PriorityLoad:
    """Load when every priority is in panic: proportional to host counts regardless of health;
    the residue goes to the first non-empty level."""
    n = len(host_counts)
    total = sum(host_counts)
    if total == 0:
        return PriorityLoad(tuple([100] + [0] * (n - 1)), tuple([0] * n))
    loads = [100 * c // total for c in host_counts]
    first = next(i for i, c in enumerate(host_counts) if c)
    loads[first] += 100 - sum(loads)
    return PriorityLoad(tuple(loads), tuple([0] * n))


def choose_priority(load: PriorityLoad, roll: int) -> tuple[int, bool]:
    """Pick ``(priority, degraded_tier)`` for ``roll`` in ``[0, 100)`` by walking the
    cumulative healthy loads, then the degraded ones."""
    acc = 0
    for i, share in enumerate(load.healthy):
        acc += share
        if roll < acc:
            return i, False
    for i, share in enumerate(load.degraded):
        acc += share
        if roll < acc:
            return i, True
    return 0, False


def effective_locality_weights(
    groups: Sequence[LocalityGroup],
    healthy_counts: Sequence[int],
    overprovisioning_factor: int,
) -> tuple[float, ...]:
    """Envoy's locality-weighted balancing: each locality's weight scaled by its availability
    (``min(1, factor × healthy / total)``), so traffic shifts away from a failing locality
    before the whole priority spills over."""
    out = []
    for group, healthy in zip(groups, healthy_counts, strict=True):
        total = len(group.endpoints)
        if not total or not group.weight:
            out.append(0.0)
            continue
        avail = min(1.0, overprovisioning_factor * healthy / (100.0 * total))
        out.append(group.weight * avail)
    return tuple(out)
