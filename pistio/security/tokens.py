"""Pod tokens: the stand-in for Kubernetes' projected service-account tokens that Istio's
agent presents to the CA (``Authorization: Bearer <token>``).

A token is an RS256 JWT signed by the node, with the claims Kubernetes puts in a bound token:
``iss`` ``https://kubernetes.default.svc.cluster.local``, ``sub``
``system:serviceaccount:<ns>:<sa>``, ``aud`` ``["istio-ca"]``, ``iat``/``nbf``/``exp`` and
``kubernetes.io: {namespace, pod: {name, uid}, serviceaccount: {name, uid}}``. The discovery
trusts the node's public keys from a JWKS file and derives the caller's identity from a
verified token only.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KUBERNETES_ISSUER = "https://kubernetes.default.svc.cluster.local"
ISTIO_CA_AUDIENCE = "istio-ca"
SA_PREFIX = "system:serviceaccount:"
# Istio's injector asks for 12 h tokens (expirationSeconds: 43200).
DEFAULT_TOKEN_TTL = 43200.0


class TokenError(Exception):
    """The token does not authenticate a caller (why, for logs; callers see less)."""


@dataclass(frozen=True)
class ServiceAccountClaims:
    namespace: str
    service_account: str
    pod_name: str = ""
    pod_uid: str = ""
    expires_at: float = 0.0


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint, as Kubernetes names its signing keys."""
    import base64
    import hashlib

    jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]},
                           separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class TokenIssuer:
    """Signs pod tokens with one RSA key (the node's)."""

    def __init__(self, key: rsa.RSAPrivateKey, issuer: str = KUBERNETES_ISSUER) -> None:
        self.key = key
        self.issuer = issuer
        self.kid = key_id(key.public_key())

    @classmethod
    def generate(cls) -> TokenIssuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def write_jwks(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.jwks(), indent=2) + "\n")
        tmp.replace(path)

    def issue(self, namespace: str, service_account: str, *, pod_name: str = "",
              pod_uid: str = "", ttl: float = DEFAULT_TOKEN_TTL,
              audiences: tuple[str, ...] = (ISTIO_CA_AUDIENCE,),
              now: float | None = None) -> str:
        now = time.time() if now is None else now
        k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": str(uuid.uuid5(
                uuid.NAMESPACE_URL, f"sa/{namespace}/{service_account}"))},
        }
        if pod_name:
            k8s["pod"] = {"name": pod_name, "uid": pod_uid or str(uuid.uuid4())}
        claims = {
            "iss": self.issuer,
            "sub": f"{SA_PREFIX}{namespace}:{service_account}",
            "aud": list(audiences),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + ttl),
            "kubernetes.io": k8s,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class TokenVerifier:
    """Verifies pod tokens against a JWKS (the discovery's ``--token-jwks``)."""

    def __init__(self, jwks: dict[str, Any], *, issuer: str = KUBERNETES_ISSUER,
                 audience: str = ISTIO_CA_AUDIENCE, leeway: float = 0.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.keys: dict[str, Any] = {}
        self._anonymous: list[Any] = []
        for entry in jwks.get("keys", []):
            if entry.get("kty") != "RSA":
                continue
            key = jwt.PyJWK(entry, algorithm="RS256").key
            if entry.get("kid"):
                self.keys[entry["kid"]] = key
            else:
                self._anonymous.append(key)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> TokenVerifier:
        return cls(json.loads(Path(path).read_text()), **kwargs)

    def verify(self, token: str) -> ServiceAccountClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        if header.get("alg") != "RS256":
            raise TokenError(f"token algorithm {header.get('alg')!r} is not RS256")
        kid = header.get("kid")
        candidates = [self.keys[kid]] if kid in self.keys else list(self._anonymous)
        if not candidates:
            raise TokenError("token signed by an unknown key")
        claims: dict[str, Any] | None = None
        last: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token, key, algorithms=["RS256"], audience=self.audience,
                    issuer=self.issuer, leeway=self.leeway,
                    options={"require": ["exp", "iss", "sub", "aud"]},
                )
                break
            except jwt.PyJWTError as exc:
                last = exc
        if claims is None:
            raise TokenError(f"token verification failed: {last}")
        return _service_account(claims)


def _service_account(claims: dict[str, Any]) -> ServiceAccountClaims:
    sub = str(claims.get("sub", ""))
    if not sub.startswith(SA_PREFIX):
        raise TokenError(f"subject {sub!r} is not a service account")
    parts = sub[len(SA_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise TokenError(f"subject {sub!r} is not a service account")
    ns, sa = parts
    k8s = claims.get("kubernetes.io") or {}
    if k8s and (k8s.get("namespace") != ns
                or (k8s.get("serviceaccount") or {}).get("name") != sa):
        raise TokenError("kubernetes.io claims do not match the subject")
    pod = k8s.get("pod") or {}
    return ServiceAccountClaims(ns, sa, str(pod.get("name", "")), str(pod.get("uid", "")),
                                float(claims["exp"]))
