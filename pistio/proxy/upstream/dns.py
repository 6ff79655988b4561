"""Envoy's ``STRICT_DNS`` and ``LOGICAL_DNS`` clusters, resolved at run time on one worker.

The cluster's ``load_assignment`` names its endpoints by DNS name (or IP literal, used as is).
Each name is a *target*, resolved through the system resolver asynchronously
(``loop.getaddrinfo``, so ``/etc/hosts``, ``resolv.conf`` search domains and any local cache
apply as for every other program of the pod) right away and then every ``dns_refresh_rate``
(Envoy's default 5 s) plus up to ``dns_jitter``; after a failure, after
``dns_failure_refresh_rate`` (base doubling to max, jittered), else ``dns_refresh_rate``.

- ``STRICT_DNS``: every address a target resolves to is a host (the endpoint's port,
  locality, priority, weight, metadata and health status; its hostname is the DNS name).
- ``LOGICAL_DNS``: one endpoint; the first address only, which new connections use. The
  host keeps its identity when the address changes (as Envoy's logical host does), so its
  health and counters carry on; connections already open stay where they are.
- ``dns_lookup_family``: ``V4_ONLY``, ``V6_ONLY``, ``AUTO`` (IPv6 if the name has any IPv6
  address, else IPv4), ``V4_PREFERRED`` (the other way round) or ``ALL`` (IPv4 then IPv6).
- A failed resolution keeps the target's last good addresses (``update_failure``); a first
  failure leaves the target without hosts until a later resolution succeeds.
- ``respect_dns_ttl`` is accepted but cannot be honoured: ``getaddrinfo`` reports no TTL, so
  records are re-resolved every ``dns_refresh_rate`` regardless (the system resolver's own
  cache, if any, keeps to the TTL).

Each worker resolves for itself, like its health checks (``pistio.proxy.upstream.health_check``
says why). Stats: ``cluster.<name>.update_attempt``, ``update_success``, ``update_failure``,
``update_no_rebuild``, ``membership_change``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable

from envoy.config.cluster.v3 import cluster_pb2

from pistio.proxy.config.cluster_config import ClusterConfig, DiscoveryType
from pistio.proxy.config.endpoints import HostSet, LoadAssignment, LocalityGroup
from pistio.proxy.stats.families import ClusterStats

log = logging.getLogger("pistio.proxy.dns")

Cluster = cluster_pb2.Cluster

# resolve(name, family) -> [(address family, address), ...] in the resolver's order.
Resolver = Callable[[str, int], Awaitable[list[tuple[int, str]]]]


def system_resolver(loop: asyncio.AbstractEventLoop) -> Resolver:
    async def resolve(name: str, family: int) -> list[tuple[int, str]]:
        infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
        return [(info[0], info[4][0]) for info in infos]

    return resolve


def is_ip_literal(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def select_addresses(lookup_family: int, found: list[tuple[int, str]]) -> tuple[str, ...]:
    """The addresses ``dns_lookup_family`` keeps, in order, without duplicates."""
    v4 = [a for f, a in found if f == socket.AF_INET]
    v6 = [a for f, a in found if f == socket.AF_INET6]
    if lookup_family == Cluster.V4_ONLY:
        chosen = v4
    elif lookup_family == Cluster.V6_ONLY:
        chosen = v6
    elif lookup_family == Cluster.V4_PREFERRED:
        chosen = v4 or v6
    elif lookup_family == Cluster.ALL:
        chosen = v4 + v6
    else:  # AUTO
        chosen = v6 or v4
    return tuple(dict.fromkeys(chosen))


def _query_family(lookup_family: int) -> int:
    if lookup_family == Cluster.V4_ONLY:
        return socket.AF_INET
    if lookup_family == Cluster.V6_ONLY:
        return socket.AF_INET6
    return socket.AF_UNSPEC


class DnsResolver:
    """The targets of one DNS cluster; calls ``on_update`` with a new ``LoadAssignment``
    (IP-literal endpoints) whenever the resolved addresses change, and with ``None`` after a
    failed attempt (hosts unchanged)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ClusterConfig,
        template: LoadAssignment,
        on_update: Callable[[LoadAssignment | None], None],
        stats: ClusterStats,
        *,
        resolve: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.template = template
        self.on_update = on_update
        self.stats = stats
        self.resolve = resolve or system_resolver(loop)
        self.rng = rng or random.Random()
        self.logical = config.discovery_type is DiscoveryType.LOGICAL_DNS
        # Resolved addresses by DNS name (IP literals need none).
        self.names = tuple(dict.fromkeys(
            ep.address for ep in template.endpoints if not is_ip_literal(ep.address)))
        self.results: dict[str, tuple[str, ...]] = {}
        self.attempted: set[str] = set()
        self.failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    @property
    def resolved_once(self) -> bool:
        """Every name was tried at least once (Envoy's cluster initialization)."""
        return len(self.attempted) == len(self.names)

    def start(self) -> None:
        for name in self.names:
            self._resolve_soon(name, 0.0)

    def close(self) -> None:
        self.closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    # --- resolution ------------------------------------------------------------------------------

    def _resolve_soon(self, name: str, delay: float) -> None:
        if self.closed:
            return
        if delay <= 0:
            self._start_task(name)
        else:
            self._timers[name] = self.loop.call_later(delay, self._start_task, name)

    def _start_task(self, name: str) -> None:
        self._timers.pop(name, None)
        if self.closed:
            return
        task = self.loop.create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        cfg = self.config
        self.stats.update_attempt += 1
        try:
            found = await self.resolve(name, _query_family(cfg.dns_lookup_family))
            addresses = select_addresses(cfg.dns_lookup_family, found)
            if not addresses:
                raise OSError(f"no address of the requested family for {name!r}")
        except asyncio.CancelledError:
            raise
        except Exception as err:  # socket.gaierror, OSError, a resolver's own error
            if self.closed:
                return
            self.stats.update_failure += 1
            failures = self.failures[name] = self.failures.get(name, 0) + 1
            if name not in self.results:
                log.warning("cluster %s: cannot resolve %s: %s", cfg.name, name, err)
            self.attempted.add(name)
            self._resolve_soon(name, self._failure_delay(failures))
            # Hosts stay as they were; a first attempt counts for initialization even so.
            self.on_update(None)
            return
        if self.closed:
            return
        self.failures.pop(name, None)
        self.stats.update_success += 1
        if self.logical:
            addresses = addresses[:1]
        self.attempted.add(name)
        if self.results.get(name) == addresses:
            self.stats.update_no_rebuild += 1
        else:
            self.results[name] = addresses
            self.on_update(self.assignment())
        self._resolve_soon(name, self._refresh_delay())

    def _refresh_delay(self) -> float:
        cfg = self.config
        delay = cfg.dns_refresh_rate
        if cfg.dns_jitter > 0:
            delay += self.rng.random() * cfg.dns_jitter
        return delay

    def _failure_delay(self, failures: int) -> float:
        cfg = self.config
        base = cfg.dns_failure_refresh_base
        if base is None:
            return self._refresh_delay()
        cap = cfg.dns_failure_refresh_max or base * 10
        # Envoy's jittered exponential back-off: random in [0, min(base * 2^n, cap)), at
        # least the base.
        ceiling = min(base * (2 ** min(failures - 1, 30)), cap)
        return max(base, self.rng.random() * ceiling)

    # --- hosts ----------------------------------------------------------------------------------

    def assignment(self) -> LoadAssignment:
        """The template with every named endpoint replaced by its resolved addresses."""
        priorities = []
        for host_set in self.template.priorities:
            groups = []
            for group in host_set.localities:
                endpoints = []
                for ep in group.endpoints:
                    if is_ip_literal(ep.address):
                        endpoints.append(ep)
                        continue
                    hostname = ep.hostname or ep.address
                    for address in self.results.get(ep.address, ()):
                        endpoints.append(dataclasses.replace(ep, address=address,
                                                             hostname=hostname))
                groups.append(LocalityGroup(group.locality, group.weight, tuple(endpoints)))
            priorities.append(HostSet(host_set.priority, tuple(groups),
                                      tuple(e for g in groups for e in g.endpoints)))
        return dataclasses.replace(self.template, priorities=tuple(priorities))
