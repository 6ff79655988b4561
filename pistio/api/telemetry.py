"""API model: telemetry.istio.io — Telemetry (metrics, tracing and access logging).

v1 and v1alpha1 carry the same schema.
"""

from __future__ import annotations

from pydantic import Field

from pistio.api.base import Double, Duration, IstioModel, proto_enum
from pistio.api.registry import register_spec_kind
from pistio.api.type_v1beta1 import PolicyTargetReference, WorkloadSelector

GROUP = "telemetry.istio.io"
VERSIONS = ("v1", "v1alpha1")

# telemetry.v1alpha1.WorkloadMode (not the type.v1beta1 one: its zero value differs).
WorkloadMode = proto_enum("CLIENT_AND_SERVER", "CLIENT", "SERVER")

IstioMetric = proto_enum(
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
)


class ProviderRef(IstioModel):
    """Istio's ProviderRef: a telemetry provider named in MeshConfig.extensionProviders."""

    name: str = ""


# --- Tracing -----------------------------------------------------------------------------------


class TracingSelector(IstioModel):
    """Tracing.TracingSelector: the traffic direction tracing settings apply to."""

    mode: WorkloadMode = "CLIENT_AND_SERVER"


class Literal(IstioModel):
    """Tracing.Literal: a fixed span tag value."""

    value: str = ""


class Environment(IstioModel):
    """Tracing.Environment: a span tag taken from a proxy environment variable."""

    name: str = ""
    default_value: str = ""


class RequestHeader(IstioModel):
    """Tracing.RequestHeader: a span tag taken from a request header."""

    name: str = ""
    default_value: str = ""


class Formatter(IstioModel):
    """Tracing.Formatter: a span tag built with an access-log substitution formatter."""

    value: str = ""


class CustomTag(IstioModel):
    """Tracing.CustomTag: where one custom span tag gets its value (a oneof)."""

    literal: Literal | None = None
    environment: Environment | None = None
    header: RequestHeader | None = None
    formatter: Formatter | None = None


class Tracing(IstioModel):
    """Istio's Tracing settings: providers, sampling and custom tags."""

    match: TracingSelector | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: Double | None = None
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None


# --- Metrics -----------------------------------------------------------------------------------


class MetricSelector(IstioModel):
    """Istio's MetricSelector: which metric (standard or custom) and direction an override hits."""

    metric: IstioMetric | None = None
    custom_metric: str | None = None
    mode: WorkloadMode = "CLIENT_AND_SERVER"


TagOperation = proto_enum("UPSERT", "REMOVE")


class TagOverride(IstioModel):
    """MetricsOverrides.TagOverride: add, change or remove one metric tag."""

    operation: TagOperation = "UPSERT"
    value: str = ""


class MetricsOverrides(IstioModel):
    """Istio's MetricsOverrides: disable metrics or change their tags."""

    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)


class Metrics(IstioModel):
    """Istio's Metrics settings: providers, overrides and reporting interval."""

    providers: list[ProviderRef] = Field(default_factory=list)
    overrides: list[MetricsOverrides] = Field(default_factory=list)
    reporting_interval: Duration | None = None


# --- Access logging ----------------------------------------------------------------------------


class LogSelector(IstioModel):
    """AccessLogging.LogSelector: the traffic direction access logging applies to."""

    mode: WorkloadMode = "CLIENT_AND_SERVER"


class Filter(IstioModel):
    """AccessLogging.Filter: a CEL expression choosing which requests are logged."""

    expression: str = ""


class AccessLogging(IstioModel):
    """Istio's AccessLogging settings: providers, on/off and filter."""

    match: LogSelector | None = None
    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = None
    filter: Filter | None = None


class Telemetry(IstioModel):
    """Istio's Telemetry spec: metrics, tracing and access logging for workloads."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    tracing: list[Tracing] = Field(default_factory=list)
    metrics: list[Metrics] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)


TelemetryObject = register_spec_kind(
    GROUP, "Telemetry", VERSIONS, Telemetry, plural="telemetries", short_names=("telemetry",)
)
