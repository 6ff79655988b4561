"""The CA end to end with real processes: ``pistio discovery`` running its CA on a TLS port
and ``pistio proxy sidecar`` with a pod token getting, rotating (and being refused)
workload certificates. The agent's ``OUTPUT_CERTS`` directory shows what it holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pistio.security import pki
from pistio.security.tokens import TokenIssuer
from tests.integration.test_proxy_xds import bookinfo_config

NS = "default"
SA = "bookinfo-productpage"
ME = f"spiffe://cluster.local/ns/{NS}/sa/{SA}"


def _wait(predicate, timeout: float, what: str, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.05)


class Mesh:
    """A discovery with its CA, and the node's token issuer."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.issuer = TokenIssuer.generate()
        self.jwks = base / "jwks.json"
        self.issuer.write_jwks(self.jwks)
        bookinfo_config(base / "config")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.info: dict = {}

    def _spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pistio.cli", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def start_discovery(self, *extra: str) -> None:
        ready = self.base / "discovery.ready.json"
        log = self.base / "discovery.log"
        proc = self._spawn(["discovery", "--config-dir", str(self.base / "config"),
                            "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                            "--secure-grpc-addr", "127.0.0.1:0",
                            "--ca-dir", str(self.base / "ca"), "--token-jwks", str(self.jwks),
                            "--ready-file", str(ready), *extra], log)
        _wait(lambda: ready.exists() or proc.poll() is not None, 30, "discovery", log)
        assert proc.poll() is None, log.read_text()
        self.info = json.loads(ready.read_text())

    def token(self, sa: str) -> Path:
        path = self.base / f"token-{sa}"
        path.write_text(self.issuer.issue(NS, sa, pod_name="productpage-v1"))
        return path

    def start_proxy(self, name: str, sa: str, token_sa: str, env: dict[str, str],
                    *extra: str) -> Path:
        out = self.base / f"certs-{name}"
        self._spawn([
            "proxy", "sidecar", "--discovery-address", self.info["grpc_address"],
            "--node-id", f"sidecar~10.244.0.10~productpage-v1.{NS}~{NS}.svc.cluster.local",
            "--namespace", NS, "--pod", "productpage-v1", "--service-account", sa,
            "--ip", "10.244.0.10", "--concurrency", "1", "--admin-port", "0",
            "--prometheus-port", "0", "--health-port", "0", "--status-port", "0",
            "--ca-address", self.info["secure_grpc_address"],
            "--ca-root-cert", str(self.base / "ca" / "root-cert.pem"),
            "--token-file", str(self.token(token_sa)), *extra,
        ], self.base / f"proxy-{name}.log", {"OUTPUT_CERTS": str(out), **env})
        return out

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def mesh(base: Path, *discovery_args: str) -> Iterator[Mesh]:
    m = Mesh(base)
    try:
        m.start_discovery(*discovery_args)
        yield m
    finally:
        m.close()


def _certs(out: Path) -> tuple[list, list] | None:
    try:
        chain = pki.load_certs((out / "cert-chain.pem").read_bytes())
        roots = pki.load_certs((out / "root-cert.pem").read_bytes())
    except (OSError, ValueError):
        return None
    return (chain, roots) if chain and roots else None


def test_proxy_gets_a_certificate_for_its_spiffe_id(tmp_path):
    with mesh(tmp_path) as m:
        out = m.start_proxy("ok", SA, SA, {})
        _wait(lambda: _certs(out) is not None, 60, "the workload certificate",
              tmp_path / "proxy-ok.log")
        chain, roots = _certs(out)  # type: ignore[misc]
        leaf = chain[0]
        assert pki.uri_sans(leaf) == [ME]
        assert roots == pki.load_certs((tmp_path / "ca" / "root-cert.pem").read_bytes())
        assert pki.chain_to_roots(chain, roots)
        assert pki.same_public_key(leaf, pki.load_key((out / "key.pem").read_bytes()))
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime.total_seconds() == 24 * 3600  # Istio's default


def test_short_ttl_rotates_before_expiry(tmp_path):
    with mesh(tmp_path) as m:
        out = m.start_proxy("rot", SA, SA, {"SECRET_TTL": "4s",
                                            "ECC_SIGNATURE_ALGORITHM": "ECDSA"})
        log = tmp_path / "proxy-rot.log"
        _wait(lambda: _certs(out) is not None, 60, "the first certificate", log)
        first = _certs(out)[0][0]  # type: ignore[index]
        _wait(lambda: (c := _certs(out)) is not None and c[0][0] != first, 60,
              "a rotated certificate", log)
        second = _certs(out)[0][0]  # type: ignore[index]
        assert second.serial_number != first.serial_number
        assert pki.uri_sans(second) == [ME]
        # Obtained before the first one expired (Istio rotates at half the lifetime).
        assert second.not_valid_before_utc < first.not_valid_after_utc
        assert (first.not_valid_after_utc - first.not_valid_before_utc).total_seconds() == 4


def test_token_of_another_service_account_gets_no_certificate(tmp_path):
    with mesh(tmp_path) as m:
        out = m.start_proxy("evil", SA, "bookinfo-ratings", {})
        log = tmp_path / "proxy-evil.log"
        _wait(lambda: log.exists() and "unable to validate SAN Identities" in log.read_text(),
              60, "the CA's refusal", log)
        assert _certs(out) is None
        assert "CA: CSR signing error" in (tmp_path / "discovery.log").read_text()


def test_xds_over_tls_on_the_secure_port(tmp_path):
    with mesh(tmp_path) as m:
        out = m.start_proxy("tls", SA, SA, {}, "--discovery-address",
                            m.info["secure_grpc_address"], "--xds-tls")
        _wait(lambda: _certs(out) is not None, 60, "the certificate", tmp_path / "proxy-tls.log")
        import urllib.request

        def connected() -> bool:
            url = f"http://{m.info['http_address']}/debug/syncz"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return any(r["node_id"].startswith("sidecar~10.244.0.10")
                           for r in json.loads(resp.read()))

        _wait(connected, 60, "the proxy's ADS stream over TLS", tmp_path / "proxy-tls.log")


@pytest.mark.parametrize("ttl", ["48h"])
def test_discovery_max_ttl_refuses_longer_requests(tmp_path, ttl):
    with mesh(tmp_path, "--max-workload-cert-ttl", "24h") as m:
        out = m.start_proxy("long", SA, SA, {"SECRET_TTL": ttl})
        log = tmp_path / "proxy-long.log"
        _wait(lambda: log.exists() and "greater than the max allowed TTL" in log.read_text(),
              60, "the CA's refusal", log)
        assert "requested TTL 48h0m0s is greater than the max allowed TTL 24h0m0s" \
            in log.read_text()
        assert _certs(out) is None


def test_plugin_cacerts_and_root_rotation_reach_the_proxy(tmp_path):
    from pistio.security.ca import self_signed_root
    from tests.unit.security.conftest import write_cacerts

    root_a, root_b = self_signed_root("cluster.local"), self_signed_root("cluster.local")
    cacerts = tmp_path / "cacerts"
    inter, _ = write_cacerts(cacerts, *root_a)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "root-cert.pem").write_bytes(pki.cert_pem(root_a[0]))  # the proxy's trust
    with mesh(tmp_path, "--cacerts", str(cacerts)) as m:
        out = m.start_proxy("plug", SA, SA, {"SECRET_TTL": "3s",
                                             "ECC_SIGNATURE_ALGORITHM": "ECDSA"})
        log = tmp_path / "proxy-plug.log"
        _wait(lambda: _certs(out) is not None, 60, "the certificate", log)
        chain, roots = _certs(out)  # type: ignore[misc]
        assert chain[1] == inter and roots == [root_a[0]]
        # Root rotation, step 1: the plug-in bundle trusts both roots; the agent's ROOTCA
        # follows at its next rotation.
        (cacerts / "root-cert.pem").write_bytes(pki.certs_pem([root_a[0], root_b[0]]))
        _wait(lambda: (c := _certs(out)) is not None and len(c[1]) == 2, 60,
              "the new trust bundle", log)
        assert _certs(out)[1] == [root_a[0], root_b[0]]  # type: ignore[index]
        assert "CA: reloaded plug-in certs" in (tmp_path / "discovery.log").read_text()
