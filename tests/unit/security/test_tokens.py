import time

import jwt
import pytest

from pistio.security.tokens import (
    ISTIO_CA_AUDIENCE,
    KUBERNETES_ISSUER,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)


@pytest.fixture(scope="module")
def issuer():
    return TokenIssuer.generate()


def test_token_has_kubernetes_bound_token_claims(issuer):
    token = issuer.issue("default", "reviews", pod_name="reviews-1", pod_uid="u-1", ttl=600)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == issuer.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == KUBERNETES_ISSUER
    assert claims["sub"] == "system:serviceaccount:default:reviews"
    assert claims["aud"] == [ISTIO_CA_AUDIENCE]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["namespace"] == "default"
    assert claims["kubernetes.io"]["pod"] == {"name": "reviews-1", "uid": "u-1"}
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "reviews"


def test_verify_round_trip(issuer):
    verifier = TokenVerifier(issuer.jwks())
    got = verifier.verify(issuer.issue("ns1", "sa1", pod_name="p"))
    assert (got.namespace, got.service_account, got.pod_name) == ("ns1", "sa1", "p")


def test_jwks_file_round_trip(issuer, tmp_path):
    issuer.write_jwks(tmp_path / "jwks.json")
    verifier = TokenVerifier.from_file(tmp_path / "jwks.json")
    assert verifier.verify(issuer.issue("a", "b")).service_account == "b"


def test_rejects_other_signer(issuer):
    other = TokenIssuer.generate()
    with pytest.raises(TokenError, match="unknown key"):
        TokenVerifier(issuer.jwks()).verify(other.issue("a", "b"))
    # Same kid claimed by a forger: the signature does not verify.
    forged = jwt.encode({"iss": KUBERNETES_ISSUER, "sub": "system:serviceaccount:a:b",
                         "aud": ["istio-ca"], "exp": int(time.time()) + 60},
                        other.key, algorithm="RS256", headers={"kid": issuer.kid})
    with pytest.raises(TokenError, match="Signature verification failed"):
        TokenVerifier(issuer.jwks()).verify(forged)


def test_rejects_expired_wrong_audience_and_tampered(issuer):
    verifier = TokenVerifier(issuer.jwks())
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(issuer.issue("a", "b", ttl=10, now=time.time() - 100))
    with pytest.raises(TokenError, match="(?i)audience"):
        verifier.verify(issuer.issue("a", "b", audiences=("api",)))
    token = issuer.issue("a", "b")
    head, payload, sig = token.split(".")
    evil = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"a"', b'"x"')).decode()
    with pytest.raises(TokenError):
        verifier.verify(f"{head}.{evil}.{sig}")
    with pytest.raises(TokenError, match="malformed"):
        verifier.verify("not-a-jwt")


def test_rejects_wrong_issuer_and_non_service_account(issuer):
    verifier = TokenVerifier(issuer.jwks())
    other_iss = TokenIssuer(issuer.key, issuer="https://example.com")
    with pytest.raises(TokenError, match="(?i)issuer"):
        verifier.verify(other_iss.issue("a", "b"))
    token = jwt.encode({"iss": KUBERNETES_ISSUER, "sub": "alice", "aud": ["istio-ca"],
                        "exp": int(time.time()) + 60}, issuer.key, algorithm="RS256",
                       headers={"kid": issuer.kid})
    with pytest.raises(TokenError, match="not a service account"):
        verifier.verify(token)
