"""SPIFFE identities as Istio names workloads: ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``."""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __str__(self) -> str:
        return spiffe_id(self.namespace, self.service_account, self.trust_domain)


def spiffe_id(ns: str, sa: str, td: str = DEFAULT_TRUST_DOMAIN) -> str:
    return f"{SCHEME}{td}/ns/{ns}/sa/{sa}"


def parse(uri: str) -> SpiffeId:
    """``spiffe://td/ns/<ns>/sa/<sa>`` → its parts; :class:`ValueError` for anything else
    (Istio's ``spiffe.ParseIdentity`` messages)."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"identity is not a spiffe format: {uri}")
    parts = uri[len(SCHEME):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        raise ValueError(f"identity is not a spiffe format: {uri}")
    return SpiffeId(parts[0], parts[2], parts[4])
