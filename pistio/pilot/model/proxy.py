"""A connected proxy (sidecar, gateway, or proxyless gRPC client) as Pilot knows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pistio.pilot.model.service import DEFAULT_DOMAIN_SUFFIX


class NodeType(Enum):
    SIDECAR = "sidecar"
    ROUTER = "router"  # gateways
    WAYPOINT = "waypoint"
    ZTUNNEL = "ztunnel"


@dataclass(slots=True, eq=False)
class Proxy:
    """Parsed from the xDS node: ``<type>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``."""

    id: str
    type: NodeType
    ip_addresses: tuple[str, ...]
    pod_name: str
    namespace: str
    dns_domain: str
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # region/zone/subzone from the xDS node's locality ("" when the node gives none).
    locality: str = ""

    @property
    def config_namespace(self) -> str:
        return self.namespace

    @property
    def generator(self) -> str:
        """``grpc`` for proxyless gRPC clients, else "" (Envoy flavour)."""
        return str(self.metadata.get("GENERATOR", ""))

    @property
    def is_proxyless_grpc(self) -> bool:
        return self.generator == "grpc"

    @property
    def cluster_id(self) -> str:
        return str(self.metadata.get("CLUSTER_ID", "Kubernetes"))

    @property
    def service_account(self) -> str:
        return str(self.metadata.get("SERVICE_ACCOUNT", ""))

    @property
    def istio_version(self) -> str:
        return str(self.metadata.get("ISTIO_VERSION", ""))

    @property
    def workload_name(self) -> str:
        return str(self.metadata.get("WORKLOAD_NAME", ""))


def parse_node_id(
    node_id: str, metadata: dict[str, Any] | None = None, locality: str = ""
) -> Proxy:
    """Parse an Istio node id; ValueError if it does not have Istio's four parts."""
    parts = node_id.split("~")
    if len(parts) != 4:
        raise ValueError(f"invalid node id {node_id!r}: expected type~ip~pod.namespace~domain")
    type_text, ips, pod_ns, domain = parts
    try:
        node_type = NodeType(type_text)
    except ValueError:
        raise ValueError(f"invalid node type {type_text!r} in node id {node_id!r}") from None
    pod, _, ns = pod_ns.rpartition(".")
    if not pod:
        pod, ns = pod_ns, ""
    meta = dict(metadata or {})
    namespace = str(meta.get("NAMESPACE") or ns or domain.split(".", 1)[0] or "default")
    labels = meta.get("LABELS") or {}
    return Proxy(
        id=node_id,
        type=node_type,
        ip_addresses=tuple(ip for ip in ips.split(",") if ip),
        pod_name=pod,
        namespace=namespace,
        dns_domain=domain or f"{namespace}.svc.{DEFAULT_DOMAIN_SUFFIX}",
        metadata=meta,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        locality=locality,
    )
