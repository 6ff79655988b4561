"""Envoy's Maglev load balancer (Google's Maglev consistent hashing).

A lookup table of prime size M (65537 by default) is filled by letting hosts take turns
claiming slots along their own permutation of the table: host i starts at
``offset = xxh64(key, seed 0) mod M`` and steps by ``skip = xxh64(key, seed 1) mod (M-1) + 1``.
Weights are honoured by letting a host take its turn only when its accumulated normalised
weight reaches the heaviest host's. A request hash picks ``table[hash mod M]``: O(1), with
near-perfect balance and minimal disruption when hosts change.

Building costs O(M log M) in Python (about 0.1–0.3 s for M = 65537); it happens only when the
host set or health changes, off the request path.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from pistio.proxy.upstream.host import Host


class MaglevTable:
    __slots__ = ("_table", "_size")

    def __init__(self, hosts: Sequence[Host], table_size: int = 65537, weight_of=None) -> None:
        self._size = table_size
        weights = [(weight_of(h) if weight_of else h.weight) for h in hosts]
        live = [(h, w) for h, w in zip(hosts, weights, strict=True) if w > 0]
        table: list[Host | None] = [None] * table_size
        if live:
            max_weight = max(w for _, w in live)
            m = table_size
            offsets = []
            skips = []
            for h, _ in live:
                key = h.key.encode()
                offsets.append(xxhash.xxh64_intdigest(key, 0) % m)
                skips.append(xxhash.xxh64_intdigest(key, 1) % (m - 1) + 1)
            norm = [w / max_weight for _, w in live]
            accumulated = [0.0] * len(live)
            nexts = [0] * len(live)
            filled = 0
            while filled < m:
                for i, (host, _) in enumerate(live):
                    accumulated[i] += norm[i]
                    if accumulated[i] < 1.0:
                        continue
                    accumulated[i] -= 1.0
                    offset, skip, n = offsets[i], skips[i], nexts[i]
                    slot = (offset + skip * n) % m
                    while table[slot] is not None:
                        n += 1
                        slot = (offset + skip * n) % m
                    table[slot] = host
                    nexts[i] = n + 1
                    filled += 1
                    if filled == m:
                        break
        self._table = table if live else []

    def __len__(self) -> int:
        return len(self._table)

    def pick(self, hash_key: int) -> Host | None:
        if not self._table:
            return None
        return self._table[hash_key % self._size]

    def counts(self) -> dict[str, int]:
        """Slots per host key (for tests and the admin API)."""
        out: dict[str, int] = {}
        for h in self._table:
            if h is not None:
                out[h.key] = out.get(h.key, 0) + 1
        return out
