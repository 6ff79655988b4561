"""applicationUID analyzer: application containers must not run as the proxy's UID 1337."""

from __future__ import annotations

from typing import Any

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

PROXY_UID = 1337


def _uid_hits(pod_spec: Any) -> int:
    hits = 0
    if u.to_int(u.get(pod_spec, "security_context.run_as_user")) == PROXY_UID:
        hits += 1
    for c in u.items(pod_spec, "containers"):
        if u.text(c, "name") in (u.ISTIO_PROXY, u.ISTIO_OPERATOR):
            continue
        if u.to_int(u.get(c, "security_context.run_as_user")) == PROXY_UID:
            hits += 1
    return hits


class ApplicationUIDAnalyzer(Analyzer):
    name = "applicationUID.Analyzer"
    description = "Checks invalid application UID"

    def analyze(self, ctx: Context) -> None:
        for key, spec_path in ((u.POD, "spec"), (u.DEPLOYMENT, "spec.template.spec")):
            for r in ctx.each(key):
                if u.is_control_plane(r):
                    continue
                for _ in range(_uid_hits(u.get(r.obj, spec_path))):
                    ctx.report(r, "InvalidApplicationUID")
