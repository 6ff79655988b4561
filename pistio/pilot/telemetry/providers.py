"""Extension providers of the mesh config, and the clusters of their backends.

A Telemetry names providers; the mesh config's ``extensionProviders`` say what they are
(Istio's ``fetchProvider``: names compare case-insensitively, the first one wins). A backend
service (``[<namespace>/]<hostname>``) is reached through its ordinary outbound cluster
(Istio's ``LookupCluster``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pistio.api.mesh import ExtensionProvider, MeshConfig
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Service
from pistio.pilot.networking.route_clusters import outbound_cluster
from pistio.pilot.telemetry.resolver import memo


def fetch_provider(mesh: MeshConfig, name: str) -> ExtensionProvider | None:
    wanted = name.lower()
    for provider in mesh.extension_providers:
        if provider.name.lower() == wanted:
            return provider
    return None


def default_providers(mesh: MeshConfig, kind: str) -> list[str]:
    """``defaultProviders.<kind>`` (``metrics``, ``tracing`` or ``access_logging``)."""
    defaults = mesh.default_providers
    return list(getattr(defaults, kind)) if defaults is not None else []


@dataclass(frozen=True, slots=True)
class Backend:
    """A provider's backend: its service hostname and the outbound cluster reaching it."""

    hostname: str
    cluster: str


class BackendNotFound(Exception):
    """Why a provider's service has no cluster (Istio's LookupCluster errors)."""


def _hosts(ctx: PushContext) -> dict[str, dict[str, Service]]:
    index: dict[str, dict[str, Service]] = defaultdict(dict)
    for svc in ctx.services:
        index[svc.hostname].setdefault(svc.namespace, svc)
    return dict(index)


def lookup_backend(ctx: PushContext, service: str, port: int) -> Backend:
    """The outbound cluster of ``service`` (``[<namespace>/]<hostname>``) at ``port``; raises
    :class:`BackendNotFound` when the registry has no such service, or has it in several
    namespaces and none was named."""
    if not service:
        raise BackendNotFound("service must not be empty")
    hosts = memo(ctx, "hosts", lambda: _hosts(ctx))
    namespace, sep, hostname = service.partition("/")
    if sep:
        svc = hosts.get(hostname, {}).get(namespace)
        if svc is not None:
            return Backend(svc.hostname, outbound_cluster(svc.hostname, port))
    else:
        by_ns = hosts.get(service, {})
        if len(by_ns) == 1:
            svc = next(iter(by_ns.values()))
            return Backend(svc.hostname, outbound_cluster(svc.hostname, port))
        if len(by_ns) > 1:
            raise BackendNotFound(
                f"found {service} in multiple namespaces {sorted(by_ns)}, specify the "
                "namespace explicitly in the format of <Namespace>/<Hostname>"
            )
    raise BackendNotFound(f"could not find service {service} in Istio service registry")
