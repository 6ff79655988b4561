"""The proxy's config as the data path reads it: one immutable ``ConfigSnapshot``, swapped
whole.

A snapshot holds the *active* resources only (what Envoy would serve from: warmed clusters
with their current endpoints, warmed listeners, the route tables they use). The data path
reads ``SnapshotHolder.current`` once when a connection or stream starts and keeps that object
until it ends, so an update never changes config under an in-flight request, and a swap is a
single attribute assignment (atomic for every reader in the process).

``build_snapshot`` is the one place that assembles a snapshot from compiled resources; the
agent and every worker call it with the same inputs and get equal snapshots with the same
``version``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pistio.proxy.config.cluster_config import ClusterConfig, DiscoveryType
from pistio.proxy.config.endpoints import HostSet, LoadAssignment
from pistio.proxy.config.listener_config import ListenerConfig
from pistio.proxy.config.route_table import RouteTable
from pistio.proxy.runtime.resource_compiler import CompiledCluster, CompiledListener
from pistio.proxy.tls.secrets import Secret

log = logging.getLogger("pistio.proxy.snapshot")

def _empty() -> Mapping:
    return MappingProxyType({})


def empty_assignment(cluster_name: str) -> LoadAssignment:
    """What an EDS cluster serves from when it warmed without endpoints (Envoy: no hosts;
    requests get 503 with flag UH)."""
    return LoadAssignment(cluster_name, (HostSet(0, (), ()),))


@dataclass(frozen=True, slots=True)
class ActiveCluster:
    """A warmed cluster: its compiled config and the endpoints it balances over now
    (``None`` for ORIGINAL_DST clusters, whose host is each connection's destination)."""

    config: ClusterConfig
    assignment: LoadAssignment | None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    version: int  # increases by one with every snapshot the agent publishes
    listeners: Mapping[str, ListenerConfig] = field(default_factory=_empty)
    # RDS route configurations by name.
    route_tables: Mapping[str, RouteTable] = field(default_factory=_empty)
    clusters: Mapping[str, ActiveCluster] = field(default_factory=_empty)
    # Inline ``route_config`` of an HCM: (listener name, chain index; -1 = default chain).
    inline_route_tables: Mapping[tuple[str, int], RouteTable] = field(default_factory=_empty)
    # Bound listeners by (address, port), for ``use_original_dst`` hand-off.
    listeners_by_address: Mapping[tuple[str, int], ListenerConfig] = field(default_factory=_empty)
    # xDS version_info of the last accepted response, by type URL (for logs and dumps).
    xds_versions: Mapping[str, str] = field(default_factory=_empty, compare=False)
    # SDS secrets by name (pistio.proxy.tls.secrets): what TLS contexts are built from.
    secrets: Mapping[str, Secret] = field(default_factory=_empty)

    def route_table(self, listener: str, chain_index: int, rds_name: str | None) -> (
        RouteTable | None
    ):
        """The route table of one HCM: its RDS one by name, else its inline one."""
        if rds_name is not None:
            return self.route_tables.get(rds_name)
        return self.inline_route_tables.get((listener, chain_index))


EMPTY_SNAPSHOT = ConfigSnapshot(version=0)


def build_snapshot(
    version: int,
    clusters: Mapping[str, CompiledCluster],
    assignments: Mapping[str, LoadAssignment],
    listeners: Mapping[str, CompiledListener],
    routes: Mapping[str, RouteTable],
    xds_versions: Mapping[str, str] | None = None,
    secrets: Mapping[str, Secret] | None = None,
) -> ConfigSnapshot:
    """Assemble a snapshot from *active* compiled resources. ``assignments`` are EDS
    ClusterLoadAssignments by service name; an EDS cluster without one gets no hosts."""
    active: dict[str, ActiveCluster] = {}
    for name, compiled in clusters.items():
        config = compiled.config
        if config.discovery_type is DiscoveryType.EDS:
            service = compiled.eds_service_name or name
            assignment = assignments.get(service) or empty_assignment(service)
        elif config.discovery_type is DiscoveryType.ORIGINAL_DST:
            assignment = None
        else:
            assignment = config.load_assignment
        active[name] = ActiveCluster(config, assignment)
    inline: dict[tuple[str, int], RouteTable] = {}
    by_address: dict[tuple[str, int], ListenerConfig] = {}
    for name, listener in listeners.items():
        for index, table in listener.inline_routes.items():
            inline[(name, index)] = table
        cfg = listener.config
        by_address[(cfg.address, cfg.port)] = cfg
    return ConfigSnapshot(
        version=version,
        listeners=MappingProxyType({n: lc.config for n, lc in listeners.items()}),
        route_tables=MappingProxyType(dict(routes)),
        clusters=MappingProxyType(active),
        inline_route_tables=MappingProxyType(inline),
        listeners_by_address=MappingProxyType(by_address),
        xds_versions=MappingProxyType(dict(xds_versions or {})),
        secrets=MappingProxyType(dict(secrets or {})),
    )


SnapshotObserver = Callable[[ConfigSnapshot], None]


class SnapshotHolder:
    """The current snapshot of one process, and who wants to hear about a new one.

    The data path reads ``current`` (one attribute load); runtime state that must follow
    config (the cluster manager, listener sockets) registers an observer, called after the
    swap in registration order. An observer that raises is logged and does not stop the
    others: the snapshot is already in force.
    """

    __slots__ = ("current", "_observers")

    def __init__(self, initial: ConfigSnapshot = EMPTY_SNAPSHOT) -> None:
        self.current = initial
        self._observers: list[SnapshotObserver] = []

    def subscribe(self, observer: SnapshotObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: SnapshotObserver) -> None:
        self._observers.remove(observer)

    def publish(self, snapshot: ConfigSnapshot) -> None:
        self.current = snapshot
        for observer in list(self._observers):
            try:
                observer(snapshot)
            except Exception:  # one broken observer must not hide the snapshot from others
                log.exception("snapshot observer %r failed on version %d", observer,
                              snapshot.version)
