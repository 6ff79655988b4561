"""DestinationRule analyzers: TLS without CA certificates, subsets that select no pods."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.analysis.services import destination_host, service_entry_host_map

VERIFYING_MODES = ("SIMPLE", "MUTUAL")
TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)
HOSTNAME_LABEL = "kubernetes.io/hostname"


class CaCertificateAnalyzer(Analyzer):
    name = "destinationrule.CaCertificateAnalyzer"
    description = "Checks if caCertificates is set when TLS mode is SIMPLE/MUTUAL"

    def analyze(self, ctx: Context) -> None:
        for dr in ctx.each(u.DESTINATION_RULE):
            host = u.text(dr.spec, "host")
            name, ns = u.full_name(dr), u.ns_of(dr)
            tls = u.get(dr.spec, "traffic_policy.tls")
            mode = u.enum_name(tls, "mode", "DISABLE")
            if mode in VERIFYING_MODES and not self._has_ca(tls):
                ctx.report(
                    dr,
                    "NoServerCertificateVerificationDestinationLevel",
                    name,
                    ns,
                    mode,
                    host,
                    path="spec.trafficPolicy.tls.mode",
                )
            for i, p in enumerate(u.items(dr.spec, "traffic_policy.port_level_settings")):
                tls = u.get(p, "tls")
                mode = u.enum_name(tls, "mode", "DISABLE")
                if mode in VERIFYING_MODES and not self._has_ca(tls):
                    port = u.get(p, "port")
                    ctx.report(
                        dr,
                        "NoServerCertificateVerificationPortLevel",
                        name,
                        ns,
                        mode,
                        host,
                        _port_string(port),
                        path=f"spec.trafficPolicy.portLevelSettings[{i}].tls.mode",
                    )

    @staticmethod
    def _has_ca(tls: object) -> bool:
        # a credentialName Secret carries the CA certificate as well
        return bool(u.text(tls, "ca_certificates") or u.text(tls, "credential_name"))


def _port_string(port: object) -> str:
    """The proto text form of a PortSelector, as istioctl prints it (``number:9080``)."""
    number = u.to_int(u.get(port, "number"))
    return f"number:{number}" if number else ""


class SubsetSelectPodAnalyzer(Analyzer):
    name = "destinationrule.SubsetSelectPodAnalyzer"
    description = "Checks if pods are selected by subsets in destination rules."

    def analyze(self, ctx: Context) -> None:
        hosts = service_entry_host_map(ctx)
        nodes = {n.name: u.labels_of(n) for n in ctx.each(u.NODE)}
        pending: list[tuple[object, str, dict[str, str]]] = []
        for dr in ctx.each(u.DESTINATION_RULE):
            host = u.text(dr.spec, "host")
            svc = destination_host(u.ns_of(dr), u.items(dr.spec, "export_to"), host, hosts)
            if svc is None:
                ctx.report(dr, "UnknownDestinationRuleHost", host)
                continue
            for ss in u.items(dr.spec, "subsets"):
                selector = {**svc.workload_labels, **u.mapping(ss, "labels")}
                pending.append((dr, u.text(ss, "name"), selector))
        matched = [False] * len(pending)
        # Files describe Deployments rather than the pods a cluster runs from them: a
        # Deployment's pod template stands for its pods.
        workloads = [self._pod_labels(pod, nodes) for pod in ctx.each(u.POD)] + [
            u.mapping(d.obj, "spec.template.metadata.labels") for d in ctx.each(u.DEPLOYMENT)
        ]
        for labels in workloads:
            for i, (_, _, selector) in enumerate(pending):
                if not matched[i] and u.selector_matches(selector, labels):
                    matched[i] = True
        for (dr, subset, _), ok in zip(pending, matched, strict=True):
            if not ok:
                ctx.report(dr, "DestinationRuleSubsetNotSelectPods", subset)

    @staticmethod
    def _pod_labels(pod: object, nodes: dict[str, dict[str, str]]) -> dict[str, str]:
        """Pod labels plus the topology labels Istio adds from the pod's node."""
        labels = u.labels_of(pod)
        node_name = u.text(pod.obj, "spec.node_name")  # type: ignore[attr-defined]
        if node_name and node_name in nodes:
            for key in TOPOLOGY_LABELS:
                if key in nodes[node_name]:
                    labels[key] = nodes[node_name][key]
            labels[HOSTNAME_LABEL] = node_name
        return labels
