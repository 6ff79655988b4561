"""Delegate VirtualServices: a root route with ``delegate`` is replaced by the delegate's
routes, each narrowed by the root's match (Istio's ``mergeVirtualServicesIfNeeded`` /
``mergeHTTPRoute`` in ``pilot/pkg/model/virtualservice.go``).

A delegate route keeps its own settings and inherits what it leaves unset from the root
route; its matches must each fit inside one of the root's matches, or the route is dropped.
Short host names in a delegate resolve in the delegate's namespace, so each merged route
carries the namespace its hosts belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

from pistio.api import networking as net
from pistio.pilot.model.push_context import PushContext, VirtualServiceConfig

_INHERITED = (
    "rewrite",
    "direct_response",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percent",
    "mirror_percentage",
    "cors_policy",
    "headers",
)


@dataclass(frozen=True, slots=True)
class ScopedRoute:
    """An HTTP route and the namespace its short host names resolve in."""

    route: net.HTTPRoute
    namespace: str


def merged_http_routes(push: PushContext, vs: VirtualServiceConfig) -> list[ScopedRoute]:
    """The HTTP routes of ``vs`` with every delegate expanded in place."""
    out: list[ScopedRoute] = []
    for route in vs.spec.http:
        if route.delegate is None:
            out.append(ScopedRoute(route, vs.namespace))
            continue
        ns = route.delegate.namespace or vs.namespace
        delegate = push.delegate(route.delegate.name, ns)
        if delegate is None or not _exported(delegate, vs.namespace):
            continue
        for sub in delegate.spec.http:
            merged = merge_http_route(route, sub)
            if merged is not None:
                out.append(ScopedRoute(merged, ns))
    return out


def _exported(delegate: VirtualServiceConfig, namespace: str) -> bool:
    export = delegate.export_to
    return (
        "*" in export or namespace in export or ("." in export and delegate.namespace == namespace)
    )


def merge_http_route(root: net.HTTPRoute, delegate: net.HTTPRoute) -> net.HTTPRoute | None:
    """The delegate route narrowed by the root route; None when their matches conflict."""
    matches, conflict = merge_match_requests(root.match, delegate.match)
    if conflict:
        return None
    update: dict[str, object] = {"match": matches, "delegate": None}
    if not delegate.name:
        update["name"] = root.name
    elif root.name:
        update["name"] = f"{root.name}-{delegate.name}"
    for field in _INHERITED:
        if getattr(delegate, field) is None:
            update[field] = getattr(root, field)
    if not delegate.mirrors:
        update["mirrors"] = root.mirrors
    return delegate.model_copy(update=update)


def merge_match_requests(
    root: list[net.HTTPMatchRequest], delegate: list[net.HTTPMatchRequest]
) -> tuple[list[net.HTTPMatchRequest], bool]:
    """Each delegate match combined with every root match it does not conflict with;
    a delegate match that fits none is a conflict."""
    if not root:
        return list(delegate), False
    if not delegate:
        return list(root), False
    out: list[net.HTTPMatchRequest] = []
    for sub in delegate:
        found = False
        for parent in root:
            if _has_conflict(parent, sub):
                continue
            out.append(_merge_match(parent, sub))
            found = True
        if not found:
            return [], True
    return out, not out


def _merge_match(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> net.HTTPMatchRequest:
    name = leaf.name
    if not name:
        name = root.name
    elif root.name:
        name = f"{root.name}-{name}"
    return leaf.model_copy(
        update={
            "name": name,
            "uri": leaf.uri or root.uri,
            "scheme": leaf.scheme or root.scheme,
            "method": leaf.method or root.method,
            "authority": leaf.authority or root.authority,
            "headers": {**root.headers, **leaf.headers},
            "without_headers": {**root.without_headers, **leaf.without_headers},
            "query_params": {**root.query_params, **leaf.query_params},
            "port": leaf.port or root.port,
            "source_labels": {**root.source_labels, **leaf.source_labels},
            "source_namespace": leaf.source_namespace or root.source_namespace,
            "gateways": leaf.gateways or root.gateways,
            "stat_prefix": leaf.stat_prefix or root.stat_prefix,
        }
    )


def _has_conflict(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> bool:
    for field in ("uri", "scheme", "method", "authority"):
        if _string_match_conflict(getattr(root, field), getattr(leaf, field)):
            return True
    for attr in ("headers", "without_headers", "query_params"):
        parent = getattr(root, attr)
        for key, value in getattr(leaf, attr).items():
            if _string_match_conflict(parent.get(key), value):
                return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for key, value in leaf.source_labels.items():
        if key in root.source_labels and root.source_labels[key] != value:
            return True
    if root.gateways and leaf.gateways:
        if len(root.gateways) < len(leaf.gateways):
            return True
        if any(g not in root.gateways for g in leaf.gateways):
            return True
    return False


def _string_match_conflict(root: net.StringMatch | None, leaf: net.StringMatch | None) -> bool:
    """Istio's rule: the leaf must be a narrower (or equal) match than the root."""
    if root is None or leaf is None:
        return False
    if root.regex and (leaf.regex or leaf.prefix or leaf.exact):
        return True
    if leaf.regex and (root.regex or root.prefix or root.exact):
        return True
    if root.exact:
        return bool(leaf.prefix) or leaf.exact != root.exact
    if root.prefix:
        if leaf.prefix:
            return not leaf.prefix.startswith(root.prefix)
        if leaf.exact:
            return not leaf.exact.startswith(root.prefix)
    return True
