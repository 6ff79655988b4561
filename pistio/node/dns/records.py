"""The name table the DNS server answers from: fqdn -> IPv4 addresses.

``replace`` builds a new immutable snapshot and swaps one reference, so a query never sees
half a table and the server's hot path stays a single dict lookup (no locks).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A

TTL = 30  # seconds, as CoreDNS's kubernetes plugin answers
_IN = dns.rdataclass.IN


@dataclass(frozen=True)
class Snapshot:
    """One immutable version of the table (what a single query is answered from)."""

    ips: Mapping[dns.name.Name, tuple[str, ...]]
    a: Mapping[dns.name.Name, dns.rdataset.Rdataset]   # prebuilt so queries don't parse text
    ents: frozenset[dns.name.Name]                       # empty non-terminals: NODATA, not NXDOMAIN
    soa: dns.rdataset.Rdataset


class DnsTable:
    """Names of the cluster domain. ``dns.name.Name`` keys compare case-insensitively."""

    def __init__(self, domain: str = "cluster.local") -> None:
        self.origin = dns.name.from_text(domain)
        self._serials = itertools.count(1)
        self._snap = self._build({})

    @property
    def domain(self) -> str:
        return self.origin.to_text(omit_final_dot=True)

    def snapshot(self) -> Snapshot:
        return self._snap

    def replace(self, services: Mapping[str, Sequence[str]]) -> None:
        """Swap in a whole new table; raises ValueError (and keeps the old one) on bad input."""
        self._snap = self._build(services)

    def lookup(self, qname: str) -> Sequence[str] | None:
        try:
            name = dns.name.from_text(qname)
        except dns.exception.DNSException:
            return None
        return self._snap.ips.get(name)

    def _build(self, services: Mapping[str, Sequence[str]]) -> Snapshot:
        ips: dict[dns.name.Name, tuple[str, ...]] = {}
        a: dict[dns.name.Name, dns.rdataset.Rdataset] = {}
        ents: set[dns.name.Name] = set()
        for fqdn, addrs in services.items():
            try:
                name = dns.name.from_text(fqdn)
            except dns.exception.DNSException as e:
                raise ValueError(f"DNS name {fqdn!r}: {e}") from e
            if not name.is_subdomain(self.origin) or name == self.origin:
                raise ValueError(f"DNS name {fqdn!r} is not inside {self.domain}")
            uniq = tuple(dict.fromkeys(addrs))  # keep order, drop duplicates
            for ip in uniq:
                try:
                    ipaddress.IPv4Address(ip)
                except ValueError as e:
                    raise ValueError(f"DNS name {fqdn!r}: {ip!r} is not an IPv4 address") from e
            # Merge names that differ only in case instead of silently dropping one.
            merged = tuple(dict.fromkeys(ips.get(name, ()) + uniq))
            ips[name] = merged
            rds = dns.rdataset.Rdataset(_IN, dns.rdatatype.A)
            for ip in merged:
                rds.add(A(_IN, dns.rdatatype.A, ip), TTL)
            a[name] = rds
            parent = name.parent()
            while parent != self.origin:
                ents.add(parent)
                parent = parent.parent()
        ents.difference_update(ips)
        ents.add(self.origin)
        return Snapshot(ips=ips, a=a, ents=frozenset(ents), soa=self._soa())

    def _soa(self) -> dns.rdataset.Rdataset:
        # CoreDNS-like values; minimum (negative-cache TTL) = TTL so deleted/added names
        # converge as fast as positive answers. Serial bumps on every replace.
        rd = SOA(_IN, dns.rdatatype.SOA,
                 dns.name.from_text("ns.dns", self.origin),
                 dns.name.from_text("hostmaster", self.origin),
                 next(self._serials) & 0xFFFFFFFF, 7200, 1800, 86400, TTL)
        rds = dns.rdataset.Rdataset(_IN, dns.rdatatype.SOA)
        rds.add(rd, TTL)
        return rds
