"""Telemetry analyzers: empty providers, selectors matching nothing or overlapping."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


class ProviderAnalyzer(Analyzer):
    name = "telemetry.ProviderAnalyzer"
    description = "Validates that providers in telemetry resource is valid"

    def analyze(self, ctx: Context) -> None:
        if u.items(ctx.mesh_config, "default_providers.access_logging"):
            return
        for r in ctx.each(u.TELEMETRY):
            for log in u.items(r.spec, "access_logging"):
                if u.get(log, "disabled") is True or u.get(log, "disabled.value") is True:
                    continue
                if not u.items(log, "providers"):
                    ctx.report(r, "InvalidTelemetryProvider", r.name, u.ns_of(r))


class SelectorAnalyzer(Analyzer):
    name = "telemetry.SelectorAnalyzer"
    description = (
        "Validates that telemetries that define a selector match at least one pod, and that "
        "there aren't multiple telemetry resources that select overlapping pods"
    )

    def analyze(self, ctx: Context) -> None:
        pods_to_telemetries: dict[int, tuple[Resource, list[Resource]]] = {}
        for t in ctx.each(u.TELEMETRY):
            labels = u.mapping(t.spec, "selector.match_labels")
            if not labels:
                continue
            found = False
            for pod in ctx.each(u.POD):
                if u.ns_of(pod) == u.ns_of(t) and u.selector_matches(labels, u.labels_of(pod)):
                    found = True
                    pods_to_telemetries.setdefault(id(pod), (pod, []))[1].append(t)
            if not found:
                ctx.report(
                    t,
                    "ReferencedResourceNotFound",
                    "selector",
                    u.selector_string(labels),
                    path=f"spec.selector.matchLabels.{sorted(labels)[0]}",
                )
        for pod, telemetries in pods_to_telemetries.values():
            if len(telemetries) == 1:
                continue
            names = [t.name for t in telemetries]
            for t in telemetries:
                ctx.report(
                    t,
                    "ConflictingTelemetryWorkloadSelectors",
                    names,
                    u.ns_of(pod),
                    pod.name,
                    path="metadata.name",
                )


class DefaultSelectorAnalyzer(Analyzer):
    name = "telemetry.DefaultSelectorAnalyzer"
    description = "Validates that there aren't multiple telemetry resources that have no selector"

    def analyze(self, ctx: Context) -> None:
        by_ns: dict[str, list[Resource]] = {}
        for t in ctx.each(u.TELEMETRY):
            if (
                u.get(t.spec, "selector") is None
                and u.get(t.spec, "target_ref") is None
                and not u.items(t.spec, "target_refs")
            ):
                by_ns.setdefault(u.ns_of(t), []).append(t)
        for ns, telemetries in by_ns.items():
            if len(telemetries) > 1:
                names = [t.name for t in telemetries]
                for t in telemetries:
                    ctx.report(t, "MultipleTelemetriesWithoutWorkloadSelectors", names, ns)
