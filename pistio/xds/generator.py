"""The interface between the transport and the control plane: generators by type URL.

Istio's `model.XdsResourceGenerator`. The server owns streams, versions,
nonces and diffs; a generator owns meaning. For one connection and one push it
returns the complete set of resources of its type for the names the proxy
watches (`None` = wildcard: every resource of the type this proxy should see).
The server works out what changed and sends only that where the protocol
allows (delta xDS; SotW types other than Listener and Cluster).

A generator may return `None` to say "this push does not concern my type for
this proxy": nothing is sent for the type. When the proxy itself asked (its
first request for a type, a new subscription; `push.reasons` is
{"proxy request"}), `None` counts as an empty list: the proxy gets an answer,
and for Listener/Cluster an empty answer means "none". Raising is logged and
treated as `None`: one bad generator must not take every proxy down. Generators run on the event loop;
they should be pure functions of (connection, watched names, push request),
typically reading an immutable push context carried in `push.context`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, message

from pistio.xds.any_codec import pack
from pistio.xds.connection import ConnectionInfo
from pistio.xds.push_request import ConfigKey, PushRequest
from pistio.xds.wire import RESOURCES_FIELD, length_delimited

__all__ = ["ConfigKey", "ConnectionInfo", "Generator", "PushRequest", "Resource"]


@dataclass(frozen=True, eq=False)
class Resource:
    """One named xDS resource. Serialization, hash and Any are computed once and cached,
    so a resource shared by many connections is encoded once."""

    name: str
    message: message.Message

    @cached_property
    def serialized(self) -> bytes:
        return self.message.SerializeToString(deterministic=True)

    @cached_property
    def version(self) -> str:
        """The per-resource version of delta xDS: a hash of the serialized resource."""
        return hashlib.blake2b(self.serialized, digest_size=8).hexdigest()

    @cached_property
    def any(self) -> any_pb2.Any:
        return pack(self.message, self.serialized)

    @cached_property
    def sotw_field(self) -> bytes:
        """This resource as ``DiscoveryResponse.resources`` entry, encoded (an Any)."""
        return length_delimited(RESOURCES_FIELD, self.any.SerializeToString())

    @cached_property
    def delta_field(self) -> bytes:
        """This resource as ``DeltaDiscoveryResponse.resources`` entry, encoded (a
        ``Resource`` with name, version and the Any)."""
        entry = discovery_pb2.Resource(name=self.name, version=self.version, resource=self.any)
        return length_delimited(RESOURCES_FIELD, entry.SerializeToString())


class Generator(Protocol):
    def generate(
        self, conn: ConnectionInfo, watched: set[str] | None, push: PushRequest
    ) -> list[Resource] | None: ...
