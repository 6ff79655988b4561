"""``pistio discovery`` as a real process: ADS clients over gRPC, config edits on disk, the debug
HTTP port, and the ``proxy-status`` / ``proxy-config`` commands against it.

The process binds ephemeral ports (``127.0.0.1:0``) and reports them in ``--ready-file``; it is
stopped at the end of the module whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from pistio.xds import types as T
from pistio.xds.client import AdsClient
from tests.integration.discovery_process import run_discovery

PRODUCTPAGE_ID = "sidecar~10.244.0.10~productpage-v1.default~default.svc.cluster.local"
GRPC_CLIENT_ID = "sidecar~10.244.0.20~grpc-client-7d9f.default~default.svc.cluster.local"
REVIEWS_HOST = "reviews.default.svc.cluster.local"

# Bookinfo's reviews and productpage, one pod per version (IPs as in tests/unit/pilot).
SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default, labels: {app: reviews}}
spec:
  clusterIP: 10.96.0.12
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default, labels: {app: productpage}}
spec:
  clusterIP: 10.96.0.10
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
"""

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{app: {app}, version: {version}}}
spec:
  containers: [{{name: app, image: {app}}}]
status: {{podIP: {ip}, phase: Running}}
"""

DESTINATION_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
      weight: {weight}
"""


def pod(name: str, app: str, version: str, ip: str) -> str:
    return POD.format(name=name, app=app, version=version, ip=ip)


def write(path: Path, text: str) -> None:
    # Write aside and rename, as editors and kubectl-like tools do: never half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class Discovery:
    config_dir: Path
    grpc: str
    http: str
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text()

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.http}{path}", timeout=5) as resp:
            return resp.read().decode()


def pistio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pistio.cli", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.fixture(scope="module")
def discovery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Discovery]:
    base = tmp_path_factory.mktemp("discovery")
    config = base / "config"
    config.mkdir()
    write(config / "services.yaml", SERVICES)
    write(
        config / "pods.yaml",
        "---".join(
            [
                pod("productpage-v1", "productpage", "v1", "10.244.0.10"),
                pod("reviews-v1", "reviews", "v1", "10.244.0.12"),
                pod("reviews-v2", "reviews", "v2", "10.244.0.13"),
            ]
        ),
    )
    write(config / "reviews-dr.yaml", DESTINATION_RULE)
    write(config / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v1", weight=100))
    with run_discovery(config, base) as info:
        yield Discovery(config, info["grpc_address"], info["http_address"],
                        base / "discovery.log")
    assert not (base / "ready.json").exists(), "a clean shutdown removes the ready file"


async def connect(d: Discovery, node_id: str, **metadata: str) -> AdsClient:
    client = AdsClient(d.grpc, node_id, metadata={"CLUSTER_ID": "Kubernetes", **metadata})
    await client.start()
    client.subscribe(T.CLUSTER)
    client.subscribe(T.LISTENER)
    await client.wait_for(lambda c: bool(c.names(T.CLUSTER)) and bool(c.names(T.LISTENER)))
    eds_clusters = [n for n in client.names(T.CLUSTER) if n.startswith("outbound|")]
    client.subscribe(T.ENDPOINT, eds_clusters)
    client.subscribe(T.ROUTE, ["9080"])
    await client.wait_for(lambda c: "9080" in c.names(T.ROUTE) and bool(c.names(T.ENDPOINT)))
    return client


def route_clusters(client: AdsClient) -> set[str]:
    rc = route_pb2.RouteConfiguration.FromString(client.resources(T.ROUTE)["9080"].value)
    return {
        r.route.cluster
        for vh in rc.virtual_hosts
        if vh.name.startswith(REVIEWS_HOST)
        for r in vh.routes
    }


def endpoint_ips(client: AdsClient, cluster: str) -> set[str]:
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(client.resources(T.ENDPOINT)[cluster].value)
    return {
        lb.endpoint.address.socket_address.address
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
    }


def columns(output: str) -> list[list[str]]:
    """Table rows split on runs of 2+ spaces (cells such as "SERVICE FQDN" hold one)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


async def wait_until(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_serves_config_and_debug_views(discovery: Discovery) -> None:
    client = await connect(discovery, PRODUCTPAGE_ID, ISTIO_VERSION="1.24.0")
    try:
        clusters = client.names(T.CLUSTER)
        assert {
            f"outbound|9080||{REVIEWS_HOST}",
            f"outbound|9080|v1|{REVIEWS_HOST}",
            f"outbound|9080|v2|{REVIEWS_HOST}",
            "outbound|9080||productpage.default.svc.cluster.local",
            "inbound|9080||",
            "PassthroughCluster",
            "BlackHoleCluster",
        } <= clusters
        assert {"virtualOutbound", "virtualInbound", "0.0.0.0_9080"} <= client.names(T.LISTENER)
        assert route_clusters(client) == {f"outbound|9080|v1|{REVIEWS_HOST}"}
        assert endpoint_ips(client, f"outbound|9080|v2|{REVIEWS_HOST}") == {"10.244.0.13"}
        await asyncio.sleep(0.2)  # the last ACKs reach the server

        status = await asyncio.to_thread(
            pistio, "proxy-status", "--discovery-address", discovery.http
        )
        assert status.returncode == 0, status.stderr
        rows = columns(status.stdout)
        assert rows[0] == [
            "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"
        ]  # fmt: skip
        assert [
            "productpage-v1.default", "Kubernetes", "SYNCED", "SYNCED", "SYNCED", "SYNCED",
            "IGNORED", "pistiod", "1.24.0",
        ] in rows  # fmt: skip

        pc = await asyncio.to_thread(
            pistio, "proxy-config", "clusters", "productpage-v1.default",
            "--discovery-address", discovery.http,
        )  # fmt: skip
        assert pc.returncode == 0, pc.stderr
        rows = columns(pc.stdout)
        assert rows[0] == [
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE",
        ]
        assert [REVIEWS_HOST, "9080", "v1", "outbound", "EDS", "reviews.default"] in rows
        assert ["PassthroughCluster", "-", "-", "-", "ORIGINAL_DST"] in rows

        as_json = await asyncio.to_thread(
            pistio, "proxy-config", "cluster", "productpage-v1", "-n", "default", "--port", "9080",
            "--subset", "v2", "-o", "json", "--discovery-address", discovery.http,
        )  # fmt: skip
        assert as_json.returncode == 0, as_json.stderr
        assert [c["name"] for c in json.loads(as_json.stdout)] == [
            f"outbound|9080|v2|{REVIEWS_HOST}"
        ]

        def proxy_config(*args: str) -> list[str]:
            result = pistio("proxy-config", *args, "--discovery-address", discovery.http)
            assert result.returncode == 0, result.stderr
            return [" ".join(line.split()) for line in result.stdout.splitlines()]

        listeners = await asyncio.to_thread(proxy_config, "listeners", "productpage-v1.default")
        assert listeners[0] == "ADDRESSES PORT MATCH DESTINATION"
        assert "0.0.0.0 15001 ALL PassthroughCluster" in listeners
        assert any(x.startswith("0.0.0.0 9080 ") and x.endswith(" Route: 9080") for x in listeners)
        routes = await asyncio.to_thread(proxy_config, "routes", "productpage-v1.default")
        assert routes[0] == "NAME VHOST NAME DOMAINS MATCH VIRTUAL SERVICE"
        assert (
            f"9080 {REVIEWS_HOST}:9080 reviews, reviews.default + 1 more... /* reviews.default"
            in routes
        )
        endpoints = await asyncio.to_thread(
            proxy_config, "endpoints", "productpage-v1.default", "--cluster",
            f"outbound|9080|v1|{REVIEWS_HOST}",
        )  # fmt: skip
        assert endpoints == [
            "ENDPOINT STATUS OUTLIER CHECK CLUSTER",
            f"10.244.0.12:9080 HEALTHY OK outbound|9080|v1|{REVIEWS_HOST}",
        ]
        everything = await asyncio.to_thread(
            proxy_config, "all", "productpage-v1.default", "-o", "json"
        )
        assert len(json.loads("\n".join(everything))["configs"]) == 4

        syncz = json.loads(discovery.get("/debug/syncz"))
        [row] = [r for r in syncz if r["node_id"] == PRODUCTPAGE_ID]
        assert row["proxy"] == "productpage-v1.default"
        assert row["cluster_sent"] == row["cluster_acked"] != ""
        assert row["types"]["RDS"]["status"] == "SYNCED"

        dump = json.loads(discovery.get(f"/debug/config_dump?proxyID={PRODUCTPAGE_ID}"))
        types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
        assert types == [
            "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump", "EndpointsConfigDump"
        ]  # fmt: skip
        dumped = {c["cluster"]["name"] for c in dump["configs"][0]["dynamicActiveClusters"]}
        assert dumped == clusters

        metrics = discovery.get("/metrics")
        for name in (
            'pilot_xds_pushes{type="cds"}',
            "pilot_xds{",
            "pilot_proxy_convergence_time_bucket",
            "pilot_total_xds_rejects",
            "pilot_xds_push_time_bucket",
            "galley_validation_passed",
            "pistio_config_rejected_total",
        ):
            assert name in metrics, name
        assert re.search(r'^pilot_xds\{version="[^"]+"\} 1$', metrics, re.M)
        assert discovery.get("/ready") == "ready\n"
    finally:
        await client.stop()


@pytest.mark.asyncio
async def test_config_edits_reach_the_proxy(discovery: Discovery) -> None:
    client = await connect(discovery, PRODUCTPAGE_ID)
    try:
        assert route_clusters(client) == {f"outbound|9080|v1|{REVIEWS_HOST}"}
        rds_version = client.version(T.ROUTE)

        # A VirtualService edit: new routes within 2 s.
        started = time.monotonic()
        write(
            discovery.config_dir / "reviews-vs.yaml",
            VIRTUAL_SERVICE.format(subset="v2", weight=100),
        )
        await client.wait_for(lambda c: c.version(T.ROUTE) != rds_version, timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert route_clusters(client) == {f"outbound|9080|v2|{REVIEWS_HOST}"}

        # An invalid edit: rejected, logged, counted; the proxy keeps its config.
        rds_version = client.version(T.ROUTE)
        write(
            discovery.config_dir / "reviews-vs.yaml", VIRTUAL_SERVICE.format(subset="v1", weight=-1)
        )
        await wait_until(lambda: "rejected VirtualService default/reviews" in discovery.log())
        line = next(
            x
            for x in discovery.log().splitlines()
            if "rejected VirtualService default/reviews" in x
        )
        assert "\terror\t" in line
        assert "reviews-vs.yaml:2" in line and "spec.http[0].route[0].weight" in line
        await asyncio.sleep(0.4)  # a push, if one were (wrongly) triggered, would be here
        assert client.version(T.ROUTE) == rds_version
        assert route_clusters(client) == {f"outbound|9080|v2|{REVIEWS_HOST}"}
        metrics = discovery.get("/metrics")
        assert 'pistio_config_rejected_total{kind="VirtualService"} 1' in metrics
        assert re.search(
            r'^galley_validation_failed\{group="networking.istio.io",version="v1",'
            r'resource="virtualservices",reason="invalid_resource"\} 1$',
            metrics,
            re.M,
        )

        # A new pod of an existing service: endpoints only, so an EDS-only push.
        cds_version, lds_version = client.version(T.CLUSTER), client.version(T.LISTENER)
        cluster = f"outbound|9080||{REVIEWS_HOST}"
        assert endpoint_ips(client, cluster) == {"10.244.0.12", "10.244.0.13"}
        write(
            discovery.config_dir / "reviews-v3.yaml",
            pod("reviews-v3", "reviews", "v3", "10.244.0.14"),
        )
        await client.wait_for(lambda c: "10.244.0.14" in endpoint_ips(c, cluster), timeout=2.0)
        assert client.version(T.CLUSTER) == cds_version
        assert client.version(T.LISTENER) == lds_version
        push_status = json.loads(discovery.get("/debug/push_status"))
        assert push_status["edsPushes"] >= 1
    finally:
        await client.stop()


@pytest.mark.asyncio
async def test_proxyless_grpc_client_is_a_proxy(discovery: Discovery) -> None:
    client = AdsClient(
        discovery.grpc,
        GRPC_CLIENT_ID,
        metadata={"GENERATOR": "grpc", "CLUSTER_ID": "Kubernetes"},
    )
    await client.start()
    try:
        target = f"{REVIEWS_HOST}:9080"
        client.subscribe(T.LISTENER, [target])
        await client.wait_for(lambda c: target in c.names(T.LISTENER))
        await asyncio.sleep(0.2)
        status = await asyncio.to_thread(
            pistio,
            "proxy-status",
            "grpc-client-7d9f.default",
            "--discovery-address",
            discovery.http,
        )
        assert status.returncode == 0, status.stderr
        rows = columns(status.stdout)
        assert rows[1][:4] == ["grpc-client-7d9f.default", "Kubernetes", "NOT SENT", "SYNCED"]
    finally:
        await client.stop()


@pytest.mark.asyncio
async def test_non_istio_node_id_is_served_and_listed(discovery: Discovery) -> None:
    client = AdsClient(discovery.grpc, "envoy-edge-1", metadata={"NAMESPACE": "default"})
    await client.start()
    try:
        client.subscribe(T.CLUSTER)
        await client.wait_for(lambda c: "PassthroughCluster" in c.names(T.CLUSTER))
        await asyncio.sleep(0.2)
        status = await asyncio.to_thread(
            pistio, "proxy-status", "envoy-edge-1", "--discovery-address", discovery.http
        )
        assert status.returncode == 0, status.stderr
        assert columns(status.stdout)[1][:3] == ["envoy-edge-1", "Kubernetes", "SYNCED"]
        assert "invalid node id 'envoy-edge-1'" in discovery.log()
    finally:
        await client.stop()


@pytest.mark.asyncio
async def test_cli_errors_are_one_line(discovery: Discovery) -> None:
    unknown = await asyncio.to_thread(
        pistio, "proxy-config", "clusters", "nothere.default", "--discovery-address", discovery.http
    )
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        f"Error: proxy nothere.default is not connected to the discovery at {discovery.http}"
    ]
    # A port nothing listens on: bound and released.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
    down = await asyncio.to_thread(pistio, "proxy-status", "--discovery-address", free)
    assert down.returncode == 1
    [line] = down.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach discovery at {free}")


def test_missing_config_dir_fails_cleanly(tmp_path: Path) -> None:
    result = pistio("discovery", "--config-dir", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: config directory {tmp_path / 'nope'} does not exist"
