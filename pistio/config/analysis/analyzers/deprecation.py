"""deprecation.DeprecationAnalyzer: deprecated Istio fields and removed Istio kinds."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

# Istio CRDs that have been removed from Istio's installation.
REMOVED_CRDS = (
    ("rbac.istio.io", "ClusterRbacConfig"),
    ("rbac.istio.io", "RbacConfig"),
    ("rbac.istio.io", "ServiceRole"),
    ("rbac.istio.io", "ServiceRoleBinding"),
)


class DeprecationAnalyzer(Analyzer):
    name = "deprecation.DeprecationAnalyzer"
    description = "Checks for deprecated Istio types and fields"

    def analyze(self, ctx: Context) -> None:
        for r in ctx.each(u.VIRTUAL_SERVICE):
            for route in u.items(r.spec, "http"):
                percent = u.to_int(u.get(route, "fault.delay.percent")) or 0
                if percent > 0:
                    ctx.report(
                        r,
                        "Deprecated",
                        "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                    )
        for r in ctx.each(u.SIDECAR):
            if u.get(r.spec, "outbound_traffic_policy.egress_proxy") is not None:
                ctx.report(r, "Deprecated", "OutboundTrafficPolicy.EgressProxy ignored")
        for r in ctx.each(u.CRD):
            group = u.text(r.obj, "spec.group")
            kind = u.text(r.obj, "spec.names.kind")
            if (group, kind) in REMOVED_CRDS:
                ctx.report(r, "Deprecated", f"Custom resource type {group} {kind} is removed")
