"""Delta (incremental) ADS over real gRPC on loopback, driven request by request."""

from __future__ import annotations

import pytest
import pytest_asyncio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pistio.xds import types as T
from pistio.xds.generator import Resource
from pistio.xds.push_request import PushRequest
from pistio.xds.testing import (
    StaticGenerator,
    XdsHarness,
    bounded,
    cluster,
    endpoints,
    eventually,
)

pytestmark = pytest.mark.asyncio

NODE = base_pb2.Node(id="sidecar~10.0.0.2~app-2.default~default.svc.cluster.local")


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


def request(type_url, subscribe=(), unsubscribe=(), *, node=None, nonce="", error=None, initial=None):
    return discovery_pb2.DeltaDiscoveryRequest(
        node=node,
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
        error_detail=status_pb2.Status(code=3, message=error) if error else None,
    )


def sent(response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def watch(server, type_url):
    (conn,) = list(server.registry)
    return conn.watches[type_url]


@bounded(10)
async def test_wildcard_subscribe_sends_resources_with_content_hash_versions(xds):
    a, b = cluster("a"), cluster("b")
    server = await xds.server({T.CLUSTER: StaticGenerator([a, b])})
    stream = await xds.raw(server, delta=True)
    await stream.send(request(T.CLUSTER, node=NODE))
    response = await stream.recv()
    assert sent(response) == {"a": Resource("a", a).version, "b": Resource("b", b).version}
    assert response.system_version_info and response.nonce
    assert list(response.removed_resources) == []
    assert list(server.registry)[0].info.delta


@bounded(10)
async def test_only_changed_resources_are_sent_and_deletions_are_removed_resources(xds):
    cds = StaticGenerator([cluster("a"), cluster("b")])
    server = await xds.server({T.CLUSTER: cds})
    stream = await xds.raw(server, delta=True)
    await stream.send(request(T.CLUSTER, ["*"], node=NODE))
    first = await stream.recv()
    await stream.send(request(T.CLUSTER, nonce=first.nonce))
    await eventually(lambda: watch(server, T.CLUSTER).nonce_acked == first.nonce)

    await server.push_now(PushRequest())
    assert await stream.silent()  # nothing changed: nothing sent

    cds.set(cluster("b", connect_timeout_s=5))
    await server.push_now(PushRequest())
    changed = await stream.recv()
    assert list(sent(changed)) == ["b"] and list(changed.removed_resources) == []

    cds.remove("a")
    await server.push_now(PushRequest())
    removed = await stream.recv()
    assert sent(removed) == {} and list(removed.removed_resources) == ["a"]
    await stream.send(request(T.CLUSTER, nonce=removed.nonce))
    await eventually(lambda: watch(server, T.CLUSTER).sync_status == "SYNCED")
    assert watch(server, T.CLUSTER).version_acked == removed.system_version_info


@bounded(10)
async def test_subscribe_and_unsubscribe_names(xds):
    eds = StaticGenerator([endpoints(n, [("10.2.0.1", 80)]) for n in ("a", "b")])
    server = await xds.server({T.ENDPOINT: eds})
    stream = await xds.raw(server, delta=True)
    await stream.send(request(T.ENDPOINT, ["a"], node=NODE))
    r1 = await stream.recv()
    assert list(sent(r1)) == ["a"]
    await stream.send(request(T.ENDPOINT, nonce=r1.nonce))

    await stream.send(request(T.ENDPOINT, ["b"]))
    r2 = await stream.recv()
    assert list(sent(r2)) == ["b"]  # only the new name, not "a" again
    await stream.send(request(T.ENDPOINT, nonce=r2.nonce))

    await stream.send(request(T.ENDPOINT, unsubscribe=["a"]))
    assert await stream.silent()
    await eventually(lambda: watch(server, T.ENDPOINT).names == {"b"})

    eds.set(endpoints("a", [("10.2.0.9", 80)]))
    await server.push_now(PushRequest(full=False))
    assert await stream.silent()  # "a" is no longer watched
    eds.set(endpoints("b", [("10.2.0.9", 80)]))
    await server.push_now(PushRequest(full=False))
    r3 = await stream.recv()
    assert list(sent(r3)) == ["b"]


@bounded(10)
async def test_subscribing_to_a_missing_resource_answers_removed(xds):
    server = await xds.server({T.ENDPOINT: StaticGenerator([endpoints("a", [])])})
    stream = await xds.raw(server, delta=True)
    await stream.send(request(T.ENDPOINT, ["a", "ghost"], node=NODE))
    response = await stream.recv()
    assert list(sent(response)) == ["a"]
    assert list(response.removed_resources) == ["ghost"]


@bounded(10)
async def test_initial_resource_versions_send_only_differences(xds):
    a, b = cluster("a"), cluster("b")
    server = await xds.server({T.CLUSTER: StaticGenerator([a, b])})
    stream = await xds.raw(server, delta=True)
    # A reconnecting proxy holds the current "a" and a "c" that no longer exists.
    initial = {"a": Resource("a", a).version, "c": "0123456789abcdef"}
    await stream.send(request(T.CLUSTER, node=NODE, initial=initial))
    response = await stream.recv()
    assert list(sent(response)) == ["b"]
    assert list(response.removed_resources) == ["c"]


@bounded(10)
async def test_delta_nack_is_counted_and_stale_nonce_ignored(xds):
    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds})
    stream = await xds.raw(server, delta=True)
    await stream.send(request(T.CLUSTER, node=NODE))
    first = await stream.recv()
    await stream.send(request(T.CLUSTER, nonce=first.nonce))
    state = watch(server, T.CLUSTER)
    await eventually(lambda: state.nonce_acked == first.nonce)

    cds.set(cluster("bad"))
    await server.push_now(PushRequest())
    bad = await stream.recv()
    cds.set(cluster("b"))
    await server.push_now(PushRequest())
    newer = await stream.recv()
    # A NACK for the older response is stale: not counted.
    await stream.send(request(T.CLUSTER, nonce=bad.nonce, error="stale complaint"))
    await stream.send(request(T.CLUSTER, nonce=newer.nonce, error="cluster b: bad config"))
    await eventually(lambda: server.stats.rejects["CDS"] >= 1)
    assert await stream.silent(0.1)
    assert server.stats.rejects["CDS"] == 1
    assert state.error == "cluster b: bad config"
    assert state.nonce_acked == first.nonce  # last good state kept
    assert state.sync_status == "STALE"
