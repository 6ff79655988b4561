"""Mesh-wide configuration: MeshConfig (with ProxyConfig as ``defaultConfig``) and MeshNetworks.

These are istio.io/api ``mesh/v1alpha1`` messages. They are not resources: istiod reads them
from the ``istio`` ConfigMap (keys ``mesh`` and ``meshNetworks``) or from files, applies them
over Istio's defaults (:func:`default_mesh_config`) and validates the result
(:func:`load_mesh_config`, :func:`load_mesh_networks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BeforeValidator, Field

from pistio.api.base import Double, Duration, Int64, IstioModel, Struct, proto_enum
from pistio.api.kube import LabelSelector
from pistio.api.networking import (
    ClientTLSSettings,
    HTTPRetry,
    LocalityLoadBalancerSetting,
    ProxyImage,
    ReadinessProbe,
    TcpKeepalive,
)
from pistio.config.issues import ConfigIssue, FieldErrors

# AuthenticationPolicy numbers are 0, 1 and 1000, not consecutive.
_AUTH_POLICY_NUMBERS = {0: "NONE", 1: "MUTUAL_TLS", 1000: "INHERIT"}
AuthenticationPolicy = Annotated[
    Literal["NONE", "MUTUAL_TLS", "INHERIT"],
    BeforeValidator(
        lambda v: (
            _AUTH_POLICY_NUMBERS.get(v, v) if isinstance(v, int) and not isinstance(v, bool) else v
        )
    ),
]


# --- ProxyConfig ------------------------------------------------------------------------------


class TracingZipkin(IstioModel):
    """Zipkin tracer address of a proxy."""

    address: str = ""


class TracingLightstep(IstioModel):
    """Lightstep tracer of a proxy (deprecated)."""

    address: str = ""
    access_token: str = ""


class TracingDatadog(IstioModel):
    """Datadog tracer address of a proxy."""

    address: str = ""


class TracingStackdriver(IstioModel):
    """Stackdriver tracer of a proxy."""

    debug: bool = False
    max_number_of_attributes: Int64 | None = None
    max_number_of_annotations: Int64 | None = None
    max_number_of_message_events: Int64 | None = None


class TracingOpenCensusAgent(IstioModel):
    """OpenCensus agent tracer of a proxy (deprecated)."""

    address: str = ""
    context: list[
        proto_enum("UNSPECIFIED", "W3C_TRACE_CONTEXT", "GRPC_BIN", "CLOUD_TRACE_CONTEXT", "B3")
    ] = Field(default_factory=list)


class TracingLiteral(IstioModel):
    """A custom span tag with a fixed value."""

    value: str = ""


class TracingEnvironment(IstioModel):
    """A custom span tag read from the proxy's environment."""

    name: str = ""
    default_value: str = ""


class TracingRequestHeader(IstioModel):
    """A custom span tag read from a request header."""

    name: str = ""
    default_value: str = ""


class CustomTag(IstioModel):
    """A custom span tag: a literal, an environment variable or a request header."""

    literal: TracingLiteral | None = None
    environment: TracingEnvironment | None = None
    header: TracingRequestHeader | None = None


class Tracing(IstioModel):
    """Tracing settings of a proxy (Tracing in proxy.proto)."""

    zipkin: TracingZipkin | None = None
    lightstep: TracingLightstep | None = None
    datadog: TracingDatadog | None = None
    stackdriver: TracingStackdriver | None = None
    open_census_agent: TracingOpenCensusAgent | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)
    max_path_tag_length: int = 0
    sampling: Double = 0.0
    tls_settings: ClientTLSSettings | None = None
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None


class SDS(IstioModel):
    """Secret discovery settings of a proxy (deprecated)."""

    enabled: bool = False
    k8s_sa_jwt_path: str = ""


ForwardClientCertDetails = proto_enum(
    "UNDEFINED", "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"
)


class ProxyProtocolConfiguration(IstioModel):
    """PROXY protocol on gateway listeners."""


class Topology(IstioModel):
    """Where a gateway sits: trusted proxies in front, XFCC handling."""

    num_trusted_proxies: int = 0
    forward_client_cert_details: ForwardClientCertDetails = "UNDEFINED"
    proxy_protocol: ProxyProtocolConfiguration | None = None


class RemoteService(IstioModel):
    """A remote service a proxy talks to (access log or metrics service)."""

    address: str = ""
    tls_settings: ClientTLSSettings | None = None
    tcp_keepalive: TcpKeepalive | None = None


class ProxyStatsMatcher(IstioModel):
    """Extra Envoy stats to create, by prefix, suffix or regex."""

    inclusion_prefixes: list[str] = Field(default_factory=list)
    inclusion_suffixes: list[str] = Field(default_factory=list)
    inclusion_regexps: list[str] = Field(default_factory=list)


class CryptoMb(IstioModel):
    """CryptoMB private key provider settings."""

    poll_delay: Duration | None = None
    fallback: bool | None = None


class QAT(IstioModel):
    """QAT private key provider settings."""

    poll_delay: Duration | None = None
    fallback: bool | None = None


class PrivateKeyProvider(IstioModel):
    """An accelerated private key provider for TLS."""

    cryptomb: CryptoMb | None = None
    qat: QAT | None = None


class SetCurrentClientCertDetails(IstioModel):
    """Which client certificate details go into the XFCC header."""

    subject: bool | None = None
    cert: bool | None = None
    chain: bool | None = None
    dns: bool | None = None
    uri: bool | None = None


class ProxyHeaderToggle(IstioModel):
    """A header the proxy adds unless disabled."""

    disabled: bool | None = None


class ServerHeader(IstioModel):
    """The ``server`` response header: disabled, or a value."""

    disabled: bool | None = None
    value: str = ""


class MetadataExchangeHeaders(IstioModel):
    """When the proxy adds metadata exchange headers."""

    mode: proto_enum("UNDEFINED", "IN_MESH") = "UNDEFINED"


class XForwardedToggle(IstioModel):
    """An X-Forwarded-* header the proxy may append."""

    enabled: bool | None = None


class ProxyHeaders(IstioModel):
    """Headers the proxy adds, removes or forwards."""

    forwarded_client_cert: ForwardClientCertDetails = "UNDEFINED"
    set_current_client_cert_details: SetCurrentClientCertDetails | None = None
    request_id: ProxyHeaderToggle | None = None
    server: ServerHeader | None = None
    attempt_count: ProxyHeaderToggle | None = None
    envoy_debug_headers: ProxyHeaderToggle | None = None
    metadata_exchange_headers: MetadataExchangeHeaders | None = None
    preserve_http1_header_case: bool | None = None
    x_forwarded_host: XForwardedToggle | None = None
    x_forwarded_port: XForwardedToggle | None = None


class ProxyConfig(IstioModel):
    """Settings of one proxy; the mesh-wide default is ``MeshConfig.defaultConfig``."""

    config_path: str = ""
    binary_path: str = ""
    service_cluster: str = ""
    tracing_service_name: proto_enum(
        "APP_LABEL_AND_NAMESPACE", "CANONICAL_NAME_ONLY", "CANONICAL_NAME_AND_NAMESPACE"
    ) = "APP_LABEL_AND_NAMESPACE"
    drain_duration: Duration | None = None
    parent_shutdown_duration: Duration | None = None
    discovery_address: str = ""
    discovery_refresh_delay: Duration | None = None
    zipkin_address: str = ""
    statsd_udp_address: str = ""
    envoy_metrics_service_address: str = ""
    proxy_admin_port: int = 0
    availability_zone: str = ""
    control_plane_auth_policy: AuthenticationPolicy = "NONE"
    custom_config_file: str = ""
    stat_name_length: int = 0
    concurrency: int | None = None
    proxy_bootstrap_template_path: str = ""
    interception_mode: proto_enum("REDIRECT", "TPROXY", "NONE") = "REDIRECT"
    tracing: Tracing | None = None
    sds: SDS | None = None
    envoy_access_log_service: RemoteService | None = None
    envoy_metrics_service: RemoteService | None = None
    proxy_metadata: dict[str, str] = Field(default_factory=dict)
    runtime_values: dict[str, str] = Field(default_factory=dict)
    status_port: int = 0
    extra_stat_tags: list[str] = Field(default_factory=list)
    gateway_topology: Topology | None = None
    termination_drain_duration: Duration | None = None
    mesh_id: str = ""
    readiness_probe: ReadinessProbe | None = None
    proxy_stats_matcher: ProxyStatsMatcher | None = None
    hold_application_until_proxy_starts: bool | None = None
    ca_certificates_pem: list[str] = Field(default_factory=list)
    image: ProxyImage | None = None
    private_key_provider: PrivateKeyProvider | None = None
    proxy_headers: ProxyHeaders | None = None


# --- MeshConfig parts -------------------------------------------------------------------------


class OutboundTrafficPolicy(IstioModel):
    """What sidecars do with traffic to destinations outside the registry."""

    mode: proto_enum("REGISTRY_ONLY", "ALLOW_ANY") = "REGISTRY_ONLY"


class InboundTrafficPolicy(IstioModel):
    """Where inbound traffic is delivered: the pod IP or localhost."""

    mode: proto_enum("PASSTHROUGH", "LOCALHOST") = "PASSTHROUGH"


class ConfigSource(IstioModel):
    """A source of configuration (an MCP/xDS server, Kubernetes, or a directory)."""

    address: str = ""
    tls_settings: ClientTLSSettings | None = None
    subscribed_resources: list[proto_enum("SERVICE_REGISTRY")] = Field(default_factory=list)


class CertificateData(IstioModel):
    """An extra trust anchor: PEM data or a SPIFFE bundle endpoint."""

    pem: str | None = None
    spiffe_bundle_url: str | None = None
    cert_signers: list[str] = Field(default_factory=list)
    trust_domains: list[str] = Field(default_factory=list)


class Certificate(IstioModel):
    """A DNS certificate to provision (deprecated)."""

    secret_name: str = ""
    dns_names: list[str] = Field(default_factory=list)


class ServiceSettingsSettings(IstioModel):
    """Settings applied to selected services."""

    cluster_local: bool = False


class ServiceSettings(IstioModel):
    """Settings for the services whose hosts match."""

    settings: ServiceSettingsSettings | None = None
    hosts: list[str] = Field(default_factory=list)


class CA(IstioModel):
    """An external CA istiod forwards workload CSRs to."""

    address: str = ""
    tls_settings: ClientTLSSettings | None = None
    request_timeout: Duration | None = None
    istiod_side: bool = False


class EnvoyExternalAuthorizationRequestBody(IstioModel):
    """How much of the request body ext_authz sends to the authorizer."""

    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class EnvoyExternalAuthorizationHttpProvider(IstioModel):
    """An external authorizer reached over HTTP (Envoy ext_authz)."""

    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    path_prefix: str = ""
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str = ""
    include_headers_in_check: list[str] = Field(default_factory=list)
    include_request_headers_in_check: list[str] = Field(default_factory=list)
    include_additional_headers_in_check: dict[str, str] = Field(default_factory=dict)
    include_request_body_in_check: EnvoyExternalAuthorizationRequestBody | None = None
    headers_to_upstream_on_allow: list[str] = Field(default_factory=list)
    headers_to_downstream_on_deny: list[str] = Field(default_factory=list)
    headers_to_downstream_on_allow: list[str] = Field(default_factory=list)


class EnvoyExternalAuthorizationGrpcProvider(IstioModel):
    """An external authorizer reached over gRPC (Envoy ext_authz)."""

    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: str = ""
    include_request_body_in_check: EnvoyExternalAuthorizationRequestBody | None = None


class HttpHeader(IstioModel):
    """A header sent to a telemetry backend: a literal value or an environment variable."""

    name: str = ""
    value: str | None = None
    env_name: str | None = None


class HttpService(IstioModel):
    """An HTTP endpoint of a telemetry backend."""

    path: str = ""
    timeout: Duration | None = None
    headers: list[HttpHeader] = Field(default_factory=list)


class GrpcService(IstioModel):
    """gRPC settings for exporting to a telemetry backend."""

    timeout: Duration | None = None
    initial_metadata: list[HttpHeader] = Field(default_factory=list)


class ZipkinTracingProvider(IstioModel):
    """A Zipkin tracing backend."""

    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    enable_64bit_trace_id: bool = Field(False, alias="enable64bitTraceId")
    path: str = ""
    trace_context_option: proto_enum("USE_B3", "USE_B3_WITH_W3C_PROPAGATION") = "USE_B3"
    timeout: Duration | None = None
    headers: list[HttpHeader] = Field(default_factory=list)


class LightstepTracingProvider(IstioModel):
    """A Lightstep tracing backend (deprecated)."""

    service: str = ""
    port: int = 0
    access_token: str = ""
    max_tag_length: int = 0


class DatadogTracingProvider(IstioModel):
    """A Datadog tracing backend."""

    service: str = ""
    port: int = 0
    max_tag_length: int = 0


class SkyWalkingTracingProvider(IstioModel):
    """An Apache SkyWalking tracing backend."""

    service: str = ""
    port: int = 0
    access_token: str = ""


class StackdriverLogging(IstioModel):
    """Stackdriver log entry labels."""

    labels: dict[str, str] = Field(default_factory=dict)


class StackdriverProvider(IstioModel):
    """A Stackdriver (Google Cloud) telemetry backend."""

    debug: bool = False
    max_number_of_attributes: Int64 | None = None
    max_number_of_annotations: Int64 | None = None
    max_number_of_message_events: Int64 | None = None
    max_tag_length: int = 0
    logging: StackdriverLogging | None = None


class OpenCensusAgentTracingProvider(IstioModel):
    """An OpenCensus agent tracing backend (deprecated)."""

    service: str = ""
    port: int = 0
    context: list[
        proto_enum("UNSPECIFIED", "W3C_TRACE_CONTEXT", "GRPC_BIN", "CLOUD_TRACE_CONTEXT", "B3")
    ] = Field(default_factory=list)
    max_tag_length: int = 0


class PrometheusMetricsProvider(IstioModel):
    """Prometheus metrics (no settings)."""


class EnvoyFileAccessLogFormat(IstioModel):
    """The format of file access logs: text, or JSON labels."""

    text: str | None = None
    labels: Struct | None = None
    omit_empty_values: bool = False


class EnvoyFileAccessLogProvider(IstioModel):
    """Envoy access logs written to a file (``/dev/stdout`` by default)."""

    path: str = ""
    log_format: EnvoyFileAccessLogFormat | None = None


class EnvoyHttpGrpcV3LogProvider(IstioModel):
    """Envoy's gRPC access log service for HTTP traffic."""

    service: str = ""
    port: int = 0
    log_name: str = ""
    filter_state_objects_to_log: list[str] = Field(default_factory=list)
    additional_request_headers_to_log: list[str] = Field(default_factory=list)
    additional_response_headers_to_log: list[str] = Field(default_factory=list)
    additional_response_trailers_to_log: list[str] = Field(default_factory=list)


class EnvoyTcpGrpcV3LogProvider(IstioModel):
    """Envoy's gRPC access log service for TCP traffic."""

    service: str = ""
    port: int = 0
    log_name: str = ""
    filter_state_objects_to_log: list[str] = Field(default_factory=list)


class EnvoyOpenTelemetryLogFormat(IstioModel):
    """The body and attributes of OpenTelemetry access log records."""

    text: str = ""
    labels: Struct | None = None


class EnvoyOpenTelemetryLogProvider(IstioModel):
    """Envoy access logs exported with OpenTelemetry (OTLP/gRPC)."""

    service: str = ""
    port: int = 0
    log_name: str = ""
    log_format: EnvoyOpenTelemetryLogFormat | None = None


class EmptyResourceDetector(IstioModel):
    """A resource detector without settings."""


class ResourceDetectors(IstioModel):
    """OpenTelemetry resource detectors."""

    environment: EmptyResourceDetector | None = None
    dynatrace: EmptyResourceDetector | None = None


class DynatraceSampler(IstioModel):
    """Dynatrace's adaptive trace sampler."""

    tenant: str = ""
    cluster_id: int = 0
    http_service: Struct | None = None
    root_spans_per_minute: int = 0


class OpenTelemetryTracingProvider(IstioModel):
    """An OpenTelemetry (OTLP) tracing backend, over gRPC or HTTP."""

    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    http: HttpService | None = None
    grpc: GrpcService | None = None
    resource_detectors: ResourceDetectors | None = None
    dynatrace_sampler: DynatraceSampler | None = None


class ExtensionProvider(IstioModel):
    """A named extension provider: an authorizer, tracer, metrics or access log backend."""

    name: str = ""
    envoy_ext_authz_http: EnvoyExternalAuthorizationHttpProvider | None = None
    envoy_ext_authz_grpc: EnvoyExternalAuthorizationGrpcProvider | None = None
    zipkin: ZipkinTracingProvider | None = None
    lightstep: LightstepTracingProvider | None = None
    datadog: DatadogTracingProvider | None = None
    stackdriver: StackdriverProvider | None = None
    opencensus: OpenCensusAgentTracingProvider | None = None
    skywalking: SkyWalkingTracingProvider | None = None
    opentelemetry: OpenTelemetryTracingProvider | None = None
    prometheus: PrometheusMetricsProvider | None = None
    envoy_file_access_log: EnvoyFileAccessLogProvider | None = None
    envoy_http_als: EnvoyHttpGrpcV3LogProvider | None = None
    envoy_tcp_als: EnvoyTcpGrpcV3LogProvider | None = None
    envoy_otel_als: EnvoyOpenTelemetryLogProvider | None = None

    @property
    def provider_fields(self) -> list[str]:
        """The oneof ``provider`` fields that are set (attribute names)."""
        return [f for f in PROVIDER_FIELDS if getattr(self, f) is not None]


PROVIDER_FIELDS = tuple(f for f in ExtensionProvider.model_fields if f != "name")


class DefaultProviders(IstioModel):
    """Providers used when Telemetry or other resources name none."""

    tracing: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    access_logging: list[str] = Field(default_factory=list)


class ProxyPathNormalization(IstioModel):
    """How request paths are normalized before routing and authorization."""

    normalization: proto_enum(
        "DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"
    ) = "DEFAULT"


class TLSConfig(IstioModel):
    """TLS versions, curves and ciphers for mesh or non-mesh traffic."""

    min_protocol_version: proto_enum("TLS_AUTO", "TLSV1_2", "TLSV1_3") = "TLS_AUTO"
    ecdh_curves: list[str] = Field(default_factory=list)
    cipher_suites: list[str] = Field(default_factory=list)


class ServiceScopeConfigs(IstioModel):
    """Which services are local to their cluster or global to the mesh (ambient multicluster)."""

    namespace_selector: LabelSelector | None = None
    services_selector: LabelSelector | None = None
    scope: proto_enum("LOCAL", "GLOBAL") = "LOCAL"


class MeshConfig(IstioModel):
    """Mesh-wide settings of the service mesh (istio.mesh.v1alpha1.MeshConfig)."""

    proxy_listen_port: int = 0
    proxy_inbound_listen_port: int = 0
    proxy_http_port: int = 0
    connect_timeout: Duration | None = None
    protocol_detection_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    ingress_class: str = ""
    ingress_service: str = ""
    ingress_controller_mode: proto_enum("UNSPECIFIED", "OFF", "DEFAULT", "STRICT") = "UNSPECIFIED"
    ingress_selector: str = ""
    enable_tracing: bool = False
    access_log_file: str = ""
    access_log_format: str = ""
    access_log_encoding: proto_enum("TEXT", "JSON") = "TEXT"
    enable_envoy_access_log_service: bool = False
    disable_envoy_listener_log: bool = False
    default_config: ProxyConfig | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    inbound_traffic_policy: InboundTrafficPolicy | None = None
    config_sources: list[ConfigSource] = Field(default_factory=list)
    enable_auto_mtls: bool | None = None
    trust_domain: str = ""
    trust_domain_aliases: list[str] = Field(default_factory=list)
    ca_certificates: list[CertificateData] = Field(default_factory=list)
    default_service_export_to: list[str] = Field(default_factory=list)
    default_virtual_service_export_to: list[str] = Field(default_factory=list)
    default_destination_rule_export_to: list[str] = Field(default_factory=list)
    root_namespace: str = ""
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    dns_refresh_rate: Duration | None = None
    h2_upgrade_policy: proto_enum("DO_NOT_UPGRADE", "UPGRADE") = "DO_NOT_UPGRADE"
    inbound_cluster_stat_name: str = ""
    outbound_cluster_stat_name: str = ""
    certificates: list[Certificate] = Field(default_factory=list)
    service_settings: list[ServiceSettings] = Field(default_factory=list)
    enable_prometheus_merge: bool | None = None
    verify_certificate_at_client: bool | None = None
    ca: CA | None = None
    extension_providers: list[ExtensionProvider] = Field(default_factory=list)
    default_providers: DefaultProviders | None = None
    discovery_selectors: list[LabelSelector] = Field(default_factory=list)
    path_normalization: ProxyPathNormalization | None = None
    default_http_retry_policy: HTTPRetry | None = None
    mesh_mtls: TLSConfig | None = Field(None, alias="meshMTLS")
    tls_defaults: TLSConfig | None = None
    compliance_policy: str = ""
    service_scope_configs: list[ServiceScopeConfigs] = Field(default_factory=list)


# --- MeshNetworks -----------------------------------------------------------------------------


class NetworkEndpoints(IstioModel):
    """Endpoints of a network: a CIDR range or a whole service registry."""

    from_cidr: str | None = None
    from_registry: str | None = None


class IstioNetworkGateway(IstioModel):
    """The gateway through which a network is reached from other networks."""

    registry_service_name: str | None = None
    address: str | None = None
    port: int = 0
    locality: str = ""


class Network(IstioModel):
    """A routable L3 network: its endpoints and gateways."""

    name: str = ""
    endpoints: list[NetworkEndpoints] = Field(default_factory=list)
    gateways: list[IstioNetworkGateway] = Field(default_factory=list)


class MeshNetworks(IstioModel):
    """The networks of a multi-network mesh, by name."""

    networks: dict[str, Network] = Field(default_factory=dict)


# --- Defaults ---------------------------------------------------------------------------------


def default_proxy_config() -> ProxyConfig:
    """Istio's DefaultProxyConfig."""
    return ProxyConfig.model_validate(
        {
            "configPath": "./etc/istio/proxy",
            "binaryPath": "/usr/local/bin/envoy",
            "serviceCluster": "istio-proxy",
            "drainDuration": "45s",
            "terminationDrainDuration": "5s",
            "proxyAdminPort": 15000,
            "concurrency": 2,
            "controlPlaneAuthPolicy": "MUTUAL_TLS",
            "discoveryAddress": "istiod.istio-system.svc:15012",
            "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}},
            "statNameLength": 189,
            "statusPort": 15020,
        }
    )


def _default_mesh_dict() -> dict[str, Any]:
    return {
        "enableTracing": True,
        "accessLogFile": "",
        "accessLogEncoding": "TEXT",
        "accessLogFormat": "",
        "enableEnvoyAccessLogService": False,
        "protocolDetectionTimeout": "0s",
        "ingressService": "istio-ingressgateway",
        "ingressControllerMode": "STRICT",
        "ingressClass": "istio",
        "ingressSelector": "ingressgateway",
        "trustDomain": "cluster.local",
        "trustDomainAliases": [],
        "enableAutoMtls": True,
        "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
        "inboundTrafficPolicy": {"mode": "PASSTHROUGH"},
        "localityLbSetting": {"enabled": True},
        "certificates": [],
        "defaultConfig": default_proxy_config().to_dict(),
        "rootNamespace": "istio-system",
        "proxyListenPort": 15001,
        "proxyInboundListenPort": 15006,
        "connectTimeout": "10s",
        "defaultServiceExportTo": ["*"],
        "defaultVirtualServiceExportTo": ["*"],
        "defaultDestinationRuleExportTo": ["*"],
        # Only used when DNS lookups fail; the record's TTL applies otherwise.
        "dnsRefreshRate": "60s",
        "serviceSettings": [],
        "enablePrometheusMerge": True,
        # What Istio's installation puts in the istio ConfigMap (telemetry.v2.prometheus):
        # standard metrics on every proxy unless a Telemetry says otherwise.
        "defaultProviders": {"metrics": ["prometheus"]},
        "extensionProviders": [
            {"name": "prometheus", "prometheus": {}},
            {"name": "stackdriver", "stackdriver": {}},
            {"name": "envoy", "envoyFileAccessLog": {"path": "/dev/stdout"}},
        ],
    }


def default_mesh_config() -> MeshConfig:
    """Istio's DefaultMeshConfig: what istiod uses for every field the mesh config omits."""
    return MeshConfig.model_validate(_default_mesh_dict())


# --- Loading ----------------------------------------------------------------------------------


def _read_source(text_or_path: str | Path, errs: FieldErrors) -> tuple[str | None, str]:
    """The text (None when it cannot be read), and a file name for messages ("-" for text).

    A ``Path``, or a one-line string that cannot be YAML mapping text, names a file.
    """
    if isinstance(text_or_path, str):
        one_line = "\n" not in text_or_path and text_or_path.strip()
        if not one_line or ":" in text_or_path or "{" in text_or_path:
            return text_or_path, "-"
    path = Path(text_or_path)
    try:
        return path.read_text(), str(path)
    except OSError as exc:
        errs.error("", f"cannot read {path}: {exc.strerror or exc}")
        return None, str(path)


def _parse_mapping(text: str, what: str, errs: FieldErrors) -> dict[str, Any] | None:
    from pistio.config.yaml_source import SourceError, parse_text

    try:
        docs = list(parse_text(text))
    except SourceError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        errs.error("", f"cannot parse {what}{where}: {exc.message}")
        return None
    data = docs[0].data if docs else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        errs.error("", f"{what} must be a mapping")
        return None
    return data


def _config_map_value(data: dict[str, Any], key: str, errs: FieldErrors) -> str:
    """The ``data[key]`` text of an ``istio`` ConfigMap ("" when absent: istiod then uses the
    defaults)."""
    body = data.get("data")
    value = body.get(key) if isinstance(body, dict) else None
    if value is None:
        errs.warn(f"data.{key}", f'the ConfigMap has no "{key}" key; the defaults apply')
        return ""
    if not isinstance(value, str):
        errs.error(f"data.{key}", "must be a string holding YAML")
        return ""
    return value


def _type(model: type[IstioModel], data: dict[str, Any], errs: FieldErrors) -> IstioModel | None:
    """Type ``data``; unknown fields are warned about and dropped, as istiod does."""
    from pistio.config.schema import schema_errors

    for _ in range(20):  # each pass drops the unknown fields pydantic reported
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            unknown = [
                e["loc"] for e in exc.errors(include_url=False) if e["type"] == "extra_forbidden"
            ]
            if not unknown:
                for path, message in schema_errors(exc, data):
                    errs.error(path, message)
                return None
            for path, message in schema_errors(exc, data):
                if message.startswith("unknown field"):
                    errs.warn(path, f"{message} (ignored)")
            data = _without(data, unknown)
    return None


def _without(data: Any, locations: list[tuple[Any, ...]]) -> Any:
    """A copy of ``data`` without the keys at the given pydantic locations."""
    import copy

    out = copy.deepcopy(data)
    for loc in locations:
        cur = out
        for part in loc[:-1]:
            if (
                isinstance(cur, dict)
                and part in cur
                or isinstance(cur, list)
                and isinstance(part, int)
                and part < len(cur)
            ):
                cur = cur[part]
            # other parts name union members or dict-key checks: not places in the input
        if isinstance(cur, dict):
            cur.pop(loc[-1], None)
    return out


def merge_mesh_config(base: MeshConfig, overlay: MeshConfig) -> MeshConfig:
    """Apply a user's mesh config over ``base`` the way istiod does (ApplyMeshConfig).

    Top-level fields that are given replace the base's; ``defaultConfig`` is merged field by
    field (its ``proxyMetadata`` key by key), ``defaultProviders`` likewise, extension
    providers are merged by name, and trust domain aliases are united.
    """
    merged = base.to_dict()
    given = overlay.to_dict()
    for key, value in given.items():
        if key == "defaultConfig":
            merged[key] = _merge_proxy_config(merged.get(key, {}), value)
        elif key == "defaultProviders":
            merged[key] = {**merged.get(key, {}), **value}
        elif key == "extensionProviders":
            merged[key] = _merge_providers(merged.get(key, []), value)
        elif key == "trustDomainAliases":
            merged[key] = sorted(set(merged.get(key, [])) | set(value))
        else:
            merged[key] = value
    return MeshConfig.model_validate(merged)


def _merge_proxy_config(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **given}
    if "proxyMetadata" in given:
        out["proxyMetadata"] = {**base.get("proxyMetadata", {}), **given["proxyMetadata"]}
    # serviceCluster and tracingServiceName are a oneof: the one given wins.
    if "tracingServiceName" in given and "serviceCluster" not in given:
        out.pop("serviceCluster", None)
    elif "serviceCluster" in given:
        out.pop("tracingServiceName", None)
    return out


def merge_proxy_config(base: ProxyConfig, overlay: ProxyConfig) -> ProxyConfig:
    """Apply proxy settings over ``base`` as istiod does for ``defaultConfig`` and the
    ``proxy.istio.io/config`` pod annotation: each field given replaces the base's (a nested
    message as a whole), except ``proxyMetadata``, merged key by key."""
    return ProxyConfig.model_validate(_merge_proxy_config(base.to_dict(), overlay.to_dict()))


def apply_proxy_config(
    text: str, base: ProxyConfig | None = None
) -> tuple[ProxyConfig | None, list[ConfigIssue]]:
    """A workload's proxy config: ``text`` (the ``proxy.istio.io/config`` annotation's YAML)
    over ``base`` (the mesh's ``defaultConfig``; Istio's default when omitted)."""
    errs = FieldErrors()
    data = _parse_mapping(text, "proxy config", errs)
    overlay = None if data is None else _type(ProxyConfig, data, errs)
    if overlay is None:
        return None, _issues(errs, "-")
    assert isinstance(overlay, ProxyConfig)
    return merge_proxy_config(base or default_proxy_config(), overlay), _issues(errs, "-")


def _merge_providers(
    base: list[dict[str, Any]], given: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = [dict(p) for p in base]
    for provider in given:
        same = next((p for p in out if p.get("name", "") == provider.get("name", "")), None)
        if same is None:
            out.append(provider)
        else:
            same.clear()
            same.update(provider)
    return out


def _read_mapping(
    text_or_path: str | Path, key: str, what: str, errs: FieldErrors
) -> tuple[dict[str, Any] | None, str]:
    """The mapping in the input (or in ``data[key]`` when the input is a ConfigMap), and the
    file name for messages."""
    text, name = _read_source(text_or_path, errs)
    if text is None:
        return None, name
    data = _parse_mapping(text, what, errs)
    if data is not None and data.get("kind") == "ConfigMap":
        data = _parse_mapping(_config_map_value(data, key, errs), what, errs)
    return data, name


def _issues(errs: FieldErrors, file: str) -> list[ConfigIssue]:
    where = None if file == "-" else file
    return [ConfigIssue(m, path=p, file=where) for p, m in errs.errors] + [
        ConfigIssue(m, path=p, file=where, level="warning") for p, m in errs.warnings
    ]


def load_mesh_config(text_or_path: str | Path) -> tuple[MeshConfig | None, list[ConfigIssue]]:
    """Read a mesh config (bare YAML or the ``istio`` ConfigMap), apply it over the defaults
    and validate it.

    Returns the merged config (None when there are errors) and every issue found, errors and
    warnings, with field paths relative to the mesh config.
    """
    from pistio.config.validation.mesh import validate_mesh_config

    errs = FieldErrors()
    data, name = _read_mapping(text_or_path, "mesh", "mesh config", errs)
    if data is None or errs.errors:
        return None, _issues(errs, name)
    user = _type(MeshConfig, data, errs)
    if user is None:
        return None, _issues(errs, name)
    assert isinstance(user, MeshConfig)
    mesh = merge_mesh_config(default_mesh_config(), user)
    validate_mesh_config(mesh, errs, given=user)
    return (None if errs.errors else mesh), _issues(errs, name)


def load_mesh_networks(text_or_path: str | Path) -> tuple[MeshNetworks | None, list[ConfigIssue]]:
    """Read mesh networks (bare YAML or the ``istio`` ConfigMap's ``meshNetworks``) and validate.

    An empty input gives the default: no networks.
    """
    from pistio.config.validation.mesh import validate_mesh_networks

    errs = FieldErrors()
    data, name = _read_mapping(text_or_path, "meshNetworks", "mesh networks", errs)
    if data is None or errs.errors:
        return None, _issues(errs, name)
    networks = _type(MeshNetworks, data, errs)
    if networks is None:
        return None, _issues(errs, name)
    assert isinstance(networks, MeshNetworks)
    validate_mesh_networks(networks, errs)
    return (None if errs.errors else networks), _issues(errs, name)
