"""The security filters of a sidecar's inbound chains, in Istio's order.

HTTP (inside the connection manager, before fault/CORS/stats/router): CUSTOM authz (RBAC
shadow + ext_authz), authentication (``envoy.filters.http.jwt_authn``), then RBAC (AUDIT,
DENY, ALLOW). TCP (before ``tcp_proxy``): CUSTOM (network RBAC shadow + network ext_authz),
then network RBAC (AUDIT, DENY, ALLOW). Built once per workload identity (namespace and
labels) and push context.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.pilot.model.proxy import NodeType, Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security import authz_builder as authz
from pistio.pilot.security.jwt_authn import jwt_http_filter

_HTTP_MEMO = "security_http_filters"
_TCP_MEMO = "security_tcp_filters"


def _key(proxy: Proxy) -> tuple:
    return (proxy.type, proxy.namespace, tuple(sorted(proxy.labels.items())))


def inbound_http_filters(push: PushContext, proxy: Proxy) -> list[hcm_pb2.HttpFilter]:
    memo = push.memo.setdefault(_HTTP_MEMO, {})
    key = _key(proxy)
    found = memo.get(key)
    if found is None:
        policies = authz.workload_policies(push, proxy.namespace, proxy.labels)
        found = authz.custom_http_filters(push, policies)
        jwt = jwt_http_filter(push, proxy.namespace, proxy.labels, proxy.type is NodeType.SIDECAR)
        if jwt is not None:
            found.append(jwt)
        found += authz.rbac_http_filters(policies)
        memo[key] = found
    return list(found)


def inbound_tcp_filters(push: PushContext, proxy: Proxy) -> list[lc.Filter]:
    memo = push.memo.setdefault(_TCP_MEMO, {})
    key = _key(proxy)
    found = memo.get(key)
    if found is None:
        policies = authz.workload_policies(push, proxy.namespace, proxy.labels)
        found = authz.custom_tcp_filters(push, policies) + authz.rbac_tcp_filters(policies)
        memo[key] = found
    return list(found)
