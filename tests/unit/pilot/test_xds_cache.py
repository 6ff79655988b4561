"""The XdsCache: cached generator output equals the builders' output for every proxy, is
shared between proxies that differ only in irrelevant attributes, and differs where a
proxy's namespace, selector matches or source labels make it differ."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from pistio.pilot import xds_cache
from pistio.pilot.config_store import ConfigStore
from pistio.pilot.discovery import _load_generators
from pistio.pilot.model.proxy import Proxy, parse_node_id
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment
from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from pistio.xds import types as T
from pistio.xds.connection import ConnectionInfo
from pistio.xds.generator import Resource
from pistio.xds.push_request import PushRequest
from pistio.xds.wire import encode_response
from tests.unit.pilot.bookinfo_fixture import (
    DESTINATION_RULES_YAML,
    PODS,
    REVIEWS_VIRTUAL_SERVICE_YAML,
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    fqdn,
    parse_configs,
    sidecar_proxy,
)

ROUTE = "9080"

# ratings gets a connection pool for reviews' pods only.
SELECTOR_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-from-reviews, namespace: default}
spec:
  host: ratings
  workloadSelector:
    matchLabels: {app: reviews}
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 7}
"""

# Only reviews' pods are sent to details with a fault.
SOURCE_LABELS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details-for-reviews, namespace: default}
spec:
  hosts: [details]
  http:
  - match:
    - sourceLabels: {app: reviews}
    fault:
      abort: {httpStatus: 503, percentage: {value: 100}}
    route:
    - destination: {host: details}
  - route:
    - destination: {host: details}
"""


def other_namespace_proxy(ns: str = "other") -> Proxy:
    return parse_node_id(
        f"sidecar~10.244.9.9~client-0.{ns}~{ns}.svc.cluster.local",
        {"NAMESPACE": ns, "LABELS": {"app": "client"}},
    )


def twin(proxy: Proxy, ip: str, pod: str, labels: dict[str, str]) -> Proxy:
    """Another pod of the same namespace: different IP, name and labels."""
    return parse_node_id(
        f"sidecar~{ip}~{pod}.{proxy.namespace}~{proxy.namespace}.svc.cluster.local",
        {"NAMESPACE": proxy.namespace, "LABELS": labels},
    )


class Generated:
    """Everything the four generators give one proxy, by type then name."""

    def __init__(self, ctx: PushContext, proxy: Proxy) -> None:
        gens = _load_generators()
        push = PushRequest(full=True, context=ctx, version=2)
        conn = ConnectionInfo(conn_id=proxy.id, node_id=proxy.id, metadata=dict(proxy.metadata))
        conn.attributes["proxy"] = proxy
        self.cds = _by_name(gens[T.CLUSTER].generate(conn, None, push))
        eds_names = {n for n in self.cds if n.startswith("outbound|")} | {"outbound|1||nope"}
        self.eds = _by_name(gens[T.ENDPOINT].generate(conn, eds_names, push))
        self.lds = _by_name(gens[T.LISTENER].generate(conn, None, push))
        self.rds = _by_name(gens[T.ROUTE].generate(conn, {ROUTE}, push))


def _by_name(resources: list[Resource] | None) -> dict[str, Resource]:
    assert resources is not None
    out = {r.name: r for r in resources}
    assert len(out) == len(resources), "one resource per name"
    return out


def _bytes(msg) -> bytes:
    return msg.SerializeToString(deterministic=True)


def assert_matches_builders(ctx: PushContext, proxy: Proxy, got: Generated) -> None:
    """The cached output is exactly what the uncached builders give this proxy."""
    clusters = build_clusters(ctx, proxy)
    assert list(got.cds) == [c.name for c in clusters]
    for c in clusters:
        assert got.cds[c.name].serialized == _bytes(c), c.name
    for name, res in got.eds.items():
        assert res.serialized == _bytes(build_cluster_load_assignment(ctx, proxy, name)), name
    listeners = build_sidecar_listeners(ctx, proxy)
    assert list(got.lds) == [lst.name for lst in listeners]
    for lst in listeners:
        assert got.lds[lst.name].serialized == _bytes(lst), lst.name
    route = build_sidecar_outbound_route_config(ctx, proxy, ROUTE)
    assert got.rds[ROUTE].serialized == _bytes(route)


def test_cached_output_equals_builders_for_every_proxy():
    ctx = bookinfo_push(SELECTOR_DR + "---\n" + SOURCE_LABELS_VS)
    proxies = [sidecar_proxy(app, ip) for app, _, ip, _ in PODS]
    proxies += [other_namespace_proxy(), twin(proxies[0], "10.244.0.99", "pp-x", {"a": "b"})]
    for _ in range(2):  # the second round answers from the cache only
        for proxy in proxies:
            assert_matches_builders(ctx, proxy, Generated(ctx, proxy))
    cache = xds_cache.cache_of(ctx)
    assert cache.hits > 0


def test_irrelevant_attributes_share_resource_objects():
    ctx = bookinfo_push()
    a = sidecar_proxy("productpage")
    b = twin(a, "10.244.0.77", "curl-0", {"app": "curl", "team": "x"})
    ga, gb = Generated(ctx, a), Generated(ctx, b)
    outbound = [n for n in ga.cds if n.startswith("outbound|")]
    assert outbound
    for name in outbound:
        assert ga.cds[name] is gb.cds[name]
        assert ga.eds[name] is gb.eds[name]
    assert ga.rds[ROUTE] is gb.rds[ROUTE]
    assert ga.lds["0.0.0.0_9080"] is gb.lds["0.0.0.0_9080"]
    # Inbound config is the proxy's own.
    assert "inbound|9080||" in ga.cds and "inbound|9080||" not in gb.cds
    assert ga.lds["virtualInbound"] is not gb.lds["virtualInbound"]


def test_workload_selector_destination_rule_applies_to_matching_proxy_only():
    ctx = bookinfo_push(SELECTOR_DR)
    reviews = sidecar_proxy("reviews", None)
    details = sidecar_proxy("details")
    reviews_twin = twin(reviews, "10.244.0.66", "reviews-x", {"app": "reviews", "v": "9"})
    got = {p.id: Generated(ctx, p) for p in (reviews, details, reviews_twin)}
    name = f"outbound|9080||{fqdn('ratings')}"
    selected = got[reviews.id].cds[name]
    assert selected.message.circuit_breakers.thresholds[0].max_connections.value == 7
    assert got[details.id].cds[name].serialized != selected.serialized
    assert got[reviews_twin.id].cds[name] is selected  # same selector match, same object
    for p in (reviews, details, reviews_twin):
        assert_matches_builders(ctx, p, got[p.id])


def test_source_labels_split_route_configurations():
    ctx = bookinfo_push(SOURCE_LABELS_VS)
    reviews = sidecar_proxy("reviews", None)
    productpage = sidecar_proxy("productpage")
    reviews_v3 = sidecar_proxy("reviews", "10.244.0.14")
    got = {p.id: Generated(ctx, p) for p in (reviews, productpage, reviews_v3)}
    assert got[reviews.id].rds[ROUTE].serialized != got[productpage.id].rds[ROUTE].serialized
    assert got[reviews.id].rds[ROUTE] is got[reviews_v3.id].rds[ROUTE]
    for p in (reviews, productpage, reviews_v3):
        assert_matches_builders(ctx, p, got[p.id])


def test_namespaces_get_their_own_routes_but_share_endpoints():
    ctx = bookinfo_push()
    here, there = sidecar_proxy("productpage"), other_namespace_proxy()
    a, b = Generated(ctx, here), Generated(ctx, there)
    assert a.rds[ROUTE].serialized != b.rds[ROUTE].serialized  # short names: own namespace
    name = f"outbound|9080|v1|{fqdn('reviews')}"
    assert a.eds[name] is b.eds[name]
    assert_matches_builders(ctx, there, b)


def _contexts(first_extra: str, second_extra: str) -> tuple[PushContext, PushContext]:
    """Two push contexts sharing every object but the configs in the extras."""
    base = parse_configs(DESTINATION_RULES_YAML + "---\n" + REVIEWS_VIRTUAL_SERVICE_YAML)
    services, endpoints = bookinfo_services(), bookinfo_endpoints()

    def build(extra: str) -> PushContext:
        configs = base + (parse_configs(extra, "extra.yaml") if extra else [])
        return PushContext(configs, services, endpoints)

    return build(first_extra), build(second_extra)


def test_next_push_context_reuses_only_tables_whose_inputs_did_not_change():
    proxy = sidecar_proxy("productpage")
    first, second = _contexts("", SOURCE_LABELS_VS)  # a VirtualService added
    g1 = Generated(first, proxy)
    xds_cache.inherit(first, second)
    g2 = Generated(second, proxy)
    name = f"outbound|9080||{fqdn('ratings')}"
    assert g2.cds[name] is g1.cds[name]  # clusters do not read VirtualServices
    assert g2.eds[name] is g1.eds[name]
    assert g2.rds[ROUTE] is not g1.rds[ROUTE]  # routes do
    assert_matches_builders(second, proxy, g2)

    first, second = _contexts("", SELECTOR_DR)  # a DestinationRule added
    g1 = Generated(first, proxy)
    xds_cache.inherit(first, second)
    g2 = Generated(second, proxy)
    assert g2.cds[name] is not g1.cds[name]
    assert_matches_builders(second, proxy, g2)


def test_encoded_delta_response_parses_as_the_message():
    ctx = bookinfo_push()
    got = Generated(ctx, sidecar_proxy("productpage"))
    resources = list(got.cds.values())
    head = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="7", type_url=T.CLUSTER, nonce="n", removed_resources=["gone"]
    )
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(
        encode_response(head, [r.delta_field for r in resources])
    )
    expected = discovery_pb2.DeltaDiscoveryResponse()
    expected.CopyFrom(head)
    for r in resources:
        expected.resources.add(name=r.name, version=r.version, resource=r.any)
    assert parsed == expected
    sotw = discovery_pb2.DiscoveryResponse.FromString(
        encode_response(
            discovery_pb2.DiscoveryResponse(version_info="7"), [r.sotw_field for r in resources]
        )
    )
    assert list(sotw.resources) == [r.any for r in resources]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_store_watch_wakes_on_file_events_without_waiting_for_the_poll(tmp_path: Path):
    async def run() -> float:
        store = ConfigStore(tmp_path)
        store.reload()
        seen: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(store.watch(seen.put_nowait, interval=30.0))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        (tmp_path / "vs.yaml").write_text(SOURCE_LABELS_VS)
        keys = await asyncio.wait_for(seen.get(), 5.0)
        task.cancel()
        assert {k.kind for k in keys} == {"VirtualService"}
        return loop.time() - start

    assert asyncio.run(run()) < 2.0
