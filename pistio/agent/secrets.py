"""The agent's workload certificates (Istio's ``SecretManagerClient``): the SDS secrets
``default`` (key + certificate chain) and ``ROOTCA`` (the trust bundle) for the proxy.

The flow, as Istio's agent runs it:

1. a new private key and a CSR whose only SAN is the workload's SPIFFE id
   (``spiffe://<TRUST_DOMAIN>/ns/<POD_NAMESPACE>/sa/<SERVICE_ACCOUNT>``);
2. ``IstioCertificateService/CreateCertificate`` at ``CA_ADDR`` over TLS (trusting
   ``--ca-root-cert`` / ``CA_ROOT_CA``), with the pod token as ``authorization: Bearer``,
   asking for ``SECRET_TTL`` (24 h);
3. the answer is checked (the leaf certifies our key for our id and chains to a root in the
   answer) and becomes ``default`` (leaf + intermediates) and ``ROOTCA`` (the roots);
4. rotation when ``SECRET_GRACE_PERIOD_RATIO`` (0.5) of the lifetime is left, with a new key
   each time; subscribers hear the names that changed. A failed fetch is retried with
   back-off; the current certificate keeps serving meanwhile.

``OUTPUT_CERTS``, when set, receives ``key.pem``, ``cert-chain.pem`` and ``root-cert.pem``
after each fetch, as Istio's agent writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pistio.security import pki
from pistio.security.ca_client import CaClient
from pistio.security.csr import generate_csr
from pistio.security.spiffe import DEFAULT_TRUST_DOMAIN, spiffe_id

log = logging.getLogger("pistio.agent.secrets")

WORKLOAD_CERT = "default"  # Istio's SDS names
ROOT_CERT = "ROOTCA"
DEFAULT_TTL = 24 * 3600.0
DEFAULT_GRACE_RATIO = 0.5
# The first certificate: a few quick attempts before start() returns; later ones back off
# up to RETRY_MAX and never stop.
START_ATTEMPTS = 5
RETRY_INITIAL = 0.5
RETRY_MAX = 30.0


@dataclass(frozen=True)
class TlsCertificate:  # SDS resource "default"
    cert_chain_pem: bytes
    private_key_pem: bytes
    expires_at: float
    version: str


@dataclass(frozen=True)
class TrustBundle:  # SDS resource "ROOTCA"
    roots_pem: bytes
    version: str


@dataclass(frozen=True)
class SecretOptions:
    ca_address: str
    identity: str  # the SPIFFE id asked for
    root_cert: Path | None = None  # trust for the CA's TLS certificate
    token_file: Path | None = None
    ttl: float = DEFAULT_TTL
    grace_ratio: float = DEFAULT_GRACE_RATIO
    key_type: str = "RSA"
    rsa_bits: int = 2048
    pkcs8: bool = False
    output_dir: Path | None = None
    cluster_id: str = "Kubernetes"
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    @classmethod
    def from_env(cls, *, namespace: str, service_account: str,
                 ca_address: str | None = None, root_cert: str | Path | None = None,
                 token_file: str | Path | None = None, cluster_id: str = "Kubernetes",
                 env: Mapping[str, str] | None = None) -> SecretOptions:
        """Explicit values first, then Istio's agent variables: ``CA_ADDR``,
        ``CA_ROOT_CA``, ``TRUST_DOMAIN``, ``SECRET_TTL``, ``SECRET_GRACE_PERIOD_RATIO``,
        ``ECC_SIGNATURE_ALGORITHM``, ``WORKLOAD_RSA_KEY_SIZE``, ``PKCS8_KEY``,
        ``OUTPUT_CERTS``. :class:`ValueError` on a malformed value."""
        env = os.environ if env is None else env
        address = ca_address or env.get("CA_ADDR", "")
        if not address:
            raise ValueError("no CA address (--ca-address or CA_ADDR)")
        td = env.get("TRUST_DOMAIN") or DEFAULT_TRUST_DOMAIN
        ratio = float(env.get("SECRET_GRACE_PERIOD_RATIO", DEFAULT_GRACE_RATIO))
        if not 0 < ratio < 1:
            raise ValueError(f"SECRET_GRACE_PERIOD_RATIO must be in (0, 1), not {ratio}")
        ttl = pki.parse_duration(env["SECRET_TTL"]) if env.get("SECRET_TTL") else DEFAULT_TTL
        if ttl <= 0:
            raise ValueError(f"SECRET_TTL must be positive, not {env.get('SECRET_TTL')}")
        root = root_cert or env.get("CA_ROOT_CA") or None
        out = env.get("OUTPUT_CERTS") or None
        return cls(
            ca_address=address,
            identity=spiffe_id(namespace, service_account, td),
            root_cert=Path(root) if root else None,
            token_file=Path(token_file) if token_file else None,
            ttl=ttl,
            grace_ratio=ratio,
            key_type="ECDSA" if env.get("ECC_SIGNATURE_ALGORITHM", "").upper() == "ECDSA"
            else "RSA",
            rsa_bits=int(env.get("WORKLOAD_RSA_KEY_SIZE", "2048")),
            pkcs8=env.get("PKCS8_KEY", "").lower() in ("1", "true", "t"),
            output_dir=Path(out) if out else None,
            cluster_id=cluster_id,
            trust_domain=td,
        )


class SecretError(Exception):
    """The CA's answer cannot be used."""


class SecretManager:
    def __init__(self, options: SecretOptions, client: CaClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.client = client or CaClient(options.ca_address, root_cert=options.root_cert,
                                         token_file=options.token_file,
                                         cluster_id=options.cluster_id)
        self.clock = clock
        self._secrets: dict[str, TlsCertificate | TrustBundle] = {}
        self._subscribers: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._rotate_at = 0.0
        self.fetches = 0  # certificates obtained
        self.failures = 0
        self.last_error = ""

    # -- public API ----------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the first certificate (a few attempts), then keep it rotated. A CA that
        cannot be reached or refuses does not stop the agent: it keeps retrying while the
        proxy's TLS listeners wait for their secrets."""
        delay = RETRY_INITIAL
        for attempt in range(1, START_ATTEMPTS + 1):
            if await self._try_fetch():
                break
            if attempt < START_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
        else:
            log.error("no workload certificate after %d attempts; still retrying: %s",
                      START_ATTEMPTS, self.last_error)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="secret-rotation")

    def get(self, name: str) -> TlsCertificate | TrustBundle | None:
        """``default`` → :class:`TlsCertificate`, ``ROOTCA`` → :class:`TrustBundle`."""
        return self._secrets.get(name)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """``callback(name)`` after ``name`` changed (rotation, new roots)."""
        self._subscribers.append(callback)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def rotate_at(self) -> float:
        return self._rotate_at

    # -- fetching and rotating -------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_INITIAL
        while True:
            if self.get(WORKLOAD_CERT) is not None:
                await asyncio.sleep(max(0.0, self._rotate_at - self.clock()))
            if await self._try_fetch():
                delay = RETRY_INITIAL
                continue
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def _try_fetch(self) -> bool:
        try:
            await self.fetch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the CA's refusal, an unreachable CA, a bad answer
            self.failures += 1
            self.last_error = _describe(exc)
            log.warning("workload certificate for %s: %s", self.options.identity,
                        self.last_error)
            return False
        return True

    async def fetch(self) -> TlsCertificate:
        """One CSR → certificate round, applied and announced."""
        opts = self.options
        csr_pem, key_pem = await asyncio.to_thread(
            generate_csr, opts.identity, key_type=opts.key_type, rsa_bits=opts.rsa_bits,
            pkcs8=opts.pkcs8)
        chain = await self.client.create_certificate(csr_pem, opts.ttl)
        cert, roots = self._check(chain, key_pem)
        self._apply(cert, roots)
        return cert

    def _check(self, chain_pem: list[str], key_pem: bytes) -> tuple[TlsCertificate, TrustBundle]:
        certs = [c for pem in chain_pem for c in pki.load_certs(pem)]
        if not certs:
            raise SecretError("the CA returned no certificate")
        leaf = certs[0]
        if not pki.same_public_key(leaf, pki.load_key(key_pem)):
            raise SecretError("the CA's certificate is not for our key")
        sans = pki.uri_sans(leaf)
        if sans != [self.options.identity]:
            raise SecretError(f"the CA's certificate is for {sans}, not {self.options.identity}")
        roots = [c for c in certs[1:] if pki.is_self_signed(c)]
        middle = [c for c in certs[1:] if c not in roots]
        if not roots:
            raise SecretError("the CA's answer has no root certificate")
        if not pki.chain_to_roots([leaf, *middle], roots):
            raise SecretError("the CA's certificate does not chain to its roots")
        not_after = leaf.not_valid_after_utc.timestamp()
        not_before = leaf.not_valid_before_utc.timestamp()
        roots_pem = pki.certs_pem(roots)
        tls = TlsCertificate(
            cert_chain_pem=pki.certs_pem([leaf, *middle]),
            private_key_pem=key_pem,
            expires_at=not_after,
            version=_version(leaf.not_valid_before_utc, leaf.serial_number),
        )
        bundle = TrustBundle(roots_pem, hashlib.sha256(roots_pem).hexdigest()[:16])
        # Istio: rotate when grace_ratio of the lifetime is left.
        self._next = not_after - self.options.grace_ratio * (not_after - not_before)
        return tls, bundle

    def _apply(self, cert: TlsCertificate, roots: TrustBundle) -> None:
        changed = [WORKLOAD_CERT]
        old_roots = self._secrets.get(ROOT_CERT)
        if not isinstance(old_roots, TrustBundle) or old_roots.version != roots.version:
            changed.append(ROOT_CERT)
        self._secrets[WORKLOAD_CERT] = cert
        self._secrets[ROOT_CERT] = roots
        self._rotate_at = self._next
        self.fetches += 1
        self.last_error = ""
        log.info("workload certificate for %s: serial %s, expires %s, rotation at %s",
                 self.options.identity, cert.version.rpartition("-")[2],
                 _iso(cert.expires_at), _iso(self._rotate_at))
        if self.options.output_dir is not None:
            self._write_output(cert, roots)
        for name in changed:
            for callback in list(self._subscribers):
                try:
                    callback(name)
                except Exception:
                    log.exception("secret subscriber failed for %s", name)

    def _write_output(self, cert: TlsCertificate, roots: TrustBundle) -> None:
        out = self.options.output_dir
        assert out is not None
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, data, mode in (("key.pem", cert.private_key_pem, 0o600),
                                     ("cert-chain.pem", cert.cert_chain_pem, 0o644),
                                     ("root-cert.pem", roots.roots_pem, 0o644)):
                tmp = out / f".{name}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                tmp.replace(out / name)
        except OSError as exc:
            log.error("OUTPUT_CERTS %s: %s", out, exc)


def _version(not_before: dt.datetime, serial: int) -> str:
    return f"{not_before.strftime('%Y-%m-%dT%H:%M:%SZ')}-{serial:x}"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(exc: Exception) -> str:
    import grpc

    if isinstance(exc, grpc.aio.AioRpcError):
        return f"CA {exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
