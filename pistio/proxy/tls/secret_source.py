"""The agent's resolution of SDS names into secrets (Istio's agent SDS server, in process).

``default`` and ``ROOTCA`` come from the agent's ``SecretManager`` (``get(name)`` returning its
``TlsCertificate`` / ``TrustBundle``, ``subscribe(callback)`` announcing rotations);
``file-cert:<cert>~<key>`` and ``file-root:<ca>`` are read from disk (``file-root:system``
is the operating system's trust bundle, as Istio's agent maps it); ``kubernetes://`` names
(a ``credentialName``) are what the discovery sent over ADS (:attr:`SecretResolver.ads`, kept
by the config manager). A name whose source has nothing yet resolves to ``None``: the
listener or cluster that references it keeps warming.

Results are cached per source object (the SecretManager's records are immutable, a rotation
is a new object) and per file state (inode, size, mtime), so resolving a name again costs a
dictionary lookup, or a ``stat`` for files.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.tls.secrets import (
    FILE_CERT_PREFIX,
    FILE_ROOT_PREFIX,
    ROOT_CERT,
    WORKLOAD_CERT,
    Secret,
    SecretKind,
    certificate_secret,
    file_cert_paths,
    file_root_path,
    is_credential,
    secret_kind,
    validation_secret,
)

log = logging.getLogger("pistio.proxy.tls")

SYSTEM_ROOTS = "system"


class SecretProvider(Protocol):
    """The agent's ``SecretManager`` as seen from here (see the security brief)."""

    def get(self, name: str) -> Any: ...

    def subscribe(self, callback: Callable[[str], None]) -> None: ...


def system_roots_file() -> str | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


class SecretResolver:
    """SDS name → :class:`Secret` (or ``None`` while unavailable)."""

    def __init__(self, provider: SecretProvider | None = None) -> None:
        self.provider = provider
        self._provided: dict[str, tuple[object, Secret]] = {}
        self._files: dict[str, tuple[tuple[tuple[int, int, int], ...], Secret]] = {}
        self.errors: dict[str, str] = {}  # name → why it is unavailable (logs, tests)
        # credentialName secrets received over ADS (SDS responses), by name.
        self.ads: dict[str, Secret] = {}

    def get(self, name: str) -> Secret | None:
        if name in (WORKLOAD_CERT, ROOT_CERT):
            return self._from_provider(name)
        if is_credential(name):
            secret = self.ads.get(name)
            if secret is None:
                self.errors.setdefault(name, "not received from the discovery (SDS over ADS)")
            else:
                self.errors.pop(name, None)
            return secret
        kind = secret_kind(name)
        if kind is SecretKind.CERTIFICATE and name.startswith(FILE_CERT_PREFIX):
            return self._from_files(name, file_cert_paths(name))
        if kind is SecretKind.VALIDATION and name.startswith(FILE_ROOT_PREFIX):
            path = file_root_path(name)
            if path == SYSTEM_ROOTS:
                path = system_roots_file() or path
            return self._from_files(name, (path,))
        return None

    def _from_provider(self, name: str) -> Secret | None:
        if self.provider is None:
            self.errors[name] = "no certificate provider (the proxy runs without a CA)"
            return None
        source = self.provider.get(name)
        if source is None:
            self.errors[name] = "not fetched yet"
            return None
        cached = self._provided.get(name)
        if cached is not None and cached[0] is source:
            return cached[1]
        try:
            if name == WORKLOAD_CERT:
                secret: Secret = certificate_secret(name, source.cert_chain_pem,
                                                    source.private_key_pem, source.version)
            else:
                secret = validation_secret(name, source.roots_pem, source.version)
        except ConfigError as err:
            self.errors[name] = "; ".join(err.problems)
            log.error("SDS secret %s: %s", name, self.errors[name])
            return None
        self.errors.pop(name, None)
        self._provided[name] = (source, secret)
        return secret

    def _from_files(self, name: str, paths: tuple[str, ...]) -> Secret | None:
        try:
            stats = tuple(_stat_key(p) for p in paths)
        except OSError as err:
            self.errors[name] = f"{err.filename}: {err.strerror}"
            return None
        cached = self._files.get(name)
        if cached is not None and cached[0] == stats:
            return cached[1]
        try:
            contents = [_read(p) for p in paths]
            if len(contents) == 2:
                secret: Secret = certificate_secret(name, contents[0], contents[1],
                                                    f"{stats[0][2]}")
            else:
                secret = validation_secret(name, contents[0], f"{stats[0][2]}")
        except OSError as err:
            self.errors[name] = f"{err.filename}: {err.strerror}"
            return None
        except ConfigError as err:
            self.errors[name] = "; ".join(err.problems)
            log.error("SDS secret %s: %s", name, self.errors[name])
            return None
        self.errors.pop(name, None)
        self._files[name] = (stats, secret)
        return secret

    def file_names(self) -> list[str]:
        """The file-based names resolved so far (to poll for changes)."""
        return list(self._files)

    def forget(self, keep: set[str]) -> None:
        for table in (self._provided, self._files):
            for name in [n for n in table if n not in keep]:
                del table[name]


def _stat_key(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
