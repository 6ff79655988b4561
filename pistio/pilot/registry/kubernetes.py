"""The Kubernetes registry: Services, and their endpoints from Pods, Endpoints and EndpointSlices.

Works from manifests (files) the same way it will from a watched API server: a Service with a
selector gets an endpoint per ready Pod with an IP whose labels match; a Service without a
selector takes its endpoints from Endpoints/EndpointSlice objects, as Kubernetes does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pistio.api import kube
from pistio.config.protocol import port_protocol
from pistio.config.resource import Resource
from pistio.pilot.model.service import (
    DEFAULT_DOMAIN_SUFFIX,
    Endpoint,
    HealthStatus,
    Resolution,
    Service,
    ServicePort,
    Source,
)
from pistio.pilot.registry.aggregate import Snapshot
from pistio.pilot.registry.workload import (
    NETWORK_LABEL,
    SIDECAR_STATUS_ANNOTATION,
    locality_of,
    spiffe_id,
    tls_mode_of,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


def service_hostname(name: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    return f"{name}.{namespace}.svc.{domain_suffix}"


def convert_service(res: Resource, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> Service:
    obj: kube.Service = res.obj  # type: ignore[assignment]
    spec = obj.spec
    ns = res.namespace or "default"
    ports = tuple(
        ServicePort(
            name=p.name,
            port=p.port,
            protocol=port_protocol(p.name, p.protocol or "TCP", p.app_protocol, p.port),
            target_port=p.target_port if p.target_port not in (None, "", 0) else p.port,
        )
        for p in spec.ports
    )
    headless = spec.cluster_ip == "None"
    addresses: tuple[str, ...] = ()
    if spec.cluster_ip and not headless:
        addresses = tuple(dict.fromkeys([spec.cluster_ip, *spec.cluster_ips]))
    resolution = Resolution.CLIENT_SIDE_LB
    external_name = ""
    if spec.type == "ExternalName":
        resolution = Resolution.DNS_LB
        external_name = spec.external_name
    elif headless:
        resolution = Resolution.PASSTHROUGH
    export = obj.metadata.annotations.get(EXPORT_TO_ANNOTATION, "")
    export_to = frozenset(x.strip() for x in export.split(",") if x.strip()) or frozenset({"*"})
    return Service(
        hostname=service_hostname(res.name, ns, domain_suffix),
        namespace=ns,
        name=res.name,
        ports=ports,
        addresses=addresses,
        resolution=resolution,
        mesh_external=spec.type == "ExternalName",
        source=Source.KUBERNETES,
        labels=dict(obj.metadata.labels),
        selector=dict(spec.selector),
        export_to=export_to,
        external_name=external_name,
        origin=res.ref,
    )


def _pod_ip(pod: kube.Pod) -> str:
    status = pod.status or {}
    ip = status.get("podIP") or ""
    return ip if isinstance(ip, str) else ""


def _pod_health(pod: kube.Pod) -> HealthStatus:
    status = pod.status or {}
    if status.get("phase") not in (None, "Running"):
        return HealthStatus.UNHEALTHY
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return HealthStatus.HEALTHY if cond.get("status") == "True" else HealthStatus.UNHEALTHY
    return HealthStatus.HEALTHY


def _has_sidecar(pod: kube.Pod) -> bool:
    if SIDECAR_STATUS_ANNOTATION in pod.metadata.annotations:
        return True
    return any(c.name == "istio-proxy" for c in pod.spec.containers + pod.spec.init_containers)


def _target_port(pod: kube.Pod, target: int | str | None, default: int) -> int | None:
    """A Service targetPort against a pod: a number, or the name of a container port."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target:
        if target.isdigit():
            return int(target)
        for c in pod.spec.containers:
            for p in c.ports:
                if p.name == target:
                    return p.container_port
        return None  # Kubernetes leaves such pods out of the endpoints
    return default


def pod_endpoints(svc: Service, pod_res: Resource, trust_domain: str) -> list[Endpoint]:
    pod: kube.Pod = pod_res.obj  # type: ignore[assignment]
    ip = _pod_ip(pod)
    if not ip:
        return []
    labels = dict(pod.metadata.labels)
    sa = pod.spec.service_account_name or pod.spec.service_account or "default"
    ns = pod_res.namespace or "default"
    out = []
    for sp in svc.ports:
        port = _target_port(pod, sp.target_port, sp.port)
        if port is None:
            continue
        out.append(
            Endpoint(
                address=ip,
                port=port,
                service_port_name=sp.name,
                hostname=svc.hostname,
                namespace=svc.namespace,
                labels=labels,
                service_account=spiffe_id(trust_domain, ns, sa),
                locality=locality_of(labels),
                health=_pod_health(pod),
                network=labels.get(NETWORK_LABEL, ""),
                tls_mode=tls_mode_of(labels, _has_sidecar(pod)),
                workload_name=labels.get("app", pod_res.name),
                pod_name=pod_res.name,
            )
        )
    return out


def _slice_endpoints(svc: Service, slices: list[Resource]) -> list[Endpoint]:
    out = []
    for res in slices:
        sl: kube.EndpointSlice = res.obj  # type: ignore[assignment]
        for kp in sl.ports:
            sp = (
                svc.port_by_name(kp.name or "")
                if kp.name
                else (svc.ports[0] if len(svc.ports) == 1 else None)
            )
            if sp is None or kp.port is None:
                continue
            for ep in sl.endpoints:
                ready = ep.conditions is None or ep.conditions.ready is not False
                for addr in ep.addresses:
                    out.append(
                        Endpoint(
                            address=addr,
                            port=kp.port,
                            service_port_name=sp.name,
                            hostname=svc.hostname,
                            namespace=svc.namespace,
                            health=HealthStatus.HEALTHY if ready else HealthStatus.UNHEALTHY,
                            locality=ep.zone or "",
                        )
                    )
    return out


def _endpoints_object(svc: Service, objs: list[Resource]) -> list[Endpoint]:
    out = []
    for res in objs:
        eps: kube.Endpoints = res.obj  # type: ignore[assignment]
        for subset in eps.subsets:
            for kp in subset.ports:
                sp = (
                    svc.port_by_name(kp.name or "")
                    if kp.name
                    else (svc.ports[0] if len(svc.ports) == 1 else None)
                )
                if sp is None or kp.port is None:
                    continue
                for addrs, health in (
                    (subset.addresses, HealthStatus.HEALTHY),
                    (subset.not_ready_addresses, HealthStatus.UNHEALTHY),
                ):
                    out.extend(
                        Endpoint(
                            address=a.ip,
                            port=kp.port,
                            service_port_name=sp.name,
                            hostname=svc.hostname,
                            namespace=svc.namespace,
                            health=health,
                        )
                        for a in addrs
                    )
    return out


def kubernetes_snapshot(
    resources: Iterable[Resource],
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
    trust_domain: str = "cluster.local",
) -> Snapshot:
    """Services and endpoints from Kubernetes objects (Service, Pod, Endpoints, EndpointSlice)."""
    by_kind: dict[str, list[Resource]] = defaultdict(list)
    for res in resources:
        if res.group in ("", "discovery.k8s.io"):
            by_kind[res.kind].append(res)
    pods_by_ns: dict[str, list[Resource]] = defaultdict(list)
    for pod in by_kind["Pod"]:
        pods_by_ns[pod.namespace or "default"].append(pod)
    slices: dict[tuple[str, str], list[Resource]] = defaultdict(list)
    for sl in by_kind["EndpointSlice"]:
        owner = sl.metadata.labels.get(SERVICE_NAME_LABEL, "")
        slices[(sl.namespace or "default", owner)].append(sl)
    endpoints_objs: dict[tuple[str, str], list[Resource]] = defaultdict(list)
    for eo in by_kind["Endpoints"]:
        endpoints_objs[(eo.namespace or "default", eo.name)].append(eo)

    services: list[Service] = []
    endpoints: list[Endpoint] = []
    for res in by_kind["Service"]:
        svc = convert_service(res, domain_suffix)
        services.append(svc)
        if svc.selector:
            for pod in pods_by_ns[svc.namespace]:
                labels = pod.metadata.labels
                if all(labels.get(k) == v for k, v in svc.selector.items()):
                    endpoints.extend(pod_endpoints(svc, pod, trust_domain))
        else:
            key = (svc.namespace, svc.name)
            endpoints.extend(_slice_endpoints(svc, slices[key]))
            if not slices[key]:
                endpoints.extend(_endpoints_object(svc, endpoints_objs[key]))
    accounts: dict[str, set[str]] = defaultdict(set)
    for ep in endpoints:
        if ep.service_account:
            accounts[ep.hostname].add(ep.service_account)
    for svc in services:
        svc.service_accounts = tuple(sorted(accounts.get(svc.hostname, ())))
    return Snapshot(tuple(services), tuple(endpoints))
