"""Pushes end to end with the asyncio ADS client: debounce, EDS-only pushes, NACK
through the client callback, reconnection, and many clients converging."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from pistio.xds import types as T
from pistio.xds.any_codec import unpack
from pistio.xds.client import ResponseUpdate
from pistio.xds.debounce import DebounceOptions
from pistio.xds.generator import Resource
from pistio.xds.push_request import ConfigKey, PushRequest
from pistio.xds.testing import (
    StaticGenerator,
    XdsHarness,
    bounded,
    cluster,
    endpoints,
    eventually,
)

pytestmark = pytest.mark.asyncio

BOTH = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


def node(i: int = 1) -> str:
    return f"sidecar~10.0.{i // 250}.{i % 250 + 1}~app-{i}.default~default.svc.cluster.local"


def synced(server, count: int) -> bool:
    rows = server.registry.sync_status()
    return len(rows) == count and all(
        t.status == "SYNCED" for row in rows for t in row.types.values()
    )


@bounded(10)
@BOTH
async def test_client_nack_keeps_last_good_resources_until_fixed(xds, delta):
    def reject_bad(update: ResponseUpdate) -> str | None:
        bad = [n for n in update.resources if n.startswith("bad")]
        return f"rejected clusters {bad}" if bad else None

    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds}, debounce=DebounceOptions(quiet=0.01))
    client = await xds.client(server, node(), {T.CLUSTER: None}, delta=delta, on_update=reject_bad)
    await client.wait_for(lambda c: c.names(T.CLUSTER) == {"a"})
    good_version = client.version(T.CLUSTER)

    cds.set(cluster("bad-1"))
    server.config_update(PushRequest(configs_updated=frozenset({ConfigKey("DestinationRule")})))
    await client.wait_for(lambda c: c.subscriptions[T.CLUSTER].nacks == 1)
    assert client.names(T.CLUSTER) == {"a"} and client.version(T.CLUSTER) == good_version
    await eventually(lambda: server.stats.rejects["CDS"] == 1)
    (row,) = server.registry.sync_status()
    assert row.types[T.CLUSTER].status == "STALE"
    assert "bad-1" in row.types[T.CLUSTER].error

    cds.remove("bad-1")
    cds.set(cluster("b"))
    server.config_update(PushRequest())
    await client.wait_for(lambda c: c.names(T.CLUSTER) == {"a", "b"})
    await eventually(lambda: synced(server, 1))
    assert int(client.version(T.CLUSTER)) > int(good_version)


@bounded(10)
async def test_debounce_coalesces_changes_inside_the_quiet_window(xds):
    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds}, debounce=DebounceOptions(quiet=0.15, max_delay=2))
    client = await xds.client(server, node(), {T.CLUSTER: None})
    await client.wait_for(lambda c: c.names(T.CLUSTER) == {"a"})
    responses_before = client.subscriptions[T.CLUSTER].responses

    for i in range(5):
        cds.set(cluster(f"c{i}"))
        server.config_update(PushRequest(configs_updated=frozenset({ConfigKey("ServiceEntry", f"c{i}")})))
        await asyncio.sleep(0.02)
    await client.wait_for(lambda c: len(c.names(T.CLUSTER)) == 6)
    await asyncio.sleep(0.3)  # nothing else may follow
    assert server.stats.full_pushes == 1
    assert client.subscriptions[T.CLUSTER].responses == responses_before + 1
    assert server.stats.push_triggers["unknown"] == 1


@bounded(10)
async def test_debounce_max_delay_bounds_a_steady_trickle(xds):
    cds = StaticGenerator([cluster("a")])
    server = await xds.server({T.CLUSTER: cds}, debounce=DebounceOptions(quiet=0.1, max_delay=0.3))
    client = await xds.client(server, node(), {T.CLUSTER: None})
    await client.wait_for(lambda c: c.names(T.CLUSTER) == {"a"})

    start = time.monotonic()
    pushed_at = None
    # An event every 50 ms never leaves a 100 ms quiet window: only the max delay fires.
    for i in range(16):
        cds.set(cluster(f"c{i}"))
        server.config_update(PushRequest())
        await asyncio.sleep(0.05)
        if pushed_at is None and server.stats.full_pushes:
            pushed_at = time.monotonic() - start
    assert pushed_at is not None and 0.25 <= pushed_at < 0.75  # before the trickle ends
    await client.wait_for(lambda c: len(c.names(T.CLUSTER)) == 17)
    assert server.stats.full_pushes >= 2  # the tail after the first push, too
    assert server.stats.convergence_seconds


@bounded(10)
@BOTH
async def test_endpoint_only_changes_push_eds_only(xds, delta):
    cds = StaticGenerator([cluster("a")])
    eds = StaticGenerator([endpoints("a", [("10.3.0.1", 80)])])
    server = await xds.server(
        {T.CLUSTER: cds, T.ENDPOINT: eds}, debounce=DebounceOptions(quiet=0.05)
    )
    client = await xds.client(server, node(), {T.CLUSTER: None, T.ENDPOINT: ["a"]}, delta=delta)
    await client.wait_for(lambda c: "a" in c.names(T.ENDPOINT) and "a" in c.names(T.CLUSTER))
    await eventually(lambda: synced(server, 1))
    cds_calls, cds_pushes = cds.calls, server.stats.pushes["CDS"]

    eds.set(endpoints("a", [("10.3.0.2", 80)]))
    eds_change = PushRequest(full=False, configs_updated=frozenset({ConfigKey("ServiceEntry", "a")}))
    server.config_update(eds_change)
    server.config_update(eds_change)
    await client.wait_for(lambda c: "10.3.0.2" in str(unpack(c.resources(T.ENDPOINT)["a"])))
    assert server.stats.eds_pushes == 1 and server.stats.full_pushes == 0
    assert cds.calls == cds_calls and server.stats.pushes["CDS"] == cds_pushes

    # An endpoint change merged with a config change is a full push.
    cds.set(cluster("b"))
    server.config_update(eds_change)
    server.config_update(PushRequest())
    await client.wait_for(lambda c: "b" in c.names(T.CLUSTER))
    assert server.stats.full_pushes == 1 and server.stats.eds_pushes == 1


@bounded(15)
@BOTH
async def test_client_reconnects_after_server_restart_and_gets_full_state(xds, delta):
    cds = StaticGenerator([cluster("a")])
    eds = StaticGenerator([endpoints("a", [("10.4.0.1", 80)])])
    first = await xds.server({T.CLUSTER: cds, T.ENDPOINT: eds})
    port = first.port
    client = await xds.client(
        first, node(), {T.CLUSTER: None, T.ENDPOINT: ["a"]}, delta=delta, backoff_max=0.2
    )
    await client.wait_for(lambda c: c.names(T.ENDPOINT) == {"a"})
    await first.stop(grace=None)
    await client.wait_for(lambda c: not c.connected)

    # The new control plane has a different world; the client must end up with it.
    cds.remove("a")
    cds.set(cluster("b"))
    eds.set(endpoints("a", [("10.4.0.2", 80)]))
    second = await xds.server({T.CLUSTER: cds, T.ENDPOINT: eds}, address=f"127.0.0.1:{port}")
    await client.wait_for(
        lambda c: c.connects >= 2
        and c.names(T.CLUSTER) == {"b"}
        and "10.4.0.2" in str(unpack(c.resources(T.ENDPOINT)["a"])),
        timeout=8,
    )
    await eventually(lambda: synced(second, 1))


@bounded(18)
@BOTH
async def test_many_clients_converge(xds, delta):
    count = 200
    cds = StaticGenerator([cluster(f"svc-{i}") for i in range(20)])
    eds = StaticGenerator([endpoints(f"svc-{i}", [("10.5.0.1", 8080)]) for i in range(20)])
    server = await xds.server(
        {T.CLUSTER: cds, T.ENDPOINT: eds},
        debounce=DebounceOptions(quiet=0.05),
        push_concurrency=16,
    )
    clients = await asyncio.gather(
        *(
            xds.client(server, node(i), {T.CLUSTER: None, T.ENDPOINT: ["svc-1", "svc-2"]}, delta=delta)
            for i in range(count)
        )
    )
    await asyncio.gather(*(c.wait_for(lambda c: len(c.names(T.CLUSTER)) == 20, 10) for c in clients))
    await eventually(lambda: synced(server, count), timeout=10)
    assert server.stats.connections == count

    cds.set(cluster("svc-new"))
    eds.set(endpoints("svc-2", [("10.5.0.2", 8080)]))
    server.config_update(PushRequest())
    await asyncio.gather(
        *(
            c.wait_for(
                lambda c: "svc-new" in c.names(T.CLUSTER)
                and "10.5.0.2" in str(unpack(c.resources(T.ENDPOINT)["svc-2"])),
                10,
            )
            for c in clients
        )
    )
    await server.wait_idle()
    await eventually(lambda: synced(server, count), timeout=10)
    assert server.stats.full_pushes == 1
    assert len(server.stats.convergence_seconds) == count
    assert server.stats.pushes["CDS"] == 2 * count


class ContextEchoGenerator:
    """Builds one cluster named after the push context: proves the context reaches generators."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def generate(self, conn, watched, push):
        self.seen.append((conn.node_id, push.context))
        name = f"ctx-{push.context}"
        return [Resource(name, cluster(name))]


@bounded(10)
async def test_hooks_prepare_needs_push_and_connection_callbacks(xds):
    connected, disconnected = [], []
    generator = ContextEchoGenerator()
    server = await xds.server(
        {T.CLUSTER: generator},
        debounce=DebounceOptions(quiet=0.01),
        prepare=lambda req: replace(req, context=f"v{len(generator.seen)}"),
        needs_push=lambda info, req: info.metadata.get("SKIP") != "yes",
        on_connect=lambda info: connected.append(info.node_id),
        on_disconnect=lambda info: disconnected.append(info.node_id),
    )
    await server.push_now(PushRequest())  # startup push: sets the initial context
    pushed = await xds.client(server, node(1), {T.CLUSTER: None})
    skipped = await xds.client(server, node(2), {T.CLUSTER: None}, metadata={"SKIP": "yes"})
    for c in (pushed, skipped):
        await c.wait_for(lambda c: bool(c.names(T.CLUSTER)))
    initial = pushed.names(T.CLUSTER)
    assert initial == skipped.names(T.CLUSTER) and initial == {"ctx-v0"}

    server.config_update(PushRequest())
    await pushed.wait_for(lambda c: c.names(T.CLUSTER) != initial)
    await server.wait_idle()
    assert skipped.names(T.CLUSTER) == initial
    assert sorted(connected) == [node(1), node(2)]
    await skipped.stop()
    await eventually(lambda: disconnected == [node(2)] and server.stats.connections == 1)


@bounded(10)
async def test_clients_can_share_one_channel(xds):
    server = await xds.server({T.CLUSTER: StaticGenerator([cluster("a")])})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        clients = [
            await xds.client(server, node(i), {T.CLUSTER: None}, delta=i % 2 == 1, channel=channel)
            for i in range(20)
        ]
        await asyncio.gather(*(c.wait_for(lambda c: c.names(T.CLUSTER) == {"a"}) for c in clients))
        await eventually(lambda: synced(server, 20))
    finally:
        for c in xds.clients:
            await c.stop()
        await channel.close()
