"""The proxy's xDS flow against a real ADS server (pistio.xds) serving static resources:
subscription order, warming, ACK/NACK with the last good config kept, snapshots, the worker
rebuild, config dumps and the node identity."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.agent.bootstrap import node_identity
from pistio.agent.config_dump import config_dump_json
from pistio.agent.config_manager import ConfigManager
from pistio.proxy.runtime.snapshot_receiver import SnapshotReceiver
from pistio.proxy.runtime.snapshot_wire import decode_update, encode_update, read_frame
from pistio.xds import types as T
from pistio.xds.client import AdsClient
from pistio.xds.push_request import PushRequest
from pistio.xds.testing import StaticGenerator, XdsHarness, bounded, cluster, endpoints, eventually

pytestmark = pytest.mark.asyncio

NODE_ID = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"


@pytest_asyncio.fixture
async def xds():
    harness = XdsHarness()
    try:
        yield harness
    finally:
        await harness.close()


def http_listener(name: str, port: int, route_name: str, fetch_timeout: float | None = None
                  ) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    if fetch_timeout is not None:
        hcm.rds.config_source.initial_fetch_timeout.FromMilliseconds(int(fetch_timeout * 1000))
    router = hcm.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.type_url = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    lis = listener_pb2.Listener(name=name)
    lis.address.socket_address.address = "0.0.0.0"
    lis.address.socket_address.port_value = port
    chain = lis.filter_chains.add()
    f = chain.filters.add(name="envoy.filters.network.http_connection_manager")
    f.typed_config.Pack(hcm)
    return lis


def route_to(name: str, cluster_name: str) -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster_name
    return rc


def eds_cluster(name: str, fetch_timeout: float | None = None):
    c = cluster(name)
    c.eds_cluster_config.eds_config.ads.SetInParent()
    if fetch_timeout is not None:
        c.eds_cluster_config.eds_config.initial_fetch_timeout.FromMilliseconds(
            int(fetch_timeout * 1000))
    return c


class Mesh:
    """One fake control plane: four static generators, and the manager under test."""

    def __init__(self, delta: bool = False) -> None:
        self.delta = delta
        self.cds = StaticGenerator([eds_cluster("reviews")])
        self.eds = StaticGenerator([endpoints("reviews", [("10.244.0.12", 9080)])])
        self.lds = StaticGenerator([http_listener("0.0.0.0_9080", 9080, "9080")])
        self.rds = StaticGenerator([route_to("9080", "reviews")])

    async def start(self, xds: XdsHarness) -> ConfigManager:
        self.server = await xds.server({T.CLUSTER: self.cds, T.ENDPOINT: self.eds,
                                        T.LISTENER: self.lds, T.ROUTE: self.rds})
        client = AdsClient(f"127.0.0.1:{self.server.port}", NODE_ID, delta=self.delta)
        xds.clients.append(client)
        self.manager = ConfigManager(client)
        await self.manager.start()
        return self.manager

    async def push(self) -> None:
        await self.server.push_now(PushRequest(reasons=frozenset({"config"})))

    def watch(self, type_url: str):
        [conn] = list(self.server.registry)
        return conn.watch(type_url)


def cluster_of(manager: ConfigManager, route_name: str = "9080") -> str:
    table = manager.snapshot.route_tables[route_name]
    return table.virtual_hosts[0].routes[0].action.cluster  # type: ignore[union-attr]


@bounded(10)
async def test_subscribes_in_envoy_order_warms_and_publishes_one_consistent_snapshot(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: m.initialized and "0.0.0.0_9080" in m.snapshot.listeners)
    snap = manager.snapshot
    assert set(snap.clusters) == {"reviews"}
    hosts = snap.clusters["reviews"].assignment.endpoints  # type: ignore[union-attr]
    assert [h.address_key for h in hosts] == ["10.244.0.12:9080"]
    assert set(snap.listeners) == {"0.0.0.0_9080"}
    assert snap.route_table("0.0.0.0_9080", 0, "9080") is snap.route_tables["9080"]
    # Follow-up subscriptions name exactly what the clusters and listeners reference.
    assert mesh.watch(T.ENDPOINT).names == {"reviews"}
    assert mesh.watch(T.ROUTE).names == {"9080"}
    types = (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)
    await eventually(lambda: all(mesh.watch(t).sync_status == "SYNCED" for t in types))


@bounded(10)
async def test_route_change_publishes_a_new_snapshot_and_old_snapshots_stay_intact(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "9080" in m.snapshot.route_tables)
    before = manager.snapshot
    mesh.cds.set(eds_cluster("ratings"))
    mesh.eds.set(endpoints("ratings", [("10.244.0.15", 9080)]))
    mesh.rds.set(route_to("9080", "ratings"))
    await mesh.push()
    # Routes do not wait for clusters (Envoy answers 503 NC meanwhile); the new cluster
    # becomes active once its endpoints arrive on the EDS subscription it triggered.
    await manager.wait_for(
        lambda m: cluster_of(m) == "ratings" and "ratings" in m.snapshot.clusters)
    after = manager.snapshot
    assert after.version > before.version
    assert mesh.watch(T.ENDPOINT).names == {"reviews", "ratings"}
    # What an in-flight request holds does not change under it.
    assert before.route_tables["9080"].virtual_hosts[0].routes[0].action.cluster == "reviews"


@bounded(10)
async def test_unsupported_field_is_nacked_precisely_and_the_last_good_config_stays(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "9080" in m.snapshot.route_tables)
    good = manager.snapshot
    good_version = manager.status[T.ROUTE].version
    await eventually(lambda: mesh.watch(T.ROUTE).version_acked == good_version)

    bad = route_to("9080", "reviews")
    bad.virtual_hosts[0].routes[0].route.rate_limits.add().stage.value = 1
    mesh.rds.set(bad)
    await mesh.push()
    expected = ("RouteConfiguration 9080: virtual_hosts[0].routes[0].route.rate_limits: "
                "field not supported by pistio")
    await manager.wait_for(lambda m: m.status[T.ROUTE].nacks == 1)
    assert manager.status[T.ROUTE].last_error == expected
    watch = mesh.watch(T.ROUTE)
    await eventually(lambda: watch.error == expected)
    assert watch.version_acked == good_version
    assert watch.sync_status == "STALE"
    assert manager.snapshot is good  # nothing was published

    dump = json.loads(config_dump_json(manager))
    [routes] = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")]
    [entry] = routes["dynamic_route_configs"]
    assert entry["error_state"]["details"] == expected
    assert entry["version_info"] == good_version  # the active one is still the good one

    mesh.rds.set(route_to("9080", "reviews"))  # fixed: accepted again, error cleared
    await mesh.push()
    await manager.wait_for(lambda m: m.status[T.ROUTE].last_error == "")
    assert "errorState" not in json.dumps(json.loads(config_dump_json(manager)))


@bounded(10)
async def test_a_rejected_response_is_rejected_whole(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "0.0.0.0_9080" in m.snapshot.listeners)
    # Two listeners on one address: Envoy refuses; the valid new listener is not applied
    # either.
    mesh.lds.set(http_listener("other", 9080, "9080"))
    mesh.lds.set(http_listener("0.0.0.0_9081", 9081, "9081"))
    await mesh.push()
    await manager.wait_for(lambda m: m.status[T.LISTENER].nacks == 1)
    assert manager.status[T.LISTENER].last_error == (
        "Listener other: address 0.0.0.0:9080 is already used by listener 0.0.0.0_9080")
    assert set(manager.listeners) == {"0.0.0.0_9080"}
    assert mesh.watch(T.ROUTE).names == {"9080"}


@bounded(10)
async def test_warming_waits_for_endpoints_and_routes_until_the_initial_fetch_timeout(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "0.0.0.0_9080" in m.snapshot.listeners)
    # A cluster whose endpoints never come, and a listener whose routes never come.
    mesh.cds.set(eds_cluster("lonely", fetch_timeout=0.3))
    mesh.lds.set(http_listener("0.0.0.0_9090", 9090, "9090", fetch_timeout=0.3))
    await mesh.push()
    await manager.wait_for(lambda m: "lonely" in m.clusters and "0.0.0.0_9090" in m.listeners)
    assert "lonely" not in manager.snapshot.clusters
    assert "0.0.0.0_9090" not in manager.snapshot.listeners
    dump = json.loads(config_dump_json(manager))
    [clusters] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    assert [c["cluster"]["name"] for c in clusters["dynamic_warming_clusters"]] == ["lonely"]
    await manager.wait_for(lambda m: "lonely" in m.snapshot.clusters
                           and "0.0.0.0_9090" in m.snapshot.listeners, timeout=3)
    assert manager.snapshot.clusters["lonely"].assignment.endpoints == ()  # type: ignore[union-attr]
    assert manager.snapshot.route_table("0.0.0.0_9090", 0, "9090") is None  # 404 NR


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
@bounded(10)
async def test_endpoint_update_without_cluster_change_and_removal(xds, delta):
    mesh = Mesh(delta)
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "reviews" in m.snapshot.clusters)
    first = manager.snapshot.clusters["reviews"]
    mesh.eds.set(endpoints("reviews", [("10.244.0.12", 9080), ("10.244.0.13", 9080)]))
    await mesh.push()
    await manager.wait_for(
        lambda m: len(m.snapshot.clusters["reviews"].assignment.endpoints) == 2)  # type: ignore[union-attr]
    assert manager.snapshot.clusters["reviews"].config is first.config  # compiled once
    mesh.cds.remove("reviews")
    await mesh.push()
    await manager.wait_for(lambda m: "reviews" not in m.snapshot.clusters)
    assert "reviews" not in manager.endpoints  # unsubscribed and dropped


@bounded(10)
async def test_a_worker_rebuilds_the_same_snapshot_from_the_forwarded_resources(xds):
    mesh = Mesh()
    manager = await mesh.start(xds)
    await manager.wait_for(lambda m: "9080" in m.snapshot.route_tables
                           and "0.0.0.0_9080" in m.snapshot.listeners)
    snap = manager.snapshot
    frame = encode_update(snap.version, manager.active_resources(), {}, snap.xds_versions)
    reader = asyncio.StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    kind, version, body = await read_frame(reader)  # type: ignore[misc]
    rebuilt = SnapshotReceiver().apply(version, decode_update(body))
    assert rebuilt.version == snap.version
    assert rebuilt.clusters == snap.clusters
    assert rebuilt.listeners == snap.listeners
    assert set(rebuilt.route_tables) == set(snap.route_tables)
    assert dict(rebuilt.xds_versions) == dict(snap.xds_versions)


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_node_identity_follows_pilot_agent():
    env = {
        "POD_NAME": "reviews-v1-5b8d", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.244.0.12",
        "SERVICE_ACCOUNT": "bookinfo-reviews", "ISTIO_META_CLUSTER_ID": "east",
        "ISTIO_META_WORKLOAD_NAME": "reviews-v1", "ISTIO_META_MESH_ID": "mesh1",
        "ISTIO_METAJSON_LABELS": '{"app": "reviews", "version": "v1", '
                                 '"istio-locality": "us-east1.us-east1-a"}',
        "ISTIO_META_DNS_CAPTURE": "true",
    }
    ident = node_identity("sidecar", env=env)
    assert ident.node_id == "sidecar~10.244.0.12~reviews-v1-5b8d.bookinfo~bookinfo.svc.cluster.local"
    meta = ident.metadata()
    assert meta["NAMESPACE"] == "bookinfo"
    assert meta["LABELS"]["version"] == "v1"
    assert meta["CLUSTER_ID"] == "east"
    assert meta["INSTANCE_IPS"] == "10.244.0.12"
    assert meta["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert meta["WORKLOAD_NAME"] == "reviews-v1"
    assert meta["INTERCEPTION_MODE"] == "REDIRECT"
    assert meta["DNS_CAPTURE"] == "true"
    node = ident.node()
    assert (node.locality.region, node.locality.zone) == ("us-east1", "us-east1-a")
    assert node.cluster == "reviews.bookinfo"  # Istio: <app label>.<namespace>
    gateway = node_identity("router", env={}, pod="gw", namespace="istio-system", ip="10.0.0.9")
    assert gateway.node_id.startswith("router~10.0.0.9~gw.istio-system~")
    with pytest.raises(ValueError):
        node_identity("ztunnel", env={})
