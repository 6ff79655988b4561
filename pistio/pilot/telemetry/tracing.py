"""The connection manager's ``tracing`` (Istio's ``Telemetries.Tracing`` and
``networking/core/tracing.go``).

The tracing provider is the mesh's first ``defaultProviders.tracing``, replaced by the first
provider a Telemetry in scope names (root → namespace → workload; ``match.mode`` limits an
entry to CLIENT = outbound or SERVER = inbound). ``randomSamplingPercentage``,
``customTags``, ``disableSpanReporting``, ``useRequestIdForTraceSampling`` and
``enableIstioTags`` override level by level. Without any Telemetry tracing and default
provider, the legacy mesh settings apply: ``enableTracing`` with ``defaultConfig.tracing``
(``zipkin.address``, ``sampling``, ``customTags``).

Sampling is the Telemetry's percentage, else ``defaultConfig.tracing.sampling``, else 1 %.
Spans go to the provider's service through its outbound cluster; when the registry has no
such service the connection manager gets no tracing (Istio: "could not find cluster").
Zipkin and OpenTelemetry providers are supported by pistio's proxy; others are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2, grpc_service_pb2, http_service_pb2, http_uri_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from google.protobuf import duration_pb2

from pistio.api.mesh import ExtensionProvider, HttpHeader, MeshConfig, ProxyConfig
from pistio.api.telemetry import Tracing
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security.authz_builder import (
    SHADOW_ALLOW_PREFIX,
    SHADOW_DENY_PREFIX,
    SHADOW_EFFECTIVE_POLICY_ID,
    SHADOW_ENGINE_RESULT,
)
from pistio.pilot.telemetry.providers import BackendNotFound, fetch_provider, lookup_backend
from pistio.pilot.telemetry.resolver import applicable_telemetry, memo, warn_once

ZIPKIN_TRACER = "envoy.tracers.zipkin"
OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
ZIPKIN_DEFAULT_PATH = "/api/v2/spans"
RBAC_FILTER = "envoy.filters.http.rbac"
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"


def _pilot_trace_sampling() -> float:
    """``PILOT_TRACE_SAMPLING``: the sampling percentage when nothing else sets one."""
    try:
        value = float(os.environ.get("PILOT_TRACE_SAMPLING", "1.0"))
    except ValueError:
        return 1.0
    return value if 0.0 <= value <= 100.0 else 1.0


DEFAULT_SAMPLING = _pilot_trace_sampling()


@dataclass(frozen=True, slots=True, eq=False)
class TracingSpec:
    """One side's merged tracing settings (Istio's ``TracingSpec``)."""

    provider: ExtensionProvider | None = None
    disabled: bool = False
    random_sampling_percentage: float | None = None
    custom_tags: dict[str, Any] | None = None  # telemetry CustomTag by tag name
    use_request_id_for_trace_sampling: bool = True
    enable_istio_tags: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class TracingConfig:
    client: TracingSpec = field(default_factory=TracingSpec)
    server: TracingSpec = field(default_factory=TracingSpec)


def merge_tracing(tracing: tuple[Tracing, ...], mesh: MeshConfig) -> TracingConfig | None:
    """Istio's ``Telemetries.Tracing``; None means "not configured by the Telemetry API"
    (the legacy mesh settings apply)."""
    defaults = list(mesh.default_providers.tracing) if mesh.default_providers else []
    if not tracing and not defaults:
        return None
    sides: dict[str, dict[str, Any]] = {"CLIENT": {}, "SERVER": {}}
    if defaults:
        provider = fetch_provider(mesh, defaults[0])  # Istio uses the first default only
        for side in sides.values():
            side["provider"] = provider
    for entry in tracing:
        mode = entry.match.mode if entry.match is not None else "CLIENT_AND_SERVER"
        targets = [sides[mode]] if mode in sides else list(sides.values())
        updates: dict[str, Any] = {}
        if entry.providers:
            updates["provider"] = fetch_provider(mesh, entry.providers[0].name)
            if updates["provider"] is None:
                warn_once(f"Telemetry: tracing provider {entry.providers[0].name!r} is not "
                          "defined in the mesh config's extensionProviders; tracing is off")
        if entry.disable_span_reporting is not None:
            updates["disabled"] = entry.disable_span_reporting
        if entry.custom_tags:
            updates["custom_tags"] = dict(entry.custom_tags)
        if entry.random_sampling_percentage is not None:
            updates["random_sampling_percentage"] = float(entry.random_sampling_percentage)
        if entry.use_request_id_for_trace_sampling is not None:
            updates["use_request_id_for_trace_sampling"] = entry.use_request_id_for_trace_sampling
        if entry.enable_istio_tags is not None:
            updates["enable_istio_tags"] = entry.enable_istio_tags
        for side in targets:
            side.update(updates)
    specs = {}
    for mode, values in sides.items():
        if values.get("provider") is None:
            values["disabled"] = True  # no provider: no tracing on that side
        specs[mode] = TracingSpec(**values)
    return TracingConfig(client=specs["CLIENT"], server=specs["SERVER"])


@dataclass(frozen=True, slots=True, eq=False)
class HcmTracing:
    """What a connection manager gets: its ``tracing`` (None: no spans) and whether the
    UUID request id carries the sampling decision."""

    tracing: hcm_pb2.HttpConnectionManager.Tracing | None
    use_request_id_for_trace_sampling: bool = True


NO_TRACING = HcmTracing(None)


def proxy_identity(proxy: Proxy) -> tuple[str, ...]:
    """What Istio's built-in span tags and the OpenTelemetry service name read from a proxy."""
    labels = proxy.labels
    meta = proxy.metadata
    app = labels.get("app") or "istio-proxy"
    return (
        labels.get(CANONICAL_REVISION_LABEL) or "latest",
        labels.get(CANONICAL_NAME_LABEL) or "unknown",
        str(meta.get("MESH_ID") or "unknown"),
        proxy.namespace or "default",
        str(meta.get("CLUSTER_ID") or "unknown"),
        f"{app}.{proxy.namespace}",  # the service cluster (tracingServiceName default)
    )


def hcm_tracing(ctx: PushContext, proxy: Proxy, inbound: bool) -> HcmTracing:
    """The tracing of one connection manager on the inbound or outbound side."""
    applied = applicable_telemetry(ctx, proxy)
    config = memo(ctx, ("tracing_config", applied.key),
                  lambda: merge_tracing(applied.tracing, ctx.mesh))
    identity = proxy_identity(proxy)
    return memo(ctx, ("hcm_tracing", applied.key, inbound, identity),
                lambda: _hcm_tracing(ctx, config, inbound, identity, proxy))


def tracing_identity(ctx: PushContext, proxy: Proxy) -> tuple[str, ...]:
    """The part of a proxy's identity its outbound listeners carry: its span tags when
    outbound tracing is on, else nothing (so proxies of a scope still share listeners)."""
    if hcm_tracing(ctx, proxy, inbound=False).tracing is None:
        return ()
    return proxy_identity(proxy)


def _proxy_config(mesh: MeshConfig) -> ProxyConfig:
    return mesh.default_config or ProxyConfig()


def _proxy_sampling(pc: ProxyConfig) -> float:
    """Istio's ``proxyConfigSamplingValue``: ``defaultConfig.tracing.sampling`` when set (a
    value over 100 means 1), else ``PILOT_TRACE_SAMPLING``."""
    sampling = pc.tracing.sampling if pc.tracing is not None else 0.0
    if not sampling:
        return DEFAULT_SAMPLING
    return 1.0 if sampling > 100.0 else float(sampling)


def _hcm_tracing(
    ctx: PushContext,
    config: TracingConfig | None,
    inbound: bool,
    identity: tuple[str, ...],
    proxy: Proxy,
) -> HcmTracing:
    pc = _proxy_config(ctx.mesh)
    if config is None:
        return _legacy_tracing(ctx, pc, identity, proxy)
    spec = config.server if inbound else config.client
    if spec.disabled or spec.provider is None:
        return NO_TRACING
    built = _provider_tracing(ctx, spec.provider, identity)
    if built is None:
        return NO_TRACING
    sampling = (
        spec.random_sampling_percentage
        if spec.random_sampling_percentage is not None
        else _proxy_sampling(pc)
    )
    _set_sampling(built, sampling)
    tags = _istio_tags(identity) if spec.enable_istio_tags else []
    if spec.custom_tags:
        tags += [_custom_tag(name, tag) for name, tag in spec.custom_tags.items()]
    else:
        tags += _proxy_config_tags(pc)
    built.custom_tags.extend(sorted(tags, key=lambda t: t.tag))
    _set_max_path_tag_length(built, pc)
    return HcmTracing(built, spec.use_request_id_for_trace_sampling)


def _legacy_tracing(
    ctx: PushContext, pc: ProxyConfig, identity: tuple[str, ...], proxy: Proxy
) -> HcmTracing:
    """``enableTracing`` with ``defaultConfig.tracing``: Istio configures the tracer in the
    proxy's bootstrap; pistio puts the Zipkin tracer of ``tracing.zipkin.address`` here."""
    if not ctx.mesh.enable_tracing:
        return NO_TRACING
    tracing = pc.tracing
    address = tracing.zipkin.address if tracing is not None and tracing.zipkin else ""
    if not address:
        others = ("lightstep", "datadog", "stackdriver", "open_census_agent")
        if tracing is not None and any(getattr(tracing, f) is not None for f in others):
            warn_once("mesh config: defaultConfig.tracing uses a tracer pistio does not "
                      "support; only zipkin (or Telemetry providers) produce spans")
        return NO_TRACING
    host, _, port_text = address.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        warn_once(f"mesh config: defaultConfig.tracing.zipkin.address {address!r} has no port")
        return NO_TRACING
    backend = None
    for candidate in _host_candidates(ctx, host, proxy.namespace):
        try:
            backend = lookup_backend(ctx, candidate, port)
            break
        except BackendNotFound:
            continue
    if backend is None:
        warn_once(f"tracing: the Zipkin collector {address} (defaultConfig.tracing.zipkin) "
                  "is not in the service registry; no spans are reported")
        return NO_TRACING
    zipkin = zipkin_pb2.ZipkinConfig(
        collector_cluster=backend.cluster,
        collector_endpoint=ZIPKIN_DEFAULT_PATH,
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        collector_hostname=backend.hostname,
        trace_id_128bit=True,
    )
    zipkin.shared_span_context.value = False
    built = hcm_pb2.HttpConnectionManager.Tracing()
    built.provider.name = ZIPKIN_TRACER
    built.provider.typed_config.Pack(zipkin)
    _set_sampling(built, _proxy_sampling(pc))
    enable_tags = tracing is None or tracing.enable_istio_tags is not False
    tags = (_istio_tags(identity) if enable_tags else []) + _proxy_config_tags(pc)
    built.custom_tags.extend(sorted(tags, key=lambda t: t.tag))
    _set_max_path_tag_length(built, pc)
    return HcmTracing(built)


def _host_candidates(ctx: PushContext, host: str, namespace: str) -> list[str]:
    """``zipkin.istio-system`` is how Istio's default names the collector: DNS search
    domains complete it; the registry knows the FQDN."""
    out = [host]
    suffix = ctx.domain_suffix
    if host.count(".") == 1:
        out.append(f"{host}.svc.{suffix}")
    elif "." not in host:
        out.append(f"{host}.{namespace}.svc.{suffix}")
    return out


def _provider_tracing(
    ctx: PushContext, provider: ExtensionProvider, identity: tuple[str, ...]
) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    """The ``tracing.provider`` of a zipkin or opentelemetry extension provider."""
    if provider.zipkin is not None:
        settings: Any = provider.zipkin
    elif provider.opentelemetry is not None:
        settings = provider.opentelemetry
    else:
        kinds = ", ".join(provider.provider_fields) or "no provider settings"
        warn_once(f"tracing: provider {provider.name!r} ({kinds}) is not supported by pistio; "
                  "only zipkin and opentelemetry providers produce spans")
        return None
    try:
        backend = lookup_backend(ctx, settings.service, settings.port)
    except BackendNotFound as exc:
        warn_once(f"tracing: could not find cluster for tracing provider {provider.name!r}: "
                  f"{exc}; no spans are reported")
        return None
    built = hcm_pb2.HttpConnectionManager.Tracing()
    if provider.zipkin is not None:
        zipkin = zipkin_pb2.ZipkinConfig(
            collector_cluster=backend.cluster,
            collector_endpoint=settings.path or ZIPKIN_DEFAULT_PATH,
            collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
            collector_hostname=backend.hostname,
            trace_id_128bit=not settings.enable_64bit_trace_id,
        )
        zipkin.shared_span_context.value = False
        built.provider.name = ZIPKIN_TRACER
        built.provider.typed_config.Pack(zipkin)
    else:
        built.provider.name = OPENTELEMETRY_TRACER
        built.provider.typed_config.Pack(_otel_config(provider, backend.hostname,
                                                      backend.cluster, identity[-1]))
    if settings.max_tag_length:
        built.max_path_tag_length.value = settings.max_tag_length
    return built


def _otel_config(
    provider: ExtensionProvider, hostname: str, cluster: str, service_name: str
) -> opentelemetry_pb2.OpenTelemetryConfig:
    otel = provider.opentelemetry
    assert otel is not None
    if otel.dynatrace_sampler is not None or otel.resource_detectors is not None:
        warn_once(f"tracing: provider {provider.name!r}: resource detectors and the Dynatrace "
                  "sampler are not supported by pistio; they are ignored")
    out = opentelemetry_pb2.OpenTelemetryConfig(service_name=service_name)
    if otel.http is not None:
        uri = hostname.rstrip("/") + "/" + otel.http.path.lstrip("/")  # Go's url.JoinPath
        http = http_service_pb2.HttpService(
            http_uri=http_uri_pb2.HttpUri(uri=uri, cluster=cluster)
        )
        if otel.http.timeout is not None:
            http.http_uri.timeout.CopyFrom(_duration(otel.http.timeout.seconds))
        for header in otel.http.headers:
            http.request_headers_to_add.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=header.name, value=_header_value(header)),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            ))
        out.http_service.CopyFrom(http)
        return out
    grpc = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=hostname)
    )
    if otel.grpc is not None:
        if otel.grpc.timeout is not None:
            grpc.timeout.CopyFrom(_duration(otel.grpc.timeout.seconds))
        for header in otel.grpc.initial_metadata:
            grpc.initial_metadata.append(
                base_pb2.HeaderValue(key=header.name, value=_header_value(header)))
    out.grpc_service.CopyFrom(grpc)
    return out


def _header_value(header: HttpHeader) -> str:
    """A literal value, or (``envName``) the control plane's environment variable, as Istio."""
    if header.value is not None:
        return header.value
    return os.environ.get(header.env_name or "", "")


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _set_sampling(built: hcm_pb2.HttpConnectionManager.Tracing, percent: float) -> None:
    built.client_sampling.value = 100.0
    built.overall_sampling.value = 100.0
    built.random_sampling.value = percent


def _set_max_path_tag_length(built: hcm_pb2.HttpConnectionManager.Tracing, pc: ProxyConfig) -> None:
    if not built.HasField("max_path_tag_length") and pc.tracing and pc.tracing.max_path_tag_length:
        built.max_path_tag_length.value = pc.tracing.max_path_tag_length


def _literal(tag: str, value: str) -> custom_tag_pb2.CustomTag:
    return custom_tag_pb2.CustomTag(tag=tag, literal=custom_tag_pb2.CustomTag.Literal(value=value))


def _dry_run_tag(tag: str, key: str) -> custom_tag_pb2.CustomTag:
    """Istio's dry-run AuthorizationPolicy tags, read from the RBAC filter's metadata."""
    out = custom_tag_pb2.CustomTag(tag=tag)
    out.metadata.kind.request.CopyFrom(metadata_pb2.MetadataKind.Request())
    out.metadata.metadata_key.key = RBAC_FILTER
    out.metadata.metadata_key.path.add(key=key)
    return out


def _istio_tags(identity: tuple[str, ...]) -> list[custom_tag_pb2.CustomTag]:
    revision, service, mesh_id, namespace, cluster_id, _ = identity
    return [
        _literal("istio.canonical_revision", revision),
        _literal("istio.canonical_service", service),
        _literal("istio.mesh_id", mesh_id),
        _literal("istio.namespace", namespace),
        _literal("istio.cluster_id", cluster_id),
        _dry_run_tag("istio.authorization.dry_run.allow_policy.name",
                     SHADOW_ALLOW_PREFIX + SHADOW_EFFECTIVE_POLICY_ID),
        _dry_run_tag("istio.authorization.dry_run.allow_policy.result",
                     SHADOW_ALLOW_PREFIX + SHADOW_ENGINE_RESULT),
        _dry_run_tag("istio.authorization.dry_run.deny_policy.name",
                     SHADOW_DENY_PREFIX + SHADOW_EFFECTIVE_POLICY_ID),
        _dry_run_tag("istio.authorization.dry_run.deny_policy.result",
                     SHADOW_DENY_PREFIX + SHADOW_ENGINE_RESULT),
    ]


def _custom_tag(name: str, tag: Any) -> custom_tag_pb2.CustomTag:
    """A Telemetry or ProxyConfig custom tag: literal, environment, request header or (the
    Telemetry's ``formatter``) a substitution format string."""
    out = custom_tag_pb2.CustomTag(tag=name)
    if tag.literal is not None:
        out.literal.value = tag.literal.value
    elif tag.environment is not None:
        out.environment.name = tag.environment.name
        out.environment.default_value = tag.environment.default_value
    elif tag.header is not None:
        out.request_header.name = tag.header.name
        out.request_header.default_value = tag.header.default_value
    elif getattr(tag, "formatter", None) is not None:
        out.value = tag.formatter.value
    return out


def _proxy_config_tags(pc: ProxyConfig) -> list[custom_tag_pb2.CustomTag]:
    tags = pc.tracing.custom_tags if pc.tracing is not None else {}
    return [_custom_tag(name, tag) for name, tag in tags.items()]
