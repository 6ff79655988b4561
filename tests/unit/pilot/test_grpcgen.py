"""Proxyless gRPC flavour (Istio's ``grpcgen``) and the LDS/RDS generators' dispatch."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.pilot.generators.lds import ListenerGenerator
from pistio.pilot.generators.rds import RouteGenerator
from pistio.pilot.grpcgen.lds import SERVER_LISTENER_PREFIX, build_grpc_listeners
from pistio.pilot.grpcgen.rds import build_grpc_route_config
from pistio.pilot.model.proxy import parse_node_id
from pistio.xds.any_codec import unpack
from pistio.xds.connection import ConnectionInfo
from pistio.xds.push_request import PushRequest
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, fqdn

GRPC_NODE = "sidecar~10.244.0.10~productpage-v1-0.default~default.svc.cluster.local"
GRPC_META = {
    "GENERATOR": "grpc",
    "NAMESPACE": "default",
    "LABELS": {"app": "productpage", "version": "v1"},
}


def grpc_proxy():
    return parse_node_id(GRPC_NODE, GRPC_META)


def test_client_api_listener_for_requested_short_name():
    (lst,) = build_grpc_listeners(bookinfo_push(), grpc_proxy(), {"reviews:9080"})
    assert lst.name == "reviews:9080"
    assert lst.address.socket_address.address == "10.96.0.12"
    assert lst.address.socket_address.port_value == 9080
    assert not lst.filter_chains and not lst.listener_filters
    hcm = unpack(lst.api_listener.api_listener)
    assert isinstance(hcm, hcm_pb2.HttpConnectionManager)
    assert hcm.rds.route_config_name == "outbound|9080||reviews.default.svc.cluster.local"
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_each_spelling_gets_its_own_listener():
    names = {"reviews:9080", f"{fqdn('reviews')}:9080", "reviews.default:9080"}
    got = sorted(lst.name for lst in build_grpc_listeners(bookinfo_push(), grpc_proxy(), names))
    assert got == sorted(names)


def test_wildcard_lists_every_service_by_fqdn():
    got = [lst.name for lst in build_grpc_listeners(bookinfo_push(), grpc_proxy(), None)]
    assert got == [f"{fqdn(a)}:9080" for a in ("details", "productpage", "ratings", "reviews")]


def test_server_listener():
    name = f"{SERVER_LISTENER_PREFIX}0.0.0.0:9080"
    (lst,) = build_grpc_listeners(bookinfo_push(), grpc_proxy(), {name})
    assert lst.name == name
    assert lst.address.socket_address.port_value == 9080
    (chain,) = lst.filter_chains
    assert chain.name == "inbound-plaintext"
    hcm = unpack(chain.filters[0].typed_config)
    (route,) = hcm.route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    # No service on this port: no listener.
    assert not build_grpc_listeners(
        bookinfo_push(), grpc_proxy(), {f"{SERVER_LISTENER_PREFIX}0.0.0.0:7000"}
    )


def test_grpc_route_config():
    name = "outbound|9080||reviews.default.svc.cluster.local"
    cfg = build_grpc_route_config(bookinfo_push(), grpc_proxy(), name)
    assert cfg is not None and cfg.name == name
    assert not cfg.ignore_port_in_host_matching
    names = [v.name for v in cfg.virtual_hosts]
    assert "allow_any" not in names
    reviews = next(v for v in cfg.virtual_hosts if v.name == f"{fqdn('reviews')}:9080")
    # gRPC matches the authority as dialled: every domain also with its port.
    assert list(reviews.domains) == [
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "reviews",
        "reviews:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
        "10.96.0.12",
        "10.96.0.12:9080",
    ]
    jason = reviews.routes[0]
    assert jason.route.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local"
    # gRPC reads max_stream_duration, not max_grpc_timeout.
    assert jason.route.HasField("max_stream_duration")
    assert not jason.route.HasField("max_grpc_timeout")
    assert build_grpc_route_config(bookinfo_push(), grpc_proxy(), "9080") is None


def _conn(node_id: str, meta: dict) -> ConnectionInfo:
    return ConnectionInfo(conn_id="c1", node_id=node_id, metadata=meta)


def test_generators_dispatch_on_generator_metadata():
    push = PushRequest(context=bookinfo_push())
    sidecar_meta = {"NAMESPACE": "default", "LABELS": {"app": "productpage"}}
    lds = ListenerGenerator()
    sidecar = lds.generate(_conn(GRPC_NODE, sidecar_meta), None, push)
    assert [r.name for r in sidecar] == ["0.0.0.0_9080", "virtualOutbound", "virtualInbound"]
    grpc = lds.generate(_conn(GRPC_NODE, GRPC_META), {"ratings:9080"}, push)
    assert [r.name for r in grpc] == ["ratings:9080"]
    rds = RouteGenerator()
    (route,) = rds.generate(_conn(GRPC_NODE, sidecar_meta), {"9080"}, push)
    assert route.name == "9080" and route.message.virtual_hosts[-1].name == "allow_any"
    name = "outbound|9080||ratings.default.svc.cluster.local"
    (grpc_route,) = rds.generate(_conn(GRPC_NODE, GRPC_META), {name}, push)
    assert grpc_route.name == name
    assert rds.generate(_conn(GRPC_NODE, sidecar_meta), None, push) == []
    assert lds.generate(_conn(GRPC_NODE, sidecar_meta), None, PushRequest()) is None
