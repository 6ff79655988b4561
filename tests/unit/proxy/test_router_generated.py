"""Requests through what our control plane generates: Bookinfo's RDS route configuration
``9080`` and CDS clusters for productpage's sidecar (Pilot's builders, Istio YAML), served by
the real data path on 127.0.0.1. Only the endpoints are replaced by loopback test servers, and
the listener is a loopback one naming route configuration ``9080`` (a sidecar's own listeners
need the iptables capture)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, sidecar_proxy
from tests.unit.proxy.http_fixtures import Env, fetch, http_listener, load_assignment, proxy_env

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

EXTRA = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        x-chaos: {exact: "on"}
    fault:
      abort: {httpStatus: 555, percentage: {value: 100}}
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
"""


def outbound(subset: str, app: str) -> str:
    return f"outbound|9080|{subset}|{app}.default.svc.cluster.local"


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


async def test_generated_bookinfo_routes(env: Env) -> None:
    v1, v2, ratings, details_bad, details_good = await env.start(
        "reviews-v1", "reviews-v2", "ratings", "details-bad", "details-good")
    push = bookinfo_push(EXTRA)
    proxy = sidecar_proxy()
    routes = build_sidecar_outbound_route_config(push, proxy, "9080")
    clusters = build_clusters(push, proxy)
    endpoints = {
        outbound("v1", "reviews"): [v1.port],
        outbound("v2", "reviews"): [v2.port],
        outbound("v1", "ratings"): [ratings.port],
        outbound("", "details"): [details_bad.port, details_good.port],
    }
    assignments = [load_assignment(c.eds_cluster_config.service_name or c.name,
                                   endpoints.get(c.name, []))
                   for c in clusters if c.type == c.EDS]
    await env.proxy.apply([http_listener("gw", env.port, route_config_name="9080")],  # type: ignore
                          [routes], clusters, assignments)

    r = await fetch(env.port, "/reviews/0", host="reviews:9080")
    assert (r.status, r.json()["server"]) == (200, "reviews-v1")
    r = await fetch(env.port, "/reviews/0", host="reviews.default.svc.cluster.local:9080",
                    headers={"end-user": "jason"})
    assert (r.status, r.json()["server"]) == (200, "reviews-v2")

    r = await fetch(env.port, "/ratings/0", host="ratings:9080", headers={"x-chaos": "on"})
    assert (r.status, r.body) == (555, b"fault filter abort")
    assert (await fetch(env.port, "/ratings/0", host="ratings:9080")).status == 200

    # Istio's default retry policy (retriable-status-codes 503, previous_hosts) saves every
    # request from the failing details endpoint.
    for _ in range(6):
        r = await fetch(env.port, "/details/0", host="details:9080",
                        headers={"x-fail-on": "details-bad"})
        assert (r.status, r.json()["server"]) == (200, "details-good")
    # No timeout on Istio routes (Envoy's 15 s default is turned off).
    assert "x-envoy-expected-rq-timeout-ms" not in r.json()["headers"]
