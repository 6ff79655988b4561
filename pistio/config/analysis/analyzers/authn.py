"""authn.BlockedCIDRsAnalyzer: istiod should restrict JWKS fetches when RequestAuthentications exist."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

ENV_NAME = "BLOCKED_CIDRS_IN_JWKS_URIS"
MAX_NAMES = 5


class BlockedCIDRsAnalyzer(Analyzer):
    name = "authn.BlockedCIDRsAnalyzer"
    description = (
        "Checks that BLOCKED_CIDRS_IN_JWKS_URIS is configured on istiod when "
        "RequestAuthentication resources exist"
    )

    def analyze(self, ctx: Context) -> None:
        names = [u.full_name(r) for r in ctx.each(u.REQUEST_AUTHENTICATION)]
        if not names:
            return
        shown = ", ".join(names[:MAX_NAMES])
        if len(names) > MAX_NAMES:
            shown += f", and {len(names) - MAX_NAMES} more"
        for d in ctx.each(u.DEPLOYMENT):
            if u.labels_of(d).get("app") != "istiod":
                continue
            configured = any(
                u.text(e, "name") == ENV_NAME and u.text(e, "value")
                for c in u.items(d.obj, "spec.template.spec.containers")
                for e in u.items(c, "env")
            )
            if not configured:
                ctx.report(d, "JwksUriFetchUnrestricted", len(names), shown)
