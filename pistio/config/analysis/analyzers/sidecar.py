"""Sidecar analyzers: workload selectors that match nothing, overlap, or are missing."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


class SelectorAnalyzer(Analyzer):
    name = "sidecar.SelectorAnalyzer"
    description = (
        "Validates that sidecars that define a workload selector match at least one pod, and "
        "that there aren't multiple sidecar resources that select overlapping pods"
    )

    def analyze(self, ctx: Context) -> None:
        pods_to_sidecars: dict[int, list[Resource]] = {}
        pods: dict[int, Resource] = {}
        ns_sidecars: dict[str, list[Resource]] = {}
        for sc in ctx.each(u.SIDECAR):
            labels = u.mapping(sc.spec, "workload_selector.labels")
            if not labels:
                ns_sidecars.setdefault(u.ns_of(sc), []).append(sc)
                continue
            found = False
            for pod in ctx.each(u.POD):
                if u.ns_of(pod) == u.ns_of(sc) and u.selector_matches(labels, u.labels_of(pod)):
                    found = True
                    pods_to_sidecars.setdefault(id(pod), []).append(sc)
                    pods[id(pod)] = pod
            if not found:
                ctx.report(
                    sc,
                    "ReferencedResourceNotFound",
                    "selector",
                    u.selector_string(labels),
                    path=f"spec.workloadSelector.labels.{sorted(labels)[0]}",
                )
        namespaces = {ns.name: ns for ns in ctx.each(u.NAMESPACE)}
        reported: set[int] = set()
        for pod_id, sidecars in pods_to_sidecars.items():
            pod = pods[pod_id]
            ambient = u.pod_in_ambient(pod)
            if len(sidecars) == 1 and not ambient:
                continue
            names = [s.name for s in sidecars]
            for sc in sidecars:
                if ambient:
                    if id(sc) not in reported:
                        reported.add(id(sc))
                        ctx.report(
                            sc,
                            "IneffectivePolicy",
                            "selected workload is in ambient mode, the policy has no impact",
                        )
                    continue
                ctx.report(
                    sc,
                    "ConflictingSidecarWorkloadSelectors",
                    names,
                    u.ns_of(pod),
                    pod.name,
                    path="metadata.name",
                )
        for ns, sidecars in ns_sidecars.items():
            if u.namespace_in_ambient(namespaces.get(ns)):
                for sc in sidecars:
                    if id(sc) not in reported:
                        reported.add(id(sc))
                        ctx.report(
                            sc,
                            "IneffectivePolicy",
                            "namespace is in ambient mode, the policy has no impact",
                        )
                continue
            if len(sidecars) > 1:
                names = [s.name for s in sidecars]
                for sc in sidecars:
                    ctx.report(sc, "MultipleSidecarsWithoutWorkloadSelectors", names, ns)
