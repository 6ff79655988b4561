"""Token buckets shared by a proxy's processes (the agent and its worker processes).

Envoy's local rate limit keeps one token bucket per config for the whole proxy, shared by
its worker threads. pistio's workers are processes, so the buckets live in a small shared
memory table instead: a ``memfd`` the agent creates before starting workers and hands to
each of them (``pass_fds``; nothing appears in the file system). A bucket is a slot found by
its key (a hash of where the config sits and what it says, the same in every process, as
every worker compiles the same resources); a POSIX record lock (``lockf``: per process,
unlike ``flock`` on a shared descriptor) guards each take. Costs two system calls per
rate-limited request, and nothing where no rate limit is configured.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import time

log = logging.getLogger(__name__)

ENV = "PISTIO_SHARED_BUCKETS_FD"
# key (0: free), tokens, last fill (CLOCK_MONOTONIC: one clock for every process on the host)
_SLOT = struct.Struct("<Qqd")
SLOTS = 4096
_PROBES = 64


def bucket_key(*parts: bytes) -> int:
    """A nonzero 64-bit key for a bucket from what identifies it."""
    digest = hashlib.blake2b(b"\0".join(parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class SharedBuckets:
    __slots__ = ("fd", "map", "_full_warned")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.map = mmap.mmap(fd, _SLOT.size * SLOTS)
        self._full_warned = False

    @classmethod
    def create(cls) -> SharedBuckets:
        fd = os.memfd_create("pistio-token-buckets", 0)  # not close-on-exec: pass_fds
        os.ftruncate(fd, _SLOT.size * SLOTS)
        return cls(fd)

    def take(self, key: int, max_tokens: int, tokens_per_fill: int,
             fill_interval: float) -> tuple[bool, int, float] | None:
        """Take a token from bucket ``key`` (created full on first use): (taken, tokens
        left, time of the last fill); None when the table has no room for it (the caller's
        own bucket serves)."""
        now = time.monotonic()
        m = self.map
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            start = key % SLOTS
            for probe in range(_PROBES):
                offset = ((start + probe) % SLOTS) * _SLOT.size
                slot_key, tokens, last_fill = _SLOT.unpack_from(m, offset)
                if slot_key == 0:
                    slot_key, tokens, last_fill = key, max_tokens, now
                if slot_key != key:
                    continue
                ticks = int((now - last_fill) / fill_interval)
                if ticks > 0:
                    tokens = min(max_tokens, tokens + ticks * tokens_per_fill)
                    last_fill += ticks * fill_interval
                taken = tokens > 0
                if taken:
                    tokens -= 1
                _SLOT.pack_into(m, offset, key, tokens, last_fill)
                return taken, tokens, last_fill
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        if not self._full_warned:
            self._full_warned = True
            log.warning("shared token bucket table is full: new buckets are per process")
        return None

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


current: SharedBuckets | None = None


def install(buckets: SharedBuckets | None) -> None:
    global current
    current = buckets


def install_from_env() -> None:
    """In a worker process: open the agent's table, when it passed one."""
    raw = os.environ.get(ENV)
    if raw:
        install(SharedBuckets(int(raw)))
