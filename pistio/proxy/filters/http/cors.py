"""Envoy's CORS filter (``envoy.filters.http.cors``) with per-route ``CorsPolicy``.

The policy comes from the route's ``typed_per_filter_config`` (Istio translates a
VirtualService's ``corsPolicy`` there); without one, or when ``filter_enabled`` says off, the
filter does nothing. A request is a CORS request when it has an ``origin`` the policy allows.

- **Preflight** (``OPTIONS`` with ``origin`` and ``access-control-request-method``): answered by
  the proxy with 200 and ``access-control-allow-origin`` (the request's origin, echoed),
  ``-allow-credentials: true`` when allowed, ``-allow-methods``, ``-allow-headers``,
  ``-max-age``, and ``-allow-private-network`` when asked and allowed. A preflight from an
  origin the policy does not allow is forwarded upstream, unless
  ``forward_not_matching_preflights`` is false (then 200 without CORS headers).
- **Simple and actual requests** go upstream; the response gets
  ``access-control-allow-origin``, ``-allow-credentials`` and ``-expose-headers``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pistio.proxy.config.route_action import CorsPolicy
from pistio.proxy.http.headers import Fields

if TYPE_CHECKING:
    from pistio.proxy.config.route_table import Route
    from pistio.proxy.http.connection_manager import ActiveStream

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_PRIVATE_NETWORK = b"access-control-request-private-network"


class CorsFilter:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    # Decided once per route by the connection manager's filter plan: without a CorsPolicy
    # for the route the filter is skipped both ways.
    route_scoped = True
    encodes = True

    def applies(self, route: Route | None) -> bool:
        return route is not None and isinstance(route.filter_config(self.name, None), CorsPolicy)

    def _policy(self, s: ActiveStream) -> tuple[CorsPolicy, bytes] | None:
        route = s.route()
        if route is None:
            return None
        policy = route.filter_config(self.name, None)
        if not isinstance(policy, CorsPolicy):
            return None
        origin = s.stream.head.index.get(_ORIGIN)
        if not origin:
            return None
        if not policy.filter_enabled.enabled(random.getrandbits(32)):
            return None
        return policy, origin

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        found = self._policy(s)
        if found is None:
            return True
        policy, origin = found
        head = s.stream.head
        if head.method != b"OPTIONS" or not head.index.get(_REQUEST_METHOD):
            return True
        if not policy.origin_allowed(origin.decode("latin-1")):
            if policy.forward_not_matching_preflights:
                return True
            s.send_local_reply(200, b"", details="cors_response", filter_position=position)
            return False
        fields: Fields = [(b"access-control-allow-origin", origin)]
        if policy.allow_credentials:
            fields.append((b"access-control-allow-credentials", b"true"))
        if policy.allow_methods:
            fields.append((b"access-control-allow-methods", policy.allow_methods.encode()))
        if policy.allow_headers:
            fields.append((b"access-control-allow-headers", policy.allow_headers.encode()))
        if policy.max_age:
            fields.append((b"access-control-max-age", policy.max_age.encode()))
        if policy.allow_private_network_access and head.index.get(
                _REQUEST_PRIVATE_NETWORK, b"").lower() == b"true":
            fields.append((b"access-control-allow-private-network", b"true"))
        s.send_local_reply(200, b"", fields, details="cors_response", filter_position=position)
        return False

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        found = self._policy(s)
        if found is None:
            return fields
        policy, origin = found
        if not policy.origin_allowed(origin.decode("latin-1")):
            return fields
        fields = [*fields, (b"access-control-allow-origin", origin)]
        if policy.allow_credentials:
            fields.append((b"access-control-allow-credentials", b"true"))
        if policy.expose_headers:
            fields.append((b"access-control-expose-headers", policy.expose_headers.encode()))
        return fields
