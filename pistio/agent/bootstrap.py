"""The proxy's xDS node identity, as Istio's pilot-agent builds it for Envoy's bootstrap.

- Node id: ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`` with type ``sidecar``
  or ``router`` (gateways). Pilot parses it to find the workload.
- Node cluster: ``<workload>.<namespace>`` (Istio's service cluster).
- Metadata (``ISTIO_META_*`` of pilot-agent): ``NAME``, ``NAMESPACE``, ``LABELS``,
  ``CLUSTER_ID``, ``ISTIO_VERSION``, ``INSTANCE_IPS``, ``WORKLOAD_NAME``, ``SERVICE_ACCOUNT``,
  ``INTERCEPTION_MODE`` (``REDIRECT``), ``MESH_ID``, ``ENVOY_STATUS_PORT`` and
  ``ENVOY_PROMETHEUS_PORT``, plus every ``ISTIO_META_<KEY>`` environment variable as ``<KEY>``
  (string) and every ``ISTIO_METAJSON_<KEY>`` as ``<KEY>`` (parsed JSON), as pilot-agent does.
- Locality: the ``istio-locality`` label (``region.zone.subzone``) or an explicit value.

Values come from command-line options first, then from the environment variables the
injector sets (``POD_NAME``, ``POD_NAMESPACE``, ``INSTANCE_IP``, ``SERVICE_ACCOUNT``,
``ISTIO_META_*``), then from defaults.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2

from pistio import __version__

NODE_TYPES = ("sidecar", "router")
LOCALITY_LABEL = "istio-locality"
DEFAULT_CLUSTER_ID = "Kubernetes"
DEFAULT_DOMAIN = "cluster.local"
STATUS_PORT = 15021
PROMETHEUS_PORT = 15090


@dataclass(frozen=True)
class NodeIdentity:
    node_type: str
    ip_addresses: tuple[str, ...]
    pod_name: str
    namespace: str
    domain: str = DEFAULT_DOMAIN
    cluster_id: str = DEFAULT_CLUSTER_ID
    service_account: str = "default"
    workload_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    mesh_id: str = DEFAULT_DOMAIN
    istio_version: str = __version__
    locality: tuple[str, str, str] = ("", "", "")
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    explicit_node_id: str = ""

    @property
    def node_id(self) -> str:
        if self.explicit_node_id:
            return self.explicit_node_id
        ips = ",".join(self.ip_addresses)
        return (f"{self.node_type}~{ips}~{self.pod_name}.{self.namespace}~"
                f"{self.namespace}.svc.{self.domain}")

    @property
    def service_cluster(self) -> str:
        """Envoy's ``node.cluster`` (the tracer's service name), as Istio's default
        ``tracingServiceName: APP_LABEL_AND_NAMESPACE`` makes it: ``<app>.<namespace>``, else
        ``<workload>.<namespace>``, else ``istio-proxy.<namespace>``."""
        app = self.labels.get("app")
        name = app or self.workload_name or self.pod_name or "istio-proxy"
        return f"{name}.{self.namespace}"

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = dict(self.extra_metadata)
        meta.update({
            "NAME": self.pod_name,
            "NAMESPACE": self.namespace,
            "LABELS": dict(self.labels),
            "CLUSTER_ID": self.cluster_id,
            "ISTIO_VERSION": self.istio_version,
            "INSTANCE_IPS": ",".join(self.ip_addresses),
            "WORKLOAD_NAME": self.workload_name or self.pod_name,
            "SERVICE_ACCOUNT": self.service_account,
            "INTERCEPTION_MODE": "REDIRECT",
            "MESH_ID": self.mesh_id,
            "ENVOY_STATUS_PORT": STATUS_PORT,
            "ENVOY_PROMETHEUS_PORT": PROMETHEUS_PORT,
        })
        return meta

    def node(self) -> base_pb2.Node:
        """The xDS ``Node`` the ADS stream opens with."""
        node = base_pb2.Node(id=self.node_id, cluster=self.service_cluster,
                             user_agent_name="pistio", user_agent_version=__version__)
        node.metadata.update(self.metadata())
        region, zone, sub_zone = self.locality
        if region or zone or sub_zone:
            node.locality.CopyFrom(base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone))
        return node


def _local_ip() -> str:
    # The address the host would use to reach the pod network; no packet is sent.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def parse_locality(text: str) -> tuple[str, str, str]:
    """``region/zone/subzone`` (Istio's notation) or the label's ``region.zone.subzone``."""
    sep = "/" if "/" in text else "."
    parts = (text.split(sep) + ["", "", ""])[:3]
    return parts[0], parts[1], parts[2]


def node_identity(
    node_type: str,
    *,
    env: Mapping[str, str] | None = None,
    pod: str | None = None,
    namespace: str | None = None,
    ip: str | None = None,
    node_id: str | None = None,
    cluster_id: str | None = None,
    service_account: str | None = None,
    labels: Mapping[str, str] | None = None,
    locality: str | None = None,
    domain: str = DEFAULT_DOMAIN,
) -> NodeIdentity:
    """The identity from options, then Istio's environment variables, then defaults."""
    if node_type not in NODE_TYPES:
        raise ValueError(f"proxy type must be one of {', '.join(NODE_TYPES)}, not {node_type!r}")
    env = os.environ if env is None else env
    extra: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("ISTIO_METAJSON_"):
            try:
                extra[key[len("ISTIO_METAJSON_"):]] = json.loads(value)
            except ValueError:
                extra[key[len("ISTIO_METAJSON_"):]] = value
        elif key.startswith("ISTIO_META_"):
            extra[key[len("ISTIO_META_"):]] = value
    pod_labels = dict(labels if labels is not None else extra.pop("LABELS", None) or {})
    pod_name = pod or env.get("POD_NAME") or socket.gethostname()
    ns = namespace or env.get("POD_NAMESPACE") or "default"
    ips = ip or env.get("INSTANCE_IP") or _local_ip()
    place = locality or pod_labels.get(LOCALITY_LABEL, "")
    return NodeIdentity(
        node_type=node_type,
        ip_addresses=tuple(i for i in ips.split(",") if i),
        pod_name=pod_name,
        namespace=ns,
        domain=domain,
        cluster_id=cluster_id or str(extra.pop("CLUSTER_ID", "")) or DEFAULT_CLUSTER_ID,
        service_account=service_account or env.get("SERVICE_ACCOUNT")
        or str(extra.pop("SERVICE_ACCOUNT", "")) or "default",
        workload_name=str(extra.pop("WORKLOAD_NAME", "")) or pod_labels.get("app", ""),
        labels={str(k): str(v) for k, v in pod_labels.items()},
        mesh_id=str(extra.pop("MESH_ID", "")) or env.get("TRUST_DOMAIN", "") or DEFAULT_DOMAIN,
        istio_version=str(extra.pop("ISTIO_VERSION", "")) or __version__,
        locality=parse_locality(place) if place else ("", "", ""),
        extra_metadata=extra,
        explicit_node_id=node_id or "",
    )
