"""meshnetworks.MeshNetworksAnalyzer: MeshNetworks endpoints must name a known service registry."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

KNOWN_REGISTRIES = ("Mock", "Kubernetes", "External")
MULTICLUSTER_SECRET_LABEL = "istio/multiCluster"


class MeshNetworksAnalyzer(Analyzer):
    name = "meshnetworks.MeshNetworksAnalyzer"
    description = "Check the validity of MeshNetworks in the cluster"

    def analyze(self, ctx: Context) -> None:
        registries = list(KNOWN_REGISTRIES)
        for secret in ctx.each(u.SECRET):
            if u.labels_of(secret).get(MULTICLUSTER_SECRET_LABEL) == "true":
                # each key of a remote secret's data is a cluster id, i.e. a registry
                registries += list(u.mapping(secret.obj, "data"))
        if ctx.mesh_networks is None:
            return
        for net_name, network in u.mapping(ctx.mesh_networks, "networks").items():
            for ep in u.items(network, "endpoints"):
                registry = u.get(ep, "from_registry")
                if registry is None or registry in registries:
                    continue
                ctx.report(
                    ctx.mesh_networks_origin,
                    "UnknownMeshNetworksServiceRegistry",
                    registry,
                    net_name,
                )
