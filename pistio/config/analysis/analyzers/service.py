"""Service analyzer: port names that do not follow Istio's protocol naming convention."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context

GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_CONTROLLERS = (
    "istio.io-gateway-controller",
    "istio.io-mesh-controller",
    "istio.io-eastwest-controller",
)
# Ports whose protocol Istio takes as TCP when the name says nothing (no sniffing there).
WELL_KNOWN_PORTS = (25, 53, 3306, 27017)
PROTOCOLS = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}
APP_PROTOCOLS = {
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "HTTPS",
}


def port_protocol(port: int, name: str, protocol: str, app_protocol: str | None) -> str | None:
    """Istio's protocol for a Service port (``kube.ConvertProtocol``); None when unsupported."""
    if protocol == "UDP":
        return "UDP"
    if app_protocol is not None:
        if app_protocol in APP_PROTOCOLS:
            return APP_PROTOCOLS[app_protocol]
        name = app_protocol
    if name.lower().startswith("grpc-web"):
        return "GRPC-Web"
    prefix = name.split("-", 1)[0]
    found = PROTOCOLS.get(prefix.lower())
    if found is None and port in WELL_KNOWN_PORTS:
        return "TCP"
    return found


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
                proto = port_protocol(number, name, u.text(p, "protocol"), app)
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
