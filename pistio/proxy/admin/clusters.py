"""``/clusters``: every cluster's settings and every host's counters and health.

Envoy's text output is one line per fact, ``<cluster>::<fact>::<value>`` for cluster facts and
``<cluster>::<ip:port>::<fact>::<value>`` for host facts: the observability name, circuit
breaker thresholds per priority, ``added_via_api``, the EDS service name; then for each host its
stats in name order (``cx_active``, ``cx_connect_fail``, ``cx_total``, ``rq_active``,
``rq_error``, ``rq_success``, ``rq_timeout``, ``rq_total``), ``hostname``, ``health_flags``
(``healthy`` or ``/failed_outlier_check/failed_eds_health``...), ``weight``, ``region``,
``zone``, ``sub_zone``, ``canary``, ``priority``, ``success_rate`` and
``local_origin_success_rate`` (``-1`` when not computed). ``?format=json`` gives the
``envoy.admin.v3.Clusters`` message, which ``istioctl proxy-config endpoints`` reads.

The proxy's runtime supplies :class:`ClusterStatus` records through a provider (the agent's
view: config and endpoints as received); the workers' own hosts — resolved DNS addresses,
active health check and outlier flags, active request and connection counts — replace a
cluster's host list when the workers report them (:func:`overlay_worker_hosts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Envoy's health flag names, in its printing order.
HEALTH_FLAGS = (
    "failed_active_hc",
    "failed_outlier_check",
    "failed_eds_health",
    "degraded_active_hc",
    "degraded_eds_health",
    "pending_dynamic_removal",
    "pending_active_hc",
    "excluded_via_immediate_hc_fail",
    "active_hc_timeout",
    "eds_status_draining",
)

HOST_COUNTERS = ("cx_connect_fail", "cx_total", "rq_error", "rq_success", "rq_timeout", "rq_total")
HOST_GAUGES = ("cx_active", "rq_active")


@dataclass
class HostStatus:
    address: str
    port: int
    health_flags: tuple[str, ...] = ()  # names from HEALTH_FLAGS; empty means healthy
    weight: int = 1
    priority: int = 0
    hostname: str = ""
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    canary: bool = False
    success_rate: float = -1.0
    local_origin_success_rate: float = -1.0
    stats: dict[str, int] = field(default_factory=dict)  # names from HOST_COUNTERS/HOST_GAUGES

    @property
    def address_text(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @property
    def health_flags_text(self) -> str:
        flags = [f for f in HEALTH_FLAGS if f in self.health_flags]
        return "".join("/" + f for f in flags) if flags else "healthy"


@dataclass
class Thresholds:
    """One priority's circuit breaker limits (Envoy's defaults when the cluster sets none)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass
class ClusterStatus:
    name: str
    observability_name: str = ""
    added_via_api: bool = True
    eds_service_name: str = ""
    default_priority: Thresholds = field(default_factory=Thresholds)
    high_priority: Thresholds = field(default_factory=Thresholds)
    hosts: list[HostStatus] = field(default_factory=list)


def overlay_worker_hosts(
    clusters: Iterable[ClusterStatus], hosts: dict[str, dict[tuple[str, int], list]]
) -> None:
    """Replace each cluster's hosts by the workers' merged view (see
    ``pistio.proxy.stats.snapshot.merge_hosts`` for the entry layout)."""
    for c in clusters:
        entries = hosts.get(c.name)
        if entries is None:
            continue
        c.hosts = [
            HostStatus(
                address, port, health_flags=tuple(flags), weight=weight, priority=priority,
                hostname=hostname, region=region, zone=zone, sub_zone=sub_zone,
                stats={"rq_active": rq_active, "cx_active": cx_active},
            )
            for (address, port, hostname, flags, weight, priority, region, zone, sub_zone,
                 rq_active, cx_active) in entries.values()
        ]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def render_text(clusters: Iterable[ClusterStatus]) -> str:
    out: list[str] = []
    for c in clusters:
        n = c.name
        out.append(f"{n}::observability_name::{c.observability_name or n}\n")
        for label, t in (
            ("default_priority", c.default_priority),
            ("high_priority", c.high_priority),
        ):
            out.append(f"{n}::{label}::max_connections::{t.max_connections}\n")
            out.append(f"{n}::{label}::max_pending_requests::{t.max_pending_requests}\n")
            out.append(f"{n}::{label}::max_requests::{t.max_requests}\n")
            out.append(f"{n}::{label}::max_retries::{t.max_retries}\n")
        out.append(f"{n}::added_via_api::{'true' if c.added_via_api else 'false'}\n")
        if c.eds_service_name:
            out.append(f"{n}::eds_service_name::{c.eds_service_name}\n")
        for h in c.hosts:
            p = f"{n}::{h.address_text}::"
            for stat in sorted((*HOST_COUNTERS, *HOST_GAUGES)):
                out.append(f"{p}{stat}::{h.stats.get(stat, 0)}\n")
            out.append(f"{p}hostname::{h.hostname}\n")
            out.append(f"{p}health_flags::{h.health_flags_text}\n")
            out.append(f"{p}weight::{h.weight}\n")
            out.append(f"{p}region::{h.region}\n")
            out.append(f"{p}zone::{h.zone}\n")
            out.append(f"{p}sub_zone::{h.sub_zone}\n")
            out.append(f"{p}canary::{'true' if h.canary else 'false'}\n")
            out.append(f"{p}priority::{h.priority}\n")
            out.append(f"{p}success_rate::{_number(h.success_rate)}\n")
            out.append(f"{p}local_origin_success_rate::{_number(h.local_origin_success_rate)}\n")
    return "".join(out)


def render_json(clusters: Iterable[ClusterStatus]) -> str:
    """The ``envoy.admin.v3.Clusters`` message as Envoy's admin prints it (snake_case)."""
    from envoy.admin.v3 import clusters_pb2, metrics_pb2
    from envoy.config.core.v3 import health_check_pb2
    from google.protobuf import json_format

    msg = clusters_pb2.Clusters()
    for c in clusters:
        cs = msg.cluster_statuses.add(
            name=c.name,
            added_via_api=c.added_via_api,
            observability_name=c.observability_name or c.name,
            eds_service_name=c.eds_service_name,
        )
        for priority, t in ((0, c.default_priority), (1, c.high_priority)):
            th = cs.circuit_breakers.thresholds.add(priority=priority)
            th.max_connections.value = t.max_connections
            th.max_pending_requests.value = t.max_pending_requests
            th.max_requests.value = t.max_requests
            th.max_retries.value = t.max_retries
        for h in c.hosts:
            hs = cs.host_statuses.add(weight=h.weight, priority=h.priority, hostname=h.hostname)
            hs.address.socket_address.address = h.address
            hs.address.socket_address.port_value = h.port
            for stat in sorted((*HOST_COUNTERS, *HOST_GAUGES)):
                kind = metrics_pb2.SimpleMetric.GAUGE if stat in HOST_GAUGES else 0
                hs.stats.add(name=stat, value=h.stats.get(stat, 0), type=kind)
            flags = set(h.health_flags)
            hh = hs.health_status
            hh.failed_active_health_check = "failed_active_hc" in flags
            hh.failed_outlier_check = "failed_outlier_check" in flags
            hh.failed_active_degraded_check = "degraded_active_hc" in flags
            hh.pending_dynamic_removal = "pending_dynamic_removal" in flags
            hh.pending_active_hc = "pending_active_hc" in flags
            hh.excluded_via_immediate_hc_fail = "excluded_via_immediate_hc_fail" in flags
            hh.active_hc_timeout = "active_hc_timeout" in flags
            if "failed_eds_health" in flags:
                hh.eds_health_status = health_check_pb2.UNHEALTHY
            elif "degraded_eds_health" in flags:
                hh.eds_health_status = health_check_pb2.DEGRADED
            elif "eds_status_draining" in flags:
                hh.eds_health_status = health_check_pb2.DRAINING
            else:
                hh.eds_health_status = health_check_pb2.HEALTHY
            if h.success_rate >= 0:
                hs.success_rate.value = h.success_rate
            if h.local_origin_success_rate >= 0:
                hs.local_origin_success_rate.value = h.local_origin_success_rate
            if h.region or h.zone or h.sub_zone:
                hs.locality.region = h.region
                hs.locality.zone = h.zone
                hs.locality.sub_zone = h.sub_zone
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=2)
