"""The service registry as analyzers see it: ServiceEntries and Kubernetes Services by host.

Kubernetes Services are converted to ServiceEntry-like records, and each host is keyed by the
namespaces it is visible from (``exportTo``), as Istio's ``InitServiceEntryHostMap`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Context


@dataclass
class SvcPort:
    number: int
    name: str
    protocol: str


@dataclass
class SvcRecord:
    """A ServiceEntry, or a Kubernetes Service seen as one."""

    hosts: list[str]
    ports: list[SvcPort] = field(default_factory=list)
    workload_labels: dict[str, str] = field(default_factory=dict)


# (scope, fqdn) -> record; scope is "*" or a namespace
HostMap = dict[tuple[str, str], SvcRecord]


def _export_to_annotation(value: str, namespace: str) -> list[str]:
    if not value:
        return ["*"]
    return [namespace if ns == "." else ns for ns in value.split(",")]


def service_entry_host_map(ctx: Context) -> HostMap:
    result: HostMap = {}
    for r in ctx.each(u.SERVICE_ENTRY):
        ns = u.ns_of(r)
        spec = r.spec
        export_to = u.items(spec, "export_to")
        if u.is_export_to_all(export_to):
            scopes = ["*"]
        else:
            scopes = sorted({ns if e == "." else e for e in export_to})
        rec = SvcRecord(
            hosts=u.items(spec, "hosts"),
            ports=[
                SvcPort(u.to_int(u.get(p, "number")) or 0, u.text(p, "name"), u.text(p, "protocol"))
                for p in u.items(spec, "ports")
            ],
            workload_labels=u.mapping(spec, "workload_selector.labels"),
        )
        for scope in scopes:
            for h in rec.hosts:
                result[(scope, u.to_fqdn(ns, h))] = rec
    for r in ctx.each(u.SERVICE):
        ns = u.ns_of(r)
        ports = [
            SvcPort(u.to_int(u.get(p, "port")) or 0, u.text(p, "name"), u.text(p, "protocol"))
            for p in u.items(r.obj, "spec.ports")
        ]
        host = u.to_fqdn(ns, r.name)
        rec = SvcRecord(hosts=[host], ports=ports)
        anno = u.annotations_of(r).get(u.EXPORT_TO_ANNOTATION, "")
        for scope in _export_to_annotation(anno, ns):
            result[(scope, host)] = rec
    return result


def destination_host(
    source_ns: str, export_to: list[str], host: str, hosts: HostMap
) -> SvcRecord | None:
    """``GetDestinationHost``: the service a host refers to, as seen from a namespace."""
    fqdn = u.to_fqdn(source_ns, host)
    if ("*", fqdn) in hosts:
        return hosts[("*", fqdn)]
    scopes = [source_ns] if not export_to else [source_ns if e == "." else e for e in export_to]
    for scope in scopes:
        if (scope, fqdn) in hosts:
            return hosts[(scope, fqdn)]
    # wildcard ServiceEntry hosts visible here
    bare = host.removeprefix("*")
    for (scope, se_host), rec in hosts.items():
        if not se_host.startswith("*"):
            continue
        if scope not in ("*", source_ns):
            continue
        if bare.endswith(se_host[1:]):
            return rec
    return None
