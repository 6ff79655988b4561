"""Envoy resources carrying Istio's telemetry filters, as Pilot generates them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, struct_pb2
from udpa.type.v1 import typed_struct_pb2

from pistio.proxy.telemetry.plugin_config import PEER_METADATA_TYPE, STATS_TYPE
from tests.unit.proxy.http_fixtures import eds_cluster, http_listener

INBOUND, OUTBOUND = 1, 2
OUTBOUND_MX = {"upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
               "upstream_propagation": [{"istio_headers": {}}]}
INBOUND_MX = {"downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
              "downstream_propagation": [{"istio_headers": {}}]}

PRODUCTPAGE = {"NAME": "productpage-v1-123", "NAMESPACE": "default",
               "LABELS": {"app": "productpage", "version": "v1"},
               "WORKLOAD_NAME": "productpage-v1", "CLUSTER_ID": "Kubernetes",
               "SERVICE_ACCOUNT": "bookinfo-productpage", "MESH_ID": "cluster.local"}
REVIEWS = {"NAME": "reviews-v2-456", "NAMESPACE": "default",
           "LABELS": {"app": "reviews", "version": "v2",
                      "service.istio.io/canonical-name": "reviews",
                      "service.istio.io/canonical-revision": "v2"},
           "WORKLOAD_NAME": "reviews-v2", "CLUSTER_ID": "Kubernetes",
           "SERVICE_ACCOUNT": "bookinfo-reviews", "MESH_ID": "cluster.local"}


def typed_struct(type_url: str, value: Mapping[str, Any]) -> any_pb2.Any:
    s = struct_pb2.Struct()
    s.update(dict(value))
    packed = any_pb2.Any()
    packed.Pack(typed_struct_pb2.TypedStruct(type_url=type_url, value=s))
    return packed


def mx_filter(value: Mapping[str, Any]) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name="istio.metadata_exchange",
                              typed_config=typed_struct(PEER_METADATA_TYPE, value))


def stats_filter(value: Mapping[str, Any] | None = None) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name="istio.stats",
                              typed_config=typed_struct(STATS_TYPE, value or {}))


def istio_listener(name: str, port: int, direction: int, route_config_name: str,
                   stats: Mapping[str, Any] | None = None) -> listener_pb2.Listener:
    """An HTTP listener with Istio's filters: metadata exchange first, stats before the
    router (``http_listener`` puts fault and CORS in between)."""
    mx = INBOUND_MX if direction == INBOUND else OUTBOUND_MX
    if stats is None:
        stats = {"disable_host_header_fallback": True} if direction == INBOUND else {}
    listener = http_listener(name, port, route_config_name=route_config_name,
                             stat_prefix=name, first_filters=[mx_filter(mx)])
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    filters: Sequence[hcm_pb2.HttpFilter] = list(hcm.http_filters)
    del hcm.http_filters[:]
    hcm.http_filters.extend([*filters[:-1], stats_filter(stats), filters[-1]])
    listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
    listener.traffic_direction = direction
    return listener


def service_cluster(name: str, host: str, namespace: str = "default") -> cluster_pb2.Cluster:
    """An EDS cluster with Istio's ``istio.services`` metadata."""
    c = eds_cluster(name)
    md = struct_pb2.Struct()
    md.update({"services": [{"host": host, "name": host.split(".")[0],
                             "namespace": namespace}]})
    c.metadata.CopyFrom(base_pb2.Metadata(filter_metadata={"istio": md}))
    return c
