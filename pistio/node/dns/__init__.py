"""The node's DNS server: answers the cluster domain (``*.svc.cluster.local``) for pods.

Pods have no route off the host, so names outside the cluster domain are REFUSED rather
than forwarded. The table is replaced whole by the node whenever Services change.
"""

from pistio.node.dns.records import DnsTable
from pistio.node.dns.server import DnsServer

__all__ = ["DnsServer", "DnsTable"]
