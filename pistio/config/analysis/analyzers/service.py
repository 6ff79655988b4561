"""Service analyzer: port names that do not follow Istio's protocol naming convention."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.protocol import port_protocol

GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_CONTROLLERS = (
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
)


def port_protocol_name(port: int, name: str, protocol: str, app_protocol: str | None) -> str | None:
    """Istio's protocol for a Service port; None when it is left to sniffing."""
    found = port_protocol(name, protocol or "TCP", app_protocol, port)
    return None if found.is_unsupported else found.value


class PortNameAnalyzer(Analyzer):
    name = "service.PortNameAnalyzer"
    description = "Checks the port names associated with each service"

    def analyze(self, ctx: Context) -> None:
        for svc in ctx.each(u.SERVICE):
            if u.is_control_plane(svc):
                continue
            if u.labels_of(svc).get(GATEWAY_MANAGED_LABEL) in MANAGED_CONTROLLERS:
                continue
            svc_type = u.text(svc.obj, "spec.type")
            for i, p in enumerate(u.items(svc.obj, "spec.ports")):
                name = u.text(p, "name")
                number = u.to_int(u.get(p, "port")) or 0
                app = u.get(p, "app_protocol")
                proto = port_protocol_name(number, name, u.text(p, "protocol"), app)
                if proto is not None and not (name == "tcp" and svc_type == "ExternalName"):
                    continue
                path = f"spec.ports[{i}].port"
                if svc_type == "ExternalName":
                    ctx.report(svc, "ExternalNameServiceTypeInvalidPortName", path=path)
                else:
                    target = u.get(p, "target_port")
                    target_text = "" if target is None else str(target)
                    ctx.report(
                        svc,
                        "PortNameIsNotUnderNamingConvention",
                        name,
                        number,
                        target_text,
                        path=path,
                    )
