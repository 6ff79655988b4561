"""deployment.MultiServiceAnalyzer: a workload's Services must agree on ports and protocols."""

from __future__ import annotations

from typing import Any

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource

GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed"
WAYPOINT_CONTROLLER = "istio.io-mesh-controller"


def _in_mesh(
    ctx: Context, annotations: dict, labels: dict, namespace: str, containers: list
) -> bool:
    """``util.inMesh``: a proxy container, the inject label/annotation, or the namespace label."""
    if any(u.text(c, "name") == u.ISTIO_PROXY and u.text(c, "image") for c in containers):
        return True
    for source in (labels, annotations):
        if u.SIDECAR_INJECT in source:
            return source[u.SIDECAR_INJECT] == "true"
    ns = ctx.find(u.NAMESPACE, "", namespace)
    if ns is not None:
        return u.labels_of(ns).get(u.INJECTION_LABEL) == "enabled"
    return False


def deployment_in_mesh(ctx: Context, r: Resource) -> bool:
    return _in_mesh(
        ctx,
        u.mapping(r.obj, "spec.template.metadata.annotations"),
        u.mapping(r.obj, "spec.template.metadata.labels"),
        u.ns_of(r),
        u.items(r.obj, "spec.template.spec.containers"),
    )


def pod_in_mesh(ctx: Context, r: Resource) -> bool:
    return _in_mesh(
        ctx,
        u.annotations_of(r),
        u.labels_of(r),
        u.ns_of(r),
        u.items(r.obj, "spec.containers") + u.items(r.obj, "spec.init_containers"),
    )


class MultiServiceAnalyzer(Analyzer):
    name = "deployment.MultiServiceAnalyzer"
    description = "Checks association between services and pods"

    def analyze(self, ctx: Context) -> None:
        for d in ctx.each(u.DEPLOYMENT):
            if u.labels_of(d).get(GATEWAY_MANAGED_LABEL) == WAYPOINT_CONTROLLER:
                continue
            if not deployment_in_mesh(ctx, d):
                continue
            services = self._matching_services(ctx, d)
            self._check_protocols(ctx, d, services)
            self._check_target_ports(ctx, d, services)

    @staticmethod
    def _matching_services(ctx: Context, d: Resource) -> list[tuple[str, Any]]:
        labels = u.mapping(d.obj, "spec.template.metadata.labels")
        out = []
        for svc in ctx.each(u.SERVICE):
            sel = u.mapping(svc.obj, "spec.selector")
            if sel and u.selector_matches(sel, labels) and u.ns_of(svc) == u.ns_of(d):
                out.append((u.full_name(svc), svc.obj))
        return out

    @staticmethod
    def _check_protocols(ctx: Context, d: Resource, services: list[tuple[str, Any]]) -> None:
        by_port: dict[int, dict[str, list[str]]] = {}
        for name, svc in services:
            for p in u.items(svc, "spec.ports"):
                port = u.to_int(u.get(p, "port")) or 0
                proto = u.text(p, "protocol") or "TCP"
                by_port.setdefault(port, {}).setdefault(proto, []).append(name)
        for port, protos in by_port.items():
            if len(protos) > 1:
                names = sorted(n for ns in protos.values() for n in ns)
                ctx.report(
                    d,
                    "DeploymentAssociatedToMultipleServices",
                    d.name,
                    port,
                    names,
                    path="metadata.name",
                )

    @staticmethod
    def _check_target_ports(ctx: Context, d: Resource, services: list[tuple[str, Any]]) -> None:
        by_target: dict[str, dict[int, str]] = {}
        for name, svc in services:
            for p in u.items(svc, "spec.ports"):
                port = u.to_int(u.get(p, "port")) or 0
                target = u.get(p, "target_port")
                target_text = "" if target is None else str(target)
                if target_text in ("", "0"):
                    target_text = str(port)
                by_target.setdefault(target_text, {})[port] = name
        for target, ports in by_target.items():
            if len(ports) > 1:
                ctx.report(
                    d,
                    "DeploymentConflictingPorts",
                    d.name,
                    sorted(ports.values()),
                    target,
                    sorted(ports),
                    path="metadata.name",
                )
