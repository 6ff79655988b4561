"""Service registries: where services and endpoints come from.

Each source turns its inputs into :class:`~pistio.pilot.model.service.Service` and
:class:`~pistio.pilot.model.service.Endpoint` records; :class:`Snapshot` is what one source
offers at a moment; :class:`AggregateRegistry` combines sources and tells listeners when
something changed, and whether only endpoints did (an EDS-only push).
"""

from pistio.pilot.registry.aggregate import AggregateRegistry, RegistryListener, Snapshot

__all__ = ["AggregateRegistry", "RegistryListener", "Snapshot"]
