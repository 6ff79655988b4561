"""What every generator reads from a connection and a push: the proxy record, the push context.

The proxy record is parsed from the xDS node once per connection (at connect, by discovery)
and kept in ``ConnectionInfo.attributes["proxy"]``; the push context travels in
``PushRequest.context``.
"""

from __future__ import annotations

import logging

from pistio.pilot.model.proxy import NodeType, Proxy, parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import DEFAULT_DOMAIN_SUFFIX
from pistio.xds.generator import ConnectionInfo, PushRequest

log = logging.getLogger("pistio.discovery")

PROXY_ATTRIBUTE = "proxy"


def connection_proxy(conn: ConnectionInfo) -> Proxy:
    """The connection's Proxy, parsed once from its node id, metadata and locality."""
    cached = conn.attributes.get(PROXY_ATTRIBUTE)
    if isinstance(cached, Proxy):
        return cached
    proxy = conn.attributes[PROXY_ATTRIBUTE] = _parse(conn)
    return proxy


def _parse(conn: ConnectionInfo) -> Proxy:
    locality = ""
    node = conn.node
    if node is not None and node.HasField("locality"):
        loc = node.locality
        locality = "/".join(p for p in (loc.region, loc.zone, loc.sub_zone) if p)
    try:
        return parse_node_id(conn.node_id, conn.metadata, locality)
    except ValueError as err:
        # istiod refuses such a stream; the transport has no refusal hook, so the proxy is
        # served as a sidecar in its metadata's namespace and the problem is logged.
        log.warning("ADS: %s; serving it as a sidecar", err)
        ns = str(conn.metadata.get("NAMESPACE") or "default")
        ips = str(conn.metadata.get("INSTANCE_IPS") or "")
        return Proxy(
            id=conn.node_id,
            type=NodeType.SIDECAR,
            ip_addresses=tuple(ip for ip in ips.split(",") if ip),
            pod_name=conn.node_id,
            namespace=ns,
            dns_domain=f"{ns}.svc.{DEFAULT_DOMAIN_SUFFIX}",
            metadata=dict(conn.metadata),
            locality=locality,
        )


def push_context(push: PushRequest) -> PushContext | None:
    ctx = push.context
    return ctx if isinstance(ctx, PushContext) else None
