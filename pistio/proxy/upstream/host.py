"""An upstream host as one worker sees it: the endpoint from EDS plus the worker's runtime
counters (active requests and connections) and health flags (outlier ejection, active health
checking).

Envoy keeps one ``Host`` object per endpoint and shares it between the load balancer, the
connection pools and outlier detection; so do we, per worker. Counters are plain attributes
(``__slots__``), incremented by the router and pools without locks: one worker, one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pistio.proxy.config.endpoints import EndpointConfig, LoadAssignment

# Hosts present when a cluster first gets endpoints are not warming up (Envoy's slow start
# applies only to hosts added later).
NOT_WARMING = float("-inf")


class Host:
    """One upstream endpoint with its per-worker state."""

    __slots__ = (
        "config",
        "address",
        "port",
        "key",
        "weight",
        "priority",
        "locality_index",
        "eds_healthy",
        "eds_degraded",
        "ejected",
        "hc_failed",
        "hc_degraded",
        "hc_pending",
        "hc_timeout",
        "pending_removal",
        "active_requests",
        "active_connections",
        "created_at",
    )

    def __init__(
        self, config: EndpointConfig, locality_index: int = 0, created_at: float = NOT_WARMING
    ) -> None:
        self.config = config
        self.address = config.address
        self.port = config.port
        self.key = config.address_key
        self.weight = config.weight
        self.priority = config.priority
        self.locality_index = locality_index
        self.eds_healthy = config.eds_healthy
        self.eds_degraded = config.eds_degraded
        self.ejected = False
        # Active health checking (Envoy's host health flags): FAILED_ACTIVE_HC,
        # DEGRADED_ACTIVE_HC, PENDING_ACTIVE_HC (excluded from balancing until its first
        # check), ACTIVE_HC_TIMEOUT; and PENDING_DYNAMIC_REMOVAL (gone from discovery, kept
        # while it passes its checks).
        self.hc_failed = False
        self.hc_degraded = False
        self.hc_pending = False
        self.hc_timeout = False
        self.pending_removal = False
        self.active_requests = 0
        self.active_connections = 0
        self.created_at = created_at

    @property
    def healthy(self) -> bool:
        """Usable by the load balancer outside panic: healthy in EDS, not ejected, not failing
        (or degraded by) active health checks."""
        return self.eds_healthy and not (self.ejected or self.hc_failed or self.hc_degraded)

    @property
    def degraded(self) -> bool:
        """Envoy's coarse health DEGRADED: degraded by EDS or by active checks, failing
        nothing."""
        return (self.eds_degraded or (self.eds_healthy and self.hc_degraded)) and not (
            self.ejected or self.hc_failed
        )

    @property
    def health_flags(self) -> tuple[str, ...]:
        """Envoy's ``/clusters`` health flag names that apply to this host."""
        flags = []
        if self.hc_failed:
            flags.append("failed_active_hc")
        if self.ejected:
            flags.append("failed_outlier_check")
        if not self.eds_healthy and not self.eds_degraded:
            flags.append("failed_eds_health")
        if self.hc_degraded:
            flags.append("degraded_active_hc")
        if self.eds_degraded:
            flags.append("degraded_eds_health")
        if self.pending_removal:
            flags.append("pending_dynamic_removal")
        if self.hc_pending:
            flags.append("pending_active_hc")
        if self.hc_timeout:
            flags.append("active_hc_timeout")
        return tuple(flags)

    def __repr__(self) -> str:
        return f"Host({self.key}, w={self.weight}, p={self.priority})"


def build_hosts(
    assignment: LoadAssignment,
    previous: Mapping[str, Host] | None = None,
    now: float = NOT_WARMING,
) -> tuple[tuple[tuple[Host, ...], ...], ...]:
    """Hosts per priority, per locality group, for an assignment.

    A host whose ``ip:port`` was already known keeps its runtime state (ejection, active
    counts): an EDS update must not reset outlier detection. New hosts start at ``now`` (for
    slow start); pass ``NOT_WARMING`` on a cluster's first assignment.
    """
    previous = previous or {}
    out = []
    for host_set in assignment.priorities:
        groups = []
        for index, group in enumerate(host_set.localities):
            hosts = []
            for ep in group.endpoints:
                old = previous.get(ep.address_key)
                if old is not None:
                    host = old
                    # Config (weight, health, locality) follows EDS; runtime state stays.
                    host.config = ep
                    host.weight = ep.weight
                    host.priority = ep.priority
                    host.locality_index = index
                    host.eds_healthy = ep.eds_healthy
                    host.eds_degraded = ep.eds_degraded
                    host.pending_removal = False
                else:
                    host = Host(ep, index, now)
                hosts.append(host)
            groups.append(tuple(hosts))
        out.append(tuple(groups))
    return tuple(out)


def hosts_by_key(hosts: Iterable[Host]) -> dict[str, Host]:
    return {h.key: h for h in hosts}
