"""Responses encoded by hand from pre-encoded resources: one encoding per shared resource.

A response to thousands of proxies carries the same resources for each; building a
``DiscoveryResponse`` message per connection would copy every resource twice (into its
wrapper, then into the response) and serialize it again. Protobuf's wire format lets a
message be written as the concatenation of its fields, in any order, so a response is the
serialized small fields (version, type, nonce, removed names, control plane) followed by each
resource's cached field bytes (:attr:`pistio.xds.generator.Resource.delta_field` and
``sotw_field``). The bytes are what ``SerializeToString`` would give, up to field order,
which no parser depends on.

gRPC's stock ADS handler serializes response messages; :func:`add_ads_servicer` registers
the same two methods with a serializer that passes bytes through.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# DiscoveryResponse.resources and DeltaDiscoveryResponse.resources are both field 2.
RESOURCES_FIELD = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (a message, bytes or string) as it appears on the wire."""
    return varint((field_number << 3) | 2) + varint(len(payload)) + payload


def encode_response(head: Any, resource_fields: list[bytes]) -> bytes:
    """``head`` (a response message without resources) plus the pre-encoded resources."""
    return head.SerializeToString() + b"".join(resource_fields)


def _serialize(response: Any) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def add_ads_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    """``ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server`` whose responses may
    be pre-encoded bytes."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
