"""Gateway API analyzers: selectors on gateway pods, and CRD bundle versions."""

from __future__ import annotations

import re

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

POLICY_KINDS = (u.AUTHORIZATION_POLICY, u.REQUEST_AUTHENTICATION, u.TELEMETRY, u.WASM_PLUGIN)
BUNDLE_VERSION = "gateway.networking.k8s.io/bundle-version"
# Gateway API CRDs older than these are ignored by istiod.
MINIMUM_CRD_VERSIONS = {
    "grpcroutes.gateway.networking.k8s.io": (1, 1, 0),
    "backendtlspolicies.gateway.networking.k8s.io": (1, 4, 0),
    "tlsroutes.gateway.networking.k8s.io": (1, 5, 0),
}
_SEMVER = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


class SelectorAnalyzer(Analyzer):
    name = "k8sgateway.SelectorAnalyzer"
    description = "Check that selectors are effective for Kubernetes gateway"

    def analyze(self, ctx: Context) -> None:
        gateway_pods: dict[str, list[dict[str, str]]] = {}
        for pod in ctx.each(u.POD):
            labels = u.labels_of(pod)
            if u.GATEWAY_NAME_LABEL in labels:
                gateway_pods.setdefault(u.ns_of(pod), []).append(labels)
        for key in POLICY_KINDS:
            for r in ctx.each(key):
                if u.get(r.spec, "target_ref") is not None or u.items(r.spec, "target_refs"):
                    continue
                selector = u.get(r.spec, "selector")
                if selector is None:
                    continue
                wanted = u.mapping(selector, "match_labels")
                for labels in gateway_pods.get(u.ns_of(r), []):
                    if u.selector_matches(wanted, labels):
                        ctx.report(r, "IneffectiveSelector", labels[u.GATEWAY_NAME_LABEL])


def _semver(text: str) -> tuple[tuple[int, int, int], str] | None:
    m = _SEMVER.match(text.strip())
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)), m.group(4) or ""


class CRDVersionAnalyzer(Analyzer):
    name = "k8sgateway.CRDVersionAnalyzer"
    description = (
        "Checks Gateway API CRDs are at the minimum version required by this Istio version"
    )

    def analyze(self, ctx: Context) -> None:
        for crd in ctx.each(u.CRD):
            minimum = MINIMUM_CRD_VERSIONS.get(crd.name)
            bundle = u.annotations_of(crd).get(BUNDLE_VERSION)
            if minimum is None or bundle is None:
                continue
            parsed = _semver(bundle)
            if parsed is None:
                continue
            version, pre = parsed
            if version < minimum:
                installed = ".".join(map(str, version)) + (f"-{pre}" if pre else "")
                ctx.report(
                    crd,
                    "GatewayAPICRDVersionBelowMinimum",
                    crd.name,
                    installed,
                    ".".join(map(str, minimum)),
                )
