"""Kubernetes kinds the mesh reads: workloads, services, endpoints, configuration, webhooks.

Only the fields the mesh uses are typed; everything else is kept (``KubeModel`` allows extra
fields) because the Kubernetes API server, not the mesh, owns these schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from pistio.api.base import Int64, KubeModel
from pistio.api.meta import ObjectMeta, TypedObject
from pistio.api.registry import register_kind

IntOrString = int | str
"""A Kubernetes intstr.IntOrString (a port number or a port name, for example)."""


def drop_nulls(value: Any) -> Any:
    """The object without null-valued keys: Kubernetes reads ``field: null`` as unset."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


class KubeObject(TypedObject):
    """A Kubernetes object: null fields are unset, as the API server reads them."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data: Any) -> Any:
        return drop_nulls(data)


# --- Shared parts ---------------------------------------------------------------------------


class LabelSelectorRequirement(KubeModel):
    """One expression of a Kubernetes label selector."""

    key: str = ""
    operator: str = ""
    values: list[str] = Field(default_factory=list)


class LabelSelector(KubeModel):
    """A Kubernetes label selector (matchLabels and matchExpressions)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class ObjectReference(KubeModel):
    """A reference to another Kubernetes object (an endpoint's target Pod, for example)."""

    kind: str = ""
    namespace: str = ""
    name: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""
    field_path: str = ""


class LocalObjectReference(KubeModel):
    """A reference to an object in the same namespace, by name."""

    name: str = ""


# --- Namespace, ServiceAccount --------------------------------------------------------------


class NamespaceSpec(KubeModel):
    """A Namespace's spec."""

    finalizers: list[str] = Field(default_factory=list)


class Namespace(KubeObject):
    """A Kubernetes Namespace; the mesh reads its labels (injection, revision, ambient)."""

    spec: NamespaceSpec | None = None
    status: dict[str, Any] | None = None


class ServiceAccount(KubeObject):
    """A Kubernetes ServiceAccount: the workload identity behind SPIFFE ids."""

    secrets: list[ObjectReference] = Field(default_factory=list)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    automount_service_account_token: bool | None = None


# --- Service ----------------------------------------------------------------------------------


class ServicePort(KubeModel):
    """One port of a Kubernetes Service."""

    name: str = ""
    protocol: str = ""
    app_protocol: str | None = None
    port: int = 0
    target_port: IntOrString | None = None
    node_port: int | None = None


class ServiceSpec(KubeModel):
    """A Kubernetes Service's spec."""

    type: str = ""
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    cluster_ip: str = Field("", alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    external_name: str = ""
    external_ips: list[str] = Field(default_factory=list, alias="externalIPs")
    load_balancer_ip: str = Field("", alias="loadBalancerIP")
    session_affinity: str = ""
    publish_not_ready_addresses: bool = False
    external_traffic_policy: str = ""
    internal_traffic_policy: str | None = None
    ip_families: list[str] = Field(default_factory=list)
    ip_family_policy: str | None = None
    traffic_distribution: str | None = None


class Service(KubeObject):
    """A Kubernetes Service: a name, ports and a pod selector the mesh turns into hosts."""

    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: dict[str, Any] | None = None


# --- Endpoints and EndpointSlice --------------------------------------------------------------


class EndpointAddress(KubeModel):
    """One address in an Endpoints subset."""

    ip: str = ""
    hostname: str = ""
    node_name: str | None = None
    target_ref: ObjectReference | None = None


class EndpointPort(KubeModel):
    """A port of an Endpoints subset or an EndpointSlice."""

    name: str | None = None
    port: int | None = None
    protocol: str | None = None
    app_protocol: str | None = None


class EndpointSubset(KubeModel):
    """A group of addresses sharing ports in an Endpoints object."""

    addresses: list[EndpointAddress] = Field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


class Endpoints(KubeObject):
    """The legacy Kubernetes Endpoints of a Service."""

    subsets: list[EndpointSubset] = Field(default_factory=list)


class EndpointConditions(KubeModel):
    """Readiness of one EndpointSlice endpoint."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(KubeModel):
    """One endpoint of an EndpointSlice."""

    addresses: list[str] = Field(default_factory=list)
    conditions: EndpointConditions | None = None
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: dict[str, Any] | None = None


class EndpointSlice(KubeObject):
    """A Kubernetes EndpointSlice: the workload addresses behind a Service."""

    address_type: str = ""
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)


# --- Pods -------------------------------------------------------------------------------------


class ContainerPort(KubeModel):
    """A port a container listens on."""

    name: str = ""
    container_port: int = 0
    protocol: str = ""
    host_port: int | None = None
    host_ip: str = Field("", alias="hostIP")


class EnvVar(KubeModel):
    """An environment variable of a container."""

    name: str = ""
    value: str | None = None
    value_from: dict[str, Any] | None = None


class HTTPHeader(KubeModel):
    """A header sent by an HTTP probe."""

    name: str = ""
    value: str = ""


class HTTPGetAction(KubeModel):
    """An HTTP GET probe."""

    path: str = ""
    port: IntOrString = 0
    host: str = ""
    scheme: str = ""
    http_headers: list[HTTPHeader] = Field(default_factory=list)


class TCPSocketAction(KubeModel):
    """A TCP connect probe."""

    port: IntOrString = 0
    host: str = ""


class ExecAction(KubeModel):
    """A probe running a command in the container."""

    command: list[str] = Field(default_factory=list)


class GRPCAction(KubeModel):
    """A gRPC health-check probe."""

    port: int = 0
    service: str | None = None


class Probe(KubeModel):
    """A readiness, liveness or startup probe."""

    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int = 0
    timeout_seconds: int = 0
    period_seconds: int = 0
    success_threshold: int = 0
    failure_threshold: int = 0
    termination_grace_period_seconds: Int64 | None = None


class SecurityContext(KubeModel):
    """A container's (or pod's) security settings; the mesh reads the user and group ids."""

    run_as_user: Int64 | None = None
    run_as_group: Int64 | None = None
    run_as_non_root: bool | None = None
    privileged: bool | None = None
    capabilities: dict[str, Any] | None = None


class ResourceRequirements(KubeModel):
    """CPU and memory requests and limits."""

    # Quantities: "100m", "1Gi", 1, 0.5.
    limits: dict[str, int | float | str] = Field(default_factory=dict)
    requests: dict[str, int | float | str] = Field(default_factory=dict)


class VolumeMount(KubeModel):
    """A volume mounted into a container."""

    name: str = ""
    mount_path: str = ""
    read_only: bool = False
    sub_path: str = ""


class Container(KubeModel):
    """A container of a Pod: in the local runtime, a process run with ``command``/``args``."""

    name: str = ""
    image: str = ""
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    working_dir: str = ""
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    security_context: SecurityContext | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    image_pull_policy: str = ""
    restart_policy: str | None = None


class Volume(KubeModel):
    """A pod volume (its source is kept as written)."""

    name: str = ""


class PodSpec(KubeModel):
    """A Pod's spec."""

    containers: list[Container] = Field(default_factory=list)
    init_containers: list[Container] = Field(default_factory=list)
    service_account_name: str = ""
    service_account: str = ""
    host_network: bool = False
    volumes: list[Volume] = Field(default_factory=list)
    restart_policy: str = ""
    security_context: SecurityContext | None = None
    node_name: str = ""
    hostname: str = ""
    subdomain: str = ""
    termination_grace_period_seconds: Int64 | None = None


class Pod(KubeObject):
    """A Kubernetes Pod: a workload instance, injected with a sidecar when the mesh says so."""

    spec: PodSpec = Field(default_factory=PodSpec)
    status: dict[str, Any] | None = None


class PodTemplateSpec(KubeModel):
    """The pod template of a Deployment."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


class DeploymentSpec(KubeModel):
    """A Deployment's spec."""

    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)
    strategy: dict[str, Any] | None = None
    min_ready_seconds: int = 0
    revision_history_limit: int | None = None
    paused: bool = False
    progress_deadline_seconds: int | None = None


class Deployment(KubeObject):
    """A Kubernetes Deployment: replicas of a pod template."""

    spec: DeploymentSpec = Field(default_factory=DeploymentSpec)
    status: dict[str, Any] | None = None


# --- Configuration --------------------------------------------------------------------------


class Secret(KubeObject):
    """A Kubernetes Secret (TLS credentials for gateways, kubeconfigs for remote clusters)."""

    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)
    type: str = ""
    immutable: bool | None = None


class ConfigMap(KubeObject):
    """A Kubernetes ConfigMap (the ``istio`` mesh config, the injector templates)."""

    data: dict[str, str] = Field(default_factory=dict)
    binary_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None


# --- Admission webhooks ---------------------------------------------------------------------


class ServiceReference(KubeModel):
    """The Service a webhook is served by."""

    namespace: str = ""
    name: str = ""
    path: str | None = None
    port: int | None = None


class WebhookClientConfig(KubeModel):
    """How the API server reaches a webhook: a URL or a Service, and the CA bundle."""

    url: str | None = None
    service: ServiceReference | None = None
    ca_bundle: str = ""


class RuleWithOperations(KubeModel):
    """Which operations on which resources a webhook receives."""

    operations: list[str] = Field(default_factory=list)
    api_groups: list[str] = Field(default_factory=list)
    api_versions: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    scope: str | None = None


class Webhook(KubeModel):
    """One mutating or validating admission webhook."""

    name: str = ""
    client_config: WebhookClientConfig | None = None
    rules: list[RuleWithOperations] = Field(default_factory=list)
    failure_policy: str | None = None
    match_policy: str | None = None
    namespace_selector: LabelSelector | None = None
    object_selector: LabelSelector | None = None
    side_effects: str | None = None
    timeout_seconds: int | None = None
    admission_review_versions: list[str] = Field(default_factory=list)
    reinvocation_policy: str | None = None
    match_conditions: list[dict[str, Any]] = Field(default_factory=list)


class MutatingWebhookConfiguration(KubeObject):
    """The sidecar injector's registration with the API server."""

    webhooks: list[Webhook] = Field(default_factory=list)


class ValidatingWebhookConfiguration(KubeObject):
    """The config validation webhook's registration with the API server."""

    webhooks: list[Webhook] = Field(default_factory=list)


# --- CustomResourceDefinition ---------------------------------------------------------------


class CustomResourceDefinitionNames(KubeModel):
    """The names of a custom resource kind."""

    plural: str = ""
    singular: str = ""
    kind: str = ""
    list_kind: str = ""
    short_names: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)


class CustomResourceDefinitionVersion(KubeModel):
    """One served version of a custom resource kind."""

    name: str = ""
    served: bool = False
    storage: bool = False
    deprecated: bool = False
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    subresources: dict[str, Any] | None = None
    additional_printer_columns: list[dict[str, Any]] = Field(default_factory=list)


class CustomResourceDefinitionSpec(KubeModel):
    """A CustomResourceDefinition's spec."""

    group: str = ""
    names: CustomResourceDefinitionNames = Field(default_factory=CustomResourceDefinitionNames)
    scope: str = ""
    versions: list[CustomResourceDefinitionVersion] = Field(default_factory=list)
    conversion: dict[str, Any] | None = None
    preserve_unknown_fields: bool | None = None


class CustomResourceDefinition(KubeObject):
    """A CustomResourceDefinition (Istio's and Gateway API's CRDs are installed as these)."""

    spec: CustomResourceDefinitionSpec = Field(default_factory=CustomResourceDefinitionSpec)
    status: dict[str, Any] | None = None


# --- Ingress --------------------------------------------------------------------------------


class ServiceBackendPort(KubeModel):
    """The port of an Ingress backend Service, by name or number."""

    name: str = ""
    number: int = 0


class IngressServiceBackend(KubeModel):
    """An Ingress backend Service."""

    name: str = ""
    port: ServiceBackendPort | None = None


class IngressBackend(KubeModel):
    """Where an Ingress path sends traffic: a Service or another resource."""

    service: IngressServiceBackend | None = None
    resource: dict[str, Any] | None = None


class HTTPIngressPath(KubeModel):
    """A path of an Ingress rule."""

    path: str = ""
    path_type: str = ""
    backend: IngressBackend = Field(default_factory=IngressBackend)


class HTTPIngressRuleValue(KubeModel):
    """The HTTP paths of an Ingress rule."""

    paths: list[HTTPIngressPath] = Field(default_factory=list)


class IngressRule(KubeModel):
    """An Ingress rule: a host and its paths."""

    host: str = ""
    http: HTTPIngressRuleValue | None = None


class IngressTLS(KubeModel):
    """TLS hosts and their certificate Secret."""

    hosts: list[str] = Field(default_factory=list)
    secret_name: str = ""


class IngressSpec(KubeModel):
    """An Ingress's spec."""

    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    tls: list[IngressTLS] = Field(default_factory=list)
    rules: list[IngressRule] = Field(default_factory=list)


class Ingress(KubeObject):
    """A Kubernetes Ingress, which Istio's ingress controller serves (class ``istio``)."""

    spec: IngressSpec = Field(default_factory=IngressSpec)
    status: dict[str, Any] | None = None


# --- Registration ---------------------------------------------------------------------------

register_kind("", "Namespace", ("v1",), Namespace, namespaced=False, short_names=("ns",))
register_kind("", "ServiceAccount", ("v1",), ServiceAccount, short_names=("sa",))
register_kind("", "Service", ("v1",), Service, short_names=("svc",))
register_kind("", "Endpoints", ("v1",), Endpoints, plural="endpoints", short_names=("ep",))
register_kind("", "Pod", ("v1",), Pod, short_names=("po",))
register_kind("", "Secret", ("v1",), Secret)
register_kind("", "ConfigMap", ("v1",), ConfigMap, short_names=("cm",))
register_kind("apps", "Deployment", ("v1",), Deployment, short_names=("deploy",))
register_kind("networking.k8s.io", "Ingress", ("v1",), Ingress, short_names=("ing",))
register_kind("discovery.k8s.io", "EndpointSlice", ("v1",), EndpointSlice)
register_kind(
    "admissionregistration.k8s.io",
    "MutatingWebhookConfiguration",
    ("v1",),
    MutatingWebhookConfiguration,
    namespaced=False,
)
register_kind(
    "admissionregistration.k8s.io",
    "ValidatingWebhookConfiguration",
    ("v1",),
    ValidatingWebhookConfiguration,
    namespaced=False,
)
register_kind(
    "apiextensions.k8s.io",
    "CustomResourceDefinition",
    ("v1",),
    CustomResourceDefinition,
    namespaced=False,
    short_names=("crd", "crds"),
)
