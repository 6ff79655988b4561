"""The frames between the agent and its worker processes ("how config reaches the workers").

The agent owns the ADS stream and decides ACK or NACK; each worker rebuilds the agent's
snapshot from the raw resources the agent accepted, sent over a Unix socket pair:

- ``UPDATE`` (agent → worker): a snapshot version and, per xDS type, a
  ``DeltaDiscoveryResponse`` holding the resources added or changed since the previous frame
  to that worker and the names removed (xDS's own message, reused as a container: no new
  schema). The first frame to a worker carries everything.
- ``APPLIED`` (worker → agent): the snapshot version now in force in the worker.
- ``FAILED`` (worker → agent): a version the worker could not rebuild, with the reason (a bug:
  the agent compiled the same bytes with the same code); the worker keeps its snapshot.
- ``DRAIN`` (agent → worker): the admin's ``/drain_listeners`` — inbound only (u8), graceful
  (u8), drain time in seconds (f64); the version field is 0.

Every frame is ``u32 length`` + ``u8 kind`` + ``u64 snapshot version`` + body, big-endian.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

UPDATE = 1
APPLIED = 2
FAILED = 3
DRAIN = 4

_HEADER = struct.Struct(">IBQ")  # length (of kind + version + body), kind, version
_SECTION = struct.Struct(">I")
_DRAIN = struct.Struct(">BBd")
MAX_FRAME = 1 << 30


def encode_update(
    version: int,
    upserts: Mapping[str, Mapping[str, any_pb2.Any]],
    removals: Mapping[str, list[str]],
    xds_versions: Mapping[str, str],
) -> bytes:
    sections = []
    for type_url in sorted(set(upserts) | set(removals)):
        msg = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url,
            system_version_info=xds_versions.get(type_url, ""),
            removed_resources=sorted(removals.get(type_url, ())),
        )
        for name, packed in sorted(upserts.get(type_url, {}).items()):
            msg.resources.add(name=name, resource=packed)
        body = msg.SerializeToString()
        sections.append(_SECTION.pack(len(body)) + body)
    body = struct.pack(">H", len(sections)) + b"".join(sections)
    return _HEADER.pack(_HEADER.size - 4 + len(body), UPDATE, version) + body


def decode_update(body: bytes) -> list[discovery_pb2.DeltaDiscoveryResponse]:
    (count,) = struct.unpack_from(">H", body, 0)
    offset = 2
    out = []
    for _ in range(count):
        (size,) = _SECTION.unpack_from(body, offset)
        offset += _SECTION.size
        out.append(discovery_pb2.DeltaDiscoveryResponse.FromString(body[offset:offset + size]))
        offset += size
    return out


def encode_drain(inbound_only: bool, graceful: bool, drain_time: float) -> bytes:
    body = _DRAIN.pack(inbound_only, graceful, drain_time)
    return _HEADER.pack(_HEADER.size - 4 + len(body), DRAIN, 0) + body


def decode_drain(body: bytes) -> tuple[bool, bool, float]:
    inbound_only, graceful, drain_time = _DRAIN.unpack(body)
    return bool(inbound_only), bool(graceful), drain_time


def encode_reply(kind: int, version: int, detail: str = "") -> bytes:
    body = detail.encode()
    return _HEADER.pack(_HEADER.size - 4 + len(body), kind, version) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes] | None:
    """The next ``(kind, version, body)``; ``None`` at end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    length, kind, version = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    try:
        body = await reader.readexactly(length - (_HEADER.size - 4))
    except asyncio.IncompleteReadError:
        return None
    return kind, version, body
