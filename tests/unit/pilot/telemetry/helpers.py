"""Bookinfo sidecars with Telemetry resources and a mesh config, and readers for what the
listeners carry (connection managers, stats filter configs, TCP proxies)."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from pistio.api.mesh import MeshConfig, load_mesh_config
from pistio.config.protocol import Protocol
from pistio.pilot.model.proxy import Proxy, parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import Endpoint, Service, ServicePort
from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import (
    PODS,
    bookinfo_endpoints,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)

TCP_SERVICE = "mysqldb.default.svc.cluster.local"


def telemetry(name: str, namespace: str, body: str = "", created: str = "") -> str:
    """A Telemetry manifest (``body``: its spec, indented two spaces)."""
    stamp = f"\n  creationTimestamp: '{created}'" if created else ""
    spec = body or DEFAULT_BODY
    return (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}{stamp}\n"
        f"spec:\n{spec}---\n"
    )


DEFAULT_BODY = "  tracing:\n  - randomSamplingPercentage: 1\n"


def mesh_config(text: str = "") -> MeshConfig:
    """A mesh config as istiod reads it: ``text`` over Istio's (installed) defaults."""
    mesh, issues = load_mesh_config(text or "{}\n")
    assert mesh is not None, [str(i) for i in issues]
    return mesh


def collector(host: str, namespace: str, port: int, ip: str) -> Service:
    return Service(f"{host}.{namespace}.svc.cluster.local", namespace, host,
                   (ServicePort("http", port, Protocol.HTTP, port),), (ip,))


def push_with(telemetry_yaml: str = "", mesh_yaml: str = "",
              services: tuple[Service, ...] = ()) -> PushContext:
    """Bookinfo plus a TCP service (mysqldb), ``services``, and Telemetry resources."""
    tcp = Service(TCP_SERVICE, "default", "mysqldb",
                  (ServicePort("tcp", 3306, Protocol.TCP, 3306),), ("10.96.0.20",))
    configs = parse_configs(telemetry_yaml, "telemetry.yaml") if telemetry_yaml.strip() else []
    endpoints = bookinfo_endpoints() + [
        Endpoint("10.244.0.10", 3306, "tcp", TCP_SERVICE, "default"),
    ]
    return PushContext(configs, bookinfo_services() + [tcp, *services], endpoints,
                       mesh_config(mesh_yaml))


def proxy(app: str = "productpage", namespace: str = "default",
          labels: dict[str, str] | None = None) -> Proxy:
    """A sidecar; Bookinfo apps in ``default`` get their pod's address (and inbound ports)."""
    if namespace == "default" and labels is None:
        return sidecar_proxy(app)
    ip = next((pod_ip for a, _, pod_ip, _ in PODS if a == app and namespace == "default"),
              "10.244.9.9")
    return parse_node_id(
        f"sidecar~{ip}~{app}-v1-0.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": labels or {"app": app}, "CLUSTER_ID": "Kubernetes",
         "MESH_ID": "cluster.local"},
    )


def listeners(push: PushContext, p: Proxy | None = None) -> dict[str, Any]:
    return {lst.name: lst for lst in build_sidecar_listeners(push, p or proxy())}


def _hcm(chain: lc.FilterChain) -> hcm_pb2.HttpConnectionManager:
    (f,) = chain.filters
    return unpack(f.typed_config)


def outbound_hcm(push: PushContext, p: Proxy | None = None) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager of the outbound 9080 listener (Bookinfo's port)."""
    (chain,) = listeners(push, p)["0.0.0.0_9080"].filter_chains
    return _hcm(chain)


def inbound_hcm(push: PushContext, p: Proxy | None = None) -> hcm_pb2.HttpConnectionManager:
    """The plaintext HTTP chain of the workload's port 9080 on virtualInbound."""
    inbound = listeners(push, p)["virtualInbound"]
    for chain in inbound.filter_chains:
        match = chain.filter_chain_match
        if (chain.name == "0.0.0.0_9080" and match.transport_protocol != "tls"
                and chain.filters[0].name.endswith("http_connection_manager")):
            return _hcm(chain)
    raise AssertionError("no plaintext HTTP chain for 9080")


def tcp_chain_filters(push: PushContext, p: Proxy | None = None) -> list[lc.Filter]:
    """The network filters of the outbound mysqldb (TCP) listener."""
    lst = listeners(push, p)["10.96.0.20_3306"]
    (chain,) = lst.filter_chains
    return list(chain.filters)


def typed_struct_value(any_msg) -> tuple[str, dict[str, Any]]:
    """(inner type URL, value as a dict) of a TypedStruct filter config."""
    assert any_msg.type_url == "type.googleapis.com/udpa.type.v1.TypedStruct"
    ts = unpack(any_msg)
    return ts.type_url, json_format.MessageToDict(ts.value)


def stats_configs(filters) -> list[dict[str, Any]]:
    out = []
    for f in filters:
        if f.name == "istio.stats":
            type_url, value = typed_struct_value(f.typed_config)
            assert type_url == "type.googleapis.com/stats.PluginConfig"
            out.append(value)
    return out
