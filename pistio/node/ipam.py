"""Address allocation from a CIDR: pod IPs and ClusterIPs.

Allocation moves forward round-robin rather than reusing the lowest free address, so a
recreated pod usually gets a new IP, as on Kubernetes, and stale endpoints never alias a
new pod.
"""

from __future__ import annotations

import ipaddress


class AddressExhausted(RuntimeError):
    pass


class Ipam:
    def __init__(self, cidr: str, reserved: int = 1) -> None:
        self.network = ipaddress.ip_network(cidr)
        hosts = self.network.num_addresses - 2
        self._first = int(self.network.network_address) + 1 + reserved
        self._size = max(0, hosts - reserved)
        self._next = 0
        self.used: dict[str, str] = {}  # ip -> owner key

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False

    def claim(self, ip: str, owner: str) -> None:
        """Take a chosen address (a Service's own clusterIP); ValueError if it is taken."""
        if not self.contains(ip):
            raise ValueError(f"provided IP {ip} is not in the valid range {self.network}")
        holder = self.used.get(ip)
        if holder is not None and holder != owner:
            raise ValueError(f"provided IP {ip} is already allocated")
        self.used[ip] = owner

    def allocate(self, owner: str) -> str:
        for _ in range(self._size):
            ip = str(ipaddress.ip_address(self._first + self._next))
            self._next = (self._next + 1) % self._size
            if ip not in self.used:
                self.used[ip] = owner
                return ip
        raise AddressExhausted(f"no free address left in {self.network}")

    def release(self, ip: str) -> None:
        self.used.pop(ip, None)
