"""Validation of MeshConfig and MeshNetworks, as istiod applies it when it loads them.

Istio's ValidateMeshConfig / ValidateMeshNetworks rules, with each reason at the field it is
about (Istio's prefixes such as "invalid proxy admin port:" become the path). Invalid
extension providers only produce warnings: istiod logs them and keeps going, since a
provider nobody uses does no harm.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel

from pistio.api.base import Duration
from pistio.api.mesh import ExtensionProvider, MeshConfig, MeshNetworks, ProxyConfig, TLSConfig
from pistio.config.issues import FieldErrors
from pistio.config.validation.common import (
    is_dns1123_label,
    validate_duration,
    validate_fqdn,
    validate_port,
    validate_wildcard_domain,
)

# Curves Envoy accepts in TLS settings.
VALID_ECDH_CURVES = frozenset(
    {"P-256", "P-384", "P-521", "X25519", "X25519Kyber768Draft00", "X25519MLKEM768"}
)
# Envoy's HTTP status codes (envoy.type.v3.StatusCode), for ext_authz statusOnError.
ENVOY_STATUS_CODES = frozenset(
    {
        100,
        200,
        201,
        202,
        203,
        204,
        205,
        206,
        207,
        208,
        226,
        300,
        301,
        302,
        303,
        304,
        305,
        307,
        308,
        400,
        401,
        402,
        403,
        404,
        405,
        406,
        407,
        408,
        409,
        410,
        411,
        412,
        413,
        414,
        415,
        416,
        417,
        421,
        422,
        423,
        424,
        426,
        428,
        429,
        431,
        500,
        501,
        502,
        503,
        504,
        505,
        506,
        507,
        508,
        510,
        511,
    }
)


def _as_dict(value: Any) -> dict[str, Any]:
    """A networking message (typed or still a mapping) in its YAML form."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    return value if isinstance(value, dict) else {}


# --- Addresses --------------------------------------------------------------------------------


def _split_host_port(address: str) -> tuple[str, str] | str:
    """Go's net.SplitHostPort: (host, port), or the reason it fails."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            return f"address {address}: missing ']' in address"
        host, rest = address[1:end], address[end + 1 :]
        if not rest.startswith(":"):
            return f"address {address}: missing port in address"
        return host, rest[1:]
    if address.count(":") == 0:
        return f"address {address}: missing port in address"
    if address.count(":") > 1:
        return f"address {address}: too many colons in address"
    host, _, port = address.partition(":")
    return host, port


def validate_proxy_address(address: str) -> str | None:
    """Istio's ValidateProxyAddress: ``host:port`` with a valid port and an FQDN or IP host."""
    split = _split_host_port(address)
    if isinstance(split, str):
        return f"unable to split {_go_quote(address)}: {split}"
    host, port_text = split
    if not re.fullmatch(r"[+-]?\d+", port_text):
        return f'port ({port_text}) is not a number: strconv.Atoi: parsing "{port_text}": invalid syntax'
    if err := validate_port(int(port_text)):
        return err
    if validate_fqdn(host) is not None and not _is_ip(host):
        return f"{_go_quote(host)} is not a valid hostname or an IP address"
    return None


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration.String() prints it (``2h0m0s``, ``1.5s``, ``1ms``)."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return f"{sign}{_trim(nanos / size)}{unit}"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def validate_trust_domain(domain: str) -> str | None:
    if not domain:
        return "empty domain name not allowed"
    parts = domain.split(".")
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f'trust domain name "{domain}" invalid'
    return None


# --- ProxyConfig ------------------------------------------------------------------------------


def _check_drain_duration(errs: FieldErrors, path: str, d: Duration | None) -> None:
    err = validate_duration(d) if d is not None else "duration must be greater than 1ms"
    if err:
        errs.error(path, f"invalid drain duration: {err}")
    elif abs(d.seconds - round(d.seconds)) > 1e-9:  # type: ignore[union-attr]
        errs.error(path, "drain time only supports durations to seconds precision")


def _check_client_tls(errs: FieldErrors, path: str, settings: Any) -> None:
    """Istio's ValidateTLS for client TLS settings (tracing, CA, config sources)."""
    s = _as_dict(settings)
    mode = s.get("mode", "DISABLE")
    if s.get("insecureSkipVerify"):
        if mode == "SIMPLE" and (
            s.get("caCertificates") or s.get("credentialName") or s.get("subjectAltNames")
        ):
            errs.error(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true",
            )
        if mode == "MUTUAL" and (s.get("caCertificates") or s.get("subjectAltNames")):
            errs.error(
                path,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            )
    if mode in ("SIMPLE", "MUTUAL") and s.get("credentialName"):
        if any(s.get(k) for k in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            errs.error(
                path,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            )
        return
    if mode == "MUTUAL":
        if not s.get("clientCertificate"):
            errs.error(f"{path}.clientCertificate", "client certificate required for mutual tls")
        if not s.get("privateKey"):
            errs.error(f"{path}.privateKey", "private key required for mutual tls")


def _check_address(errs: FieldErrors, path: str, address: str) -> None:
    if err := validate_proxy_address(address):
        errs.error(path, err)


def _check_tracing(errs: FieldErrors, path: str, pc: ProxyConfig) -> None:
    tracing = pc.tracing
    if tracing is None:
        return
    tracers = [
        name
        for name, value in (
            ("zipkin", tracing.zipkin),
            ("lightstep", tracing.lightstep),
            ("datadog", tracing.datadog),
            ("stackdriver", tracing.stackdriver),
            ("openCensusAgent", tracing.open_census_agent),
        )
        if value is not None
    ]
    if len(tracers) > 1:
        errs.error(path, f"only one tracer can be set, found {', '.join(tracers)}")
    if (ls := tracing.lightstep) is not None:
        if not ls.address:
            errs.error(f"{path}.lightstep.address", "address is required")
        _check_address(errs, f"{path}.lightstep.address", ls.address)
        if not ls.access_token:
            errs.error(f"{path}.lightstep.accessToken", "access token is required")
    # $(HOST_IP) is filled in by the agent at start; any IP stands for it here.
    if tracing.zipkin is not None:
        address = tracing.zipkin.address.replace("$(HOST_IP)", "127.0.0.1", 1)
        _check_address(errs, f"{path}.zipkin.address", address)
    if tracing.datadog is not None:
        address = tracing.datadog.address.replace("$(HOST_IP)", "127.0.0.1", 1)
        _check_address(errs, f"{path}.datadog.address", address)
    if tracing.tls_settings is not None:
        _check_client_tls(errs, f"{path}.tlsSettings", tracing.tls_settings)
    for tag, value in tracing.custom_tags.items():
        kinds = [k for k in ("literal", "environment", "header") if getattr(value, k) is not None]
        if len(kinds) > 1:
            errs.error(
                f"{path}.customTags.{tag}",
                f"only one of literal, environment or header can be set, found {', '.join(kinds)}",
            )


def _check_private_key_provider(errs: FieldErrors, path: str, pc: ProxyConfig) -> None:
    pkp = pc.private_key_provider
    if pkp is None:
        return
    set_ = [
        (name, v) for name, v in (("cryptomb", pkp.cryptomb), ("qat", pkp.qat)) if v is not None
    ]
    if not set_:
        errs.error(path, "private key provider configuration is required")
        return
    if len(set_) > 1:
        errs.error(path, "only one of cryptomb or qat can be set")
    for name, conf in set_:
        if conf.poll_delay is None:
            errs.error(f"{path}.{name}.pollDelay", "pollDelay is required")
        elif conf.poll_delay.seconds == 0:
            errs.error(f"{path}.{name}.pollDelay", "pollDelay must be non zero")


def validate_proxy_config(pc: ProxyConfig, errs: FieldErrors, path: str = "defaultConfig") -> None:
    """Istio's ValidateMeshConfigProxyConfig."""
    if not pc.config_path:
        errs.error(f"{path}.configPath", "config path must be set")
    if not pc.binary_path:
        errs.error(f"{path}.binaryPath", "binary path must be set")
    given = pc.model_fields_set
    if "tracing_service_name" in given and "service_cluster" in given:
        errs.error(path, "only one of serviceCluster or tracingServiceName can be set")
    elif "tracing_service_name" not in given and not pc.service_cluster:
        if "service_cluster" in given:
            errs.error(f"{path}.serviceCluster", "service cluster must be specified")
        else:
            errs.error(path, "oneof service cluster or tracing service name must be specified")
    _check_drain_duration(errs, f"{path}.drainDuration", pc.drain_duration)
    if not pc.discovery_address:
        errs.error(
            f"{path}.discoveryAddress",
            "discovery address must be set to the proxy discovery service",
        )
    else:
        _check_address(errs, f"{path}.discoveryAddress", pc.discovery_address)
    _check_tracing(errs, f"{path}.tracing", pc)
    if pc.statsd_udp_address:
        _check_address(errs, f"{path}.statsdUdpAddress", pc.statsd_udp_address)
    if pc.envoy_metrics_service_address:
        _check_address(errs, f"{path}.envoyMetricsServiceAddress", pc.envoy_metrics_service_address)
        errs.warn(
            f"{path}.envoyMetricsServiceAddress",
            "EnvoyMetricsServiceAddress is deprecated, use EnvoyMetricsService instead.",
        )
    for field, svc in (
        ("envoyMetricsService", pc.envoy_metrics_service),
        ("envoyAccessLogService", pc.envoy_access_log_service),
    ):
        if svc is not None and svc.address:
            _check_address(errs, f"{path}.{field}.address", svc.address)
    if err := validate_port(pc.proxy_admin_port):
        errs.error(f"{path}.proxyAdminPort", err)
    if pc.control_plane_auth_policy not in ("NONE", "MUTUAL_TLS"):
        errs.error(
            f"{path}.controlPlaneAuthPolicy",
            f'unrecognized control plane auth policy "{pc.control_plane_auth_policy}"',
        )
    if err := validate_port(pc.status_port):
        errs.error(f"{path}.statusPort", err)
    _check_private_key_provider(errs, f"{path}.privateKeyProvider", pc)


# --- Locality load balancing ------------------------------------------------------------------


def _locality_error(localities: list[str]) -> str | None:
    """Istio's validateLocalities: well-formed, non-overlapping region/zone/subzone names."""
    seen: dict[str, dict[str, set[str]]] = {}
    for locality in localities:
        n = locality.count("*")
        if n > 1 or (n == 1 and not locality.endswith("*")):
            return (
                f"locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            )
        if "*" in seen:
            return f"locality {locality} overlap with previous specified ones"
        items = locality.split("/", 2)
        if any(item == "" for item in items):
            return f"locality {locality} must not contain empty region/zone/subzone info"
        region = items[0]
        zones = seen.get(region)
        overlap = f"locality {locality} overlap with previous specified ones"
        if len(items) == 1:
            if zones is not None:
                return overlap
            seen[region] = {"*": {"*"}}
        elif len(items) == 2:
            if zones is not None and ("*" in zones or items[1] in zones):
                return overlap
            seen.setdefault(region, {})[items[1]] = {"*"}
        else:
            zone, sub = items[1], items[2]
            if zones is not None and "*" in zones:
                return overlap
            subs = seen.setdefault(region, {}).setdefault(zone, set())
            if "*" in subs or sub in subs:
                return overlap
            subs.add(sub)
    return None


def validate_locality_lb_setting(errs: FieldErrors, path: str, setting: Any) -> None:
    """Istio's ValidateLocalityLbSetting (mesh-wide, where outlier detection is implied)."""
    lb = _as_dict(setting)
    distribute = lb.get("distribute") or []
    failover = lb.get("failover") or []
    priority = lb.get("failoverPriority") or []
    if distribute and failover:
        errs.error(path, "can not simultaneously specify 'distribute' and 'failover'")
        return
    topology = (
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    )
    if failover and any(label in topology for label in priority):
        label = next(lbl for lbl in priority if lbl in topology)
        errs.error(
            path,
            f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'",
        )
        return
    for i, rule in enumerate(distribute):
        to = rule.get("to") or {}
        if any(w <= 0 or w > 100 for w in to.values()):
            errs.error(f"{path}.distribute[{i}].to", "locality weight must be in range [1, 100]")
            return
        if (total := sum(to.values())) != 100:
            errs.error(f"{path}.distribute[{i}].to", f"total locality weight {total} != 100")
            return
        if err := _locality_error(list(to)):
            errs.error(f"{path}.distribute[{i}].to", err)
    if err := _locality_error([r.get("from", "") for r in distribute]):
        errs.error(f"{path}.distribute", err)
    for i, rule in enumerate(failover):
        src, dst = rule.get("from", ""), rule.get("to", "")
        if src == dst:
            errs.error(
                f"{path}.failover[{i}]",
                "locality lb failover settings must specify different regions",
            )
        if "/" in src or "/" in dst:
            errs.error(f"{path}.failover[{i}]", "locality lb failover only specify region")
        if "*" in src or "*" in dst:
            errs.error(
                f"{path}.failover[{i}]",
                "locality lb failover region should not contain '*' wildcard",
            )


# --- Extension providers (warnings) -----------------------------------------------------------


def validate_provider_service(service: str) -> str | None:
    """Istio's validateExtensionProviderService: ``[namespace/]hostname`` or an IP."""
    if not service:
        return "service must not be empty"
    parts = service.split("/")
    if len(parts) == 1:
        if validate_fqdn(service) is not None and not _is_ip(service):
            return f"invalid service fmt {service}: {service} is not a valid IP"
        return None
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return "config namespace and dnsName in host entry cannot be empty"
    ns, host = parts
    if ns not in ("*", ".", "~") and not is_dns1123_label(ns):
        return f'invalid namespace value "{ns}" in sidecar'
    if host != "*" and "." not in host:
        return "short names (non FQDN) are not allowed"
    if err := validate_wildcard_domain(host):
        return err
    if "*" in host and len(host) != 1 and not host.startswith("*."):
        return f'partial wildcard "{host}" not allowed'
    return None


def _status_on_error(status: str) -> str | None:
    if not status:
        return None
    if not re.fullmatch(r"[+-]?\d+", status):
        return f'invalid statusOnError value {status}: strconv.ParseInt: parsing "{status}": invalid syntax'
    if int(status) not in ENVOY_STATUS_CODES:
        return f"unsupported statusOnError value {status}"
    return None


def _check_provider(errs: FieldErrors, path: str, p: ExtensionProvider) -> None:
    fields = p.provider_fields
    if not fields:
        errs.warn(path, f"invalid extension provider {p.name}: no provider is configured")
        return
    if len(fields) > 1:
        errs.warn(path, f"invalid extension provider {p.name}: only one provider can be set")
    for attr in fields:
        conf = getattr(p, attr)
        cpath = f"{path}.{ExtensionProvider.model_fields[attr].alias}"
        service = getattr(conf, "service", None)
        if service is None:  # prometheus, stackdriver, file access log: nothing to check
            continue
        prefix = f"invalid extension provider {p.name}: "
        if err := validate_port(conf.port):
            # ext_authz HTTP and the access log services report the bare port error.
            plain = attr in (
                "envoy_ext_authz_http",
                "envoy_otel_als",
                "opentelemetry",
                "envoy_http_als",
                "envoy_tcp_als",
            )
            errs.warn(f"{cpath}.port", prefix + (err if plain else f"invalid service port: {err}"))
        if err := validate_provider_service(service):
            errs.warn(f"{cpath}.service", prefix + err)
        if attr in ("envoy_ext_authz_http", "envoy_ext_authz_grpc") and (
            err := _status_on_error(conf.status_on_error)
        ):
            errs.warn(f"{cpath}.statusOnError", prefix + err)
        if (
            attr == "envoy_ext_authz_http"
            and conf.path_prefix
            and not conf.path_prefix.startswith("/")
        ):
            errs.warn(
                f"{cpath}.pathPrefix",
                prefix + f'pathPrefix should begin with `/` but found "{conf.path_prefix}"',
            )
        if attr == "lightstep" and not conf.access_token:
            errs.warn(f"{cpath}.accessToken", prefix + "access token is required")
        if attr == "opentelemetry" and conf.http is not None and conf.grpc is not None:
            errs.warn(
                cpath, prefix + "OpenTelemetryTracingProvider cannot specify both grpc and http"
            )


def validate_extension_providers(
    mesh: MeshConfig, errs: FieldErrors, given: MeshConfig | None = None
) -> None:
    """Check each provider as written (``given``, before the merge over the defaults, which
    would hide duplicates), then that default providers name existing providers."""
    seen: set[str] = set()
    for i, p in enumerate((given or mesh).extension_providers):
        path = f"extensionProviders[{i}]"
        if not p.name:
            errs.warn(f"{path}.name", "invalid extension provider : empty extension provider name")
        elif p.name in seen:
            errs.warn(
                f"{path}.name",
                f"invalid extension provider {p.name}: duplicate extension provider name {p.name}",
            )
        seen.add(p.name)
        _check_provider(errs, path, p)
    # Default providers must name providers that exist, or telemetry silently does nothing.
    seen = {p.name for p in mesh.extension_providers}
    if mesh.default_providers is not None:
        for field, names in (
            ("tracing", mesh.default_providers.tracing),
            ("metrics", mesh.default_providers.metrics),
            ("accessLogging", mesh.default_providers.access_logging),
        ):
            for j, name in enumerate(names):
                if name not in seen:
                    errs.warn(
                        f"defaultProviders.{field}[{j}]",
                        f'extension provider "{name}" is not defined',
                    )


# --- MeshConfig -------------------------------------------------------------------------------


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"


def _check_tls_defaults(errs: FieldErrors, tls: TLSConfig | None) -> None:
    if tls is None:
        return
    unknown: set[str] = set()
    duplicate: set[str] = set()
    valid: set[str] = set()
    for curve in tls.ecdh_curves:
        if curve not in VALID_ECDH_CURVES:
            unknown.add(curve)
        elif curve in valid:
            duplicate.add(curve)
        valid.add(curve)
    if unknown:
        errs.warn(
            "tlsDefaults.ecdhCurves",
            f"detected unrecognized ECDH curves: {_go_list(sorted(unknown))}",
        )
    if duplicate:
        errs.warn(
            "tlsDefaults.ecdhCurves",
            f"detected duplicate ECDH curves: {_go_list(sorted(duplicate))}",
        )


def validate_mesh_config(
    mesh: MeshConfig, errs: FieldErrors, given: MeshConfig | None = None
) -> None:
    """Istio's ValidateMeshConfig, on a config already merged over the defaults.

    ``given`` is the config as the user wrote it, when known: extension providers are checked
    there, so that paths point into the user's list.
    """
    if err := validate_port(mesh.proxy_listen_port):
        errs.error("proxyListenPort", err)
    if mesh.proxy_inbound_listen_port and (err := validate_port(mesh.proxy_inbound_listen_port)):
        errs.error("proxyInboundListenPort", err)
    if mesh.proxy_http_port and (err := validate_port(mesh.proxy_http_port)):
        errs.error("proxyHttpPort", err)
    timeout = mesh.connect_timeout
    if timeout is None:
        errs.error("connectTimeout", "duration must be greater than 1ms")
    elif err := validate_duration(timeout):
        errs.error("connectTimeout", err)
    elif not 0.001 <= timeout.seconds <= 3600:
        errs.error(
            "connectTimeout", f"time {go_duration(timeout.seconds)} must be >1ms and <1h0m0s"
        )
    pdt = mesh.protocol_detection_timeout
    if pdt is not None and pdt.seconds != 0 and abs(round(pdt.millis) - pdt.millis) > 1e-6:
        errs.error("protocolDetectionTimeout", "only durations to ms precision are supported")
    if mesh.default_config is None:
        errs.error("defaultConfig", "missing default config")
    else:
        validate_proxy_config(mesh.default_config, errs)
    if mesh.locality_lb_setting is not None:
        validate_locality_lb_setting(errs, "localityLbSetting", mesh.locality_lb_setting)
    for i, settings in enumerate(mesh.service_settings):
        for j, host in enumerate(settings.hosts):
            if err := validate_wildcard_domain(host):
                errs.error(f"serviceSettings[{i}].hosts[{j}]", err)
    if err := validate_trust_domain(mesh.trust_domain):
        errs.error("trustDomain", err)
    for i, alias in enumerate(mesh.trust_domain_aliases):
        if err := validate_trust_domain(alias):
            errs.error(f"trustDomainAliases[{i}]", err)
    for i, cert in enumerate(mesh.ca_certificates):
        if cert.pem is not None and cert.spiffe_bundle_url is not None:
            errs.error(f"caCertificates[{i}]", "only one of pem or spiffeBundleUrl can be set")
    validate_extension_providers(mesh, errs, given)
    if mesh.mesh_mtls is not None and mesh.mesh_mtls.ecdh_curves:
        errs.error("meshMTLS.ecdhCurves", "mesh TLS does not support ECDH curves configuration")
    _check_tls_defaults(errs, mesh.tls_defaults)


# --- MeshNetworks -----------------------------------------------------------------------------


def _ip_subnet_error(subnet: str) -> str | None:
    """Istio's ValidateIPSubnet: an address, or an address with a prefix length."""
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return None if _is_ip(subnet) else f"{subnet} is not a valid IP"


def validate_mesh_networks(networks: MeshNetworks, errs: FieldErrors) -> None:
    """Istio's ValidateMeshNetworks."""
    for name, network in networks.networks.items():
        base = f"networks.{name}"
        for i, ep in enumerate(network.endpoints):
            path = f"{base}.endpoints[{i}]"
            if ep.from_cidr is not None and ep.from_registry is not None:
                errs.error(path, "only one of fromCidr or fromRegistry can be set")
            elif ep.from_cidr is None and ep.from_registry is None:
                errs.error(path, "one of fromCidr or fromRegistry must be set")
            if ep.from_cidr is not None and (err := _ip_subnet_error(ep.from_cidr)):
                errs.error(f"{path}.fromCidr", err)
            if ep.from_registry is not None and not is_dns1123_label(ep.from_registry):
                errs.error(f"{path}.fromRegistry", f"invalid registry name: {ep.from_registry}")
        for i, gw in enumerate(network.gateways):
            path = f"{base}.gateways[{i}]"
            if gw.registry_service_name is not None and gw.address is not None:
                errs.error(path, "only one of registryServiceName or address can be set")
            if gw.registry_service_name is not None and (
                err := validate_fqdn(gw.registry_service_name)
            ):
                errs.error(f"{path}.registryServiceName", err)
            # Hostname gateways are resolved by istiod (RESOLVE_HOSTNAME_GATEWAYS, on by default).
            if gw.address is not None and not _is_ip(gw.address) and validate_fqdn(gw.address):
                errs.error(f"{path}.address", f"{gw.address} is not a valid IP address or DNS name")
            if err := validate_port(gw.port):
                errs.error(f"{path}.port", err)
