"""``pistio proxy-config``: istioctl proxy-config clusters|listeners|routes|endpoints|all.

Reads ``/debug/config_dump?proxyID=`` from the discovery's debug port (what the control plane
serves the proxy) and prints istioctl's summary tables, or the resources as JSON/YAML. The
config dump is read as JSON, not decoded into protos, so any filter type the generators
emit prints without this command knowing its proto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import yaml

from pistio.cli.proxy_status_cmd import (
    debug_json,
    discovery_address_option,
    fail,
    format_table,
    quote_id,
    resolve_proxy_id,
)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"

DUMP_SUFFIX = {
    "clusters": "ClustersConfigDump",
    "listeners": "ListenersConfigDump",
    "routes": "RoutesConfigDump",
    "endpoints": "EndpointsConfigDump",
}

# istioctl's names for well-known ALPN sets in filter chain matches.
_ALPN_NAMES = (
    (
        "App: HTTP TLS",
        ["http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    ),
    ("App: Istio HTTP Plain", ["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]),
    ("App: TCP TLS", ["istio-peer-exchange", "istio"]),
    ("App: HTTP", ["http/1.0", "http/1.1", "h2c"]),
)


# -- reading the dump -------------------------------------------------------------------


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    suffix = DUMP_SUFFIX[kind]
    for config in dump.get("configs", []):
        if str(config.get("@type", "")).endswith(suffix):
            return config
    return {}


def clusters_of(dump: dict[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "clusters")
    found = [c["cluster"] for c in section.get("dynamicActiveClusters", []) if "cluster" in c]
    found += [c["cluster"] for c in section.get("staticClusters", []) if "cluster" in c]
    return sorted(found, key=_cluster_sort_key)


def listeners_of(dump: dict[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "listeners")
    found = [
        entry["activeState"]["listener"]
        for entry in section.get("dynamicListeners", [])
        if "listener" in entry.get("activeState", {})
    ]
    found += [e["listener"] for e in section.get("staticListeners", []) if "listener" in e]
    return found


def routes_of(dump: dict[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "routes")
    found = [r["routeConfig"] for r in section.get("dynamicRouteConfigs", []) if "routeConfig" in r]
    found += [r["routeConfig"] for r in section.get("staticRouteConfigs", []) if "routeConfig" in r]
    # Numeric names (ports) in numeric order first, then the rest by name.
    return sorted(
        found,
        key=lambda r: (
            (0, int(r["name"]), "")
            if str(r.get("name", "")).isdigit()
            else (1, 0, str(r.get("name", "")))
        ),
    )


def endpoints_of(dump: dict[str, Any]) -> list[dict[str, Any]]:
    section = _section(dump, "endpoints")
    found = [
        e["endpointConfig"]
        for key in ("dynamicEndpointConfigs", "staticEndpointConfigs")
        for e in section.get(key, [])
        if "endpointConfig" in e
    ]
    return sorted(found, key=lambda c: _cluster_sort_key({"name": c.get("clusterName", "")}))


# -- clusters ----------------------------------------------------------------------------


def parse_cluster_name(name: str) -> tuple[str, str, str, str]:
    """``direction|port|subset|fqdn`` → (fqdn, port, subset, direction); others as istioctl."""
    parts = name.split("|")
    if len(parts) > 3:
        direction, port, subset, fqdn = parts[0], parts[1], parts[2], parts[3]
        return fqdn, port, subset or "-", direction
    return name, "-", "-", "-"


def _cluster_sort_key(cluster: dict[str, Any]) -> tuple[str, str, int, str]:
    name = str(cluster.get("name", ""))
    parts = name.split("|")
    if len(parts) > 3:
        port = int(parts[1]) if parts[1].isdigit() else 0
        return (parts[3], parts[2], port, parts[0])
    return (name, "", 0, "")


def describe_config(metadata: dict[str, Any] | None) -> str:
    """The Istio config behind a resource, from ``metadata.filterMetadata.istio.config``
    (``/apis/<group>/<version>/namespaces/<ns>/<kind>/<name>``) → ``name.ns``."""
    path = ((metadata or {}).get("filterMetadata", {}).get("istio", {}) or {}).get("config", "")
    if not path:
        return ""
    pieces = path.split("/")
    if len(pieces) == 8 and pieces[1] == "apis" and pieces[4] == "namespaces":
        return f"{pieces[7]}.{pieces[5]}"
    return "<unknown>"


def cluster_type(cluster: dict[str, Any]) -> str:
    if "clusterType" in cluster:
        return str(cluster["clusterType"].get("name", "CUSTOM"))
    return str(cluster.get("type", "STATIC"))  # proto3 JSON omits the default, STATIC


def cluster_matches(
    cluster: dict[str, Any], fqdn: str, port: int, subset: str, direction: str
) -> bool:
    name = str(cluster.get("name", ""))
    if fqdn and fqdn not in name:
        return False
    if direction and direction not in name:
        return False
    if subset and subset not in name:
        return False
    return not (port and f"|{port}|" not in name)


def cluster_table(clusters: list[dict[str, Any]]) -> str:
    rows = []
    for c in clusters:
        fqdn, port, subset, direction = parse_cluster_name(str(c.get("name", "")))
        rows.append(
            [fqdn, port, subset, direction, cluster_type(c), describe_config(c.get("metadata"))]
        )
    headers = ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE")
    return format_table(headers, rows, padding=5)


# -- listeners ---------------------------------------------------------------------------


def _socket(address: dict[str, Any] | None) -> dict[str, Any]:
    return (address or {}).get("socketAddress", {}) or {}


def listener_address(listener: dict[str, Any]) -> str:
    addrs = [str(_socket(listener.get("address")).get("address", ""))]
    for extra in listener.get("additionalAddresses", []):
        addrs.append(str(_socket(extra.get("address")).get("address", "")))
    return ",".join(addrs)


def listener_port(listener: dict[str, Any]) -> int:
    return int(_socket(listener.get("address")).get("portValue", 0))


def _filter_chains(listener: dict[str, Any]) -> list[dict[str, Any]]:
    chains = list(listener.get("filterChains", []))
    if "defaultFilterChain" in listener:
        chains.append(listener["defaultFilterChain"])
    return chains


def _tcp_cluster(config: dict[str, Any]) -> str:
    return str(config.get("cluster", ""))


def listener_type(listener: dict[str, Any]) -> str:
    http = tcp = 0
    for chain in _filter_chains(listener):
        for f in chain.get("filters", []):
            if f.get("name") == HCM:
                http += 1
            elif f.get("name") == TCP_PROXY and BLACKHOLE not in json.dumps(
                f.get("typedConfig", {})
            ):
                tcp += 1
    if http:
        return "HTTP" if not tcp else "HTTP+TCP"
    return "TCP" if tcp else "UNKNOWN"


def describe_chain_match(match: dict[str, Any] | None) -> str:
    match = match or {}
    descrs = []
    if match.get("serverNames"):
        descrs.append("SNI: " + ",".join(match["serverNames"]))
    if match.get("transportProtocol"):
        descrs.append(f"Trans: {match['transportProtocol']}")
    alpns = match.get("applicationProtocols") or []
    if alpns:
        named = next((n for n, protos in _ALPN_NAMES if protos == alpns), None)
        descrs.append(named or "App: " + ",".join(alpns))
    port = f":{match['destinationPort']}" if "destinationPort" in match else ""
    if match.get("prefixRanges"):
        ranges = ",".join(
            f"{r.get('addressPrefix', '')}/{r.get('prefixLen', 0)}" for r in match["prefixRanges"]
        )
        descrs.append(f"Addr: {ranges}{port}")
    elif port:
        descrs.append(f"Addr: *{port}")
    return "; ".join(descrs) or "ALL"


def _describe_route_match(match: dict[str, Any]) -> str:
    conds = []
    if match.get("prefix"):
        conds.append(f"{match['prefix']}*")
    if match.get("path"):
        conds.append(match["path"])
    if match.get("pathSeparatedPrefix"):
        conds.append(f"{match['pathSeparatedPrefix']}/*")
    if "safeRegex" in match:
        conds.append(f"regex {match['safeRegex'].get('regex', '')}")
    return " ".join(conds)


def _inline_routes(route_config: dict[str, Any]) -> str:
    vhosts = route_config.get("virtualHosts", [])
    if (
        len(vhosts) == 1
        and vhosts[0].get("domains") == ["*"]
        and len(vhosts[0].get("routes", [])) == 1
    ):
        r = vhosts[0]["routes"][0]
        cluster = r.get("route", {}).get("cluster")
        if r.get("match", {}).get("prefix") == "/" and cluster:
            return cluster if "Cluster" in cluster else f"Cluster: {cluster}"
    described = []
    for vh in vhosts:
        domains = vh.get("domains", [])
        routes = ", ".join(_describe_route_match(r.get("match", {})) for r in vh.get("routes", []))
        described.append(routes if domains == ["*"] else f"{'/'.join(domains)} {routes}")
    return "Inline Route: " + "; ".join(described)


def chain_destination(chain: dict[str, Any]) -> str:
    for f in chain.get("filters", []):
        config = f.get("typedConfig", {})
        if f.get("name") == HCM:
            if "routeConfig" in config:
                return _inline_routes(config["routeConfig"])
            rds = config.get("rds", {}).get("routeConfigName")
            return f"Route: {rds}" if rds else "HTTP"
        if f.get("name") == TCP_PROXY and BLACKHOLE not in json.dumps(config):
            cluster = _tcp_cluster(config)
            return cluster if "Cluster" in cluster else f"Cluster: {cluster}"
    return "Non-HTTP/Non-TCP"


def listener_matches(listener: dict[str, Any], address: str, port: int, ltype: str) -> bool:
    if address and listener_address(listener).lower() != address.lower():
        return False
    if port and listener_port(listener) != port:
        return False
    return not (ltype and listener_type(listener).lower() != ltype.lower())


def listener_table(listeners: list[dict[str, Any]]) -> str:
    ordered = sorted(
        listeners,
        key=lambda item: (listener_port(item), listener_address(item), listener_type(item)),
    )
    rows = []
    for item in ordered:
        chains = [
            (describe_chain_match(c.get("filterChainMatch")), chain_destination(c))
            for c in _filter_chains(item)
        ]
        chains.sort(key=lambda mc: mc[1], reverse=True)
        for match, destination in chains:
            rows.append([listener_address(item), listener_port(item), match, destination])
    return format_table(("ADDRESSES", "PORT", "MATCH", "DESTINATION"), rows, padding=1)


# -- routes ------------------------------------------------------------------------------


def describe_route_domains(domains: list[str]) -> str:
    """istioctl: the shortest forms of the domains without port, at most two, then a count."""
    if not domains:
        return ""
    if len(domains) == 1:
        return domains[0]
    without_port = [d for d in domains if ":" not in d or (d.count(":") > 2 and d.endswith("]"))]
    unique = set(without_port)
    drop = set()
    for d in without_port:
        for suffix in (".svc.cluster.local", ".svc"):
            stripped = d.removesuffix(suffix)
            if stripped != d and stripped in unique:
                drop.add(d)
    kept = [d for d in without_port if d not in drop]
    if len(kept) > 2:
        return f"{', '.join(kept[:2])} + {len(kept) - 2} more..."
    return ", ".join(kept)


def _is_passthrough(route: dict[str, Any]) -> bool:
    return route.get("route", {}).get("cluster") == PASSTHROUGH


def route_table(routes: list[dict[str, Any]]) -> str:
    rows = []
    for rc in routes:
        for vh in rc.get("virtualHosts", []):
            domains = describe_route_domains(vh.get("domains", []))
            for r in vh.get("routes", []):
                if not _is_passthrough(r):
                    rows.append(
                        [
                            rc.get("name", ""),
                            vh.get("name", ""),
                            domains,
                            _describe_route_match(r.get("match", {})),
                            describe_config(r.get("metadata")),
                        ]
                    )
            if not vh.get("routes"):
                rows.append([rc.get("name", ""), vh.get("name", ""), domains, "/*", "404"])
    headers = ("NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE")
    return format_table(headers, rows, padding=5)


# -- endpoints ---------------------------------------------------------------------------


def _lb_endpoint_address(ep: dict[str, Any]) -> str:
    address = ep.get("endpoint", {}).get("address", {})
    sock = address.get("socketAddress")
    if sock is not None:
        return f"{sock.get('address', '')}:{sock.get('portValue', 0)}"
    return str(address.get("pipe", {}).get("path", ""))


def _health(ep: dict[str, Any]) -> str:
    # EDS leaves health UNKNOWN for endpoints Envoy should treat as healthy.
    status = str(ep.get("healthStatus", "HEALTHY"))
    return "HEALTHY" if status == "UNKNOWN" else status


def endpoint_rows(
    assignments: list[dict[str, Any]], address: str, port: int, cluster: str, status: str
) -> list[list[str]]:
    rows = []
    for cla in assignments:
        name = cla.get("clusterName", "")
        if cluster and name.lower() != cluster.lower():
            continue
        for locality in cla.get("endpoints", []):
            for ep in locality.get("lbEndpoints", []):
                addr = _lb_endpoint_address(ep)
                health = _health(ep)
                if address and addr.rsplit(":", 1)[0].lower() != address.lower():
                    continue
                if port and not addr.endswith(f":{port}"):
                    continue
                if status and health.lower() != status.lower():
                    continue
                rows.append([addr, health, "OK", name])
    return rows


def endpoint_table(rows: list[list[str]]) -> str:
    return format_table(("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"), rows, padding=5)


# -- command -----------------------------------------------------------------------------


def fetch_dump(address: str, proxy: str, namespace: str | None) -> dict[str, Any]:
    proxy_id = resolve_proxy_id(proxy, namespace)
    try:
        dump = debug_json(address, f"/debug/config_dump?proxyID={quote_id(proxy_id)}")
    except LookupError:
        fail(f"proxy {proxy_id} is not connected to the discovery at {address}")
    if not isinstance(dump, dict):
        fail(f"discovery at {address} returned an unexpected config dump")
    return dump


def emit(value: Any, output: str, summary: Callable[[], str]) -> None:
    if output == "json":
        click.echo(json.dumps(value, indent=4))
    elif output == "yaml":
        click.echo(yaml.safe_dump(value, sort_keys=False).rstrip())
    else:
        click.echo(summary())


output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["short", "json", "yaml"]),
    default="short",
    show_default=True,
    help="Output format.",
)
namespace_option = click.option("-n", "--namespace", default=None, help="Namespace of the pod.")


class _AliasGroup(click.Group):
    """istioctl's aliases: cluster/clusters/c, listener/listeners/l, route/routes/r, ..."""

    ALIASES = {
        "cluster": "clusters",
        "c": "clusters",
        "listener": "listeners",
        "l": "listeners",
        "route": "routes",
        "r": "routes",
        "endpoint": "endpoints",
        "ep": "endpoints",
        "a": "all",
    }

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest


@click.group("proxy-config", cls=_AliasGroup)
def proxy_config() -> None:
    """Show the Envoy configuration the discovery serves a proxy (istioctl proxy-config).

    PROXY is pod.namespace, pod with -n, or a full node id
    (sidecar~10.0.0.5~pod.ns~ns.svc.cluster.local).
    """


@proxy_config.command("clusters")
@click.argument("proxy")
@namespace_option
@click.option("--fqdn", default="", help="Only clusters whose name contains this FQDN.")
@click.option("--port", type=int, default=0, help="Only clusters of this port.")
@click.option("--subset", default="", help="Only clusters of this subset.")
@click.option("--direction", default="", help="Only inbound or outbound clusters.")
@output_option
@discovery_address_option
def clusters_cmd(
    proxy: str,
    namespace: str | None,
    fqdn: str,
    port: int,
    subset: str,
    direction: str,
    output: str,
    discovery_address: str,
) -> None:
    """Clusters: SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, DESTINATION RULE."""
    dump = fetch_dump(discovery_address, proxy, namespace)
    found = [c for c in clusters_of(dump) if cluster_matches(c, fqdn, port, subset, direction)]
    emit(found, output, lambda: cluster_table(found))


@proxy_config.command("listeners")
@click.argument("proxy")
@namespace_option
@click.option("--address", default="", help="Only listeners on this address.")
@click.option("--port", type=int, default=0, help="Only listeners on this port.")
@click.option("--type", "ltype", default="", help="Only listeners of this type (HTTP, TCP).")
@output_option
@discovery_address_option
def listeners_cmd(
    proxy: str,
    namespace: str | None,
    address: str,
    port: int,
    ltype: str,
    output: str,
    discovery_address: str,
) -> None:
    """Listeners: ADDRESSES, PORT, MATCH, DESTINATION (one row per filter chain)."""
    dump = fetch_dump(discovery_address, proxy, namespace)
    found = [item for item in listeners_of(dump) if listener_matches(item, address, port, ltype)]
    emit(found, output, lambda: listener_table(found))


@proxy_config.command("routes")
@click.argument("proxy")
@namespace_option
@click.option("--name", default="", help="Only the route configuration with this name.")
@output_option
@discovery_address_option
def routes_cmd(
    proxy: str, namespace: str | None, name: str, output: str, discovery_address: str
) -> None:
    """Routes: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE."""
    dump = fetch_dump(discovery_address, proxy, namespace)
    found = [r for r in routes_of(dump) if not name or r.get("name") == name]
    emit(found, output, lambda: route_table(found))


@proxy_config.command("endpoints")
@click.argument("proxy")
@namespace_option
@click.option("--address", default="", help="Only endpoints with this address.")
@click.option("--port", type=int, default=0, help="Only endpoints with this port.")
@click.option("--cluster", default="", help="Only endpoints of this cluster.")
@click.option("--status", default="", help="Only endpoints with this health status.")
@output_option
@discovery_address_option
def endpoints_cmd(
    proxy: str,
    namespace: str | None,
    address: str,
    port: int,
    cluster: str,
    status: str,
    output: str,
    discovery_address: str,
) -> None:
    """Endpoints: ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER."""
    dump = fetch_dump(discovery_address, proxy, namespace)
    assignments = endpoints_of(dump)
    if cluster:
        assignments = [
            a for a in assignments if a.get("clusterName", "").lower() == cluster.lower()
        ]
    rows = endpoint_rows(assignments, address, port, cluster, status)
    emit(assignments, output, lambda: endpoint_table(rows))


@proxy_config.command("all")
@click.argument("proxy")
@namespace_option
@output_option
@discovery_address_option
def all_cmd(proxy: str, namespace: str | None, output: str, discovery_address: str) -> None:
    """Clusters, listeners, routes and endpoints; with -o json, the whole config dump."""
    dump = fetch_dump(discovery_address, proxy, namespace)

    def summary() -> str:
        parts = [
            cluster_table(clusters_of(dump)),
            listener_table(listeners_of(dump)),
            route_table(routes_of(dump)),
            endpoint_table(endpoint_rows(endpoints_of(dump), "", 0, "", "")),
        ]
        return "\n\n".join(parts)

    emit(dump, output, summary)
