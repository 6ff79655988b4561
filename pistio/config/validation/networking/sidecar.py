"""Validation of Sidecar, as Istio's validating webhook applies it."""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    UNIX_ADDRESS_PREFIX,
    is_http_protocol,
    validate_fqdn,
    validate_ip_address,
    validate_namespace_slash_hostname,
    validate_port_name,
    validate_protocol,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_alpha_selector,
    check_connection_pool,
    check_destination,
    check_port,
    check_server_tls,
    check_unix_address,
)
from pistio.config.validation.registry import validates

DEFAULT_ENDPOINT_HOSTS = ("127.0.0.1", "0.0.0.0", "::1", "::")


def _split_host_port(text: str) -> tuple[str, str] | str:
    """Go's net.SplitHostPort: (host, port), or the reason it fails."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return f"address {text}: missing ']' in address"
        host, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            return f"address {text}: missing port in address"
        return host, rest[1:]
    if ":" not in text:
        return f"address {text}: missing port in address"
    host, _, port = text.rpartition(":")
    if ":" in host:
        return f"address {text}: too many colons in address"
    return host, port


def _default_endpoint(ep: str, p: str, errs: FieldErrors) -> None:
    if ep.startswith(UNIX_ADDRESS_PREFIX):
        check_unix_address(ep, p, errs)
        return
    split = _split_host_port(ep)
    host, port = ("", "") if isinstance(split, str) else split
    if isinstance(split, str):
        errs.error(p, split)
    if host and host not in DEFAULT_ENDPOINT_HOSTS:
        errs.error(
            p,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,"
            "unix://filepath or unset",
        )
    if not port.lstrip("+-").isdigit():
        errs.error(
            p,
            f'sidecar: defaultEndpoint port ({port}) is not a number: strconv.Atoi: parsing "{port}": invalid syntax',
        )
    else:
        check_port(int(port), p, errs)


def _sidecar_port(
    port: n.SidecarPort, bind: str, p: str, errs: FieldErrors, egress: bool, capture_mode: str
) -> None:
    if port.target_port > 0:
        errs.error(f"{p}.port.targetPort", "targetPort has no impact on Sidecars")
    if port.name and (err := validate_port_name(port.name)):
        errs.error(f"{p}.port.name", err)
    if err := validate_protocol(port.protocol):
        errs.error(f"{p}.port.protocol", err)
    if egress and port.number == 0:
        # A listener on a Unix domain socket.
        if not bind.startswith(UNIX_ADDRESS_PREFIX):
            errs.error(
                f"{p}.bind",
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            )
        else:
            check_unix_address(bind, f"{p}.bind", errs)
        if capture_mode not in ("DEFAULT", "NONE"):
            errs.error(
                f"{p}.captureMode",
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            )
        return
    check_port(port.number, f"{p}.port.number", errs)
    if bind and (err := validate_ip_address(bind)):
        errs.error(f"{p}.bind", err)


def _ingress(ingress: list[n.IstioIngressListener], errs: FieldErrors) -> None:
    ports: set[int] = set()
    for i, li in enumerate(ingress):
        p = f"spec.ingress[{i}]"
        if li.port is None:
            errs.error(f"{p}.port", "sidecar: port is required for ingress listeners")
            continue
        _sidecar_port(li.port, li.bind, p, errs, egress=False, capture_mode=li.capture_mode)
        if li.port.number in ports:
            errs.error(f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique")
        ports.add(li.port.number)
        if li.default_endpoint:
            _default_endpoint(li.default_endpoint, f"{p}.defaultEndpoint", errs)
        if (t := li.tls) is not None:
            tp = f"{p}.tls"
            if t.subject_alt_names:
                errs.error(
                    f"{tp}.subjectAltNames",
                    "sidecar: subjectAltNames is not supported in ingress tls",
                )
            if t.https_redirect:
                errs.error(f"{tp}.httpsRedirect", "sidecar: httpsRedirect is not supported")
            if t.credential_name:
                errs.error(
                    f"{tp}.credentialName", "sidecar: credentialName is not currently supported"
                )
            if t.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                errs.error(
                    f"{tp}.mode",
                    f"configuration is invalid: cannot set mode to {t.mode} in sidecar ingress tls",
                )
            check_server_tls(t, tp, errs)
        check_connection_pool(li.connection_pool, f"{p}.connectionPool", errs)
        if (
            li.connection_pool is not None
            and li.connection_pool.http is not None
            and not is_http_protocol(li.port.protocol)
        ):
            errs.warn(
                f"{p}.connectionPool.http",
                f"sidecar: HTTP connection pool settings are configured for port {li.port.number} "
                f'("{li.port.name}") but its protocol is not HTTP ({li.port.protocol}); only TCP settings will apply',
            )


def _egress(res: Resource, egress: list[n.IstioEgressListener], errs: FieldErrors) -> None:
    ports: set[int] = set()
    sockets: set[str] = set()
    catch_all = False
    for i, li in enumerate(egress):
        p = f"spec.egress[{i}]"
        if li.port is None:
            # Only one listener may omit the port, and it must come last.
            if catch_all:
                errs.error(p, "sidecar: egress can have only one listener with empty port")
                continue
            if i == len(egress) - 1:
                catch_all = True
            else:
                errs.error(
                    p,
                    "sidecar: the egress listener with empty port should be the last listener in the list",
                )
        else:
            _sidecar_port(li.port, li.bind, p, errs, egress=True, capture_mode=li.capture_mode)
            if li.port.number == 0:
                if li.bind in sockets:
                    errs.error(
                        f"{p}.bind",
                        "sidecar: unix domain socket values for listeners must be unique",
                    )
                sockets.add(li.bind)
            else:
                if li.port.number in ports:
                    errs.error(
                        f"{p}.port.number", "sidecar: ports on IP bound listeners must be unique"
                    )
                ports.add(li.port.number)
        _egress_hosts(res, li.hosts, f"{p}.hosts", errs)


def _egress_hosts(res: Resource, hosts: list[str], p: str, errs: FieldErrors) -> None:
    if not hosts:
        errs.error(p, "sidecar: egress listener must contain at least one host")
        return
    by_ns: dict[str, set[str]] = {}
    for i, host in enumerate(hosts):
        hp = f"{p}[{i}]"
        ns, sep, svc = host.partition("/")
        if sep:
            if ns == ".":
                ns = res.namespace or ""
            svcs = by_ns.setdefault(ns, set())
            if (svc != "*" and (svc in svcs or "*" in svcs)) or (svc == "*" and svcs):
                errs.warn(hp, f"duplicated egress host: {host}")
            svcs.add(svc)
        for err in validate_namespace_slash_hostname(host, is_gateway=False):
            errs.error(hp, err)
    if "*" in by_ns.get("*", set()) and len(by_ns) != 1:
        errs.warn(p, "`*/*` host select all resources, no other hosts can be added")


@validates(GROUP, "Sidecar")
def validate_sidecar(res: Resource, errs: FieldErrors) -> None:
    sc: n.Sidecar = res.spec
    check_alpha_selector(sc.workload_selector, "spec.workloadSelector", errs, "sidecar")
    if (
        not sc.egress
        and not sc.ingress
        and sc.outbound_traffic_policy is None
        and sc.inbound_connection_pool is None
    ):
        errs.error("spec", "sidecar: empty configuration provided")
        return
    _ingress(sc.ingress, errs)
    check_connection_pool(sc.inbound_connection_pool, "spec.inboundConnectionPool", errs)
    _egress(res, sc.egress, errs)
    if (otp := sc.outbound_traffic_policy) is not None and (proxy := otp.egress_proxy) is not None:
        p = "spec.outboundTrafficPolicy.egressProxy"
        if otp.mode != "ALLOW_ANY":
            errs.error(
                p,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            )
            return
        if err := validate_fqdn(proxy.host):
            errs.error(f"{p}.host", err)
        if proxy.port is None:
            errs.error(f"{p}.port", "sidecar: egress_proxy port must be non-nil")
            return
        check_destination(proxy, p, errs)
