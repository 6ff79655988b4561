"""Validation of Gateway, as Istio's validating webhook applies it."""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    UNIX_ADDRESS_PREFIX,
    is_dns1123_label,
    is_http_protocol,
    is_tls_protocol,
    parse_protocol,
    validate_ip_address,
    validate_namespace_slash_hostname,
    validate_port,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_server_tls,
    check_unix_address,
)
from pistio.config.validation.registry import validates


def _q(text: str) -> str:
    """A string as Go's %q prints it (for the plain text users write)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _port_text(port: n.Port) -> str:
    """A Port as Go's %v prints a proto message (for Istio's "port name must be set")."""
    parts = []
    if port.number:
        parts.append(f"number:{port.number}")
    if port.protocol:
        parts.append(f'protocol:"{port.protocol}"')
    if port.target_port:
        parts.append(f"target_port:{port.target_port}")
    return " ".join(parts)


def _server(s: n.Server, p: str, errs: FieldErrors) -> None:
    if not s.hosts:
        errs.error(f"{p}.hosts", "server config must contain at least one host")
    for i, host in enumerate(s.hosts):
        for err in validate_namespace_slash_hostname(host, is_gateway=True):
            errs.error(f"{p}.hosts[{i}]", err)

    unix_bind = s.bind.startswith(UNIX_ADDRESS_PREFIX)
    port_ok = s.port is not None
    if s.port is None:
        errs.error(f"{p}.port", "port is required")
    else:
        pp = f"{p}.port"
        if parse_protocol(s.port.protocol) is None:
            port_ok = False
            errs.error(
                f"{pp}.protocol",
                f'invalid protocol "{s.port.protocol}", supported protocols are HTTP, HTTP2, GRPC, '
                "GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
            )
        # A server bound to a Unix socket has port number 0.
        if (s.port.number > 0 or not unix_bind) and (err := validate_port(s.port.number)):
            port_ok = False
            errs.error(f"{pp}.number", err)
        if s.port.target_port > 0:
            port_ok = False
            errs.error(f"{pp}.targetPort", "targetPort has no impact on Gateways")
        if not s.port.name:
            port_ok = False
            errs.error(f"{pp}.name", f"port name must be set: {_port_text(s.port)}")

    if unix_bind:
        check_unix_address(s.bind, f"{p}.bind", errs)
        if s.port is not None and s.port.number != 0:
            errs.error(
                f"{p}.bind", f"port number must be 0 for unix domain socket: {_port_text(s.port)}"
            )
    elif s.bind and (err := validate_ip_address(s.bind)):
        errs.error(f"{p}.bind", err)

    if s.tls is not None:
        check_server_tls(s.tls, f"{p}.tls", errs)

    if port_ok and s.port is not None:
        proto = s.port.protocol
        if is_tls_protocol(proto) and s.tls is None:
            errs.error(f"{p}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        elif not is_tls_protocol(proto) and s.tls is not None:
            if is_http_protocol(proto):
                # Only httpsRedirect makes sense on a plain-text HTTP server.
                passthrough = s.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if (
                    not passthrough
                    or s.tls.ca_certificates
                    or s.tls.private_key
                    or s.tls.server_certificate
                ):
                    errs.error(
                        f"{p}.tls", "server cannot have TLS settings for plain text HTTP ports"
                    )
            else:
                errs.error(f"{p}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")


@validates(GROUP, "Gateway")
def validate_gateway(res: Resource, errs: FieldErrors) -> None:
    gw: n.Gateway = res.spec
    if res.name and not is_dns1123_label(res.name):
        errs.error("metadata.name", f"invalid gateway name: {_q(res.name)}")
    if not gw.servers:
        errs.error("spec.servers", "gateway must have at least one server")
    names: set[str] = set()
    for i, s in enumerate(gw.servers):
        p = f"spec.servers[{i}]"
        _server(s, p, errs)
        if s.port is None:
            continue
        if s.port.name in names:
            errs.error(
                f"{p}.port.name",
                f"port names in servers must be unique: duplicate name {s.port.name}",
            )
        names.add(s.port.name)
        if not is_http_protocol(s.port.protocol) and s.tls is not None and s.tls.https_redirect:
            errs.warn(
                f"{p}.tls.httpsRedirect", "tls.httpsRedirect should only be used with http servers"
            )
