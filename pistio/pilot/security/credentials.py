"""Kubernetes Secrets as TLS credentials: what a ``credentialName`` names and what it holds.

Istio's ``pilot/pkg/model/credentials`` (SDS resource names) and
``pilot/pkg/credentials/kube`` (reading the Secret):

- a ``credentialName`` becomes the SDS resource ``kubernetes://<name>`` (``kubernetes://`` and
  ``kubernetes-gateway://`` names are kept as written; ``builtin://`` is the workload's own
  certificate, ``default``); its CA is ``<resource>-cacert``;
- ``kubernetes://<name>`` is read from the requesting proxy's namespace,
  ``kubernetes://<namespace>/<name>`` from the namespace given; ``kubernetes-gateway://`` names
  always carry the namespace;
- a key/certificate Secret holds ``key`` and ``cert`` (generic) or ``tls.key`` and ``tls.crt``
  (``kubernetes.io/tls``); the CA is ``cacert`` or ``ca.crt``, in a Secret ``<name>-cacert``
  or, when there is none, in ``<name>`` itself. Missing keys give Istio's messages
  (``found secret, but didn't have expected keys ...``).

The discovery keeps a :class:`Credentials` index of the Secrets in its config store (rebuilt
when one changes); the SDS generator (:mod:`pistio.pilot.generators.sds`) reads it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pistio.config.resource import Resource

KUBERNETES_SECRET_TYPE = "kubernetes"
KUBERNETES_SECRET_TYPE_URI = KUBERNETES_SECRET_TYPE + "://"
KUBERNETES_GATEWAY_SECRET_TYPE = "kubernetes-gateway"
KUBERNETES_GATEWAY_SECRET_TYPE_URI = KUBERNETES_GATEWAY_SECRET_TYPE + "://"
BUILTIN_GATEWAY_SECRET_TYPE_URI = "builtin://"
SDS_CA_SUFFIX = "-cacert"

# Secret keys (Istio's GenericScrt* and TLSSecret* constants).
GENERIC_SCRT_CERT = "cert"
GENERIC_SCRT_KEY = "key"
GENERIC_SCRT_CA_CERT = "cacert"
GENERIC_SCRT_CRL = "crl"
TLS_SECRET_CERT = "tls.crt"
TLS_SECRET_KEY = "tls.key"
TLS_SECRET_CA_CERT = "ca.crt"
TLS_SECRET_CA_CRL = "ca.crl"


class CredentialError(Exception):
    """Why a credential cannot be served (Istio's messages)."""


def to_resource_name(name: str) -> str:
    """The SDS resource name of a ``credentialName`` (Istio's ``credentials.ToResourceName``)."""
    if name.startswith(BUILTIN_GATEWAY_SECRET_TYPE_URI):
        return "default"
    if name.startswith((KUBERNETES_SECRET_TYPE_URI, KUBERNETES_GATEWAY_SECRET_TYPE_URI)):
        return name
    return KUBERNETES_SECRET_TYPE_URI + name


def is_credential_resource(name: str) -> bool:
    """A name the discovery serves over SDS (not the agent's ``default`` / ``ROOTCA``)."""
    return name.startswith((KUBERNETES_SECRET_TYPE_URI, KUBERNETES_GATEWAY_SECRET_TYPE_URI))


@dataclass(frozen=True, slots=True)
class SecretResource:
    """A parsed SDS resource name (Istio's ``credentials.SecretResource``)."""

    type: str  # KUBERNETES_SECRET_TYPE or KUBERNETES_GATEWAY_SECRET_TYPE
    name: str
    namespace: str
    resource_name: str  # as requested

    @property
    def ca_only(self) -> bool:
        return self.name.endswith(SDS_CA_SUFFIX)


def parse_resource_name(resource_name: str, proxy_namespace: str) -> SecretResource:
    """Istio's ``credentials.ParseResourceName``; :class:`CredentialError` for other names."""
    if resource_name.startswith(KUBERNETES_SECRET_TYPE_URI):
        # kubernetes://name (the proxy's namespace) or kubernetes://namespace/name.
        split = resource_name[len(KUBERNETES_SECRET_TYPE_URI):].split("/")
        namespace, name = proxy_namespace, split[0]
        if len(split) > 1:
            namespace, name = split[0], split[1]
        return SecretResource(KUBERNETES_SECRET_TYPE, name, namespace, resource_name)
    if resource_name.startswith(KUBERNETES_GATEWAY_SECRET_TYPE_URI):
        split = resource_name[len(KUBERNETES_GATEWAY_SECRET_TYPE_URI):].split("/")
        if len(split) <= 1:
            raise CredentialError(
                f"invalid resource name {resource_name!r}. Expected namespace and name")
        namespace, name = split[0], split[1]
        if not namespace:
            raise CredentialError(f"invalid resource name {resource_name!r}. Expected namespace")
        if not name:
            raise CredentialError(f"invalid resource name {resource_name!r}. Expected name")
        return SecretResource(KUBERNETES_GATEWAY_SECRET_TYPE, name, namespace, resource_name)
    raise CredentialError(f"unknown resource type: {resource_name}")


@dataclass(frozen=True, slots=True)
class CertInfo:
    cert: bytes
    key: bytes = b""
    crl: bytes = b""


def secret_data(res: Resource) -> dict[str, bytes]:
    """A Secret's contents: ``data`` (base64) with ``stringData`` written over it, as the API
    server stores it."""
    obj = res.obj
    out: dict[str, bytes] = {}
    for key, value in (getattr(obj, "data", None) or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            continue  # validation refuses such a Secret; be safe anyway
    for key, value in (getattr(obj, "string_data", None) or {}).items():
        out[key] = (value or "").encode()
    return out


def _has_value(data: Mapping[str, bytes], *keys: str) -> bool:
    return all(data.get(k) for k in keys)


def _has_keys(data: Mapping[str, bytes], *keys: str) -> bool:
    return all(k in data for k in keys)


def _truncated_keys(data: Mapping[str, bytes]) -> str:
    keys = sorted(data)
    if len(keys) < 3:
        return ", ".join(keys)
    return f"{', '.join(keys[:3])}, and {len(keys) - 3} more..."


def extract_key_and_cert(data: Mapping[str, bytes]) -> CertInfo:
    """Istio's ``extractKeyAndCert``: generic keys first, then ``kubernetes.io/tls``."""
    if _has_value(data, GENERIC_SCRT_CERT, GENERIC_SCRT_KEY):
        return CertInfo(data[GENERIC_SCRT_CERT], data[GENERIC_SCRT_KEY])
    if _has_value(data, TLS_SECRET_CERT, TLS_SECRET_KEY):
        return CertInfo(data[TLS_SECRET_CERT], data[TLS_SECRET_KEY])
    if _has_keys(data, GENERIC_SCRT_CERT, GENERIC_SCRT_KEY):
        raise CredentialError(
            f'found keys "{GENERIC_SCRT_CERT}" and "{GENERIC_SCRT_KEY}", but they were empty')
    if _has_keys(data, TLS_SECRET_CERT, TLS_SECRET_KEY):
        raise CredentialError(
            f'found keys "{TLS_SECRET_CERT}" and "{TLS_SECRET_KEY}", but they were empty')
    raise CredentialError(
        f"found secret, but didn't have expected keys ({GENERIC_SCRT_CERT} and "
        f"{GENERIC_SCRT_KEY}) or ({TLS_SECRET_CERT} and {TLS_SECRET_KEY}); found: "
        f"{_truncated_keys(data)}")


def extract_root(data: Mapping[str, bytes]) -> CertInfo:
    """Istio's ``extractRoot``: ``cacert`` (with ``crl``) or ``ca.crt`` (with ``ca.crl``)."""
    if _has_value(data, GENERIC_SCRT_CA_CERT):
        return CertInfo(data[GENERIC_SCRT_CA_CERT], crl=data.get(GENERIC_SCRT_CRL, b""))
    if _has_value(data, TLS_SECRET_CA_CERT):
        return CertInfo(data[TLS_SECRET_CA_CERT], crl=data.get(TLS_SECRET_CA_CRL, b""))
    if _has_keys(data, GENERIC_SCRT_CA_CERT):
        raise CredentialError(f'found key "{GENERIC_SCRT_CA_CERT}", but it was empty')
    if _has_keys(data, TLS_SECRET_CA_CERT):
        raise CredentialError(f'found key "{TLS_SECRET_CA_CERT}", but it was empty')
    raise CredentialError(
        f"found secret, but didn't have expected keys {GENERIC_SCRT_CA_CERT} or "
        f"{TLS_SECRET_CA_CERT}; found: {_truncated_keys(data)}")


# (service account, namespace) → None when it may read the namespace's Secrets, else why not.
Authorizer = Callable[[str, str], str | None]


def allow_all(service_account: str, namespace: str) -> str | None:
    """pistio has no Kubernetes RBAC: every service account may read its own namespace's
    Secrets (Istio asks the API server with a SubjectAccessReview, ``list secrets``)."""
    return None


class Credentials:
    """The Secrets of the config store by (namespace, name): Istio's CredentialsController."""

    def __init__(self, secrets: Mapping[tuple[str, str], Resource] | None = None,
                 authorizer: Authorizer = allow_all) -> None:
        self.secrets: dict[tuple[str, str], Resource] = dict(secrets or {})
        self.authorizer = authorizer
        self._data: dict[tuple[str, str], dict[str, bytes]] = {}

    @classmethod
    def from_resources(cls, resources: Iterable[Resource],
                       authorizer: Authorizer = allow_all) -> Credentials:
        secrets = {}
        for res in resources:
            if res.kind == "Secret" and res.group == "":
                secrets[(res.namespace or "default", res.name)] = res
        return cls(secrets, authorizer)

    def same_secrets(self, other: Credentials) -> bool:
        """The same Secret objects (the store keeps unchanged objects across reloads)."""
        return self.secrets.keys() == other.secrets.keys() and all(
            other.secrets[k] is v for k, v in self.secrets.items())

    def _get(self, name: str, namespace: str) -> dict[str, bytes] | None:
        key = (namespace, name)
        data = self._data.get(key)
        if data is None:
            res = self.secrets.get(key)
            if res is None:
                return None
            data = self._data[key] = secret_data(res)
        return data

    def authorize(self, service_account: str, namespace: str) -> str | None:
        return self.authorizer(service_account, namespace)

    def get_cert_info(self, name: str, namespace: str) -> CertInfo:
        data = self._get(name, namespace)
        if data is None:
            raise CredentialError(f"secret {namespace}/{name} not found")
        return extract_key_and_cert(data)

    def get_ca_cert(self, name: str, namespace: str) -> CertInfo:
        """``<name>-cacert``, or when there is no such Secret, the CA in ``<name>``."""
        data = self._get(name, namespace)
        if data is None:
            stripped = name.removesuffix(SDS_CA_SUFFIX)
            data = self._get(stripped, namespace)
            if data is None:
                raise CredentialError(f"secret {namespace}/{stripped} not found")
        return extract_root(data)


def related_secret_names(name: str) -> tuple[str, str]:
    """A Secret and its ``-cacert`` twin depend on each other (Istio's ``relatedConfigs``):
    a change to ``foo`` concerns ``foo-cacert`` as well, and the other way round."""
    if name.endswith(SDS_CA_SUFFIX):
        return name, name.removesuffix(SDS_CA_SUFFIX)
    return name, name + SDS_CA_SUFFIX
