"""auth.AuthorizationPoliciesAnalyzer: policies that select no workload or name unknown namespaces."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.analyzers.deployment import pod_in_mesh
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


def namespace_match(ns: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return ns.endswith(pattern[1:])
    if pattern.endswith("*"):
        return ns.startswith(pattern[:-1])
    return ns.lower() == pattern.lower()


class AuthorizationPoliciesAnalyzer(Analyzer):
    name = "auth.AuthorizationPoliciesAnalyzer"
    description = "Checks the validity of authorization policies"

    def analyze(self, ctx: Context) -> None:
        pods_by_ns: dict[str, list[dict[str, str]]] = {}
        for pod in ctx.each(u.POD):
            entry = pods_by_ns.setdefault(u.ns_of(pod), [])
            if pod_in_mesh(ctx, pod) or u.pod_in_ambient(pod):
                entry.append(u.labels_of(pod))
        root_ns = u.text(ctx.mesh_config, "root_namespace") or ctx.istio_namespace
        namespaces = [ns.name for ns in ctx.each(u.NAMESPACE)]
        for ap in ctx.each(u.AUTHORIZATION_POLICY):
            self._no_matching_workloads(ctx, ap, pods_by_ns, root_ns)
            self._namespaces_not_found(ctx, ap, namespaces)

    @staticmethod
    def _no_matching_workloads(
        ctx: Context, ap: Resource, pods_by_ns: dict[str, list[dict[str, str]]], root_ns: str
    ) -> None:
        ns = u.ns_of(ap)
        selector = u.get(ap.spec, "selector")
        labels = u.mapping(selector, "match_labels")
        if ns == root_ns:
            if selector is not None and not any(
                u.selector_matches(labels, pl) for pods in pods_by_ns.values() for pl in pods
            ):
                ctx.report(ap, "NoMatchingWorkloadsFound", u.selector_string(labels))
            return
        if selector is None:
            if not pods_by_ns.get(ns):
                ctx.report(ap, "NoMatchingWorkloadsFound", "")
            return
        if not any(u.selector_matches(labels, pl) for pl in pods_by_ns.get(ns, [])):
            ctx.report(ap, "NoMatchingWorkloadsFound", u.selector_string(labels))

    @staticmethod
    def _namespaces_not_found(ctx: Context, ap: Resource, namespaces: list[str]) -> None:
        for i, rule in enumerate(u.items(ap.spec, "rules")):
            for j, frm in enumerate(u.items(rule, "from")):
                source = u.get(frm, "source")
                for field_name, json_name in (
                    ("namespaces", "namespaces"),
                    ("not_namespaces", "notNamespaces"),
                ):
                    for k, pattern in enumerate(u.items(source, field_name)):
                        if not any(namespace_match(n, pattern) for n in namespaces):
                            ctx.report(
                                ap,
                                "ReferencedResourceNotFound",
                                "namespace",
                                pattern,
                                path=f"spec.rules[{i}].from[{j}].source.{json_name}[{k}]",
                            )
