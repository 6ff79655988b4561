"""Validation of EnvoyFilter, as Istio's validating webhook applies it."""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import re2_error, validate_target_ref
from pistio.config.validation.networking.shared import (
    GROUP,
    check_alpha_selector,
    check_oneof,
)
from pistio.config.validation.registry import validates

HCM_FILTER = "envoy.filters.network.http_connection_manager"

# Old Envoy filter names and their current names.
DEPRECATED_FILTER_NAMES = {
    "envoy.http_connection_manager": HCM_FILTER,
    "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
    "envoy.router": "envoy.filters.http.router",
    "envoy.cors": "envoy.filters.http.cors",
    "envoy.fault": "envoy.filters.http.fault",
    "envoy.lua": "envoy.filters.http.lua",
    "envoy.ext_authz": "envoy.filters.http.ext_authz",
    "envoy.rbac": "envoy.filters.http.rbac",
    "envoy.grpc_web": "envoy.filters.http.grpc_web",
    "envoy.gzip": "envoy.filters.http.gzip",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
}
ENVOY_FILTER_TARGET_KINDS = (
    ("", "Service"),
    (GROUP, "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
)
LISTENER_CLASS = ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER")
ROUTE_CLASS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")


def _envoy_patch(cp: n.EnvoyConfigObjectPatch, p: str, errs: FieldErrors) -> None:
    if cp.apply_to == "INVALID":
        errs.error(f"{p}.applyTo", "Envoy filter: missing applyTo")
        return
    if cp.patch is None:
        errs.error(f"{p}.patch", "Envoy filter: missing patch")
        return
    if cp.patch.operation == "INVALID":
        errs.error(f"{p}.patch.operation", "Envoy filter: missing patch operation")
        return
    if cp.patch.operation != "REMOVE" and cp.patch.value is None:
        errs.error(f"{p}.patch.value", "Envoy filter: missing patch value for non-remove operation")
        return
    m = cp.match
    version = m.proxy.proxy_version if m is not None and m.proxy is not None else ""
    if version and (err := re2_error(version)):
        errs.error(
            f"{p}.match.proxy.proxyVersion",
            f"Envoy filter: invalid regex for proxy version, [{err}]",
        )
        return
    if m is None:
        return
    mp = f"{p}.match"
    check_oneof(m, mp, errs, "listener", "route_configuration", "cluster", "waypoint")
    if (m.waypoint is not None) != (m.context == "WAYPOINT") and (
        m.waypoint is not None or m.listener or m.route_configuration or m.cluster
    ):
        errs.error(mp, "only support waypointMatch when context is WAYPOINT")
    if m.waypoint is not None:
        if m.waypoint.port_number > 65535:
            errs.error(f"{mp}.waypoint.portNumber", "port must be between 1-65535")
        _filter_match(cp, m.waypoint.filter, f"{mp}.waypoint.filter", errs)
        return
    has_object = (
        m.listener is not None or m.route_configuration is not None or m.cluster is not None
    )
    if not has_object:
        return
    if cp.apply_to in LISTENER_CLASS:
        if m.listener is None:
            errs.error(
                mp,
                "Envoy filter: applyTo for listener class objects cannot have non listener match",
            )
            return
        fc = m.listener.filter_chain
        _filter_match(cp, fc.filter if fc else None, f"{mp}.listener.filterChain.filter", errs)
    elif cp.apply_to in ROUTE_CLASS:
        if m.route_configuration is None:
            errs.error(
                mp,
                "Envoy filter: applyTo for http route class objects cannot have non route configuration match",
            )
    elif cp.apply_to == "CLUSTER" and m.cluster is None:
        errs.error(
            mp, "Envoy filter: applyTo for cluster class objects cannot have non cluster match"
        )


def _filter_match(
    cp: n.EnvoyConfigObjectPatch, f: n.FilterMatch | None, fp: str, errs: FieldErrors
) -> None:
    """The network filter (and HTTP sub-filter) a listener or waypoint patch matches."""
    if f is None:
        return
    if cp.apply_to in ("LISTENER", "FILTER_CHAIN"):
        # An error in principle; Istio keeps it a warning for compatibility.
        errs.warn(fp, f"Envoy filter: filter match has no effect when used with {cp.apply_to}")
    if not f.name:
        errs.error(f"{fp}.name", "Envoy filter: filter match has no name to match on")
        return
    if f.sub_filter is not None:
        if cp.apply_to != "HTTP_FILTER":
            errs.error(
                f"{fp}.subFilter",
                "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
            )
            return
        if f.name not in (HCM_FILTER, "envoy.http_connection_manager"):
            errs.error(
                f"{fp}.subFilter",
                f"Envoy filter: subfilter match requires filter match with {HCM_FILTER}",
            )
            return
        if not f.sub_filter.name:
            errs.error(
                f"{fp}.subFilter.name", "Envoy filter: subfilter match has no name to match on"
            )
            return
    for path, name in (
        (f"{fp}.name", f.name),
        (f"{fp}.subFilter.name", f.sub_filter.name if f.sub_filter else ""),
    ):
        if name in DEPRECATED_FILTER_NAMES:
            errs.warn(
                path,
                f'using deprecated filter name "{name}"; use "{DEPRECATED_FILTER_NAMES[name]}" instead',
            )


@validates(GROUP, "EnvoyFilter")
def validate_envoy_filter(res: Resource, errs: FieldErrors) -> None:
    ef: n.EnvoyFilter = res.spec
    errs.warn(
        "spec",
        "EnvoyFilter exposes internal implementation details that may change at any time. "
        "Prefer other APIs if possible, and exercise extreme caution, especially around upgrades.",
    )
    check_alpha_selector(ef.workload_selector, "spec.workloadSelector", errs, "Envoy filter")
    if ef.workload_selector is not None and ef.target_refs:
        errs.error("spec", "only one of targetRefs or workloadSelector can be set")
    for i, ref in enumerate(ef.target_refs):
        for field, err in validate_target_ref(
            ref.group, ref.kind, ref.name, ref.namespace or "", ENVOY_FILTER_TARGET_KINDS
        ):
            errs.error(f"spec.targetRefs[{i}].{field}", err)
    for i, cp in enumerate(ef.config_patches):
        _envoy_patch(cp, f"spec.configPatches[{i}]", errs)
