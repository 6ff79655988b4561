"""The node's network: a bridge, one network namespace per pod, Istio's capture rules for
injected pods and kube-proxy-like service DNAT for the others. Everything here shells out to
iproute2 and iptables; nothing touches the host beyond the bridge and one tagged FORWARD rule.
"""

from pistio.node.network.bridge import NodeNetwork, setup_node_network, teardown_node_network
from pistio.node.network.capture import CaptureSpec, apply_capture, capture_rules
from pistio.node.network.commands import NetworkError, in_netns, run
from pistio.node.network.pod_network import (
    list_node_netns,
    pod_netns_name,
    setup_pod_network,
    teardown_pod_network,
)
from pistio.node.network.service_nat import ServiceNat, apply_service_nat, service_nat_rules

__all__ = [
    "CaptureSpec",
    "NetworkError",
    "NodeNetwork",
    "ServiceNat",
    "apply_capture",
    "apply_service_nat",
    "capture_rules",
    "in_netns",
    "list_node_netns",
    "pod_netns_name",
    "run",
    "service_nat_rules",
    "setup_node_network",
    "setup_pod_network",
    "teardown_node_network",
    "teardown_pod_network",
]
