"""The ServiceEntry registry: services from ServiceEntries, endpoints from their inline
endpoints or from the WorkloadEntries (and Pods) their workloadSelector picks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pistio.api import networking as net
from pistio.config.protocol import parse_protocol
from pistio.config.resource import Resource
from pistio.pilot.model.service import (
    DEFAULT_DOMAIN_SUFFIX,
    Endpoint,
    Resolution,
    Service,
    ServicePort,
    Source,
)
from pistio.pilot.registry.aggregate import Snapshot
from pistio.pilot.registry.workload import locality_of, spiffe_id, tls_mode_of

_RESOLUTION = {
    "NONE": Resolution.PASSTHROUGH,
    "STATIC": Resolution.CLIENT_SIDE_LB,
    "DNS": Resolution.DNS_LB,
    "DNS_ROUND_ROBIN": Resolution.DNS_ROUND_ROBIN_LB,
    "DYNAMIC_DNS": Resolution.DNS_LB,
}


def _ports(spec: net.ServiceEntry) -> tuple[ServicePort, ...]:
    return tuple(
        ServicePort(
            name=p.name,
            port=p.number,
            protocol=parse_protocol(p.protocol),
            target_port=p.target_port or None,
        )
        for p in spec.ports
    )


def _workload_endpoints(
    svc: Service,
    we: net.WorkloadEntry,
    namespace: str,
    trust_domain: str,
    name: str = "",
) -> list[Endpoint]:
    out = []
    for sp in svc.ports:
        port = (
            we.ports.get(sp.name)
            or (sp.target_port if isinstance(sp.target_port, int) else None)
            or sp.port
        )
        out.append(
            Endpoint(
                address=we.address,
                port=port,
                service_port_name=sp.name,
                hostname=svc.hostname,
                namespace=namespace,
                labels=dict(we.labels),
                service_account=spiffe_id(trust_domain, namespace, we.service_account)
                if we.service_account
                else "",
                locality=locality_of(we.labels, we.locality),
                weight=we.weight or 1,
                network=we.network,
                tls_mode=tls_mode_of(we.labels, has_sidecar=False),
                workload_name=name,
            )
        )
    return out


def service_entry_snapshot(
    resources: Iterable[Resource],
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    trust_domain: str = "cluster.local",
) -> Snapshot:
    by_kind: dict[str, list[Resource]] = defaultdict(list)
    for res in resources:
        if res.group == "networking.istio.io" and res.kind in ("ServiceEntry", "WorkloadEntry"):
            by_kind[res.kind].append(res)
    services: list[Service] = []
    endpoints: list[Endpoint] = []
    for res in by_kind["ServiceEntry"]:
        spec: net.ServiceEntry = res.spec
        ns = res.namespace or "default"
        resolution = _RESOLUTION[spec.resolution]
        for host in spec.hosts:
            svc = Service(
                hostname=host,
                namespace=ns,
                name=res.name,
                ports=_ports(spec),
                addresses=tuple(spec.addresses),
                resolution=resolution,
                mesh_external=spec.location == "MESH_EXTERNAL",
                source=Source.SERVICE_ENTRY,
                labels=dict(res.metadata.labels),
                selector=dict(spec.workload_selector.labels) if spec.workload_selector else {},
                export_to=frozenset(spec.export_to) or frozenset({"*"}),
                service_accounts=tuple(spec.subject_alt_names),
                origin=res.ref,
            )
            services.append(svc)
            for we in spec.endpoints:
                endpoints.extend(_workload_endpoints(svc, we, ns, trust_domain))
            if svc.selector:
                for we_res in by_kind["WorkloadEntry"]:
                    we_spec: net.WorkloadEntry = we_res.spec
                    if (we_res.namespace or "default") == ns and all(
                        we_spec.labels.get(k) == v for k, v in svc.selector.items()
                    ):
                        endpoints.extend(
                            _workload_endpoints(svc, we_spec, ns, trust_domain, we_res.name)
                        )
            if (
                not spec.endpoints
                and not svc.selector
                and resolution in (Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB)
                and not host.startswith("*")
            ):
                # DNS resolution without endpoints resolves the host itself.
                endpoints.extend(
                    Endpoint(
                        address=host,
                        port=sp.target_port if isinstance(sp.target_port, int) else sp.port,
                        service_port_name=sp.name,
                        hostname=host,
                        namespace=ns,
                    )
                    for sp in svc.ports
                )
    return Snapshot(tuple(services), tuple(endpoints))
