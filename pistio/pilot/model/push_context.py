"""The push context: indexes of services and config, built once per push and then only read.

Generators are pure functions of (push context, proxy). Everything a generator needs to ask
("which VirtualService applies to this host for this proxy?", "which DestinationRule?",
"which endpoints does this service port have?") is answered here, from indexes built in the
constructor, so that building config for thousands of proxies does no scanning.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pistio.api import networking as net
from pistio.api.mesh import MeshConfig, default_mesh_config
from pistio.config.resource import Resource
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.service import (
    DEFAULT_DOMAIN_SUFFIX,
    Endpoint,
    Service,
    ServiceInstance,
)

MESH_GATEWAY = "mesh"
_versions = itertools.count(1)


def resolve_short_name(
    host: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
) -> str:
    """Istio's rule: a host without dots is a short name in the config's namespace."""
    if "." in host or host == "*" or not namespace:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def host_matches(pattern: str, host: str) -> bool:
    """``*.example.com`` matches ``a.example.com`` (and deeper); ``*`` matches everything."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def _specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact hosts first, then longer wildcards (more specific) first."""
    return (1 if pattern.startswith("*") else 0, -len(pattern))


def _export_to(values: list[str], default: frozenset[str]) -> frozenset[str]:
    return frozenset(values) if values else default


def _visible(export_to: frozenset[str], owner_ns: str, namespace: str) -> bool:
    if "*" in export_to or namespace in export_to:
        return True
    return "." in export_to and owner_ns == namespace


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(slots=True, eq=False)
class VirtualServiceConfig:
    """A VirtualService with its hosts resolved to FQDNs and its gateways to ``ns/name``."""

    resource: Resource
    spec: net.VirtualService
    hosts: tuple[str, ...]
    gateways: frozenset[str]
    export_to: frozenset[str]

    @property
    def namespace(self) -> str:
        return self.resource.namespace or "default"

    @property
    def name(self) -> str:
        return self.resource.name


@dataclass(slots=True, eq=False)
class DestinationRuleConfig:
    """A DestinationRule with its host resolved; several rules for one host are merged."""

    resources: list[Resource]
    spec: net.DestinationRule
    host: str
    namespace: str
    export_to: frozenset[str]
    selector: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.resources[0].name


class PushContext:
    """Read-only indexes over one snapshot of config and services."""

    def __init__(
        self,
        configs: Iterable[Resource] = (),
        services: Iterable[Service] = (),
        endpoints: Iterable[Endpoint] = (),
        mesh: MeshConfig | None = None,
        domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
        jwks_resolver: Any = None,
    ) -> None:
        self.version = str(next(_versions))
        # Fetches RequestAuthentication jwksUri keys (pistio.pilot.security.jwks); None: the
        # process-wide default resolver.
        self.jwks_resolver = jwks_resolver
        self.mesh = mesh or default_mesh_config()
        self.domain_suffix = domain_suffix
        self.root_namespace = self.mesh.root_namespace or "istio-system"
        self.configs = _ordered(configs)
        self._by_kind: dict[str, list[Resource]] = defaultdict(list)
        for res in self.configs:
            self._by_kind[res.kind].append(res)

        self.services: list[Service] = sorted(services, key=lambda s: (s.hostname, s.namespace))
        self._services_by_host: dict[str, list[Service]] = defaultdict(list)
        for svc in self.services:
            self._services_by_host[svc.hostname].append(svc)
        # Every endpoint, in registry order (the XdsCache compares them between pushes).
        self.all_endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self._endpoints: dict[str, list[Endpoint]] = defaultdict(list)
        self._endpoints_by_ip: dict[str, list[Endpoint]] = defaultdict(list)
        for ep in self.all_endpoints:
            self._endpoints[ep.hostname].append(ep)
            self._endpoints_by_ip[ep.address].append(ep)

        self._index_virtual_services()
        self._index_destination_rules()
        # Results derived from this snapshot, memoized by their users (pistio.pilot.xds_cache):
        # the context is immutable, so they stay valid for its lifetime.
        self.memo: dict[str, Any] = {}

    # --- services and endpoints -----------------------------------------------------------

    def service(self, hostname: str, namespace: str | None = None) -> Service | None:
        """The service with this hostname, preferring the one in ``namespace``."""
        found = self._services_by_host.get(hostname)
        if not found:
            return None
        if namespace is not None:
            for svc in found:
                if svc.namespace == namespace:
                    return svc
        return found[0]

    def services_for(self, proxy: Proxy) -> list[Service]:
        """Services the proxy may reach: exportTo visibility, then its Sidecar's egress hosts."""
        visible = [s for s in self.services if s.visible_to(proxy.namespace)]
        sidecar = self.sidecar_for(proxy)
        if sidecar is None or not sidecar.spec.egress:
            return _one_per_host(visible, proxy.namespace)
        allowed = [s for s in visible if self._egress_allows(sidecar, proxy, s)]
        return _one_per_host(allowed, proxy.namespace)

    def _egress_allows(self, sidecar: Resource, proxy: Proxy, svc: Service) -> bool:
        spec: net.Sidecar = sidecar.spec
        for listener in spec.egress:
            for entry in listener.hosts:
                ns, _, host = entry.partition("/")
                if ns == "." and svc.namespace != proxy.namespace:
                    continue
                if ns == "~":
                    continue
                if ns not in ("*", ".") and ns != svc.namespace:
                    continue
                if host_matches(host, svc.hostname):
                    return True
        return False

    def endpoints(self, hostname: str, port_name: str | None = None) -> list[Endpoint]:
        """Endpoints of a service, optionally of one service port (by port name)."""
        eps = self._endpoints.get(hostname, [])
        if port_name is None:
            return list(eps)
        return [e for e in eps if e.service_port_name == port_name]

    def service_instances(self, proxy: Proxy) -> list[ServiceInstance]:
        """The service ports the proxy's own workload serves (for inbound config)."""
        out: list[ServiceInstance] = []
        seen: set[tuple[str, int]] = set()
        for ip in proxy.ip_addresses:
            for ep in self._endpoints_by_ip.get(ip, []):
                svc = self.service(ep.hostname, ep.namespace)
                if svc is None:
                    continue
                port = svc.port_by_name(ep.service_port_name)
                if port is None or (svc.hostname, port.port) in seen:
                    continue
                seen.add((svc.hostname, port.port))
                out.append(ServiceInstance(svc, port, ep))
        return out

    # --- configuration by kind ------------------------------------------------------------

    def configs_of(self, kind: str) -> list[Resource]:
        return self._by_kind.get(kind, [])

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_short_name(host, namespace, self.domain_suffix)

    # --- VirtualServices ------------------------------------------------------------------

    def _index_virtual_services(self) -> None:
        self._virtual_services: list[VirtualServiceConfig] = []
        self._vs_by_name: dict[tuple[str, str], VirtualServiceConfig] = {}
        default_export = frozenset(self.mesh.default_virtual_service_export_to or ["*"])
        for res in self.configs_of("VirtualService"):
            spec: net.VirtualService = res.spec
            ns = res.namespace or "default"
            gateways = frozenset(
                g if "/" in g or g == MESH_GATEWAY else f"{ns}/{g}"
                for g in (spec.gateways or [MESH_GATEWAY])
            )
            vs = VirtualServiceConfig(
                resource=res,
                spec=spec,
                hosts=tuple(self.resolve(h, ns) for h in spec.hosts),
                gateways=gateways,
                export_to=_export_to(spec.export_to, default_export),
            )
            self._vs_by_name[(ns, res.name)] = vs
            if spec.hosts:  # a VirtualService without hosts is a delegate
                self._virtual_services.append(vs)

    def virtual_services(
        self, proxy: Proxy, gateway: str = MESH_GATEWAY
    ) -> list[VirtualServiceConfig]:
        """VirtualServices bound to ``gateway`` and visible to the proxy, oldest first."""
        return [
            vs
            for vs in self._virtual_services
            if gateway in vs.gateways and _visible(vs.export_to, vs.namespace, proxy.namespace)
        ]

    def virtual_service_for_host(
        self, proxy: Proxy, hostname: str, gateway: str = MESH_GATEWAY
    ) -> VirtualServiceConfig | None:
        """The VirtualService that routes ``hostname``: an exact host beats a wildcard, the
        proxy's own namespace beats others, then the oldest wins (Istio's conflict rule)."""
        best_key: tuple[int, ...] | None = None
        best: VirtualServiceConfig | None = None
        for order, vs in enumerate(self.virtual_services(proxy, gateway)):
            for pattern in vs.hosts:
                if not host_matches(pattern, hostname):
                    continue
                local = 0 if vs.namespace == proxy.namespace else 1
                key = (*_specificity(pattern), local, order)
                if best_key is None or key < best_key:
                    best_key, best = key, vs
        return best

    def delegate(self, name: str, namespace: str) -> VirtualServiceConfig | None:
        """A delegate VirtualService named by a route's ``delegate`` field."""
        return self._vs_by_name.get((namespace, name))

    # --- DestinationRules -----------------------------------------------------------------

    def _index_destination_rules(self) -> None:
        default_export = frozenset(self.mesh.default_destination_rule_export_to or ["*"])
        merged: dict[tuple[str, str, tuple[tuple[str, str], ...]], DestinationRuleConfig] = {}
        for res in self.configs_of("DestinationRule"):
            spec: net.DestinationRule = res.spec
            ns = res.namespace or "default"
            host = self.resolve(spec.host, ns)
            selector = dict(spec.workload_selector.match_labels) if spec.workload_selector else {}
            key = (ns, host, tuple(sorted(selector.items())))
            existing = merged.get(key)
            if existing is None:
                merged[key] = DestinationRuleConfig(
                    resources=[res],
                    spec=spec,
                    host=host,
                    namespace=ns,
                    export_to=_export_to(spec.export_to, default_export),
                    selector=selector,
                )
            else:
                existing.spec = _merge_destination_rules(existing.spec, spec)
                existing.resources.append(res)
        self._destination_rules: dict[str, list[DestinationRuleConfig]] = defaultdict(list)
        for dr in merged.values():
            self._destination_rules[dr.namespace].append(dr)

    def destination_rule(self, proxy: Proxy, hostname: str) -> DestinationRuleConfig | None:
        """The DestinationRule for traffic from ``proxy`` to ``hostname``.

        Istio looks in the proxy's namespace, then the service's namespace, then the root
        namespace; within one, the most specific host wins (exact before wildcard).
        """
        svc = self.service(hostname)
        namespaces = [proxy.namespace]
        if svc is not None and svc.namespace not in namespaces:
            namespaces.append(svc.namespace)
        if self.root_namespace not in namespaces:
            namespaces.append(self.root_namespace)
        for ns in namespaces:
            candidates = [
                dr
                for dr in self._destination_rules.get(ns, [])
                if host_matches(dr.host, hostname)
                and _visible(dr.export_to, dr.namespace, proxy.namespace)
                and labels_match(dr.selector, proxy.labels)
            ]
            if candidates:
                # Rules with a workload selector win over namespace-wide ones.
                candidates.sort(key=lambda d: (0 if d.selector else 1, *_specificity(d.host)))
                return candidates[0]
        return None

    # --- Sidecar scope and EnvoyFilters ---------------------------------------------------

    def sidecar_for(self, proxy: Proxy) -> Resource | None:
        """The Sidecar resource for a workload: a selector match in its namespace, then the
        namespace default (no selector), then the root namespace default."""
        in_ns = [
            s for s in self.configs_of("Sidecar") if (s.namespace or "default") == proxy.namespace
        ]
        for s in in_ns:
            sel = s.spec.workload_selector
            if sel is not None and sel.labels and labels_match(sel.labels, proxy.labels):
                return s
        for s in in_ns:
            if s.spec.workload_selector is None or not s.spec.workload_selector.labels:
                return s
        for s in self.configs_of("Sidecar"):
            if s.namespace == self.root_namespace and (
                s.spec.workload_selector is None or not s.spec.workload_selector.labels
            ):
                return s
        return None

    def envoy_filters(self, proxy: Proxy) -> list[Resource]:
        """EnvoyFilters for the proxy: root namespace first, then its own, by priority."""
        out = []
        for f in self.configs_of("EnvoyFilter"):
            ns = f.namespace or "default"
            if ns not in (self.root_namespace, proxy.namespace):
                continue
            sel = f.spec.workload_selector
            if sel is not None and sel.labels and not labels_match(sel.labels, proxy.labels):
                continue
            out.append(f)
        out.sort(key=lambda f: (0 if f.namespace == self.root_namespace else 1, f.spec.priority))
        return out


def _ordered(configs: Iterable[Resource]) -> list[Resource]:
    """Istio's config order: oldest first. Resources read from files have no creation time;
    the stable sort keeps them in the order they were read."""
    return sorted(configs, key=lambda r: r.metadata.creation_timestamp or "")


def _one_per_host(services: list[Service], namespace: str) -> list[Service]:
    """One service per hostname: the proxy's own namespace wins, else the first."""
    by_host: dict[str, Service] = {}
    for svc in services:
        cur = by_host.get(svc.hostname)
        if cur is None or (svc.namespace == namespace and cur.namespace != namespace):
            by_host[svc.hostname] = svc
    return list(by_host.values())


def _merge_destination_rules(
    base: net.DestinationRule, other: net.DestinationRule
) -> net.DestinationRule:
    """Istio merges rules for one host in one namespace: subsets are added (first name wins),
    the first traffic policy is kept."""
    names = {s.name for s in base.subsets}
    subsets = base.subsets + [s for s in other.subsets if s.name not in names]
    return base.model_copy(
        update={
            "subsets": subsets,
            "traffic_policy": base.traffic_policy or other.traffic_policy,
        }
    )
