"""Combining registries, and telling the control plane what changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pistio.pilot.model.service import Endpoint, Service


@dataclass(frozen=True)
class Snapshot:
    """Everything one registry offers at one moment."""

    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()


# Called with (endpoints_only, hostnames changed).
RegistryListener = Callable[[bool, frozenset[str]], None]


@dataclass
class AggregateRegistry:
    """Named sources (``kubernetes``, ``serviceentry``, ``runtime``...) merged into one view.

    A source replaces its whole snapshot with :meth:`update`; listeners learn whether any
    service definition changed or only endpoints did.
    """

    _sources: dict[str, Snapshot] = field(default_factory=dict)
    _listeners: list[RegistryListener] = field(default_factory=list)

    def subscribe(self, listener: RegistryListener) -> None:
        self._listeners.append(listener)

    def update(self, source: str, snapshot: Snapshot) -> None:
        old = self._sources.get(source, Snapshot())
        self._sources[source] = snapshot
        services_changed = _service_keys(old.services) != _service_keys(snapshot.services)
        changed = _changed_hosts(old, snapshot)
        if not services_changed and not changed:
            return
        for listener in self._listeners:
            listener(not services_changed, frozenset(changed))

    def services(self) -> list[Service]:
        return [s for snap in self._sources.values() for s in snap.services]

    def endpoints(self) -> list[Endpoint]:
        return [e for snap in self._sources.values() for e in snap.endpoints]


def _service_keys(services: tuple[Service, ...]) -> list[tuple]:
    return sorted(
        (
            s.hostname,
            s.namespace,
            s.ports,
            s.addresses,
            s.resolution.value,
            s.mesh_external,
            tuple(sorted(s.export_to)),
            tuple(sorted(s.labels.items())),
            tuple(sorted(s.selector.items())),
            s.external_name,
            # Istio pushes in full when a service's identities change (CDS carries them
            # as the SANs to verify).
            tuple(sorted(s.service_accounts)),
        )
        for s in services
    )


def _endpoint_key(e: Endpoint) -> tuple:
    return (
        e.hostname,
        e.address,
        e.port,
        e.service_port_name,
        tuple(sorted(e.labels.items())),
        e.service_account,
        e.locality,
        e.health.value,
        e.weight,
        e.tls_mode,
        e.network,
    )


def _changed_hosts(old: Snapshot, new: Snapshot) -> set[str]:
    before = {_endpoint_key(e) for e in old.endpoints}
    after = {_endpoint_key(e) for e in new.endpoints}
    return {k[0] for k in before ^ after}
