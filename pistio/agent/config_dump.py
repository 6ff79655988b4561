"""Envoy's admin ``/config_dump`` for the proxy: the last accepted xDS resources with their
versions and update times, the warming ones, and the last rejected ones.

Rendered as ``envoy.admin.v3.ConfigDump`` in Envoy's order: ``BootstrapConfigDump`` (the node
and the ADS config source), ``ClustersConfigDump`` (``dynamic_active_clusters``,
``dynamic_warming_clusters``), ``ListenersConfigDump`` (``dynamic_listeners`` with
``active_state`` / ``warming_state`` / ``error_state``), ``RoutesConfigDump``
(``dynamic_route_configs``) and — only when asked, as Envoy's ``?include_eds`` —
``EndpointsConfigDump`` (``dynamic_endpoint_configs``); last, ``SecretsConfigDump`` lists the
SDS secrets in force (``dynamic_active_secrets``, private keys redacted as Envoy does) and the
ones still awaited (``dynamic_warming_secrets``). A resource whose last update was
rejected carries ``error_state`` (the failed configuration, when, and the NACK detail), as
Envoy reports it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2

# Register the extension types Pilot puts inside listeners and routes, so their typed
# configs render as JSON (anything unknown falls back to its raw form, see below).
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from google.protobuf import json_format, timestamp_pb2

from pistio.agent.config_manager import Accepted, ConfigManager, Rejected
from pistio.proxy.tls.secrets import secrets_config_dump
from pistio.xds import types as T
from pistio.xds.any_codec import unpack


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _error_state(rejected: Rejected) -> config_dump_shared_pb2.UpdateFailureState:
    return config_dump_shared_pb2.UpdateFailureState(
        failed_configuration=rejected.packed,
        last_update_attempt=_timestamp(rejected.at),
        details=rejected.details,
        version_info=rejected.version,
    )


def _bootstrap(manager: ConfigManager) -> config_dump_pb2.BootstrapConfigDump:
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    bootstrap = bootstrap_pb2.Bootstrap(node=base_pb2.Node())
    bootstrap.node.CopyFrom(manager.client.node)
    dynamic = bootstrap.dynamic_resources
    dynamic.lds_config.CopyFrom(ads)
    dynamic.cds_config.CopyFrom(ads)
    dynamic.ads_config.api_type = config_source_pb2.ApiConfigSource.DELTA_GRPC \
        if manager.client.delta else config_source_pb2.ApiConfigSource.GRPC
    dynamic.ads_config.transport_api_version = config_source_pb2.V3
    grpc = dynamic.ads_config.grpc_services.add()
    grpc.envoy_grpc.cluster_name = "xds-grpc"
    return config_dump_pb2.BootstrapConfigDump(bootstrap=bootstrap)


def config_dump(manager: ConfigManager, include_eds: bool = False) -> config_dump_pb2.ConfigDump:
    """The proxy's ``ConfigDump`` proto."""
    dump = config_dump_pb2.ConfigDump()
    dump.configs.add().Pack(_bootstrap(manager))
    status = manager.status

    clusters = config_dump_shared_pb2.ClustersConfigDump(version_info=status[T.CLUSTER].version)
    for name in sorted(manager.clusters):
        slot = manager.clusters[name]
        rejected = status[T.CLUSTER].rejected.get(name)
        for entry, target in ((slot.active, clusters.dynamic_active_clusters),
                              (slot.warming, clusters.dynamic_warming_clusters)):
            if entry is not None:
                item = target.add(version_info=entry.version, cluster=entry.packed,
                                  last_updated=_timestamp(entry.updated_at))
                if rejected is not None:
                    item.error_state.CopyFrom(_error_state(rejected))
    for name in sorted(set(status[T.CLUSTER].rejected) - set(manager.clusters)):
        clusters.dynamic_active_clusters.add(
            error_state=_error_state(status[T.CLUSTER].rejected[name]))
    dump.configs.add().Pack(clusters)

    listeners = config_dump_shared_pb2.ListenersConfigDump(
        version_info=status[T.LISTENER].version)
    for name in sorted(set(manager.listeners) | set(status[T.LISTENER].rejected)):
        item = listeners.dynamic_listeners.add(name=name)
        slot = manager.listeners.get(name)
        if slot is not None:
            _listener_state(item.active_state, slot.active)
            _listener_state(item.warming_state, slot.warming)
        rejected = status[T.LISTENER].rejected.get(name)
        if rejected is not None:
            item.error_state.CopyFrom(_error_state(rejected))
    dump.configs.add().Pack(listeners)

    routes = config_dump_shared_pb2.RoutesConfigDump()
    _dynamic(routes.dynamic_route_configs, manager.routes, status[T.ROUTE].rejected,
             "route_config")
    dump.configs.add().Pack(routes)

    if include_eds:
        endpoints = config_dump_shared_pb2.EndpointsConfigDump()
        _dynamic(endpoints.dynamic_endpoint_configs, manager.endpoints,
                 status[T.ENDPOINT].rejected, "endpoint_config")
        dump.configs.add().Pack(endpoints)
    dump.configs.add().Pack(secrets_config_dump(
        manager.active_secrets, manager.secret_updated,
        manager.referenced_secrets(include_warming=True)))
    return dump


def _listener_state(target: Any, entry: Accepted | None) -> None:
    if entry is None:
        target.Clear()
        return
    target.version_info = entry.version
    target.listener.CopyFrom(entry.packed)
    target.last_updated.CopyFrom(_timestamp(entry.updated_at))


def _dynamic(target: Any, accepted: dict[str, Accepted], rejected: dict[str, Rejected],
             field: str) -> None:
    for name in sorted(set(accepted) | set(rejected)):
        item = target.add()
        entry = accepted.get(name)
        if entry is not None:
            item.version_info = entry.version
            getattr(item, field).CopyFrom(entry.packed)
            item.last_updated.CopyFrom(_timestamp(entry.updated_at))
        if name in rejected:
            item.error_state.CopyFrom(_error_state(rejected[name]))


def config_dump_json(manager: ConfigManager, include_eds: bool = False) -> str:
    """``/config_dump`` as Envoy prints it (proto JSON with the protos' own snake_case field
    names, two-space indent). A typed config of a
    type this process does not know is shown as ``{"@type": ..., "value": <base64>}``
    instead of failing the whole dump."""
    dump = config_dump(manager, include_eds)
    try:
        return json_format.MessageToJson(dump, indent=2, preserving_proto_field_name=True)
    except TypeError:
        return json.dumps(_to_dict_lenient(dump), indent=2)


def _to_dict_lenient(message: Any) -> Any:
    """``MessageToDict``, field by field where a nested ``Any`` cannot be resolved."""
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except TypeError:
        pass
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        try:
            inner = unpack(message)
        except (TypeError, KeyError):
            return {"@type": message.type_url,
                    "value": base64.b64encode(message.value).decode()}
        return {"@type": message.type_url, **_to_dict_lenient(inner)}
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            out[fd.name] = _scalar(fd, value)
        elif fd.message_type.GetOptions().map_entry:
            out[fd.name] = {str(k): _to_dict_lenient(v) if hasattr(v, "DESCRIPTOR")
                                 else v for k, v in value.items()}
        elif hasattr(value, "DESCRIPTOR"):
            out[fd.name] = _to_dict_lenient(value)
        else:
            out[fd.name] = [_to_dict_lenient(v) for v in value]
    return out


def _scalar(fd: Any, value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, str | int | float | bool):
        if fd.type == fd.TYPE_ENUM:
            known = fd.enum_type.values_by_number.get(value)
            return known.name if known is not None else value
        return str(value) if fd.type in (fd.TYPE_INT64, fd.TYPE_UINT64) else value
    return [_scalar(fd, v) for v in value]
