"""The TLS context fields pistio honours, shared by upstream (cluster) and downstream
(listener) transport sockets: both are built on Envoy's CommonTlsContext."""

from __future__ import annotations

from collections.abc import Mapping

COMMON_TLS_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": frozenset(
        {
            "tls_params",
            "tls_certificate_sds_secret_configs",
            "combined_validation_context",
            "validation_context_sds_secret_config",
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
