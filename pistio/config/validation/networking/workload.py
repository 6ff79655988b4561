"""Validation of WorkloadEntry and WorkloadGroup, as Istio's validating webhook applies it.

A ServiceEntry's endpoints are WorkloadEntries too: service_entry uses the checks here.
"""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    UNIX_ADDRESS_PREFIX,
    is_ip,
    validate_fqdn,
    validate_http_header_name,
    validate_labels,
    validate_port_name,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_labels,
    check_oneof,
    check_port,
    check_unix_address,
)
from pistio.config.validation.registry import validates


def check_workload_entry(
    we: n.WorkloadEntry, p: str, errs: FieldErrors, service_ports: set[str] | None, allow_fqdn: bool
) -> None:
    """Istio's validateWorkloadEntry (a WorkloadEntry, or a STATIC ServiceEntry endpoint)."""
    addr = we.address
    if not addr:
        if not we.network:
            errs.error(f"{p}.address", "address is required")
            return
        errs.warn(f"{p}.address", f'address is unset with network "{we.network}"')
    unix = addr.startswith(UNIX_ADDRESS_PREFIX)
    if unix:
        check_unix_address(addr, f"{p}.address", errs)
        if we.ports:
            errs.error(f"{p}.ports", f"unix endpoint {addr} must not include ports")
    elif addr and not is_ip(addr):
        if not allow_fqdn:
            errs.error(f"{p}.address", f'endpoint address "{addr}" is not a valid IP address')
        elif validate_fqdn(addr):
            errs.error(
                f"{p}.address", f'endpoint address "{addr}" is not a valid FQDN or an IP address'
            )
    check_endpoint_ports(we, p, errs, service_ports)
    check_labels(we.labels, f"{p}.labels", errs)
    if unix and service_ports is not None and len(service_ports) != 1:
        errs.error(p, "exactly 1 service port required for unix endpoints")


def check_endpoint_ports(
    we: n.WorkloadEntry, p: str, errs: FieldErrors, service_ports: set[str] | None
) -> None:
    for name, port in we.ports.items():
        pp = f"{p}.ports.{name}"
        if service_ports is not None and name not in service_ports:
            errs.error(pp, f"endpoint port {port} is not defined by the service entry")
        if err := validate_port_name(name):
            errs.error(pp, err)
        check_port(port, pp, errs)


@validates(GROUP, "WorkloadEntry")
def validate_workload_entry(res: Resource, errs: FieldErrors) -> None:
    check_workload_entry(res.spec, "spec", errs, None, allow_fqdn=True)


@validates(GROUP, "WorkloadGroup")
def validate_workload_group(res: Resource, errs: FieldErrors) -> None:
    wg: n.WorkloadGroup = res.spec
    if wg.template is None:
        errs.error("spec.template", "template is required")
    if wg.metadata is not None:
        for key, value in wg.metadata.labels.items():
            for err in validate_labels({key: value}):
                errs.error(f"spec.metadata.labels.{key}", f"invalid labels: {err}")
    if wg.probe is not None:
        _probe(wg.probe, "spec.probe", errs)


def _probe(pr: n.ReadinessProbe, p: str, errs: FieldErrors) -> None:
    for field, value in (
        ("periodSeconds", pr.period_seconds),
        ("initialDelaySeconds", pr.initial_delay_seconds),
        ("timeoutSeconds", pr.timeout_seconds),
        ("successThreshold", pr.success_threshold),
        ("failureThreshold", pr.failure_threshold),
    ):
        if value < 0:
            errs.error(f"{p}.{field}", f"{field} must be non-negative")
    check_oneof(pr, p, errs, "http_get", "tcp_socket", "exec", "grpc")
    if (h := pr.http_get) is not None:
        check_port(h.port, f"{p}.httpGet.port", errs)
        if h.scheme and h.scheme not in ("HTTP", "HTTPS"):
            errs.error(f"{p}.httpGet.scheme", 'httpGet.scheme must be one of "HTTPS", "HTTP"')
        for i, header in enumerate(h.http_headers):
            if err := validate_http_header_name(header.name):
                errs.error(f"{p}.httpGet.httpHeaders[{i}].name", err)
    elif pr.tcp_socket is not None:
        check_port(pr.tcp_socket.port, f"{p}.tcpSocket.port", errs)
    elif pr.exec is not None:
        if not pr.exec.command:
            errs.error(f"{p}.exec.command", "exec.command is required")
    elif pr.grpc is not None:
        check_port(pr.grpc.port, f"{p}.grpc.port", errs)
    else:
        errs.error(p, "unknown health check method <nil>")
