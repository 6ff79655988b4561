"""A worker's side of config distribution: rebuild the agent's snapshot from the resources
it forwards, swap it in, report the version (see ``snapshot_wire``)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.runtime.resource_compiler import ResourceCompiler
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder, build_snapshot
from pistio.proxy.runtime.snapshot_wire import (
    APPLIED,
    DRAIN,
    FAILED,
    UPDATE,
    decode_drain,
    decode_update,
    encode_reply,
    read_frame,
)
from pistio.xds import types as T

log = logging.getLogger("pistio.proxy.worker")


class SnapshotReceiver:
    """Holds the forwarded raw resources of one worker and compiles them (cached by bytes)."""

    def __init__(self, holder: SnapshotHolder | None = None,
                 on_drain: Callable[[bool, bool, float], None] | None = None) -> None:
        self.holder = holder or SnapshotHolder()
        self.on_drain = on_drain  # DRAIN frames: the admin's /drain_listeners
        self.compiler = ResourceCompiler()
        self.resources: dict[str, dict[str, any_pb2.Any]] = {
            T.CLUSTER: {}, T.ENDPOINT: {}, T.LISTENER: {}, T.ROUTE: {}, T.SECRET: {},
        }
        self.xds_versions: dict[str, str] = {}

    def apply(self, version: int, sections: list[discovery_pb2.DeltaDiscoveryResponse]) -> (
        ConfigSnapshot
    ):
        """Apply one UPDATE and publish the rebuilt snapshot; ``ConfigError`` leaves the
        current snapshot (and the held resources) as they were."""
        staged = {t: dict(r) for t, r in self.resources.items()}
        for section in sections:
            table = staged.setdefault(section.type_url, {})
            for r in section.resources:
                table[r.name] = r.resource
            for name in section.removed_resources:
                table.pop(name, None)
        compiled = {
            type_url: {
                name: self.compiler.compile(type_url, name, packed)
                for name, packed in table.items()
            }
            for type_url, table in staged.items()
        }
        versions = dict(self.xds_versions)
        versions.update({s.type_url: s.system_version_info for s in sections})
        snapshot = build_snapshot(
            version,
            compiled[T.CLUSTER],  # type: ignore[arg-type]
            compiled[T.ENDPOINT],  # type: ignore[arg-type]
            compiled[T.LISTENER],  # type: ignore[arg-type]
            compiled[T.ROUTE],  # type: ignore[arg-type]
            versions,
            secrets=compiled.get(T.SECRET),  # type: ignore[arg-type]
        )
        self.resources = staged
        self.xds_versions = versions
        for type_url, table in staged.items():
            self.compiler.retain(type_url, table)
        self.holder.publish(snapshot)
        return snapshot

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Apply UPDATE frames until the agent closes the socket."""
        while (frame := await read_frame(reader)) is not None:
            kind, version, body = frame
            if kind == DRAIN:
                if self.on_drain is not None:
                    self.on_drain(*decode_drain(body))
                continue
            if kind != UPDATE:
                continue
            try:
                self.apply(version, decode_update(body))
                reply = encode_reply(APPLIED, version)
            except (ConfigError, ValueError, struct.error) as err:
                log.error("worker cannot rebuild snapshot %d: %s", version, err)
                reply = encode_reply(FAILED, version, str(err))
            writer.write(reply)
            try:
                await writer.drain()
            except ConnectionError:
                return  # the agent went away (shutting down): the worker exits quietly
