"""The proxy's xDS side against a real ``pistio discovery`` process: everything Pilot
generates for a Bookinfo-like config compiles and is ACKed, edits arrive as new snapshots,
the last snapshot survives the control plane going away, and the proxy resyncs when it comes
back; ``pistio proxy`` with two workers keeps them on the same snapshot.

NACKs with their exact text are covered against a fake control plane in
tests/unit/proxy/test_config_manager.py: Pilot emits nothing the proxy rejects today.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pistio.agent.config_dump import config_dump_json
from pistio.agent.config_manager import ConfigManager
from pistio.agent.worker_feed import WorkerFeed
from pistio.xds import types as T
from pistio.xds.client import AdsClient
from pistio.xds.testing import bounded
from tests.integration.test_discovery import (
    DESTINATION_RULE,
    SERVICES,
    VIRTUAL_SERVICE,
    pod,
    write,
)

pytestmark = pytest.mark.asyncio

NODE_ID = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
STATUS_TYPES = ("CDS", "LDS", "EDS", "RDS")


def bookinfo_config(config: Path) -> None:
    config.mkdir(parents=True, exist_ok=True)
    write(config / "services.yaml", SERVICES)
    write(config / "pods.yaml", "---".join([
        pod("productpage-v1", "productpage", "v1", "10.244.0.10"),
        pod("reviews-v1", "reviews", "v1", "10.244.0.12"),
        pod("reviews-v2", "reviews", "v2", "10.244.0.13"),
    ]))
    write(config / "reviews-dr.yaml", DESTINATION_RULE)
    write(config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v1", weight=100))


class DiscoveryProcess:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.config = base / "config"
        bookinfo_config(self.config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.grpc = self.http = ""

    def start(self, grpc_addr: str = "127.0.0.1:0") -> None:
        ready = self.base / "ready.json"
        ready.unlink(missing_ok=True)
        log = (self.base / "discovery.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "discovery", "--config-dir", str(self.config),
             "--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0", "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.base / "discovery.log").read_text())
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.grpc, self.http = info["grpc_address"], info["http_address"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def syncz(self, node_id: str = NODE_ID) -> dict:
        with urllib.request.urlopen(f"http://{self.http}/debug/syncz", timeout=5) as resp:
            rows = json.loads(resp.read())
        return next((r for r in rows if r["node_id"] == node_id), {})

    def statuses(self, node_id: str = NODE_ID) -> dict[str, str]:
        row = self.syncz(node_id)
        return {t: row["types"][t]["status"] for t in STATUS_TYPES} if row else {}


@contextmanager
def discovery_process(base: Path) -> Iterator[DiscoveryProcess]:
    d = DiscoveryProcess(base)
    try:
        d.start()
        yield d
    finally:
        d.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


def manager_for(d: DiscoveryProcess) -> ConfigManager:
    client = AdsClient(d.grpc, NODE_ID, metadata={"CLUSTER_ID": "Kubernetes"},
                       backoff_initial=0.05, backoff_max=0.5)
    return ConfigManager(client)


def reviews_cluster(m: ConfigManager) -> str:
    table = m.snapshot.route_tables["9080"]
    vh = table.select_virtual_host("reviews:9080")
    assert vh is not None
    return vh.routes[0].action.cluster  # type: ignore[union-attr]


def ready(m: ConfigManager) -> bool:
    return m.initialized and "9080" in m.snapshot.route_tables


@bounded(30)
async def test_compiles_and_acks_everything_then_follows_a_virtual_service_edit(tmp_path):
    with discovery_process(tmp_path) as d:
        manager = manager_for(d)
        await manager.start()
        try:
            await manager.wait_for(ready, timeout=10)
            snap = manager.snapshot
            assert {f"outbound|9080|v1|{REVIEWS}", f"outbound|9080|v2|{REVIEWS}",
                    "PassthroughCluster", "BlackHoleCluster", "inbound|9080||"} <= set(snap.clusters)
            assert {"virtualOutbound", "virtualInbound", "0.0.0.0_9080"} <= set(snap.listeners)
            v2 = snap.clusters[f"outbound|9080|v2|{REVIEWS}"].assignment
            assert [e.address_key for e in v2.endpoints] == ["10.244.0.13:9080"]  # type: ignore[union-attr]
            assert snap.inline_route_tables  # the inbound HCM's inline route_config
            assert reviews_cluster(manager) == f"outbound|9080|v1|{REVIEWS}"
            assert all(s.nacks == 0 for s in manager.status.values())
            await until(lambda: set(d.statuses().values()) == {"SYNCED"})
            dump = json.loads(config_dump_json(manager, include_eds=True))
            assert [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]] == [
                "BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump",
                "RoutesConfigDump", "EndpointsConfigDump", "SecretsConfigDump"]
            active = {c["cluster"]["name"] for c in dump["configs"][1]["dynamic_active_clusters"]}
            assert active == set(snap.clusters)
            assert dump["configs"][1]["version_info"] == manager.status[T.CLUSTER].version

            before = manager.snapshot
            write(d.config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v2", weight=100))
            await manager.wait_for(
                lambda m: reviews_cluster(m) == f"outbound|9080|v2|{REVIEWS}", timeout=5)
            assert manager.snapshot.version > before.version
            assert reviews_cluster_of(before) == f"outbound|9080|v1|{REVIEWS}"
            await until(lambda: set(d.statuses().values()) == {"SYNCED"})
        finally:
            await manager.stop()


def reviews_cluster_of(snapshot) -> str:
    vh = snapshot.route_tables["9080"].select_virtual_host("reviews:9080")
    return vh.routes[0].action.cluster


@bounded(40)
async def test_last_snapshot_serves_while_discovery_is_down_then_resyncs(tmp_path):
    d = DiscoveryProcess(tmp_path)
    d.start()
    manager = manager_for(d)
    try:
        await manager.start()
        await manager.wait_for(ready, timeout=10)
        snap = manager.snapshot
        port = d.grpc.rsplit(":", 1)[1]

        d.kill()
        await until(lambda: not manager.client.connected)
        await asyncio.sleep(0.5)  # a few reconnect attempts fail meanwhile
        assert manager.snapshot is snap  # the last good config keeps serving

        # The config changes while the control plane is away; on restart the proxy
        # reconnects (back-off) and resyncs.
        write(d.config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v2", weight=100))
        d.start(f"127.0.0.1:{port}")
        await manager.wait_for(
            lambda m: reviews_cluster(m) == f"outbound|9080|v2|{REVIEWS}", timeout=15)
        assert manager.client.connects >= 2
        await until(lambda: set(d.statuses().values()) == {"SYNCED"})
    finally:
        await manager.stop()
        d.stop()


@bounded(40)
async def test_two_workers_converge_on_the_agents_snapshot(tmp_path):
    with discovery_process(tmp_path) as d:
        manager = manager_for(d)
        feed = WorkerFeed(manager, 2)
        try:
            await feed.start()
            await manager.start()
            await manager.wait_for(ready, timeout=10)
            await feed.wait_converged(timeout=15)
            version = manager.snapshot.version
            assert feed.applied == [version, version]

            write(d.config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v2", weight=100))
            await manager.wait_for(lambda m: m.snapshot.version > version, timeout=5)
            await manager.wait_for(
                lambda m: reviews_cluster(m) == f"outbound|9080|v2|{REVIEWS}", timeout=5)
            await feed.wait_converged(timeout=10)
            assert feed.applied == [manager.snapshot.version] * 2
            assert all(not w.failed for w in feed.workers)
        finally:
            await manager.stop()
            await feed.stop()
        assert feed.workers == []


@bounded(60)
async def test_a_worker_that_dies_is_started_again_on_the_current_snapshot(tmp_path):
    with discovery_process(tmp_path) as d:
        manager = manager_for(d)
        feed = WorkerFeed(manager, 2)
        try:
            await feed.start()
            await manager.start()
            await manager.wait_for(ready, timeout=10)
            await feed.wait_converged(timeout=15)
            first, second = feed.workers
            first.process.kill()  # SIGKILL: no goodbye
            version = manager.snapshot.version

            async def replaced() -> bool:
                w = feed.workers[0]
                return w is not first and w.alive and w.applied == version

            for _ in range(300):
                if await replaced():
                    break
                await asyncio.sleep(0.05)
            assert await replaced(), "worker 0 was not started again on the current snapshot"
            assert first.process.returncode == -signal.SIGKILL  # reaped, no zombie
            assert feed.workers[1] is second and second.alive
            assert feed.workers[0].index == first.index

            # The new worker follows the next push like the others.
            write(d.config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v2", weight=100))
            await manager.wait_for(lambda m: m.snapshot.version > version, timeout=5)
            await feed.wait_converged(timeout=10)
            assert feed.applied == [manager.snapshot.version] * 2
        finally:
            await manager.stop()
            await feed.stop()
        assert feed.workers == []
        assert first.process.returncode is not None and second.process.returncode is not None


@bounded(40)
async def test_pistio_proxy_command_syncs_and_exits_on_sigterm(tmp_path):
    with discovery_process(tmp_path) as d:
        log_path = tmp_path / "proxy.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pistio.cli", "proxy", "sidecar",
                 "--discovery-address", d.grpc, "--concurrency", "2",
                 "--pod", "productpage-v1", "--namespace", "default", "--ip", "10.244.0.10",
                 # Any free ports: a fixed 15000/15090/15021 would collide with other runs.
                 "--admin-port", "0", "--prometheus-port", "0", "--health-port", "0"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            await until(lambda: set(d.statuses().values()) == {"SYNCED"}, timeout=20)
            row = d.syncz()
            assert row["proxy"] == "productpage-v1.default"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 10) == 0
            text = log_path.read_text()
            for kind in STATUS_TYPES:
                assert f"ACK {kind} version" in text, text
            assert "NACK" not in text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
