"""API model: istio.type.v1beta1 — the selector and target reference messages policies share."""

from __future__ import annotations

from pydantic import Field

from pistio.api.base import IstioModel, proto_enum


class WorkloadSelector(IstioModel):
    """Istio's workload selector: the labels of the pods/VMs a policy applies to."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class PortSelector(IstioModel):
    """Istio's port selector: a listener port a policy applies to."""

    number: int = 0


WorkloadMode = proto_enum("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER")
"""istio.type.v1beta1.WorkloadMode: the traffic direction, relative to the workload."""


class PolicyTargetReference(IstioModel):
    """Istio's policy target reference (GEP-713): the resource a policy attaches to."""

    group: str = ""
    kind: str = ""
    name: str = ""
    namespace: str | None = None
