"""Helpers shared by analyzers: field access, label selectors, host names, kind keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

# --- kinds: (group, kind) -----------------------------------------------------------------

NET = "networking.istio.io"
SEC = "security.istio.io"
TEL = "telemetry.istio.io"
EXT = "extensions.istio.io"
GWAPI = "gateway.networking.k8s.io"

VIRTUAL_SERVICE = (NET, "VirtualService")
DESTINATION_RULE = (NET, "DestinationRule")
GATEWAY = (NET, "Gateway")
SERVICE_ENTRY = (NET, "ServiceEntry")
SIDECAR = (NET, "Sidecar")
ENVOY_FILTER = (NET, "EnvoyFilter")
WORKLOAD_ENTRY = (NET, "WorkloadEntry")
PROXY_CONFIG = (NET, "ProxyConfig")
AUTHORIZATION_POLICY = (SEC, "AuthorizationPolicy")
REQUEST_AUTHENTICATION = (SEC, "RequestAuthentication")
PEER_AUTHENTICATION = (SEC, "PeerAuthentication")
TELEMETRY = (TEL, "Telemetry")
WASM_PLUGIN = (EXT, "WasmPlugin")
K8S_GATEWAY = (GWAPI, "Gateway")
HTTP_ROUTE = (GWAPI, "HTTPRoute")
GRPC_ROUTE = (GWAPI, "GRPCRoute")
NAMESPACE = ("", "Namespace")
SERVICE = ("", "Service")
POD = ("", "Pod")
SECRET = ("", "Secret")
CONFIG_MAP = ("", "ConfigMap")
NODE = ("", "Node")
DEPLOYMENT = ("apps", "Deployment")
MUTATING_WEBHOOK = ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
VALIDATING_WEBHOOK = ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")

ISTIO_GROUPS = (NET, SEC, TEL, EXT)

# --- constants (Istio's names) ---------------------------------------------------------------

ISTIO_PROXY = "istio-proxy"
ISTIO_OPERATOR = "istio-operator"
MESH_GATEWAY = "mesh"
INJECTION_LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
SIDECAR_INJECT = "sidecar.istio.io/inject"
DATAPLANE_MODE = "istio.io/dataplane-mode"
AMBIENT_REDIRECTION = "ambient.istio.io/redirection"
INJECTOR_CONFIG_MAP = "istio-sidecar-injector"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
CLUSTER_DOMAIN = "svc.cluster.local"


# --- field access -----------------------------------------------------------------------------


def _step(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, BaseModel):
        fields = type(obj).model_fields
        if name in fields:
            return getattr(obj, name)
        if name + "_" in fields:  # Python keywords (``from``) carry a trailing underscore
            return getattr(obj, name + "_")
        extra = obj.model_extra or {}
        camel = to_camel(name)
        return extra.get(camel, extra.get(name))
    if isinstance(obj, Mapping):
        camel = to_camel(name)
        return obj[camel] if camel in obj else obj.get(name)
    return getattr(obj, name, None)


def get(obj: Any, path: str, default: Any = None) -> Any:
    """``obj.a.b.c`` by snake_case names, through typed models, their extras, or plain dicts.

    Kubernetes models keep untyped fields as extras (camelCase keys); this reads both alike.
    Returns ``default`` when any step is missing or None.
    """
    cur = obj
    for name in path.split("."):
        cur = _step(cur, name)
        if cur is None:
            return default
    return cur


def items(obj: Any, path: str) -> list[Any]:
    """A repeated field as a list (empty when unset)."""
    value = get(obj, path)
    return list(value) if isinstance(value, list | tuple) else []


def mapping(obj: Any, path: str) -> dict[str, Any]:
    """A map field as a dict (empty when unset)."""
    value = get(obj, path)
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return dict(value) if isinstance(value, Mapping) else {}


def text(obj: Any, path: str) -> str:
    value = get(obj, path)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def enum_name(obj: Any, path: str, default: str = "") -> str:
    value = get(obj, path)
    if value is None:
        return default
    return str(getattr(value, "value", value))


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


# --- label selectors (Kubernetes semantics) ---------------------------------------------------


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """``SelectorFromSet``: every key=value of the selector is among the labels."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def selector_string(selector: Mapping[str, str] | None) -> str:
    """The selector as Kubernetes prints it: ``app=foo,version=v1`` (sorted)."""
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))


def label_selector_matches(selector: Any, labels: Mapping[str, str] | None) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions); None matches everything."""
    if selector is None:
        return True
    labels = labels or {}
    if not selector_matches(mapping(selector, "match_labels"), labels):
        return False
    for expr in items(selector, "match_expressions"):
        key = text(expr, "key")
        op = text(expr, "operator")
        values = [str(v) for v in items(expr, "values")]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


# --- host names (istio pkg/config/host) -----------------------------------------------------


def host_matches(a: str, b: str) -> bool:
    """``host.Name.Matches``: equal, or one wildcard covers the other."""
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw and bw:
        return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
    if aw:
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """``host.Name.SubsetOf``: every name matched by ``a`` is matched by ``b``."""
    if b.startswith("*"):
        return (a[1:] if a.startswith("*") else a).endswith(b[1:])
    return not a.startswith("*") and a == b


def names_for_namespace(hosts: Iterable[str], namespace: str) -> list[str]:
    """``host.NamesForNamespace``: ``ns/host`` entries visible from a namespace, ns stripped."""
    out = []
    for h in hosts:
        if "/" in h:
            ns, _, name = h.partition("/")
            if ns not in (namespace, "*"):
                continue
            h = name
        out.append(h)
    return out


def to_fqdn(namespace: str, host: str) -> str:
    """``ConvertHostToFQDN``: a short name becomes ``name.ns.svc.cluster.local``."""
    if host.startswith("*") or "." in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


_FQDN = re.compile(r"^(.+)\.(.+)\.svc\.cluster\.local$")


def name_from_host(default_namespace: str, host: str) -> tuple[str, str]:
    """``GetResourceNameFromHost``: (namespace, name) a host refers to."""
    m = _FQDN.match(host)
    if m:
        return m.group(2), m.group(1)
    return default_namespace, host


def short_or_full(namespace: str, name: str) -> tuple[str, str]:
    """``NewShortOrFullName``: ``ns/name`` or a name in the given namespace."""
    if "/" in name:
        ns, _, n = name.partition("/")
        return ns, n
    return namespace, name


def is_export_to_all(export_to: list[str]) -> bool:
    return not export_to or "*" in export_to


def ns_of(res: Any) -> str:
    """A resource's namespace as Istio's FullName has it ('' when the YAML sets none)."""
    return res.namespace or ""


def full_name(res: Any) -> str:
    """``FullName.String()``: ``ns/name``, or ``name`` without a namespace."""
    ns = ns_of(res)
    return f"{ns}/{res.name}" if ns else res.name


def labels_of(res: Any) -> dict[str, str]:
    return dict(res.metadata.labels or {})


def annotations_of(res: Any) -> dict[str, str]:
    return dict(res.metadata.annotations or {})


def is_control_plane(res: Any) -> bool:
    labels = labels_of(res)
    return "istio" in labels or labels.get("release") == "istio"


def pod_in_ambient(pod: Any) -> bool:
    return pod is not None and annotations_of(pod).get(AMBIENT_REDIRECTION) == "enabled"


def namespace_in_ambient(ns: Any) -> bool:
    if ns is None:
        return False
    labels = labels_of(ns)
    if labels.get(INJECTION_LABEL) == "enabled":
        return False
    if labels.get(REVISION_LABEL):
        return False
    return labels.get(DATAPLANE_MODE) == "ambient"


def injector_config_map_name(revision: str) -> str:
    if not revision or revision == "default":
        return INJECTOR_CONFIG_MAP
    return f"{INJECTOR_CONFIG_MAP}-{revision}"
