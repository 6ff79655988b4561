"""Services and their endpoints as the control plane sees them, whatever their source.

The Kubernetes registry (Service + Pods/EndpointSlices) and the ServiceEntry registry
(ServiceEntry + WorkloadEntry) both produce these; generators read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pistio.config.protocol import Protocol

DEFAULT_DOMAIN_SUFFIX = "cluster.local"
UNSPECIFIED_IP = "0.0.0.0"


class Resolution(Enum):
    """How a client finds a service's endpoints (Envoy cluster discovery type)."""

    CLIENT_SIDE_LB = "EDS"  # endpoints from the registry
    DNS_LB = "STRICT_DNS"
    DNS_ROUND_ROBIN_LB = "LOGICAL_DNS"
    PASSTHROUGH = "ORIGINAL_DST"  # the original destination address


class Source(Enum):
    KUBERNETES = "Kubernetes"
    SERVICE_ENTRY = "ServiceEntry"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    # The workload port traffic is delivered to; for Kubernetes a number or a container
    # port name, resolved per endpoint.
    target_port: int | str | None = None


@dataclass(slots=True, eq=False)
class Service:
    """A service: a hostname with ports, and where its endpoints come from."""

    hostname: str  # FQDN for Kubernetes services: reviews.default.svc.cluster.local
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    addresses: tuple[str, ...] = ()  # ClusterIP or ServiceEntry addresses; () when none
    resolution: Resolution = Resolution.CLIENT_SIDE_LB
    mesh_external: bool = False
    source: Source = Source.KUBERNETES
    labels: dict[str, str] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)
    # Namespaces this service is visible to: "*" everywhere, "." its own namespace.
    export_to: frozenset[str] = frozenset({"*"})
    # Set for Kubernetes ExternalName services: the DNS name they alias.
    external_name: str = ""
    service_accounts: tuple[str, ...] = ()
    # Resource the service came from, as "Kind namespace/name", for debug output.
    origin: str = ""

    def port_by_number(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.port == number:
                return p
        return None

    def port_by_name(self, name: str) -> ServicePort | None:
        for p in self.ports:
            if p.name == name:
                return p
        return None

    @property
    def vip(self) -> str:
        """The first address, or 0.0.0.0 for a service without one (headless, hostname-only)."""
        return self.addresses[0] if self.addresses else UNSPECIFIED_IP

    def visible_to(self, namespace: str) -> bool:
        return (
            "*" in self.export_to
            or namespace in self.export_to
            or ("." in self.export_to and namespace == self.namespace)
        )


class HealthStatus(Enum):
    HEALTHY = 1
    UNHEALTHY = 2
    DRAINING = 3


@dataclass(slots=True, eq=False)
class Endpoint:
    """One workload address serving one port of one service (Istio's IstioEndpoint)."""

    address: str
    port: int  # the workload port traffic goes to
    service_port_name: str
    hostname: str  # the service's hostname
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str = ""  # spiffe://<trust-domain>/ns/<ns>/sa/<sa>, or ""
    locality: str = ""  # region/zone/subzone
    health: HealthStatus = HealthStatus.HEALTHY
    weight: int = 1
    network: str = ""
    # "istio" when a sidecar (or ztunnel) terminates mutual TLS for it, else "disabled".
    tls_mode: str = "disabled"
    workload_name: str = ""
    pod_name: str = ""

    @property
    def healthy(self) -> bool:
        return self.health is HealthStatus.HEALTHY


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """An endpoint together with the service and port it serves (for inbound config)."""

    service: Service
    port: ServicePort
    endpoint: Endpoint
