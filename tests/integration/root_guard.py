"""The guard every root-needing test starts with: without root (or the tools), skip on a
developer's machine, but fail in CI, which runs the suite as root, so a skip is never
counted as a pass there."""

from __future__ import annotations

import os
import shutil

import pytest


def need_root(purpose: str, tools: tuple[str, ...] = ("ip", "iptables", "setpriv")) -> None:
    why = None
    if os.geteuid() != 0:
        why = f"needs root to {purpose}"
    elif missing := [t for t in tools if not shutil.which(t)]:
        why = f"needs {', '.join(missing)} (make deb)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why + " (CI runs this suite as root)")
        pytest.skip(why)
