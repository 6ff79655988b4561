"""Envoy's ring hash (Ketama-style consistent hashing) load balancer.

Each host is placed on a 64-bit ring many times, at the xxHash64 of ``"<ip:port>_<n>"``; the
number of places is proportional to its weight, scaled so the smallest host gets at least
``minimum_ring_size × its share`` and the ring never exceeds ``maximum_ring_size``. A request
hash picks the first ring entry at or after it (wrapping around). Removing a host moves only
the keys that landed on its entries (about 1/N of them).

xxHash64 (seed 0) comes from the ``xxhash`` package, the same function Envoy uses, so a hash
policy sends a key to the same host as Envoy would given the same host list.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

import xxhash

from pistio.proxy.upstream.host import Host


class RingHash:
    """An immutable ring built from ``hosts`` (non-empty)."""

    __slots__ = ("_hashes", "_hosts")

    def __init__(
        self,
        hosts: Sequence[Host],
        min_ring_size: int = 1024,
        max_ring_size: int = 8 * 1024 * 1024,
        weight_of=None,
    ) -> None:
        weights = [(weight_of(h) if weight_of else h.weight) for h in hosts]
        total = float(sum(weights))
        entries: list[tuple[int, int]] = []
        if total > 0:
            shares = [w / total for w in weights]
            min_share = min(s for s in shares if s > 0)
            # Scale so the lightest host gets ceil(min_share × min_ring_size) entries.
            scale = min(math.ceil(min_share * min_ring_size) / min_share, float(max_ring_size))
            hashes_so_far = 0.0
            target = 0.0
            xxh = xxhash.xxh64_intdigest
            for index, (host, share) in enumerate(zip(hosts, shares, strict=True)):
                target += scale * share
                prefix = host.key + "_"
                n = 0
                while hashes_so_far < target:
                    entries.append((xxh((prefix + str(n)).encode()), index))
                    n += 1
                    hashes_so_far += 1
        entries.sort()
        self._hashes = [h for h, _ in entries]
        self._hosts = [hosts[i] for _, i in entries]

    def __len__(self) -> int:
        return len(self._hashes)

    def pick(self, hash_key: int) -> Host | None:
        if not self._hashes:
            return None
        i = bisect_left(self._hashes, hash_key)
        return self._hosts[i if i < len(self._hosts) else 0]
