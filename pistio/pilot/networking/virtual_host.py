"""The domains of an outbound virtual host: every Host header a client may send for a service.

Istio's ``generateVirtualHostDomains`` / ``GenerateAltVirtualHosts`` (``httproute.go``). For
``reviews.default.svc.cluster.local`` seen from a proxy in ``default``: the FQDN, then
``reviews``, ``reviews.default.svc``, ``reviews.default``, then the VIP. From another
namespace the short name is left out (it would mean a different service there).

Envoy sidecars get these without ports: Istio sets ``ignore_port_in_host_matching`` on the
route configuration instead (``SidecarIgnorePort``). Proxyless gRPC clients match the
authority literally, so each domain also comes with ``:<port>``.
"""

from __future__ import annotations

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.service import UNSPECIFIED_IP, Resolution, Service, Source

NO_PORT = 0


def domain_name(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed (Istio's ``util.DomainName``)."""
    return f"{ipv6_compliant(host)}:{port}"


def ipv6_compliant(host: str) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def append_domain_port(domains: list[str], domain: str, port: int) -> None:
    """Add ``domain`` and, unless ``port`` is NO_PORT, ``domain:port``."""
    domains.append(ipv6_compliant(domain))
    if port != NO_PORT:
        domains.append(domain_name(domain, port))


def ignores_port(proxy: Proxy) -> bool:
    """Istio's ``SidecarIgnorePort``: every client but proxyless gRPC ignores the port."""
    return not proxy.is_proxyless_grpc


def virtual_host_domains(
    service: Service, listener_port: int, port: int, proxy: Proxy
) -> tuple[list[str], list[str]]:
    """(domains, alternate hosts) of the virtual host for ``service`` on ``port``.

    ``listener_port`` is 0 for HTTP proxy / unix socket routes, which keep port suffixes.
    """
    if ignores_port(proxy) and listener_port != 0:
        port = NO_PORT
    domains: list[str] = []
    alt_hosts = generate_alt_virtual_hosts(service.hostname, port, proxy.dns_domain)
    append_domain_port(domains, service.hostname, port)
    domains.extend(alt_hosts)
    # Headless Kubernetes services: pods are addressed as <pod>.<service>..., so match
    # subdomains of every name too.
    if service.resolution is Resolution.PASSTHROUGH and service.source is Source.KUBERNETES:
        domains.extend([f"*.{d}" for d in domains])
    for address in service.addresses:
        if address and address != UNSPECIFIED_IP:
            append_domain_port(domains, address, port)
    return domains, alt_hosts


def generate_alt_virtual_hosts(hostname: str, port: int, proxy_domain: str) -> list[str]:
    """Shorter forms of ``hostname`` that resolve from the proxy's DNS domain.

    ``proxy_domain`` is the node id's domain, ``<ns>.svc.cluster.local`` for Kubernetes pods.
    """
    if ".svc." in proxy_domain:
        if hostname.endswith(_remove_svc_namespace(proxy_domain)):
            return _alt_hosts_for_kubernetes_service(hostname, port, proxy_domain)
        # Not a Kubernetes service: short forms could collide with other services' names.
        return []
    unique, shared = _unique_and_shared_dns_domain(hostname, proxy_domain)
    if not shared:
        return []
    out: list[str] = []
    unique_host = ".".join(unique)
    append_domain_port(out, unique_host, port)
    if len(unique) == 2:
        append_domain_port(out, f"{unique_host}.{shared[0]}", port)
    return out


def _alt_hosts_for_kubernetes_service(hostname: str, port: int, proxy_domain: str) -> list[str]:
    ih = hostname.find(".svc.")
    if ih <= 0:
        return []  # the proxy is in Kubernetes, the service is not
    id_ = proxy_domain.find(".svc.")
    ns = hostname.find(".")
    if ns + 1 >= len(hostname) or ns + 1 > ih:
        return []
    name, name_ns = hostname[:ns], hostname[:ih]
    out: list[str] = []
    if hostname[ns + 1 : ih] == proxy_domain[:id_]:
        # Same namespace: the bare service name resolves too.
        append_domain_port(out, name, port)
        if port == NO_PORT:
            # Istio's order differs without ports: name, name.ns.svc, name.ns.
            return [name, f"{name_ns}.svc", name_ns]
        append_domain_port(out, f"{name_ns}.svc", port)
        append_domain_port(out, name_ns, port)
        return out
    append_domain_port(out, name_ns, port)
    append_domain_port(out, f"{name_ns}.svc", port)
    return out


def _remove_svc_namespace(domain: str) -> str:
    idx = domain.find(".svc.")
    return domain[idx:] if idx > 0 else domain


def _unique_and_shared_dns_domain(fqdn: str, proxy_domain: str) -> tuple[list[str], list[str]]:
    fqdn_parts = fqdn.split(".")
    proxy_parts = proxy_domain.split(".")
    shared_reversed: list[str] = []
    for a, b in zip(reversed(fqdn_parts), reversed(proxy_parts), strict=False):
        if a != b:
            break
        shared_reversed.append(a)
    if not shared_reversed:
        return fqdn_parts, []
    return fqdn_parts[: len(fqdn_parts) - len(shared_reversed)], list(reversed(shared_reversed))
