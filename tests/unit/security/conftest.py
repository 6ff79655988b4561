"""Shared CA material (RSA key generation is the slow part; made once per module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pistio.security import pki
from pistio.security.ca import intermediate_ca, self_signed_root


def write_cacerts(directory: Path, root, root_key, roots_bundle: list | None = None,  # type: ignore[no-untyped-def]
                  name: str = "intermediate") -> tuple:
    """Istio's plug-in files for an intermediate signed by ``root``."""
    cert, key = intermediate_ca(root, root_key, name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_bytes(pki.cert_pem(cert))
    (directory / "ca-key.pem").write_bytes(pki.key_pem(key))
    (directory / "cert-chain.pem").write_bytes(pki.certs_pem([cert, root]))
    (directory / "root-cert.pem").write_bytes(pki.certs_pem(roots_bundle or [root]))
    return cert, key


@pytest.fixture(scope="session")
def root_a():  # type: ignore[no-untyped-def]
    return self_signed_root("cluster.local")


@pytest.fixture(scope="session")
def root_b():  # type: ignore[no-untyped-def]
    return self_signed_root("cluster.local")
