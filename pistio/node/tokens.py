"""Pod tokens: what the kubelet's projected ``istio-token`` volume gives each pod on a
cluster, for the local runtime.

The node signs each injected pod's token with its own RSA key (RS256; see
:mod:`pistio.security.tokens` for the claims), publishes the public key as a JWKS file that
the discovery trusts (``--token-jwks``), writes the token to a per-pod file the sidecar reads
(``--token-file``), and, like the kubelet, rewrites it once 80% of its lifetime has passed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pistio.security.tokens import DEFAULT_TOKEN_TTL, TokenIssuer

log = logging.getLogger("pistio.node.tokens")

TOKEN_FILE = "istio-token"
JWKS_FILE = "jwks.json"
REFRESH_RATIO = 0.8  # the kubelet's: refresh when 80% of the lifetime has passed


@dataclass
class _PodToken:
    namespace: str
    pod: str
    service_account: str
    uid: str
    owner: tuple[int, int] | None
    issued_at: float = 0.0


class PodTokens:
    def __init__(self, directory: Path, *, ca_address: str = "", ca_root_cert: Path | None = None,
                 ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self.directory = directory
        # What an injected sidecar needs besides its token (passed to the injector).
        self.ca_address = ca_address
        self.ca_root_cert = ca_root_cert
        self.ttl = ttl
        self.issuer = TokenIssuer.generate()
        self._pods: dict[str, _PodToken] = {}

    @property
    def jwks_file(self) -> Path:
        return self.directory / JWKS_FILE

    @property
    def refresh_interval(self) -> float:
        """How often :meth:`refresh_due` should run."""
        return max(0.5, min(60.0, self.ttl * (1 - REFRESH_RATIO) / 4))

    def start(self) -> None:
        """Create the directory and publish the node's public key."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        self.issuer.write_jwks(self.jwks_file)

    def path_for(self, namespace: str, pod: str) -> Path:
        return self.directory / namespace / pod / TOKEN_FILE

    def issue(self, namespace: str, pod: str, service_account: str, *, uid: str = "",
              owner: tuple[int, int] | None = None) -> Path:
        """Write (or rewrite) the pod's token; ``owner`` (uid, gid) gets the file."""
        entry = _PodToken(namespace, pod, service_account, uid or str(uuid.uuid4()), owner)
        self._pods[f"{namespace}/{pod}"] = entry
        return self._write(entry)

    def _write(self, entry: _PodToken, now: float | None = None) -> Path:
        now = time.time() if now is None else now
        token = self.issuer.issue(entry.namespace, entry.service_account, pod_name=entry.pod,
                                  pod_uid=entry.uid, ttl=self.ttl, now=now)
        path = self.path_for(entry.namespace, entry.pod)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{TOKEN_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        if entry.owner is not None and os.geteuid() == 0:
            os.chown(tmp, *entry.owner)
        tmp.replace(path)
        entry.issued_at = now
        return path

    def refresh_due(self, now: float | None = None) -> int:
        """Rewrite the tokens past 80% of their lifetime; returns how many."""
        now = time.time() if now is None else now
        count = 0
        for entry in list(self._pods.values()):
            if now - entry.issued_at >= REFRESH_RATIO * self.ttl:
                try:
                    self._write(entry, now)
                    count += 1
                except OSError as exc:
                    log.error("token of pod %s/%s not refreshed: %s", entry.namespace,
                              entry.pod, exc)
        return count

    def remove(self, namespace: str, pod: str) -> None:
        self._pods.pop(f"{namespace}/{pod}", None)
        shutil.rmtree(self.directory / namespace / pod, ignore_errors=True)

    def close(self) -> None:
        self._pods.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
