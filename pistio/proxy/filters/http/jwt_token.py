"""JWT parsing, JWKS keys and signature checks with the results and messages of Envoy's
``jwt_verify_lib`` (what ``envoy.filters.http.jwt_authn`` answers with).

Parsing follows ``Jwt::parseFromString``: three base64url parts; a JSON object header with a
string ``alg`` Envoy implements and an optional string ``kid``; a JSON object payload whose
``iss``/``sub``/``jti`` are strings, ``iat``/``nbf``/``exp`` non-negative integers and ``aud``
a string or a list of strings. Signatures are checked against the JWKS keys whose ``kid`` (when
both sides have one) and ``alg`` (when the key has one) match and whose type fits the
algorithm: none → ``Jwks doesn't have key to match kid or alg from Jwt``; tried but none
verifies → ``Jwt verification fails``. The crypto is PyJWT's (``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass
from typing import Any


class Status(enum.Enum):
    """``google::jwt_verify::Status`` values pistio produces, with Envoy's messages."""

    OK = "OK"
    JWT_MISSED = "Jwt is missing"
    JWT_NOT_YET_VALID = "Jwt not yet valid"
    JWT_EXPIRED = "Jwt is expired"
    JWT_BAD_FORMAT = ("Jwt is not in the form of Header.Payload.Signature with two dots and 3 "
                      "sections")
    HEADER_BAD_BASE64 = "Jwt header is an invalid Base64url encoded"
    HEADER_BAD_JSON = "Jwt header is an invalid JSON"
    HEADER_BAD_ALG = "Jwt header [alg] field is required and must be a string"
    HEADER_NOT_IMPLEMENTED_ALG = "Jwt header [alg] is not supported"
    HEADER_BAD_KID = "Jwt header [kid] field is not a string"
    PAYLOAD_BAD_BASE64 = "Jwt payload is an invalid Base64url encoded"
    PAYLOAD_BAD_JSON = "Jwt payload is an invalid JSON"
    ISS_NOT_STRING = "Jwt payload [iss] field is not a string"
    SUB_NOT_STRING = "Jwt payload [sub] field is not a string"
    IAT_NOT_INTEGER = "Jwt payload [iat] field is not an integer"
    IAT_OUT_OF_RANGE = "Jwt payload [iat] field is not a positive 64 bit integer"
    NBF_NOT_INTEGER = "Jwt payload [nbf] field is not an integer"
    NBF_OUT_OF_RANGE = "Jwt payload [nbf] field is not a positive 64 bit integer"
    EXP_NOT_INTEGER = "Jwt payload [exp] field is not an integer"
    EXP_OUT_OF_RANGE = "Jwt payload [exp] field is not a positive 64 bit integer"
    JTI_NOT_STRING = "Jwt payload [jti] field is not a string"
    AUD_NOT_STRING = "Jwt payload [aud] field is not a string or string list"
    SIGNATURE_BAD_BASE64 = "Jwt signature is an invalid Base64url encoded"
    UNKNOWN_ISSUER = "Jwt issuer is not configured"
    AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
    VERIFICATION_FAIL = "Jwt verification fails"
    JWKS_NO_VALID_KEYS = "Jwks doesn't have any valid public key"
    JWKS_KID_ALG_MISMATCH = "Jwks doesn't have key to match kid or alg from Jwt"

    @property
    def message(self) -> str:
        return self.value


_algorithms_cache: dict[str, Any] = {}


def _algorithms() -> dict[str, Any]:
    """PyJWT's algorithms, loaded on first use: PyJWT pulls in ``cryptography``, which a
    worker without JWT policies should not pay for."""
    if not _algorithms_cache:
        from jwt.algorithms import get_default_algorithms

        _algorithms_cache.update(get_default_algorithms())
    return _algorithms_cache


# Envoy's implemented algorithms, each with the JWK key type it needs.
_ALG_KTY = {
    **{a: "RSA" for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    **{a: "EC" for a in ("ES256", "ES384", "ES512")},
    **{a: "oct" for a in ("HS256", "HS384", "HS512")},
    "EdDSA": "OKP",
}
_EC_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}\Z")


def b64url_decode(text: str) -> bytes | None:
    if _B64URL.match(text) is None:
        return None
    text = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Jwk:
    kid: str
    alg: str  # "" when the key does not name one
    kty: str
    crv: str
    key: Any

    def fits(self, alg: str) -> bool:
        if _ALG_KTY.get(alg) != self.kty:
            return False
        return self.kty != "EC" or not self.crv or _EC_CURVE[alg] == self.crv


def parse_jwks(text: str) -> tuple[Jwk, ...]:
    """The usable keys of a JWKS document; an unusable document gives no keys (Envoy keeps
    the provider and answers ``Jwks doesn't have any valid public key``)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return ()
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        return ()
    out = []
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        kty = jwk.get("kty")
        alg = jwk.get("alg", "")
        if not isinstance(alg, str):
            continue
        family = {"RSA": "RS256", "EC": _ec_alg(jwk), "oct": "HS256", "OKP": "EdDSA"}.get(
            kty) if isinstance(kty, str) else None
        if family is None:
            continue
        try:
            key = _algorithms()[family].from_jwk(jwk)
        except Exception:  # noqa: BLE001 - PyJWT raises various errors for bad keys
            continue
        kid = jwk.get("kid", "")
        out.append(Jwk(kid if isinstance(kid, str) else "", alg, kty,
                       str(jwk.get("crv", "")), key))
    return tuple(out)


def _ec_alg(jwk: dict[str, Any]) -> str:
    crv = jwk.get("crv", "P-256")
    return {v: k for k, v in _EC_CURVE.items()}.get(crv, "ES256")


@dataclass(frozen=True, slots=True)
class Jwt:
    """A parsed token: header and payload as JSON, what the signature covers."""

    token: str
    header: dict[str, Any]
    payload: dict[str, Any]
    payload_b64: str
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str
    iss: str
    audiences: tuple[str, ...]
    nbf: int
    exp: int


def parse_jwt(token: str) -> Jwt | Status:
    parts = token.split(".")
    if len(parts) != 3:
        return Status.JWT_BAD_FORMAT
    h64, p64, s64 = parts
    raw = b64url_decode(h64)
    if raw is None:
        return Status.HEADER_BAD_BASE64
    header = _json_object(raw)
    if header is None:
        return Status.HEADER_BAD_JSON
    alg = header.get("alg")
    if not isinstance(alg, str):
        return Status.HEADER_BAD_ALG
    if alg not in _ALG_KTY:
        return Status.HEADER_NOT_IMPLEMENTED_ALG
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        return Status.HEADER_BAD_KID
    raw = b64url_decode(p64)
    if raw is None:
        return Status.PAYLOAD_BAD_BASE64
    payload = _json_object(raw)
    if payload is None:
        return Status.PAYLOAD_BAD_JSON
    for name, bad in (("iss", Status.ISS_NOT_STRING), ("sub", Status.SUB_NOT_STRING),
                      ("jti", Status.JTI_NOT_STRING)):
        if name in payload and not isinstance(payload[name], str):
            return bad
    times = {}
    for name, not_int, out_of_range in (
            ("iat", Status.IAT_NOT_INTEGER, Status.IAT_OUT_OF_RANGE),
            ("nbf", Status.NBF_NOT_INTEGER, Status.NBF_OUT_OF_RANGE),
            ("exp", Status.EXP_NOT_INTEGER, Status.EXP_OUT_OF_RANGE)):
        value = payload.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return not_int
        if value < 0 or value >= 2**64:
            return out_of_range
        times[name] = int(value)
    aud = payload.get("aud", [])
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        return Status.AUD_NOT_STRING
    signature = b64url_decode(s64)
    if signature is None or not signature:
        return Status.SIGNATURE_BAD_BASE64 if signature is None else Status.JWT_BAD_FORMAT
    return Jwt(token, header, payload, p64, f"{h64}.{p64}".encode("ascii"), signature, alg,
               kid, payload.get("iss", ""), audiences, times["nbf"], times["exp"])


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def verify_time(jwt: Jwt, now: int, clock_skew: int) -> Status:
    if jwt.nbf and now + clock_skew < jwt.nbf:
        return Status.JWT_NOT_YET_VALID
    if jwt.exp and now > jwt.exp + clock_skew:
        return Status.JWT_EXPIRED
    return Status.OK


def verify_signature(jwt: Jwt, keys: tuple[Jwk, ...]) -> Status:
    if not keys:
        return Status.JWKS_NO_VALID_KEYS
    algorithm = _algorithms()[jwt.alg]
    tried = False
    for jwk in keys:
        if jwt.kid and jwk.kid and jwk.kid != jwt.kid:
            continue
        if jwk.alg and jwk.alg != jwt.alg:
            continue
        if not jwk.fits(jwt.alg):
            continue
        tried = True
        try:
            if algorithm.verify(jwt.signing_input, jwk.key, jwt.signature):
                return Status.OK
        except Exception:  # noqa: BLE001, S112 - a malformed signature just fails this key
            continue
    return Status.VERIFICATION_FAIL if tried else Status.JWKS_KID_ALG_MISMATCH


def sanitize_audience(aud: str) -> str:
    """jwt_verify_lib's ``CheckAudience``: scheme and trailing slash do not count."""
    for scheme in ("http://", "https://"):
        if aud.startswith(scheme):
            aud = aud[len(scheme):]
            break
    return aud[:-1] if aud.endswith("/") else aud
