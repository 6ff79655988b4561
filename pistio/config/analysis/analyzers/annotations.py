"""Annotation analyzers: unknown, misplaced, invalid, deprecated and alpha Istio annotations."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


@dataclass(frozen=True)
class AnnotationDef:
    """An annotation Istio defines (istio.io/api annotation/annotations.yaml)."""

    name: str
    status: str  # Alpha, Beta, Stable
    resources: tuple[str, ...]
    deprecated: bool = False
    hidden: bool = False


def _a(name: str, status: str, *resources: str, deprecated: bool = False, hidden: bool = False):
    return AnnotationDef(name, status, resources or ("Pod",), deprecated, hidden)


ANNOTATIONS: dict[str, AnnotationDef] = {
    d.name: d
    for d in (
        _a(
            "alpha.istio.io/canonical-serviceaccounts",
            "Alpha",
            "Service",
            deprecated=True,
            hidden=True,
        ),
        _a(
            "alpha.istio.io/kubernetes-serviceaccounts",
            "Alpha",
            "Service",
            deprecated=True,
            hidden=True,
        ),
        _a("ambient.istio.io/bypass-inbound-capture", "Alpha", "Pod", hidden=True),
        _a("ambient.istio.io/redirection", "Beta", "Pod"),
        _a(
            "ambient.istio.io/waypoint-inbound-binding",
            "Alpha",
            "GatewayClass",
            "Gateway",
            hidden=True,
        ),
        _a("galley.istio.io/analyze-suppress", "Alpha", "Any"),
        _a("gateway.istio.io/controller-version", "Alpha", "Any", hidden=True),
        _a("gateway.istio.io/name-override", "Alpha", "Gateway", hidden=True),
        _a("gateway.istio.io/service-account", "Alpha", "Gateway", hidden=True),
        _a("inject.istio.io/templates", "Alpha", "Pod"),
        _a("istio.io/autoRegistrationGroup", "Alpha", "WorkloadEntry", hidden=True),
        _a("istio.io/connectedAt", "Alpha", "WorkloadEntry", hidden=True),
        _a("istio.io/disconnectedAt", "Alpha", "WorkloadEntry", hidden=True),
        _a("istio.io/dry-run", "Alpha", "AuthorizationPolicy"),
        _a("istio.io/rev", "Alpha", "Pod"),
        _a("istio.io/workloadController", "Alpha", "WorkloadEntry", hidden=True),
        _a("kubernetes.io/ingress.class", "Stable", "Ingress"),
        _a("networking.istio.io/exportTo", "Alpha", "Service"),
        _a("networking.istio.io/service-type", "Alpha", "Gateway", hidden=True),
        _a("networking.istio.io/traffic-distribution", "Alpha", "Service", "ServiceEntry"),
        _a("prometheus.istio.io/merge-metrics", "Alpha"),
        _a("proxy.istio.io/config", "Beta"),
        _a("proxy.istio.io/overrides", "Alpha", hidden=True),
        _a("readiness.status.sidecar.istio.io/applicationPorts", "Alpha"),
        _a("readiness.status.sidecar.istio.io/failureThreshold", "Alpha"),
        _a("readiness.status.sidecar.istio.io/initialDelaySeconds", "Alpha"),
        _a("readiness.status.sidecar.istio.io/periodSeconds", "Alpha"),
        _a("sidecar.istio.io/agentLogLevel", "Alpha"),
        _a("sidecar.istio.io/bootstrapOverride", "Alpha"),
        _a("sidecar.istio.io/componentLogLevel", "Alpha"),
        _a("sidecar.istio.io/discoveryAddress", "Alpha", deprecated=True),
        _a("sidecar.istio.io/enableCoreDump", "Alpha"),
        _a("sidecar.istio.io/extraStatTags", "Alpha", deprecated=True),
        _a("sidecar.istio.io/inject", "Beta", deprecated=True),
        _a("sidecar.istio.io/interceptionMode", "Alpha"),
        _a("sidecar.istio.io/logLevel", "Alpha"),
        _a("sidecar.istio.io/nativeSidecar", "Alpha"),
        _a("sidecar.istio.io/proxyCPU", "Alpha"),
        _a("sidecar.istio.io/proxyCPULimit", "Alpha"),
        _a("sidecar.istio.io/proxyImage", "Alpha"),
        _a("sidecar.istio.io/proxyImageType", "Alpha"),
        _a("sidecar.istio.io/proxyMemory", "Alpha"),
        _a("sidecar.istio.io/proxyMemoryLimit", "Alpha"),
        _a("sidecar.istio.io/rewriteAppHTTPProbers", "Alpha"),
        _a("sidecar.istio.io/statsHistogramBuckets", "Alpha"),
        _a("sidecar.istio.io/statsInclusionPrefixes", "Alpha", deprecated=True),
        _a("sidecar.istio.io/statsInclusionRegexps", "Alpha", deprecated=True),
        _a("sidecar.istio.io/statsInclusionSuffixes", "Alpha", deprecated=True),
        _a("sidecar.istio.io/status", "Alpha"),
        _a("sidecar.istio.io/userVolume", "Alpha"),
        _a("sidecar.istio.io/userVolumeMount", "Alpha"),
        _a("status.sidecar.istio.io/port", "Alpha"),
        _a("topology.istio.io/controlPlaneClusters", "Alpha", "Namespace"),
        _a("traffic.istio.io/nodeSelector", "Stable", "Service"),
        _a("traffic.sidecar.istio.io/excludeInboundPorts", "Alpha"),
        _a("traffic.sidecar.istio.io/excludeInterfaces", "Alpha"),
        _a("traffic.sidecar.istio.io/excludeOutboundIPRanges", "Alpha"),
        _a("traffic.sidecar.istio.io/excludeOutboundPorts", "Alpha"),
        _a("traffic.sidecar.istio.io/includeInboundPorts", "Alpha"),
        _a("traffic.sidecar.istio.io/includeOutboundIPRanges", "Alpha"),
        _a("traffic.sidecar.istio.io/includeOutboundPorts", "Alpha"),
        _a("traffic.sidecar.istio.io/kubevirtInterfaces", "Alpha"),
    )
}

DEPRECATION_EXTRA = {"sidecar.istio.io/inject": ' in favor of the "sidecar.istio.io/inject" label'}

KINDS = (u.NAMESPACE, u.SERVICE, u.POD, u.DEPLOYMENT)


def is_istio_annotation(name: str) -> bool:
    """Annotations in Istio's domain (``*istio.io/...``), plus the documented ingress class."""
    if name == "kubernetes.io/ingress.class":
        return True
    return name.split("/", 1)[0].endswith("istio.io")


# --- value checks (the injector's annotation validation) --------------------------------------

Check = Callable[[str], str | None]


def _uint32(value: str) -> str | None:
    if not value.isdigit() or int(value) > 0xFFFFFFFF:
        return f'strconv.ParseUint: parsing "{value}": invalid syntax'
    return None


def _bool(value: str) -> str | None:
    if value not in (
        "1",
        "t",
        "T",
        "TRUE",
        "true",
        "True",
        "0",
        "f",
        "F",
        "FALSE",
        "false",
        "False",
    ):
        return f'strconv.ParseBool: parsing "{value}": invalid syntax'
    return None


def _interception_mode(value: str) -> str | None:
    if value not in ("REDIRECT", "TPROXY", "NONE"):
        return f"interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"
    return None


def _port(value: str) -> str | None:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        return f"port number {value} must be in the range 1..65535"
    return None


def _ports(value: str, allow_star: bool) -> str | None:
    if allow_star and value.strip() == "*":
        return None
    for part in value.split(","):
        part = part.strip()
        if part and (err := _port(part)):
            return err
    return None


def _ip_ranges(value: str, allow_star: bool) -> str | None:
    if allow_star and value.strip() == "*":
        return None
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            return f"invalid CIDR address: {part}"
    return None


def _proxy_config(value: str) -> str | None:
    try:
        doc = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        return f"failed to unmarshal proxy config: {exc}"
    if doc is not None and not isinstance(doc, dict):
        return "failed to unmarshal proxy config: not an object"
    return None


VALUE_CHECKS: dict[str, Check] = {
    "sidecar.istio.io/interceptionMode": _interception_mode,
    "traffic.sidecar.istio.io/includeOutboundIPRanges": lambda v: _ip_ranges(v, True),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": lambda v: _ip_ranges(v, False),
    "traffic.sidecar.istio.io/includeInboundPorts": lambda v: _ports(v, True),
    "traffic.sidecar.istio.io/excludeInboundPorts": lambda v: _ports(v, False),
    "traffic.sidecar.istio.io/includeOutboundPorts": lambda v: _ports(v, False),
    "traffic.sidecar.istio.io/excludeOutboundPorts": lambda v: _ports(v, False),
    "sidecar.istio.io/enableCoreDump": _bool,
    "status.sidecar.istio.io/port": lambda v: None if v == "0" else _port(v),
    "readiness.status.sidecar.istio.io/initialDelaySeconds": _uint32,
    "readiness.status.sidecar.istio.io/periodSeconds": _uint32,
    "readiness.status.sidecar.istio.io/failureThreshold": _uint32,
    "prometheus.istio.io/merge-metrics": _bool,
    "proxy.istio.io/config": _proxy_config,
}


def _path(ann: str) -> str:
    return f"metadata.annotations.{ann}"


class K8sAnalyzer(Analyzer):
    name = "annotations.K8sAnalyzer"
    description = "Checks for misplaced and invalid Istio annotations in Kubernetes resources"

    def analyze(self, ctx: Context) -> None:
        for key in KINDS:
            for r in ctx.each(key):
                self._check(ctx, r)

    @staticmethod
    def _check(ctx: Context, r: Resource) -> None:
        labels = u.labels_of(r)
        for ann, value in u.annotations_of(r).items():
            if not is_istio_annotation(ann):
                continue
            d = ANNOTATIONS.get(ann)
            if d is None:
                ctx.report(r, "UnknownAnnotation", ann, path=_path(ann))
                continue
            if d.deprecated and not (ann == u.SIDECAR_INJECT and u.SIDECAR_INJECT in labels):
                ctx.report(
                    r, "DeprecatedAnnotation", ann, DEPRECATION_EXTRA.get(ann, ""), path=_path(ann)
                )
            if "Any" in d.resources:
                continue
            if r.kind not in d.resources:
                ctx.report(r, "MisplacedAnnotation", ann, ", ".join(d.resources), path=_path(ann))
                continue
            check = VALUE_CHECKS.get(ann)
            problem = check(str(value)) if check else None
            if problem:
                ctx.report(r, "InvalidAnnotation", ann, problem, path=_path(ann))


# Set by Istio's CNI plugin on every pod it captures; not a user's choice.
CNI_DEFAULT_ANNOTATIONS = (
    "sidecar.istio.io/interceptionMode",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
)
# Written by Istio itself (injection status, the connected revision), never by users.
SET_BY_ISTIO = ("sidecar.istio.io/status", "istio.io/rev")


class AlphaAnalyzer(Analyzer):
    name = "annotations.AlphaAnalyzer"
    description = "Checks for alpha Istio annotations in Kubernetes resources"
    default = False  # Istio leaves it out of the default run: too noisy

    def analyze(self, ctx: Context) -> None:
        for key in KINDS:
            for r in ctx.each(key):
                self._check(ctx, r)

    @staticmethod
    def _check(ctx: Context, r: Resource) -> None:
        skip_cni = r.kind == "Pod" and not any(
            u.text(c, "name") == "istio-init" for c in u.items(r.obj, "spec.init_containers")
        )
        for ann in u.annotations_of(r):
            if not is_istio_annotation(ann):
                continue
            d = ANNOTATIONS.get(ann)
            if d is None or d.status != "Alpha" or d.hidden or ann in SET_BY_ISTIO:
                continue
            if skip_cni and ann in CNI_DEFAULT_ANNOTATIONS:
                continue
            ctx.report(r, "AlphaAnnotation", ann, path=_path(ann))
