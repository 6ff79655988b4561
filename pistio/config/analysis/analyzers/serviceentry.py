"""ServiceEntry analyzers: addresses required for TCP ports, conflicting protocols."""

from __future__ import annotations

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource

AUTO_ALLOCATE_KEYS = ("ISTIO_META_DNS_AUTO_ALLOCATE", "PILOT_ENABLE_IP_AUTOALLOCATE")


class ProtocolAddressesAnalyzer(Analyzer):
    name = "serviceentry.Analyzer"
    description = "Checks the validity of ServiceEntry"

    def analyze(self, ctx: Context) -> None:
        meta = u.mapping(ctx.mesh_config, "default_config.proxy_metadata")
        auto_allocated = meta.get("ISTIO_META_DNS_CAPTURE") == "true" and any(
            meta.get(k) == "true" for k in AUTO_ALLOCATE_KEYS
        )
        for r in ctx.each(u.SERVICE_ENTRY):
            if u.items(r.spec, "addresses") or auto_allocated or _addresses_allocated(r):
                continue
            for i, port in enumerate(u.items(r.spec, "ports")):
                protocol = u.text(port, "protocol")
                if not protocol or protocol.upper() == "TCP":
                    ctx.report(r, "ServiceEntryAddressesRequired", path=f"spec.ports[{i}].name")


def _addresses_allocated(r: Resource) -> bool:
    """Addresses the control plane allocated, recorded in the status."""
    status = getattr(r.obj, "status", None) or {}
    return bool(u.items(status, "addresses"))


class ConflictingServiceEntryProtocolAnalyzer(Analyzer):
    name = "serviceentry.ConflictingServiceEntryProtocolAnalyzer"
    description = (
        "Checks if multiple ServiceEntries define the same host and port with different protocols"
    )

    def analyze(self, ctx: Context) -> None:
        # (scope, host, port) -> [(protocol, resource)]
        index: dict[tuple[str, str, int], list[tuple[str, Resource]]] = {}
        for r in ctx.each(u.SERVICE_ENTRY):
            export_to = u.items(r.spec, "export_to")
            if u.is_export_to_all(export_to):
                scopes = ["*"]
            else:
                scopes = sorted({u.ns_of(r) if e == "." else e for e in export_to})
            for scope in scopes:
                for h in u.items(r.spec, "hosts"):
                    for p in u.items(r.spec, "ports"):
                        key = (scope, h, u.to_int(u.get(p, "number")) or 0)
                        index.setdefault(key, []).append((u.text(p, "protocol"), r))
        reported: set[int] = set()
        for (scope, host, port), entries in index.items():
            entries = list(entries)
            if scope != "*":
                entries += index.get(("*", host, port), [])
            protocols = sorted({p.upper() for p, _ in entries})
            if len(protocols) < 2:
                continue
            names = sorted({u.full_name(r) for _, r in entries})
            for _, r in entries:
                if id(r) in reported:
                    continue
                reported.add(id(r))
                ctx.report(
                    r,
                    "ConflictingServiceEntryProtocol",
                    ", ".join(names),
                    host,
                    port,
                    ", ".join(protocols),
                    path="metadata.name",
                )
