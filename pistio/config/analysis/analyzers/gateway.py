"""Gateway analyzers: service ports, duplicate certificates, secrets, conflicting gateways."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


def _selector_path(selector: dict[str, str]) -> str:
    """The line of the first selector label, as istioctl points at it."""
    if not selector:
        return "spec.selector"
    return f"spec.selector.{sorted(selector)[0]}"


class IngressGatewayPortAnalyzer(Analyzer):
    name = "gateway.IngressGatewayPortAnalyzer"
    description = "Checks a gateway's ports against the gateway's Kubernetes service ports"

    def analyze(self, ctx: Context) -> None:
        services_by_pod: dict[int, list[Resource]] = {}
        pods = ctx.each(u.POD)
        for svc in ctx.each(u.SERVICE):
            sel = u.mapping(svc.obj, "spec.selector")
            for pod in pods:
                if u.ns_of(pod) == u.ns_of(svc) and u.selector_matches(sel, u.labels_of(pod)):
                    services_by_pod.setdefault(id(pod), []).append(svc)
        for gw in ctx.each(u.GATEWAY):
            self._check(ctx, gw, pods, services_by_pod)

    @staticmethod
    def _check(ctx: Context, gw: Resource, pods: list[Resource], by_pod: dict) -> None:
        selector = u.mapping(gw.spec, "selector")
        ports: set[int] = set()
        matches = 0
        for pod in pods:
            if not u.selector_matches(selector, u.labels_of(pod)):
                continue
            matches += 1
            for svc in by_pod.get(id(pod), []):
                for p in u.items(svc.obj, "spec.ports"):
                    if u.text(p, "protocol") != "TCP":
                        continue
                    # The gateway listens on the port the Service targets on its pods.
                    target = u.to_int(u.get(p, "target_port"))
                    ports.add(target if target else (u.to_int(u.get(p, "port")) or 0))
        sel_str = u.selector_string(selector)
        if matches == 0:
            ctx.report(
                gw, "ReferencedResourceNotFound", "selector", sel_str, path=_selector_path(selector)
            )
            return
        for server in u.items(gw.spec, "servers"):
            port = u.get(server, "port")
            if port is None:
                continue
            number = u.to_int(u.get(port, "number")) or 0
            if number not in ports:
                ctx.report(
                    gw,
                    "GatewayPortNotDefinedOnService",
                    number,
                    sel_str,
                    path=_selector_path(selector),
                )


def _same_certificate(a: Any, b: Any) -> bool:
    ca, cb = u.text(a, "credential_name"), u.text(b, "credential_name")
    if ca and cb:
        return ca == cb
    if not ca and not cb:
        sa, sb = u.text(a, "server_certificate"), u.text(b, "server_certificate")
        if sa and sb and sa == sb:
            ka, kb = u.text(a, "private_key"), u.text(b, "private_key")
            return bool(ka and kb and ka == kb)
    return False


def _selector_subset(x: dict[str, str], y: dict[str, str]) -> bool:
    return all(k in y and y[k] == v for k, v in x.items()) and not any(
        k in y and y[k] != v for k, v in x.items()
    )


class CertificateAnalyzer(Analyzer):
    name = "gateway.CertificateAnalyzer"
    description = "Checks a gateway certificate"

    def analyze(self, ctx: Context) -> None:
        gateways = ctx.each(u.GATEWAY)
        for gw in gateways:
            selector = u.mapping(gw.spec, "selector")
            for other in gateways:
                if other is gw:
                    continue
                # Istio scopes gateways to their namespace only when PILOT_SCOPE_GATEWAY_TO_NAMESPACE
                # is set; it is off by default.
                if selector and not _selector_subset(selector, u.mapping(other.spec, "selector")):
                    continue
                for cur in u.items(gw.spec, "servers"):
                    for srv in u.items(other.spec, "servers"):
                        t1, t2 = u.get(cur, "tls"), u.get(srv, "tls")
                        if t1 is None or t2 is None:
                            continue
                        if _same_certificate(t1, t2):
                            ctx.report(
                                gw,
                                "GatewayDuplicateCertificate",
                                [u.full_name(gw), u.full_name(other)],
                                path="metadata.name",
                            )


def _gateway_namespace(ctx: Context, selector: dict[str, str]) -> str | None:
    """The namespace of the first pod the gateway selects (None when it selects none)."""
    for pod in ctx.each(u.POD):
        if u.selector_matches(selector, u.labels_of(pod)):
            return u.ns_of(pod)
    return None


def _decode(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=False)
    except (ValueError, TypeError):
        return None


def _secret_cert(secret: Resource) -> bytes | None:
    """The server certificate in a gateway credential Secret (kubernetes.io/tls or generic)."""
    data = u.mapping(secret.obj, "data")
    string_data = u.mapping(secret.obj, "string_data")
    for cert_key, key_key in (("tls.crt", "tls.key"), ("cert", "key")):
        if cert_key in data or cert_key in string_data:
            cert = (
                _decode(data[cert_key]) if cert_key in data else str(string_data[cert_key]).encode()
            )
            key = (
                _decode(data.get(key_key))
                if key_key in data
                else (str(string_data[key_key]).encode() if key_key in string_data else None)
            )
            if not cert or not key:
                return None
            return cert
    return None


def _valid_certificate(pem: bytes) -> bool:
    """A parseable PEM X.509 certificate that is currently valid (istiod's check)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return False
    now = datetime.now(UTC)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


class SecretAnalyzer(Analyzer):
    name = "gateway.SecretAnalyzer"
    description = "Checks a gateway's referenced secrets for correctness"

    def analyze(self, ctx: Context) -> None:
        for gw in ctx.each(u.GATEWAY):
            selector = u.mapping(gw.spec, "selector")
            gw_ns = _gateway_namespace(ctx, selector)
            if not gw_ns:
                ctx.report(
                    gw,
                    "ReferencedResourceNotFound",
                    "selector",
                    u.selector_string(selector),
                    path=_selector_path(selector),
                )
                continue
            for i, server in enumerate(u.items(gw.spec, "servers")):
                cn = u.text(server, "tls.credential_name")
                if not cn:
                    continue
                path = f"spec.servers[{i}].tls.credentialName"
                sns, sname = u.short_or_full(gw_ns, cn)
                secret = ctx.find(u.SECRET, sns, sname)
                if secret is None:
                    ctx.report(gw, "ReferencedResourceNotFound", "credentialName", cn, path=path)
                    continue
                cert = _secret_cert(secret)
                if cert is None or not _valid_certificate(cert):
                    ctx.report(gw, "InvalidGatewayCredential", gw.name, gw_ns, path=path)


class ConflictingGatewayAnalyzer(Analyzer):
    name = "gateway.ConflictingGatewayAnalyzer"
    description = "Checks a gateway's selector, port number and hosts"

    def analyze(self, ctx: Context) -> None:
        # (selector string, port) -> {gateway full name: {host: bind}}
        index: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
        for gw in ctx.each(u.GATEWAY):
            sel = u.selector_string(u.mapping(gw.spec, "selector"))
            for server in u.items(gw.spec, "servers"):
                port = u.to_int(u.get(server, "port.number")) or 0
                bind = u.text(server, "bind")
                index.setdefault((sel, port), {})[u.full_name(gw)] = {
                    h: bind for h in u.items(server, "hosts")
                }
        for gw in ctx.each(u.GATEWAY):
            self._check(ctx, gw, index)

    @staticmethod
    def _same_workload(ctx: Context, a: dict[str, str], b: dict[str, str]) -> bool:
        return any(
            u.selector_matches(a, labels) and u.selector_matches(b, labels)
            for labels in (u.labels_of(p) for p in ctx.each(u.POD))
        )

    def _check(self, ctx: Context, gw: Resource, index: dict) -> None:
        selector = u.mapping(gw.spec, "selector")
        sel = u.selector_string(selector)
        name = u.full_name(gw)
        # Gateways whose selectors are the same, or overlap on a running pod.
        hits = []
        for key_sel, port in index:
            if key_sel == sel or (
                (sel in key_sel or key_sel in sel)
                and self._same_workload(ctx, selector, _parse_selector(key_sel))
            ):
                hits.append((key_sel, port))
        if sel and not hits:
            ctx.report(
                gw, "ReferencedResourceNotFound", "selector", sel, path=_selector_path(selector)
            )
            return
        for server in u.items(gw.spec, "servers"):
            port = u.to_int(u.get(server, "port.number")) or 0
            hosts = u.items(server, "hosts")
            bind = u.text(server, "bind")
            conflicts = []
            for key in hits:
                if key[1] != port:
                    continue
                for other, known in index[key].items():
                    if other != name and any(
                        known.get(h, None) == bind and h in known for h in hosts
                    ):
                        conflicts.append(other)
            if conflicts:
                ctx.report(
                    gw,
                    "ConflictingGateways",
                    ",".join(sorted(conflicts)),
                    sel,
                    str(port),
                    ",".join(hosts),
                )


def _parse_selector(text: str) -> dict[str, str]:
    out = {}
    for pair in text.split(","):
        k, sep, v = pair.partition("=")
        if sep:
            out[k] = v
    return out
