"""The TLS context fields pistio honours, shared by upstream (cluster) and downstream
(listener) transport sockets: both are built on Envoy's CommonTlsContext."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pistio.proxy.tls.context import check_tls_parameters
from pistio.proxy.tls.secrets import SecretKind, compile_sds_config

COMMON_TLS_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": frozenset(
        {
            "tls_params",
            "tls_certificate_sds_secret_configs",
            "combined_validation_context",
            "validation_context_sds_secret_config",
            "validation_context",  # empty only: DestinationRule insecureSkipVerify
            "alpn_protocols",
        }
    ),
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters": frozenset(
        {
            "tls_minimum_protocol_version",
            "tls_maximum_protocol_version",
            "cipher_suites",
            "ecdh_curves",
        }
    ),
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": (  # noqa: E501
        frozenset({"default_validation_context", "validation_context_sds_secret_config"})
    ),
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": frozenset(
        {"match_subject_alt_names"}
    ),
    "envoy.type.matcher.v3.StringMatcher": frozenset(
        {"exact", "prefix", "suffix", "contains", "ignore_case"}
    ),
    "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": frozenset({"name", "sds_config"}),
}


def check_common_tls(
    common: Any, path: str, problems: list[str], *, server: bool
) -> float | None:
    """Checks shared by both TLS contexts, beyond the field lists above: SDS references
    (names pistio resolves, pointing at the agent), one certificate at most (and one for a
    server), SAN matchers only with a trusted CA, usable TLS parameters. Returns the secrets'
    initial fetch timeout for warming (``None``: wait for ever)."""
    timeouts: list[float | None] = []
    certs = common.tls_certificate_sds_secret_configs
    if len(certs) > 1:
        problems.append(f"{path}.tls_certificate_sds_secret_configs: only one certificate is "
                        "supported")
    if server and not certs:
        problems.append(f"{path}: a server TLS context needs a certificate "
                        "(tls_certificate_sds_secret_configs)")
    for i, sds in enumerate(certs):
        timeouts.append(compile_sds_config(
            sds, SecretKind.CERTIFICATE, f"{path}.tls_certificate_sds_secret_configs[{i}]",
            problems))
    which = common.WhichOneof("validation_context_type")
    trusted = False
    sans = common.combined_validation_context.default_validation_context.match_subject_alt_names
    if which == "combined_validation_context":
        combined = common.combined_validation_context
        here = f"{path}.combined_validation_context"
        if combined.HasField("validation_context_sds_secret_config"):
            trusted = True
            timeouts.append(compile_sds_config(
                combined.validation_context_sds_secret_config, SecretKind.VALIDATION,
                f"{here}.validation_context_sds_secret_config", problems))
        else:
            problems.append(f"{here}: needs validation_context_sds_secret_config (the trusted "
                            "CA)")
    elif which == "validation_context_sds_secret_config":
        trusted = True
        timeouts.append(compile_sds_config(
            common.validation_context_sds_secret_config, SecretKind.VALIDATION,
            f"{path}.validation_context_sds_secret_config", problems))
    elif which == "validation_context" and common.validation_context.ListFields():
        problems.append(f"{path}.validation_context: only an empty one (no verification) is "
                        "supported; a trusted CA comes from SDS")
    if sans and not trusted:
        problems.append(f"{path}.combined_validation_context.default_validation_context"
                        ".match_subject_alt_names: SAN verification needs a trusted CA")
    for i, m in enumerate(sans):
        if m.WhichOneof("match_pattern") is None:
            problems.append(f"{path}.combined_validation_context.default_validation_context"
                            f".match_subject_alt_names[{i}]: an empty matcher")
    check_tls_parameters(common.tls_params, path, problems)
    if any(t is None for t in timeouts):
        return None
    return max((t for t in timeouts if t is not None), default=None)
