"""Where the tests find ../shared (Istio's conformance data): beside the repository, or
``$PISTIO_SHARED``. Tests that need it fail, never skip, when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_dir() -> Path:
    env = os.environ.get("PISTIO_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def bookinfo_samples() -> Path:
    """Istio's Bookinfo networking YAMLs."""
    d = shared_dir() / "conformance" / "istio-samples" / "bookinfo-networking"
    if not d.is_dir():
        pytest.fail(f"Bookinfo samples not found at {d} (set PISTIO_SHARED to ../shared)")
    return d
