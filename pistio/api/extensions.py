"""API model: extensions.istio.io — WasmPlugin."""

from __future__ import annotations

from pydantic import Field

from pistio.api.base import IstioModel, Struct, proto_enum
from pistio.api.registry import register_spec_kind
from pistio.api.type_v1beta1 import (
    PolicyTargetReference,
    PortSelector,
    WorkloadMode,
    WorkloadSelector,
)

GROUP = "extensions.istio.io"
VERSIONS = ("v1alpha1",)

PluginPhase = proto_enum("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS")
PullPolicy = proto_enum("UNSPECIFIED_POLICY", "IfNotPresent", "Always")
FailStrategy = proto_enum("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD")
PluginType = proto_enum("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK")
EnvValueSource = proto_enum("INLINE", "HOST")


class EnvVar(IstioModel):
    """Istio's EnvVar: an environment variable given to a Wasm VM."""

    name: str = ""
    value_from: EnvValueSource = "INLINE"
    value: str = ""


class VmConfig(IstioModel):
    """Istio's VmConfig: settings of the Wasm VM a plugin runs in."""

    env: list[EnvVar] = Field(default_factory=list)


class TrafficSelector(IstioModel):
    """WasmPlugin.TrafficSelector: the traffic (direction, ports) a plugin sees."""

    mode: WorkloadMode = "UNDEFINED"
    ports: list[PortSelector] = Field(default_factory=list)


class WasmPlugin(IstioModel):
    """Istio's WasmPlugin spec: a WebAssembly filter added to the proxies' filter chains."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = Field(default_factory=list)
    url: str = ""
    sha256: str = ""
    image_pull_policy: PullPolicy = "UNSPECIFIED_POLICY"
    image_pull_secret: str = ""
    verification_key: str = ""
    plugin_config: Struct | None = None
    plugin_name: str = ""
    phase: PluginPhase = "UNSPECIFIED_PHASE"
    priority: int | None = None
    fail_strategy: FailStrategy = "FAIL_CLOSE"
    vm_config: VmConfig | None = None
    match: list[TrafficSelector] = Field(default_factory=list)
    type: PluginType = "UNSPECIFIED_PLUGIN_TYPE"


WasmPluginObject = register_spec_kind(GROUP, "WasmPlugin", VERSIONS, WasmPlugin)
