"""Free loopback ports for tests, chosen below the kernel's ephemeral range.

A port found by binding port 0 comes from the ephemeral range, and between the test closing
its probe socket and a server binding the port, any connect() on the machine (a proxy's xDS
client, a test client) may take the same port as its source — the server then fails with
"address already in use". Ports below ``ip_local_port_range`` are never given to connect().
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, not handed out before in this process."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range below is crowded: fall back to the kernel's pick
        s.bind((host, 0))
        return s.getsockname()[1]
