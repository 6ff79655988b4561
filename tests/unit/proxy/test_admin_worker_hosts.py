"""``/clusters`` shows the workers' own hosts: resolved DNS addresses and health flags from
active health checks and outlier detection travel with each worker's stats dump and replace
the agent's view of a cluster's hosts; flags set in any worker show."""

from __future__ import annotations

import json

from pistio.proxy.stats.snapshot import merge_dumps
from pistio.proxy.stats.store import StatsStore
from tests.unit.proxy.test_admin import REVIEWS, Harness, fetch, run_bounded


def _entry(address: str, flags: list[str], rq_active: int = 0) -> list:
    return [address, 9080, "reviews.example", flags, 1, 0, "us-east", "a", "", rq_active, 0]


def test_worker_hosts_merge_and_replace_the_agents_view() -> None:
    async def scenario() -> None:
        h = Harness()
        one, two = h.workers
        one.host_status = lambda: {REVIEWS: [_entry("10.244.0.12", [], 2),
                                             _entry("10.244.0.14", ["failed_active_hc"])]}
        two.host_status = lambda: {REVIEWS: [_entry("10.244.0.12", ["failed_outlier_check"], 1),
                                             _entry("10.244.0.14", ["failed_active_hc",
                                                                    "active_hc_timeout"])]}
        async with h as port:
            status, _, body = await fetch(port, "GET", "/clusters")
            assert status == 200
            p = f"{REVIEWS}::10.244.0.12:9080::"
            assert f"{p}health_flags::/failed_outlier_check\n" in body
            assert f"{p}rq_active::3\n" in body
            assert f"{p}hostname::reviews.example\n" in body
            q = f"{REVIEWS}::10.244.0.14:9080::"
            assert f"{q}health_flags::/failed_active_hc/active_hc_timeout\n" in body
            assert "10.244.0.13" not in body  # the agent's host list was replaced
            _, _, raw = await fetch(port, "GET", "/clusters?format=json")
            statuses = json.loads(raw)["cluster_statuses"][0]["host_statuses"]
            failed = [s["health_status"] for s in statuses
                      if s["address"]["socket_address"]["address"] == "10.244.0.14"][0]
            assert failed["failed_active_health_check"] and failed["active_hc_timeout"]

    run_bounded(scenario)


def test_dump_without_hosts_is_unchanged() -> None:
    store = StatsStore()
    assert "hosts" not in json.loads(store.dump())
    assert merge_dumps([store.dump()]).hosts == {}
