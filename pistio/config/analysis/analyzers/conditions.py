"""conditions.ConditionAnalyzer: status conditions that report a failure."""

from __future__ import annotations

from typing import Any

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

ROUTE_NEGATIVE = {"Accepted": "False", "Programmed": "False", "ResolvedRefs": "False"}
NEGATIVE = {
    u.SERVICE: {"istio.io/WaypointBound": "False"},
    u.SERVICE_ENTRY: {"istio.io/WaypointBound": "False"},
    u.AUTHORIZATION_POLICY: {"ZtunnelAccepted": "False", "WaypointAccepted": "False"},
    u.K8S_GATEWAY: ROUTE_NEGATIVE,
    u.HTTP_ROUTE: ROUTE_NEGATIVE,
    u.GRPC_ROUTE: ROUTE_NEGATIVE,
}


def _conditions(key: tuple[str, str], status: Any) -> list[Any]:
    if key in (u.HTTP_ROUTE, u.GRPC_ROUTE):
        return [c for parent in u.items(status, "parents") for c in u.items(parent, "conditions")]
    return u.items(status, "conditions")


class ConditionAnalyzer(Analyzer):
    name = "conditions.ConditionAnalyzer"
    description = "Checks for negative status conditions on resources"

    def analyze(self, ctx: Context) -> None:
        for key, negative in NEGATIVE.items():
            for r in ctx.each(key):
                status = getattr(r.obj, "status", None)
                if status is None:
                    continue
                for c in _conditions(key, status):
                    ctype, cstatus = u.text(c, "type"), u.text(c, "status")
                    reason, message = u.text(c, "reason"), u.text(c, "message")
                    if negative.get(ctype) == cstatus:
                        ctx.report(r, "NegativeConditionStatus", ctype, reason, message)
                    if (
                        key == u.AUTHORIZATION_POLICY
                        and ctype == "WaypointAccepted"
                        and reason == "PartiallyInvalid"
                    ):
                        ctx.report(r, "NegativeConditionStatus", ctype, reason, message)
