"""Validation of ServiceEntry, as Istio's validating webhook applies it."""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    is_http_protocol,
    is_ip,
    is_tcp_protocol,
    is_tls_protocol,
    validate_fqdn,
    validate_ip_or_cidr,
    validate_partial_wildcard,
    validate_port_name,
    validate_protocol,
    validate_wildcard_domain,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_alpha_selector,
    check_export_to,
    check_labels,
    check_port,
)
from pistio.config.validation.networking.workload import check_endpoint_ports, check_workload_entry
from pistio.config.validation.registry import validates

AUTOALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"


def _auto_allocates(res: Resource) -> bool:
    """Istio allocates addresses to ServiceEntries unless the label opts out."""
    return res.metadata.labels.get(AUTOALLOCATE_LABEL, "").lower() != "false"


@validates(GROUP, "ServiceEntry")
def validate_service_entry(res: Resource, errs: FieldErrors) -> None:
    se: n.ServiceEntry = res.spec
    check_alpha_selector(se.workload_selector, "spec.workloadSelector", errs, "service entry")
    if se.workload_selector is not None and se.endpoints:
        errs.error("spec", "only one of WorkloadSelector or Endpoints is allowed in Service Entry")

    if not se.hosts:
        errs.error("spec.hosts", "service entry must have at least one host")
    for i, host in enumerate(se.hosts):
        p = f"spec.hosts[{i}]"
        if host == "*":
            errs.error(p, f"invalid host {host}")
            continue
        if err := validate_wildcard_domain(host):
            errs.error(p, err)
        if warn := validate_partial_wildcard(host):
            errs.warn(p, warn)

    cidr = False
    for i, addr in enumerate(se.addresses):
        cidr = cidr or "/" in addr
        if err := validate_ip_or_cidr(addr):
            errs.error(f"spec.addresses[{i}]", err)
    if cidr and se.resolution not in ("NONE", "STATIC"):
        errs.error(
            "spec.resolution", "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )

    port_names: set[str] = set()
    port_numbers: set[int] = set()
    auto = _auto_allocates(res)
    for i, port in enumerate(se.ports):
        p = f"spec.ports[{i}]"
        if port.name in port_names:
            errs.error(f"{p}.name", f'service entry port name "{port.name}" already defined')
        port_names.add(port.name)
        if port.number in port_numbers:
            errs.error(f"{p}.number", f"service entry port {port.number} already defined")
        port_numbers.add(port.number)
        if port.target_port:
            check_port(port.target_port, f"{p}.targetPort", errs)
            if se.resolution == "NONE":
                errs.warn(
                    f"{p}.targetPort", "targetPort has no effect when resolution mode is NONE"
                )
        if not se.addresses and not auto and port.protocol in ("", "TCP"):
            errs.warn(
                f"{p}.protocol",
                "addresses are required for ports serving TCP (or unset) protocol when "
                "ISTIO_META_DNS_AUTO_ALLOCATE is not set on a proxy",
            )
        if err := validate_port_name(port.name):
            errs.error(f"{p}.name", err)
        if err := validate_protocol(port.protocol):
            errs.error(f"{p}.protocol", err)
        check_port(port.number, f"{p}.number", errs)

    _resolution_rules(se, errs, port_names)

    # Plain TCP cannot tell hosts apart, so several hosts need HTTP or TLS ports (unless NONE).
    if se.resolution != "NONE" and len(se.hosts) > 1:
        for i, port in enumerate(se.ports):
            if not is_http_protocol(port.protocol) and not is_tls_protocol(port.protocol):
                errs.error(
                    f"spec.ports[{i}].protocol",
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                )
                break

    check_export_to(res, se.export_to, errs, is_service_entry=True)


def _resolution_rules(se: n.ServiceEntry, errs: FieldErrors, port_names: set[str]) -> None:
    if se.resolution == "NONE":
        if se.endpoints:
            errs.error("spec.endpoints", "no endpoints should be provided for resolution type none")
        if se.workload_selector is not None:
            errs.warn(
                "spec.workloadSelector",
                "workloadSelector should not be set when resolution mode is NONE",
            )
        return
    if se.resolution == "DYNAMIC_DNS":
        # Destinations are resolved from the requested host name at request time.
        if se.endpoints:
            errs.error("spec.endpoints", "endpoints cannot be set for resolution mode DYNAMIC_DNS")
        if se.addresses:
            errs.error("spec.addresses", "addresses cannot be set for resolution mode DYNAMIC_DNS")
        return
    if se.resolution == "STATIC":
        for i, ep in enumerate(se.endpoints):
            check_workload_entry(ep, f"spec.endpoints[{i}]", errs, port_names, allow_fqdn=False)
        return
    # DNS and DNS_ROUND_ROBIN
    if not se.endpoints:
        for i, host in enumerate(se.hosts):
            if host != "*" and validate_fqdn(host):
                errs.error(
                    f"spec.hosts[{i}]",
                    f"hosts must be FQDN if no endpoints are provided for resolution mode {se.resolution}",
                )
    if se.resolution == "DNS_ROUND_ROBIN" and len(se.endpoints) > 1:
        errs.error(
            "spec.endpoints",
            f"there must only be 0 or 1 endpoint for resolution mode {se.resolution}",
        )
    for i, ep in enumerate(se.endpoints):
        p = f"spec.endpoints[{i}]"
        if not is_ip(ep.address) and validate_fqdn(ep.address):
            errs.error(
                f"{p}.address",
                f'endpoint address "{ep.address}" is not a valid FQDN or an IP address',
            )
        check_labels(ep.labels, f"{p}.labels", errs)
        check_endpoint_ports(ep, p, errs, port_names)
    if se.workload_selector is not None:
        errs.warn(
            "spec.workloadSelector",
            f"workloadSelector should not be set when resolution mode is {se.resolution}",
        )
    if se.addresses and len(se.hosts) > 1 and any(is_tcp_protocol(pt.protocol) for pt in se.ports):
        errs.warn(
            "spec.hosts",
            "service entry can not have more than one host specified simultaneously with address and tcp port",
        )
