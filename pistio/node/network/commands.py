"""Running iproute2/iptables commands with errors that say what failed."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any


class NetworkError(RuntimeError):
    """A network command failed; the message holds the command line and its stderr."""


def run(*argv: str, input: str | None = None, timeout: float = 20,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capturing text output; raise NetworkError on failure if
    ``check``. A timeout or a missing binary is always an error: the caller cannot act on a
    half-known state."""
    line = shlex.join(argv)
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise NetworkError(f"{line}: timed out after {timeout}s") from e
    except OSError as e:
        raise NetworkError(f"{line}: {e}") from e
    if check and done.returncode != 0:
        raise NetworkError(f"{line}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def in_netns(netns: str, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``run`` inside a named network namespace (``ip netns exec`` also bind-mounts
    /etc/netns/<netns>/* over /etc)."""
    return run("ip", "netns", "exec", netns, *argv, **kw)
