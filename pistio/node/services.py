"""Services on the node: their endpoints, DNS records and kube-proxy NAT entries (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pistio.node.network.service_nat import ServiceNat

DOMAIN = "cluster.local"


@dataclass(frozen=True)
class PodView:
    """What service selection needs to know of a running pod."""

    name: str
    namespace: str
    ip: str
    labels: Mapping[str, str]
    ready: bool
    containers: Sequence[Mapping[str, Any]]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def target_port(pod: PodView, port: Mapping[str, Any]) -> int | None:
    target = port.get("targetPort")
    if target in (None, "", 0):
        return int(port.get("port", 0)) or None
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in pod.containers:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p.get("containerPort", 0)) or None
    return None


def service_pods(service: Mapping[str, Any], pods: Iterable[PodView]) -> list[PodView]:
    meta = service.get("metadata") or {}
    selector = (service.get("spec") or {}).get("selector") or {}
    ns = meta.get("namespace", "default")
    return [p for p in pods if p.namespace == ns and p.ip and _selects(selector, p.labels)]


def nat_entries(services: Iterable[Mapping[str, Any]], pods: Sequence[PodView]) -> list[ServiceNat]:
    """kube-proxy's view: ClusterIP:port → ready endpoints, for pods without a sidecar."""
    out = []
    for svc in services:
        spec = svc.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None":
            continue
        ready = [p for p in service_pods(svc, pods) if p.ready]
        for port in spec.get("ports") or []:
            endpoints = tuple(
                (p.ip, tp) for p in ready if (tp := target_port(p, port)) is not None
            )
            out.append(ServiceNat(cluster_ip, int(port.get("port", 0)),
                                  str(port.get("protocol") or "TCP"), endpoints))
    return out


def dns_records(services: Iterable[Mapping[str, Any]], pods: Sequence[PodView]
                ) -> dict[str, list[str]]:
    """``<svc>.<ns>.svc.cluster.local`` → ClusterIP, or ready pod IPs for a headless service."""
    out: dict[str, list[str]] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        fqdn = f"{meta.get('name')}.{meta.get('namespace', 'default')}.svc.{DOMAIN}"
        ip = spec.get("clusterIP")
        if ip and ip != "None":
            out[fqdn] = [ip]
        else:
            out[fqdn] = [p.ip for p in service_pods(svc, pods) if p.ready]
    return out
