"""Runtime cluster state across config snapshots: what survives an update, what is drained."""

from __future__ import annotations

import dataclasses

from pistio.proxy.config.cluster_config import compile_cluster
from pistio.proxy.config.endpoints import compile_load_assignment
from pistio.proxy.runtime.cluster_manager import ClusterManager
from pistio.proxy.runtime.resource_compiler import CompiledCluster
from pistio.proxy.runtime.snapshot import build_snapshot
from pistio.xds.testing import cluster, endpoints


def reviews(outlier: bool = True, max_requests: int | None = None) -> CompiledCluster:
    c = cluster("reviews")
    if outlier:
        c.outlier_detection.consecutive_5xx.value = 2
    if max_requests is not None:
        c.circuit_breakers.thresholds.add().max_requests.value = max_requests
    return CompiledCluster(compile_cluster(c))


def snapshot(version: int, compiled: dict[str, CompiledCluster], ips: list[str]):
    cla = compile_load_assignment(endpoints("reviews", [(ip, 9080) for ip in ips]))
    return build_snapshot(version, compiled, {"reviews": cla}, {}, {})


def test_endpoint_changes_keep_host_state_counters_and_ejections():
    manager = ClusterManager()
    compiled = {"reviews": reviews()}
    manager.apply(snapshot(1, compiled, ["10.0.0.1", "10.0.0.2"]))
    runtime = manager.get("reviews")
    assert runtime is not None
    first = runtime.lb.hosts[0]
    first.active_requests = 3
    runtime.circuit_breakers.requests.try_acquire()
    for _ in range(2):
        runtime.outlier_detector.report_http_status(first, 503)  # type: ignore[union-attr]
    assert first.ejected

    manager.apply(snapshot(2, compiled, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    assert manager.get("reviews") is runtime  # same config: same runtime
    assert len(runtime.lb.hosts) == 3
    kept = next(h for h in runtime.lb.hosts if h.key == "10.0.0.1:9080")
    assert kept is first and kept.ejected and kept.active_requests == 3
    assert runtime.circuit_breakers.requests.count == 1
    assert runtime.outlier_detector.monitor(kept).ejections == 1  # type: ignore[union-attr]
    assert manager.version == 2


def test_changed_config_gets_a_new_runtime_and_the_old_one_drains():
    manager = ClusterManager()
    manager.apply(snapshot(1, {"reviews": reviews()}, ["10.0.0.1"]))
    old = manager.get("reviews")
    assert old is not None
    old.circuit_breakers.requests.try_acquire()  # a request in flight on the old config

    manager.apply(snapshot(2, {"reviews": reviews(max_requests=10)}, ["10.0.0.1"]))
    new = manager.get("reviews")
    assert new is not None and new is not old
    assert new.circuit_breakers.requests.limit == 10
    assert old.draining and manager.draining == [old]
    old.circuit_breakers.requests.release()  # the request finishes
    assert manager.sweep_draining() == 0

    manager.apply(build_snapshot(3, {}, {}, {}, {}))
    assert manager.get("reviews") is None
    assert new.draining and manager.draining == []  # idle: closed at once


def test_unchanged_snapshot_reuses_compiled_config_objects():
    compiled = reviews(outlier=False)
    a = snapshot(1, {"reviews": compiled}, ["10.0.0.1"])
    b = snapshot(2, {"reviews": dataclasses.replace(compiled)}, ["10.0.0.1"])
    manager = ClusterManager()
    manager.apply(a)
    runtime = manager.get("reviews")
    manager.apply(b)  # equal (not identical) config: still the same runtime
    assert manager.get("reviews") is runtime
