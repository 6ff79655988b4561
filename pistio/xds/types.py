"""xDS type URLs (Envoy v3) and the transport facts that depend only on the type.

A type URL names the resource type a DiscoveryRequest/Response carries. The
transport needs three facts per type and nothing else:

- the push order Envoy requires on one ADS stream (clusters before their
  endpoints, listeners before their routes), so a proxy never warms a
  resource that refers to something it has not received yet;
- whether a first request without names is a (legacy) wildcard subscription
  (Listener and Cluster in Envoy; Istio's ambient types);
- whether a state-of-the-world response must carry every resource of the type
  (Listener and Cluster: a resource missing from the response is deleted) or
  may carry only the ones that changed (routes, endpoints, secrets).
"""

from __future__ import annotations

TYPE_PREFIX = "type.googleapis.com/"

LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
VIRTUAL_HOST = TYPE_PREFIX + "envoy.config.route.v3.VirtualHost"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
EXTENSION_CONFIG = TYPE_PREFIX + "envoy.config.core.v3.TypedExtensionConfig"

# Istio's own types: ambient (ztunnel) workload/address and authorization
# streams, and the debug types istiod serves over the same ADS stream
# (istioctl x proxy-status talks to istiod with these).
ADDRESS = TYPE_PREFIX + "istio.workload.Address"
WORKLOAD = TYPE_PREFIX + "istio.workload.Workload"
AUTHORIZATION = TYPE_PREFIX + "istio.security.Authorization"
DEBUG_SYNCZ = "istio.io/debug/syncz"
DEBUG_CONFIG_DUMP = "istio.io/debug/config_dump"

# Short names used in logs and metric labels, as Istio prints them.
SHORT_NAMES: dict[str, str] = {
    LISTENER: "LDS",
    ROUTE: "RDS",
    VIRTUAL_HOST: "VHDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
    EXTENSION_CONFIG: "ECDS",
    ADDRESS: "WDS",
    WORKLOAD: "WDS",
    AUTHORIZATION: "RBAC",
    DEBUG_SYNCZ: "syncz",
    DEBUG_CONFIG_DUMP: "config_dump",
}

# Envoy's ADS ordering: CDS, EDS, LDS, RDS, then secrets. Types not listed are
# pushed after these, in name order (see `push_order`).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, EXTENSION_CONFIG)

# An empty first request means "everything" only for these (legacy wildcard);
# for any other type it means "nothing". "*" is a wildcard for every type.
LEGACY_WILDCARD_TYPES: frozenset[str] = frozenset(
    {LISTENER, CLUSTER, ADDRESS, WORKLOAD, AUTHORIZATION}
)

# State-of-the-world responses of these types are complete: a resource absent
# from a response is removed by the client. Responses of other types may carry
# only the resources that changed.
SOTW_COMPLETE_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER})

WILDCARD = "*"


def short_name(type_url: str) -> str:
    """The short label of a type (LDS, CDS, ...), or the type URL's last part."""
    return SHORT_NAMES.get(type_url) or type_url.rsplit("/", 1)[-1]


def push_order(type_urls: set[str] | frozenset[str]) -> list[str]:
    """The types of one push, in the order Envoy needs them on one stream."""
    ordered = [t for t in PUSH_ORDER if t in type_urls]
    ordered.extend(sorted(t for t in type_urls if t not in PUSH_ORDER))
    return ordered
