"""State-of-the-world ADS over real gRPC on loopback, driven request by request."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pistio.xds import types as T
from pistio.xds.any_codec import resource_name, unpack
from pistio.xds.push_request import PushRequest
from pistio.xds.testing import (
    StaticGenerator,
    XdsHarness,
    bounded,
    cluster,
    endpoints,
    eventually,
    listener,
    route,
)

pytestmark = pytest.mark.asyncio

NODE = base_pb2.Node(id="sidecar~10.0.0.1~app-1.default~default.svc.cluster.local", cluster="app")
NODE.metadata.update({"NAMESPACE": "default", "LABELS": {"app": "app"}})


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


def names(response) -> list[str]:
    return sorted(resource_name(unpack(r)) for r in response.resources)


def request(type_url, names=(), *, node=None, version="", nonce="", error=None):
    return discovery_pb2.DiscoveryRequest(
        node=node,
        type_url=type_url,
        resource_names=list(names),
        version_info=version,
        response_nonce=nonce,
        error_detail=status_pb2.Status(code=3, message=error) if error else None,
    )


def watch(server, type_url):
    (conn,) = list(server.registry)
    return conn.watches[type_url]


@bounded(10)
async def test_subscribe_gets_the_current_state_and_registers_the_node(xds):
    server = await xds.server({T.CLUSTER: StaticGenerator([cluster("b"), cluster("a")])})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER, node=NODE))
    response = await stream.recv()
    assert response.type_url == T.CLUSTER
    assert names(response) == ["a", "b"]
    assert response.version_info and response.nonce
    assert response.control_plane.identifier == "pistiod"
    (conn,) = list(server.registry)
    assert conn.info.node_id == NODE.id
    assert conn.info.metadata == {"NAMESPACE": "default", "LABELS": {"app": "app"}}
    assert conn.info.cluster == "app"
    assert server.stats.connections == 1


@bounded(10)
async def test_ack_updates_the_acked_version_and_gets_no_response(xds):
    server = await xds.server({T.CLUSTER: StaticGenerator([cluster("a")])})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER, node=NODE))
    response = await stream.recv()
    state = watch(server, T.CLUSTER)
    assert state.sync_status == "STALE"  # sent, not yet acked
    await stream.send(request(T.CLUSTER, version=response.version_info, nonce=response.nonce))
    assert await stream.silent()
    assert (state.version_acked, state.nonce_acked) == (response.version_info, response.nonce)
    assert state.sync_status == "SYNCED"
    (row,) = server.registry.sync_status()
    assert row.types[T.CLUSTER].status == "SYNCED"
    assert row.types[T.CLUSTER].short == "CDS"


@bounded(10)
async def test_nack_keeps_last_good_version_is_counted_and_a_new_version_fixes_it(xds):
    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER, node=NODE))
    good = await stream.recv()
    await stream.send(request(T.CLUSTER, version=good.version_info, nonce=good.nonce))
    state = watch(server, T.CLUSTER)
    await eventually(lambda: state.nonce_acked == good.nonce)

    cds.set(cluster("bad"))
    await server.push_now(PushRequest(reasons=frozenset({"config"})))
    bad = await stream.recv()
    assert names(bad) == ["a", "bad"]
    await stream.send(
        request(T.CLUSTER, version=good.version_info, nonce=bad.nonce, error="unknown field")
    )
    assert await stream.silent()  # a NACK is not answered
    assert server.stats.rejects["CDS"] == 1
    assert state.version_acked == good.version_info  # the proxy still runs this
    assert state.error == "unknown field"
    assert state.sync_status == "STALE"

    cds.remove("bad")
    await server.push_now(PushRequest())
    fixed = await stream.recv()
    assert names(fixed) == ["a"]
    assert int(fixed.version_info) > int(bad.version_info) > int(good.version_info)
    await stream.send(request(T.CLUSTER, version=fixed.version_info, nonce=fixed.nonce))
    assert await stream.silent()
    assert state.sync_status == "SYNCED" and state.error == ""
    assert state.version_acked == fixed.version_info


@bounded(10)
async def test_stale_nonce_is_ignored(xds):
    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER, node=NODE))
    first = await stream.recv()
    cds.set(cluster("b"))
    await server.push_now(PushRequest())
    second = await stream.recv()

    # Answers to the first response arrive after the second was sent: stale.
    await stream.send(request(T.CLUSTER, version=first.version_info, nonce=first.nonce))
    await stream.send(
        request(T.CLUSTER, version="", nonce=first.nonce, error="late complaint")
    )
    assert await stream.silent()
    state = watch(server, T.CLUSTER)
    assert state.nonce_acked == "" and server.stats.rejects["CDS"] == 0
    await stream.send(request(T.CLUSTER, version=second.version_info, nonce=second.nonce))
    assert await stream.silent()
    assert state.nonce_acked == second.nonce


@bounded(10)
async def test_changed_resource_names_in_an_ack_are_a_new_subscription(xds):
    eds = StaticGenerator([endpoints(n, [("10.1.0.1", 80)]) for n in ("a", "b", "c")])
    server = await xds.server({T.ENDPOINT: eds})
    stream = await xds.raw(server)
    await stream.send(request(T.ENDPOINT, ["a"], node=NODE))
    r1 = await stream.recv()
    assert names(r1) == ["a"]
    await stream.send(request(T.ENDPOINT, ["a", "b"], version=r1.version_info, nonce=r1.nonce))
    r2 = await stream.recv()
    assert names(r2) == ["a", "b"]
    await stream.send(request(T.ENDPOINT, ["b"], version=r2.version_info, nonce=r2.nonce))
    r3 = await stream.recv()
    assert names(r3) == ["b"]
    await stream.send(request(T.ENDPOINT, ["b"], version=r3.version_info, nonce=r3.nonce))
    assert await stream.silent()  # same names: a plain ACK
    assert watch(server, T.ENDPOINT).names == {"b"}


@bounded(10)
async def test_pushes_carry_complete_cds_and_only_changed_eds(xds):
    cds = StaticGenerator([cluster("a"), cluster("b")])
    eds = StaticGenerator([endpoints("a", [("10.1.0.1", 80)]), endpoints("b", [("10.1.0.2", 80)])])
    server = await xds.server({T.CLUSTER: cds, T.ENDPOINT: eds})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER, node=NODE))
    c1 = await stream.recv()
    await stream.send(request(T.ENDPOINT, ["a", "b"]))
    e1 = await stream.recv()
    await stream.send(request(T.CLUSTER, version=c1.version_info, nonce=c1.nonce))
    await stream.send(request(T.ENDPOINT, ["a", "b"], version=e1.version_info, nonce=e1.nonce))
    await eventually(lambda: watch(server, T.ENDPOINT).nonce_acked == e1.nonce)

    # Nothing changed: a full push sends nothing at all.
    await server.push_now(PushRequest())
    assert await stream.silent()

    eds.set(endpoints("a", [("10.1.0.9", 80)]))
    cds.set(cluster("c"))
    await server.push_now(PushRequest())
    c2 = await stream.recv()
    e2 = await stream.recv()
    assert (c2.type_url, names(c2)) == (T.CLUSTER, ["a", "b", "c"])  # complete
    assert (e2.type_url, names(e2)) == (T.ENDPOINT, ["a"])  # changed only


@bounded(10)
async def test_full_push_order_is_cds_eds_lds_rds(xds):
    gens = {
        T.CLUSTER: StaticGenerator([cluster("a")]),
        T.ENDPOINT: StaticGenerator([endpoints("a", [("10.1.0.1", 80)])]),
        T.LISTENER: StaticGenerator([listener("0.0.0.0_80", 80)]),
        T.ROUTE: StaticGenerator([route("80")]),
    }
    server = await xds.server(gens)
    stream = await xds.raw(server)
    # Subscribe in the "wrong" order; answers to requests follow the requests.
    await stream.send(request(T.ROUTE, ["80"], node=NODE))
    await stream.send(request(T.LISTENER))
    await stream.send(request(T.ENDPOINT, ["a"]))
    await stream.send(request(T.CLUSTER))
    assert [(await stream.recv()).type_url for _ in range(4)] == [
        T.ROUTE, T.LISTENER, T.ENDPOINT, T.CLUSTER
    ]
    for gen, msg in (
        (gens[T.CLUSTER], cluster("a", 2)),
        (gens[T.ENDPOINT], endpoints("a", [("10.1.0.2", 80)])),
        (gens[T.LISTENER], listener("0.0.0.0_80", 81)),
        (gens[T.ROUTE], route("80", ["x"])),
    ):
        gen.set(msg)
    await server.push_now(PushRequest())
    order = [(await stream.recv()).type_url for _ in range(4)]
    assert order == [T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE]


@bounded(10)
async def test_first_request_without_node_is_rejected(xds):
    server = await xds.server({T.CLUSTER: StaticGenerator()})
    stream = await xds.raw(server)
    await stream.send(request(T.CLUSTER))
    assert await stream.recv() is None
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(server.registry) == 0


@bounded(10)
async def test_unserved_type_gets_no_answer_and_empty_wildcard_gets_an_empty_answer(xds):
    server = await xds.server({T.LISTENER: StaticGenerator()})
    stream = await xds.raw(server)
    await stream.send(request(T.SECRET, ["default"], node=NODE))
    assert await stream.silent()
    await stream.send(request(T.LISTENER))
    response = await stream.recv()
    assert response.type_url == T.LISTENER and len(response.resources) == 0
