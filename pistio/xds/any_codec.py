"""Envoy resources in and out of `google.protobuf.Any`, and their xDS names.

A state-of-the-world response carries bare `Any` messages, so a client learns
a resource's name only by decoding it: most types have a `name` field, a
ClusterLoadAssignment has `cluster_name`. Importing the Envoy modules here
registers their descriptors, so any of these types can be decoded by URL.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401  (registers descriptors)
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2  # noqa: F401
from google.protobuf import any_pb2, descriptor_pool, message, message_factory

from pistio.xds.types import TYPE_PREFIX


def pack(msg: message.Message, serialized: bytes | None = None) -> any_pb2.Any:
    """Wrap `msg` in an Any; pass `serialized` to reuse bytes already computed."""
    if serialized is None:
        serialized = msg.SerializeToString(deterministic=True)
    return any_pb2.Any(type_url=TYPE_PREFIX + msg.DESCRIPTOR.full_name, value=serialized)


def message_class(type_url: str) -> type[message.Message]:
    full_name = type_url.rsplit("/", 1)[-1]
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)


def unpack(packed: any_pb2.Any) -> message.Message:
    """Decode an Any whose type is registered in the default descriptor pool."""
    msg = message_class(packed.type_url)()
    msg.ParseFromString(packed.value)
    return msg


def resource_name(msg: message.Message) -> str:
    """The xDS name of a resource: `cluster_name` for endpoints, `name` otherwise."""
    fields = msg.DESCRIPTOR.fields_by_name
    if "cluster_name" in fields and msg.DESCRIPTOR.name == "ClusterLoadAssignment":
        return msg.cluster_name  # type: ignore[attr-defined]
    if "name" in fields:
        return msg.name  # type: ignore[attr-defined]
    return ""
