"""Who is on the other side of a request: Istio's peer metadata, and this proxy's own.

Sidecars tell each other who they are in two headers (Istio's ``istio_headers`` method):
``x-envoy-peer-metadata`` (base64 of a serialized ``google.protobuf.Struct`` holding a subset
of the proxy's node metadata: ``NAME``, ``NAMESPACE``, ``LABELS``, ``WORKLOAD_NAME``,
``CLUSTER_ID``, ...) and ``x-envoy-peer-metadata-id`` (the node id). Without the headers, an
upstream endpoint is known from its EDS metadata ``filter_metadata["istio"]["workload"]``,
``"<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>"``.

A peer is a small immutable :class:`PeerInfo`. Decoding happens once per distinct header value
(per worker): the result is cached by the header bytes, so every request from the same peer
gets the *same* object, and the stats filter can key its label cache on it by identity.

This proxy's own metadata (:func:`local_node`) reaches the worker processes in the
environment variable ``PISTIO_NODE_METADATA`` (JSON ``{"id": ..., "metadata": {...}}``, set by
the agent); the header value is encoded from it once.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

NODE_METADATA_ENV = "PISTIO_NODE_METADATA"
PEER_METADATA_HEADER = b"x-envoy-peer-metadata"
PEER_METADATA_ID_HEADER = b"x-envoy-peer-metadata-id"

CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
APP_LABEL = "app"
VERSION_LABEL = "version"

# The node metadata keys a sidecar sends about itself.
EXCHANGED_KEYS = ("NAME", "NAMESPACE", "LABELS", "WORKLOAD_NAME", "OWNER", "CLUSTER_ID",
                  "MESH_ID", "APP_CONTAINERS", "INSTANCE_IPS", "PLATFORM_METADATA",
                  "SERVICE_ACCOUNT")
_MAX_CACHED = 4096


class PeerInfo:
    """One workload as telemetry labels it. Empty strings are unknown fields (the stats
    filter prints ``unknown``, or ``latest`` for a canonical revision)."""

    __slots__ = ("workload", "namespace", "app", "version", "canonical_service",
                 "canonical_revision", "cluster", "service_account", "name", "owner",
                 "node_id", "trust_domain")

    def __init__(self, *, workload: str = "", namespace: str = "", app: str = "",
                 version: str = "", canonical_service: str = "", canonical_revision: str = "",
                 cluster: str = "", service_account: str = "", name: str = "",
                 owner: str = "", node_id: str = "", trust_domain: str = "") -> None:
        for slot, value in (("workload", workload), ("namespace", namespace), ("app", app),
                            ("version", version), ("canonical_service", canonical_service),
                            ("canonical_revision", canonical_revision), ("cluster", cluster),
                            ("service_account", service_account), ("name", name),
                            ("owner", owner), ("node_id", node_id),
                            ("trust_domain", trust_domain)):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PeerInfo is immutable")

    @property
    def principal(self) -> str:
        """The SPIFFE id of the peer's service account ("" when its account is unknown)."""
        if not self.service_account or not self.namespace:
            return ""
        return (f"spiffe://{self.trust_domain or 'cluster.local'}/ns/{self.namespace}"
                f"/sa/{self.service_account}")

    def __repr__(self) -> str:
        return (f"PeerInfo(workload={self.workload!r}, namespace={self.namespace!r}, "
                f"canonical_service={self.canonical_service!r})")


def peer_from_metadata(meta: Mapping[str, Any], node_id: str = "") -> PeerInfo:
    """A peer from (a subset of) Istio node metadata, as the header carries it."""
    raw_labels = meta.get("LABELS")
    labels: Mapping[str, Any] = raw_labels if isinstance(raw_labels, Mapping) else {}

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    return PeerInfo(
        workload=text(meta.get("WORKLOAD_NAME")),
        namespace=text(meta.get("NAMESPACE")),
        app=text(labels.get(APP_LABEL)),
        version=text(labels.get(VERSION_LABEL)),
        canonical_service=text(labels.get(CANONICAL_NAME_LABEL)),
        canonical_revision=text(labels.get(CANONICAL_REVISION_LABEL)),
        cluster=text(meta.get("CLUSTER_ID")),
        service_account=text(meta.get("SERVICE_ACCOUNT")),
        name=text(meta.get("NAME")),
        owner=text(meta.get("OWNER")),
        node_id=node_id,
        trust_domain=text(meta.get("MESH_ID")),
    )


def encode_peer_metadata(meta: Mapping[str, Any]) -> bytes:
    """The ``x-envoy-peer-metadata`` value for node metadata ``meta``: its exchanged subset,
    with the canonical service/revision labels filled as Istio's injector would."""
    subset = {k: meta[k] for k in EXCHANGED_KEYS if k in meta and meta[k] not in (None, "")}
    labels = dict(subset.get("LABELS") or {})
    workload = str(subset.get("WORKLOAD_NAME") or subset.get("NAME") or "")
    labels.setdefault(CANONICAL_NAME_LABEL,
                      labels.get("app.kubernetes.io/name") or labels.get(APP_LABEL) or workload)
    labels.setdefault(CANONICAL_REVISION_LABEL,
                      labels.get("app.kubernetes.io/version") or labels.get(VERSION_LABEL)
                      or "latest")
    subset["LABELS"] = {str(k): str(v) for k, v in labels.items() if v != ""}
    msg = struct_pb2.Struct()
    msg.update(subset)
    return base64.b64encode(msg.SerializeToString(deterministic=True))


_decoded: dict[tuple[bytes, bytes | None], PeerInfo | None] = {}


def decode_peer_metadata(value: bytes, node_id: bytes | None = None) -> PeerInfo | None:
    """The peer a ``x-envoy-peer-metadata`` header describes; None for a malformed value.
    Cached by the header bytes: the same peer is the same object."""
    key = (value, node_id)
    peer = _decoded.get(key, _decoded)
    if peer is not _decoded:
        return peer  # type: ignore[return-value]
    result: PeerInfo | None
    try:
        raw = base64.b64decode(value + b"=" * (-len(value) % 4))
        msg = struct_pb2.Struct()
        msg.ParseFromString(raw)
        meta = {k: _plain(v) for k, v in msg.fields.items()}
        result = peer_from_metadata(meta, node_id.decode("latin-1") if node_id else "")
    except (binascii.Error, DecodeError, ValueError):
        result = None
    if len(_decoded) >= _MAX_CACHED:
        _decoded.clear()
    _decoded[key] = result
    return result


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    return None


_endpoints: dict[str, PeerInfo | None] = {}


def peer_from_endpoint(encoded: str) -> PeerInfo | None:
    """The peer named by EDS ``istio.workload`` metadata
    ``<workload>;<namespace>;<canonical service>;<canonical revision>;<cluster>`` (cached)."""
    peer = _endpoints.get(encoded, _endpoints)
    if peer is not _endpoints:
        return peer  # type: ignore[return-value]
    parts = encoded.split(";")
    result = None
    if len(parts) >= 5:
        result = PeerInfo(workload=parts[0], namespace=parts[1], canonical_service=parts[2],
                          canonical_revision=parts[3], cluster=parts[4])
    if len(_endpoints) >= _MAX_CACHED:
        _endpoints.clear()
    _endpoints[encoded] = result
    return result


def endpoint_peer(metadata: Mapping[str, Mapping[str, Any]]) -> PeerInfo | None:
    """:func:`peer_from_endpoint` of an endpoint's filter metadata, if it has any."""
    istio = metadata.get("istio")
    encoded = istio.get("workload") if istio else None
    return peer_from_endpoint(encoded) if isinstance(encoded, str) else None


def namespace_of_principal(principal: str) -> str:
    """``ns`` of ``spiffe://<domain>/ns/<ns>/sa/<sa>`` ("" when absent)."""
    at = principal.find("/ns/")
    if at < 0:
        return ""
    rest = principal[at + 4:]
    end = rest.find("/")
    return rest if end < 0 else rest[:end]


class LocalNode:
    """This proxy: its labels as a :class:`PeerInfo` and its two exchange headers."""

    __slots__ = ("node_id", "metadata", "peer", "header_value", "header_id", "principal")

    def __init__(self, node_id: str, metadata: Mapping[str, Any]) -> None:
        self.node_id = node_id
        self.metadata = dict(metadata)
        encoded = encode_peer_metadata(self.metadata)
        self.header_value = encoded
        self.header_id = node_id.encode("latin-1")
        # Labels from what we send, so both sides agree on canonical names.
        decoded = decode_peer_metadata(encoded, self.header_id)
        self.peer = decoded if decoded is not None else PeerInfo()
        self.principal = self.peer.principal


_local: LocalNode | None = None


def local_node() -> LocalNode:
    """This process's node (from ``PISTIO_NODE_METADATA``; empty when unset)."""
    global _local
    if _local is None:
        raw = os.environ.get(NODE_METADATA_ENV)
        node_id, meta = "", {}
        if raw:
            try:
                doc = json.loads(raw)
                node_id, meta = str(doc.get("id", "")), dict(doc.get("metadata") or {})
            except (ValueError, AttributeError):
                pass
        _local = LocalNode(node_id, meta)
    return _local


def set_local_node(node_id: str, metadata: Mapping[str, Any]) -> LocalNode:
    """Set this process's node (the agent's env does it for workers; tests call this)."""
    global _local
    _local = LocalNode(node_id, metadata)
    return _local


def node_metadata_env(node_id: str, metadata: Mapping[str, Any]) -> str:
    """The ``PISTIO_NODE_METADATA`` value the agent gives its workers."""
    return json.dumps({"id": node_id, "metadata": dict(metadata)}, separators=(",", ":"),
                      default=str)
