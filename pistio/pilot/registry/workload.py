"""Facts about a workload (pod or WorkloadEntry) that every registry derives the same way."""

from __future__ import annotations

# Istio's labels and annotations for these facts.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
LOCALITY_LABEL = "istio-locality"  # region.zone.subzone, dots for slashes
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account or 'default'}"


def locality_of(labels: dict[str, str], explicit: str = "") -> str:
    """``region/zone/subzone`` from an explicit value or the workload's topology labels."""
    if explicit:
        return explicit
    if LOCALITY_LABEL in labels:
        return labels[LOCALITY_LABEL].replace(".", "/")
    parts = [
        labels.get(REGION_LABEL, ""),
        labels.get(ZONE_LABEL, ""),
        labels.get(SUBZONE_LABEL, ""),
    ]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def tls_mode_of(labels: dict[str, str], has_sidecar: bool) -> str:
    """``istio`` when the workload terminates Istio mutual TLS, else ``disabled``."""
    mode = labels.get(TLS_MODE_LABEL)
    if mode:
        return mode
    return "istio" if has_sidecar else "disabled"
