"""Checks several networking.istio.io kinds share.

Small field checks (oneofs, durations, ports, unix addresses, labels, exportTo, selectors,
destinations), the connection pool settings of DestinationRule and Sidecar, and the server
TLS settings of Gateway and Sidecar.
"""

from __future__ import annotations

from collections.abc import Iterable

from pistio.api import networking as n
from pistio.api import type_v1beta1
from pistio.api.base import Duration, IstioModel
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    UNIX_ADDRESS_PREFIX,
    WORKLOAD_SELECTOR_NO_LABELS,
    is_dns1123_label,
    validate_duration,
    validate_export_to,
    validate_labels,
    validate_port,
    validate_selector_labels,
    validate_unix_address,
    validate_wildcard_domain,
)

GROUP = "networking.istio.io"

# Cipher suites Envoy's BoringSSL accepts for TLS 1.0-1.2.
CIPHER_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES256-SHA",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA",
        "DES-CBC3-SHA",
    }
)


def go_list(items: Iterable[str]) -> str:
    """A string slice as Go's %v prints it."""
    return "[" + " ".join(items) + "]"


def check_oneof(obj: IstioModel, path: str, errs: FieldErrors, *fields: str) -> None:
    """A proto oneof: at most one member may be set."""
    set_ = [f for f in fields if getattr(obj, f) is not None]
    if len(set_) > 1:
        names = ", ".join(type(obj).model_fields[f].alias or f for f in fields)
        errs.error(path, f"only one of {names} can be set")


def check_duration(d: Duration | None, path: str, errs: FieldErrors) -> None:
    if d is not None and (err := validate_duration(d)):
        errs.error(path, err)


def check_port(number: int, path: str, errs: FieldErrors) -> None:
    if err := validate_port(number):
        errs.error(path, err)


def check_unix_address(address: str, path: str, errs: FieldErrors) -> None:
    """A ``unix://`` address: the socket path after the prefix must be valid."""
    if err := validate_unix_address(address[len(UNIX_ADDRESS_PREFIX) :]):
        errs.error(path, err)


def check_labels(labels: dict[str, str], path: str, errs: FieldErrors) -> None:
    for key, value in labels.items():
        for err in validate_labels({key: value}):
            errs.error(f"{path}.{key}", err)


def check_export_to(res: Resource, export_to: list[str], errs: FieldErrors, **kw: bool) -> None:
    for index, err in validate_export_to(res.namespace or "", export_to, **kw):
        errs.error("spec.exportTo" if index is None else f"spec.exportTo[{index}]", err)


def check_alpha_selector(
    sel: n.WorkloadSelector | None, path: str, errs: FieldErrors, warn_prefix: str
) -> None:
    """Istio's ValidateAlphaWorkloadSelector (Sidecar, ServiceEntry, EnvoyFilter)."""
    if sel is None:
        return
    for key, err in validate_selector_labels(sel.labels):
        errs.error(f"{path}.labels.{key}" if key else f"{path}.labels", err)
    if not sel.labels:
        errs.warn(
            path,
            f"{warn_prefix}: {WORKLOAD_SELECTOR_NO_LABELS}, will be applied to all services in namespace",
        )


def check_beta_selector(
    sel: type_v1beta1.WorkloadSelector | None, path: str, errs: FieldErrors
) -> None:
    """Istio's validateWorkloadSelector for istio.type.v1beta1.WorkloadSelector."""
    if sel is None:
        return
    for key, err in validate_selector_labels(sel.match_labels):
        errs.error(f"{path}.matchLabels.{key}" if key else f"{path}.matchLabels", err)
    if not sel.match_labels:
        errs.warn(path, WORKLOAD_SELECTOR_NO_LABELS)


def check_subset_name(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


def check_destination(d: n.Destination | None, path: str, errs: FieldErrors) -> None:
    """Istio's validateDestination."""
    if d is None:
        return
    if d.host == "*":
        errs.error(f"{path}.host", f"invalid destination host {d.host}")
    elif err := validate_wildcard_domain(d.host):
        errs.error(f"{path}.host", err)
    if d.subset and (err := check_subset_name(d.subset)):
        errs.error(f"{path}.subset", err)
    if d.port is not None:
        check_port(d.port.number, f"{path}.port.number", errs)


def check_connection_pool(c: n.ConnectionPoolSettings | None, p: str, errs: FieldErrors) -> None:
    if c is None:
        return
    if c.http is None and c.tcp is None:
        errs.error(p, "connection pool must have at least one field")
        return
    if (h := c.http) is not None:
        hp = f"{p}.http"
        for field, value, what in (
            ("http1MaxPendingRequests", h.http1_max_pending_requests, "http1 max pending requests"),
            ("http2MaxRequests", h.http2_max_requests, "http2 max requests"),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            ("maxConcurrentStreams", h.max_concurrent_streams, "max concurrent streams"),
        ):
            if value < 0:
                errs.error(f"{hp}.{field}", f"{what} must be non-negative")
        check_duration(h.idle_timeout, f"{hp}.idleTimeout", errs)
        if (ka2 := h.http2_keep_alive) is not None:
            check_duration(ka2.interval, f"{hp}.http2KeepAlive.interval", errs)
            check_duration(ka2.timeout, f"{hp}.http2KeepAlive.timeout", errs)
        if h.h2_upgrade_policy == "UPGRADE" and h.use_client_protocol:
            errs.error(
                f"{hp}.useClientProtocol",
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            )
    if (t := c.tcp) is not None:
        tp = f"{p}.tcp"
        if t.max_connections < 0:
            errs.error(f"{tp}.maxConnections", "max connections must be non-negative")
        check_duration(t.connect_timeout, f"{tp}.connectTimeout", errs)
        check_duration(t.max_connection_duration, f"{tp}.maxConnectionDuration", errs)
        check_duration(t.idle_timeout, f"{tp}.idleTimeout", errs)
        if (ka := t.tcp_keepalive) is not None:
            check_duration(ka.time, f"{tp}.tcpKeepalive.time", errs)
            check_duration(ka.interval, f"{tp}.tcpKeepalive.interval", errs)


def check_server_tls(t: n.ServerTLSSettings, p: str, errs: FieldErrors) -> None:
    """Istio's validateTLSOptions for gateway servers and sidecar ingress listeners."""
    if t.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not t.cipher_suites:
        errs.warn(
            f"{p}.minProtocolVersion",
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        )
    invalid = sorted({c for c in t.cipher_suites if c not in CIPHER_SUITES})
    seen: set[str] = set()
    duplicate: set[str] = set()
    for c in t.cipher_suites:
        if c in CIPHER_SUITES:
            (duplicate if c in seen else seen).add(c)
    if invalid:
        errs.warn(f"{p}.cipherSuites", f"ignoring invalid cipher suites: {go_list(invalid)}")
    if duplicate:
        errs.warn(
            f"{p}.cipherSuites", f"ignoring duplicate cipher suites: {go_list(sorted(duplicate))}"
        )

    named = [
        f
        for f, v in (
            ("credentialName", t.credential_name),
            ("credentialNames", t.credential_names),
            ("tlsCertificates", t.tls_certificates),
        )
        if v
    ]
    if len(named) > 1:
        errs.error(p, "only one of credentialName, credentialNames, or tlsCertificates can be set")

    if t.mode == "ISTIO_MUTUAL":
        # The workload certificate is used: no other credentials may be given.
        for field, value, what in (
            ("serverCertificate", t.server_certificate, "server certificate"),
            ("privateKey", t.private_key, "private key"),
            ("caCertificates", t.ca_certificates, "CA bundle"),
            ("credentialName", t.credential_name, "credentialName"),
        ):
            if value:
                errs.error(f"{p}.{field}", f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    if t.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (
        t.ca_crl or t.server_certificate or t.private_key or t.ca_certificates or t.credential_name
    ):
        errs.warn(p, f"{t.mode} mode does not use certificates, they will be ignored")
    if t.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and (
        t.credential_name or t.credential_names
    ):
        return  # credentials are fetched from the named secrets
    if t.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and t.tls_certificates:
        for i, cert in enumerate(t.tls_certificates):
            if not cert.server_certificate:
                errs.error(
                    f"{p}.tlsCertificates[{i}].serverCertificate",
                    f"{_mode_word(t.mode)} TLS requires a server certificate",
                )
            if not cert.private_key:
                errs.error(
                    f"{p}.tlsCertificates[{i}].privateKey",
                    f"{_mode_word(t.mode)} TLS requires a private key",
                )
        if (
            t.mode != "SIMPLE"
            and not t.ca_certificates
            and not any(c.ca_certificates for c in t.tls_certificates)
        ):
            errs.error(f"{p}.caCertificates", "MUTUAL TLS requires a client CA bundle")
        return
    if t.mode == "SIMPLE":
        if not t.server_certificate:
            errs.error(f"{p}.serverCertificate", "SIMPLE TLS requires a server certificate")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "SIMPLE TLS requires a private key")
    elif t.mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
        if not t.server_certificate:
            errs.error(f"{p}.serverCertificate", "MUTUAL TLS requires a server certificate")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "MUTUAL TLS requires a private key")
        if not t.ca_certificates:
            errs.error(f"{p}.caCertificates", "MUTUAL TLS requires a client CA bundle")
    if t.ca_crl and t.mode == "SIMPLE":
        errs.error(f"{p}.caCrl", "CRL is not supported with SIMPLE TLS")


def _mode_word(mode: str) -> str:
    return "SIMPLE" if mode == "SIMPLE" else "MUTUAL"
