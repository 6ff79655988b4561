"""What the tracer knows about its own proxy (Envoy's ``LocalInfo``): node id, service
cluster (Istio: ``<canonical service>.<namespace>``), zone and IP address.

Workers are separate processes; the agent (``pistio proxy``) passes these in the environment
it starts them with (:func:`node_environment`), and a worker reads them once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

NODE_ID_ENV = "PISTIO_NODE_ID"
NODE_CLUSTER_ENV = "PISTIO_NODE_CLUSTER"
NODE_ZONE_ENV = "PISTIO_NODE_ZONE"
NODE_IP_ENV = "PISTIO_NODE_IP"


@dataclass(frozen=True, slots=True)
class LocalNode:
    node_id: str = ""
    cluster: str = ""
    zone: str = ""
    ip: str = ""


def node_environment(node_id: str, cluster: str, zone: str, ip: str) -> dict[str, str]:
    """The variables a worker reads its :class:`LocalNode` from."""
    return {NODE_ID_ENV: node_id, NODE_CLUSTER_ENV: cluster, NODE_ZONE_ENV: zone,
            NODE_IP_ENV: ip}


@lru_cache(maxsize=1)
def local_node() -> LocalNode:
    env = os.environ
    return LocalNode(env.get(NODE_ID_ENV, ""), env.get(NODE_CLUSTER_ENV, ""),
                     env.get(NODE_ZONE_ENV, ""), env.get(NODE_IP_ENV, ""))
