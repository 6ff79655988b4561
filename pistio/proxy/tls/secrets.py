"""SDS secrets as the proxy uses them: the names it resolves, the compiled records, and the
``Secret`` protos that carry them to the workers and into ``/config_dump``.

Istio points every ``SdsSecretConfig`` of a sidecar at its agent (``sds_config`` → the
``sds-grpc`` cluster) and uses these names:

- ``default``: the workload certificate chain and key (the agent's ``SecretManager``);
- ``ROOTCA``: the mesh trust bundle (same source);
- ``file-cert:<cert path>~<key path>`` and ``file-root:<ca path>``: certificates named by
  files in a DestinationRule or Gateway, read from disk;
- ``kubernetes://<name>`` (and ``kubernetes-gateway://<ns>/<name>``): a ``credentialName``,
  served by the discovery over ADS from a Kubernetes Secret; a name ending in ``-cacert`` is
  a trust bundle, any other a certificate and key. Their ``sds_config`` must be ``ads``.

Any other name is NACKed with a precise message: pistio's proxy has no source for it.

The records are immutable; ``digest`` (a hash of the content) identifies a version, so the TLS
contexts built for one are reused until the content changes (rotation).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.admin.v3 import config_dump_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from pistio.proxy.config.errors import ConfigError

WORKLOAD_CERT = "default"
ROOT_CERT = "ROOTCA"
FILE_CERT_PREFIX = "file-cert:"
FILE_ROOT_PREFIX = "file-root:"
# credentialName secrets, served by the discovery over ADS (Istio's kubernetes:// names).
CREDENTIAL_PREFIXES = ("kubernetes://", "kubernetes-gateway://")
SDS_CA_SUFFIX = "-cacert"
SDS_CLUSTER = "sds-grpc"  # the agent's SDS server in Istio's bootstrap
# ConfigSource.initial_fetch_timeout when unset (Envoy); Istio sets 0 (wait for ever).
DEFAULT_SDS_FETCH_TIMEOUT = 15.0
REDACTED = "[redacted]"  # what Envoy's config dump shows for a private key


class SecretKind(enum.Enum):
    CERTIFICATE = "tls_certificate"
    VALIDATION = "validation_context"


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    """A certificate chain (leaf first) and its private key."""

    name: str
    cert_chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    digest: str
    uri_sans: tuple[str, ...] = ()  # of the leaf: the connection's ``local_uri_san``
    version: str = ""  # the source's version label (config dump), "" when unknown


@dataclass(frozen=True, slots=True)
class ValidationSecret:
    """Trusted CA certificates (PEM bundle)."""

    name: str
    roots_pem: bytes
    digest: str
    version: str = ""


Secret = CertificateSecret | ValidationSecret


def is_credential(name: str) -> bool:
    """A ``credentialName`` secret, fetched from the discovery over ADS."""
    return name.startswith(CREDENTIAL_PREFIXES) and name not in CREDENTIAL_PREFIXES


def secret_kind(name: str) -> SecretKind | None:
    """What an SDS name resolves to, ``None`` for a name pistio has no source for."""
    if is_credential(name):
        return SecretKind.VALIDATION if name.endswith(SDS_CA_SUFFIX) else SecretKind.CERTIFICATE
    if name == WORKLOAD_CERT or (name.startswith(FILE_CERT_PREFIX) and _file_cert_ok(name)):
        return SecretKind.CERTIFICATE
    if name == ROOT_CERT or (name.startswith(FILE_ROOT_PREFIX) and len(name) >
                             len(FILE_ROOT_PREFIX)):
        return SecretKind.VALIDATION
    return None


def _file_cert_ok(name: str) -> bool:
    cert, sep, key = name[len(FILE_CERT_PREFIX):].partition("~")
    return bool(sep and cert and key)


def file_cert_paths(name: str) -> tuple[str, str]:
    cert, _, key = name[len(FILE_CERT_PREFIX):].partition("~")
    return cert, key


def file_root_path(name: str) -> str:
    return name[len(FILE_ROOT_PREFIX):]


def compile_sds_config(
    cfg: secret_pb2.SdsSecretConfig, expected: SecretKind, path: str, problems: list[str]
) -> float | None:
    """Check one ``SdsSecretConfig``; returns its initial fetch timeout (``None``: wait for
    ever). Problems are appended with ``path`` as their prefix."""
    name = cfg.name
    kind = secret_kind(name)
    if not name:
        problems.append(f"{path}.name: an SDS secret needs a name")
    elif kind is None:
        problems.append(
            f"{path}.name: SDS secret {name!r} is not served by pistio proxy (only "
            f"'{WORKLOAD_CERT}', '{ROOT_CERT}', '{FILE_CERT_PREFIX}<cert>~<key>', "
            f"'{FILE_ROOT_PREFIX}<ca>' and, over ADS, 'kubernetes://<name>')")
    elif kind is not expected:
        problems.append(f"{path}.name: SDS secret {name!r} is a {kind.value} secret, not a "
                        f"{expected.value}")
    if not cfg.HasField("sds_config"):
        problems.append(f"{path}.sds_config: static secrets are not supported; SDS secrets "
                        "come from the agent")
        return DEFAULT_SDS_FETCH_TIMEOUT
    source = cfg.sds_config
    which = source.WhichOneof("config_source_specifier")
    if kind is not None and is_credential(name) and which != "ads":
        problems.append(f"{path}.sds_config: SDS secret {name!r} is served by the discovery: "
                        "its config source must be ADS")
    elif which == "api_config_source":
        api = source.api_config_source
        clusters = [g.envoy_grpc.cluster_name for g in api.grpc_services
                    if g.HasField("envoy_grpc")]
        if api.api_type not in (config_source_pb2.ApiConfigSource.GRPC,
                                config_source_pb2.ApiConfigSource.DELTA_GRPC) or (
                clusters != [SDS_CLUSTER] or len(api.grpc_services) != 1):
            problems.append(f"{path}.sds_config.api_config_source: only the agent's SDS "
                            f"(gRPC to cluster {SDS_CLUSTER!r}) is supported")
    elif which != "ads":
        problems.append(f"{path}.sds_config: {which or 'an empty config source'} is not "
                        f"supported; SDS goes to the agent (cluster {SDS_CLUSTER!r}) or ADS")
    if not source.HasField("initial_fetch_timeout"):
        return DEFAULT_SDS_FETCH_TIMEOUT
    t = source.initial_fetch_timeout
    return (t.seconds + t.nanos / 1e9) or None


# --- records ---------------------------------------------------------------------------------


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()[:24]


def certificate_secret(name: str, cert_chain_pem: bytes, private_key_pem: bytes,
                       version: str = "") -> CertificateSecret:
    """A certificate record; ``ConfigError`` when the chain has no parsable certificate."""
    # Imported here: a worker without TLS config never loads ``cryptography``.
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificate(cert_chain_pem)
    except ValueError as err:
        raise ConfigError(f"Secret {name}: certificate chain: {err}") from None
    if b"PRIVATE KEY" not in private_key_pem:
        raise ConfigError(f"Secret {name}: no PEM private key")
    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = tuple(ext.value.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = ()
    return CertificateSecret(name, cert_chain_pem, private_key_pem,
                             _digest(cert_chain_pem, private_key_pem), uris, version)


def validation_secret(name: str, roots_pem: bytes, version: str = "") -> ValidationSecret:
    if b"-----BEGIN CERTIFICATE-----" not in roots_pem:
        raise ConfigError(f"Secret {name}: no PEM certificate in the trust bundle")
    return ValidationSecret(name, roots_pem, _digest(roots_pem), version)


# --- protos ------------------------------------------------------------------------------------


def to_proto(secret: Secret, redact: bool = False) -> secret_pb2.Secret:
    """Envoy's ``Secret`` with inline bytes; ``redact`` hides the private key as Envoy's
    config dump does."""
    proto = secret_pb2.Secret(name=secret.name)
    if isinstance(secret, CertificateSecret):
        cert = proto.tls_certificate
        cert.certificate_chain.inline_bytes = secret.cert_chain_pem
        if redact:
            cert.private_key.inline_string = REDACTED
        else:
            cert.private_key.inline_bytes = secret.private_key_pem
    else:
        proto.validation_context.trusted_ca.CopyFrom(
            base_pb2.DataSource(inline_bytes=secret.roots_pem))
    return proto


def compile_secret(proto: secret_pb2.Secret) -> Secret:
    """A ``Secret`` as the agent forwards it (inline bytes only)."""
    which = proto.WhichOneof("type")
    if which == "tls_certificate":
        cert: common_pb2.TlsCertificate = proto.tls_certificate
        return certificate_secret(proto.name, cert.certificate_chain.inline_bytes,
                                  cert.private_key.inline_bytes)
    if which == "validation_context":
        return validation_secret(proto.name, proto.validation_context.trusted_ca.inline_bytes)
    raise ConfigError(f"Secret {proto.name}: {which or 'an empty secret'} is not supported")


def secrets_config_dump(active: Mapping[str, Secret], updated: Mapping[str, float],
                        warming: Iterable[str]) -> config_dump_pb2.SecretsConfigDump:
    """Envoy's ``SecretsConfigDump``: ``dynamic_active_secrets`` (private keys redacted) and
    ``dynamic_warming_secrets`` (referenced, not available yet)."""
    dump = config_dump_pb2.SecretsConfigDump()
    for name in sorted(active):
        secret = active[name]
        item = dump.dynamic_active_secrets.add(name=name,
                                               version_info=secret.version or secret.digest)
        if updated.get(name):
            item.last_updated.FromNanoseconds(int(updated[name] * 1e9))
        item.secret.Pack(to_proto(secret, redact=True))
    for name in sorted(set(warming) - set(active)):
        dump.dynamic_warming_secrets.add(name=name)
    return dump
