from __future__ import annotations

import base64

from google.protobuf import struct_pb2

from pistio.proxy.telemetry.peer_metadata import (
    LocalNode,
    decode_peer_metadata,
    encode_peer_metadata,
    endpoint_peer,
    namespace_of_principal,
    node_metadata_env,
    peer_from_endpoint,
)
from tests.unit.proxy.telemetry.istio_fixtures import PRODUCTPAGE


def test_round_trip_keeps_istio_fields_and_fills_canonical_labels() -> None:
    value = encode_peer_metadata({**PRODUCTPAGE, "ISTIO_VERSION": "1.0", "INTERCEPTION_MODE": "X"})
    msg = struct_pb2.Struct()
    msg.ParseFromString(base64.b64decode(value))
    assert set(msg.fields) == {"NAME", "NAMESPACE", "LABELS", "WORKLOAD_NAME", "CLUSTER_ID",
                               "SERVICE_ACCOUNT", "MESH_ID"}
    labels = msg.fields["LABELS"].struct_value.fields
    assert labels["service.istio.io/canonical-name"].string_value == "productpage"
    assert labels["service.istio.io/canonical-revision"].string_value == "v1"
    peer = decode_peer_metadata(value, b"sidecar~10.0.0.5~productpage-v1-123.default~x")
    assert peer is not None
    assert (peer.workload, peer.namespace, peer.app, peer.version, peer.canonical_service,
            peer.canonical_revision, peer.cluster, peer.name) == (
        "productpage-v1", "default", "productpage", "v1", "productpage", "v1", "Kubernetes",
        "productpage-v1-123")
    assert peer.principal == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert peer.node_id.startswith("sidecar~10.0.0.5")


def test_decoding_is_cached_by_header_value_and_rejects_garbage() -> None:
    value = encode_peer_metadata(PRODUCTPAGE)
    assert decode_peer_metadata(value) is decode_peer_metadata(bytes(value))
    assert decode_peer_metadata(b"%%% not base64") is None
    assert decode_peer_metadata(base64.b64encode(b"\xff\xff\xff")) is None
    # Istio decodes without padding too.
    assert decode_peer_metadata(value.rstrip(b"=")) is not None


def test_canonical_revision_defaults_to_latest() -> None:
    meta = {**PRODUCTPAGE, "LABELS": {"app": "ratings"}}
    peer = decode_peer_metadata(encode_peer_metadata(meta))
    assert peer is not None
    assert (peer.canonical_service, peer.canonical_revision, peer.version) == (
        "ratings", "latest", "")


def test_endpoint_metadata() -> None:
    peer = peer_from_endpoint("reviews-v2;default;reviews;v2;Kubernetes")
    assert peer is not None
    assert (peer.workload, peer.namespace, peer.canonical_service, peer.canonical_revision,
            peer.cluster, peer.app) == ("reviews-v2", "default", "reviews", "v2", "Kubernetes", "")
    assert peer_from_endpoint("a;b") is None
    assert endpoint_peer({"istio": {"workload": "w;ns;svc;rev;c"}}) is peer_from_endpoint(
        "w;ns;svc;rev;c")
    assert endpoint_peer({}) is None


def test_principal_namespace_and_local_node() -> None:
    assert namespace_of_principal("spiffe://cluster.local/ns/foo/sa/bar") == "foo"
    assert namespace_of_principal("spiffe://cluster.local/sa/bar") == ""
    node = LocalNode("sidecar~1.2.3.4~p.default~default.svc.cluster.local", PRODUCTPAGE)
    assert node.peer.workload == "productpage-v1"
    assert node.header_id == b"sidecar~1.2.3.4~p.default~default.svc.cluster.local"
    assert decode_peer_metadata(node.header_value).canonical_service == "productpage"
    assert '"id":"sidecar~1.2.3.4' in node_metadata_env(node.node_id, PRODUCTPAGE)
