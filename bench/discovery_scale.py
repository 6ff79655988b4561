"""Control-plane scale benchmark: N services, M simulated sidecars over gRPC ADS on loopback.

Starts ``pistio discovery`` on a generated config directory, connects M sidecars (delta xDS,
as Istio's proxies use by default) from a separate process, and measures:

- the initial full push: from the first connection to every sidecar holding clusters,
  endpoints, listeners and routes;
- a VirtualService change: from the file write to each sidecar's new route configuration
  (p50/p99; each sidecar ACKs as it receives);
- discovery's peak RSS and CPU seconds.

Nothing here is a timed test: it prints figures. Traffic stays on 127.0.0.1; the pod addresses
in the generated config are data only, never contacted.

    .venv/bin/python bench/discovery_scale.py --services 1000 --sidecars 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
NAMESPACES = 10
PORT = 8080


# --- the generated mesh ----------------------------------------------------------------------


def pod_ip(i: int) -> str:
    return f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"


def write_config(root: Path, services: int, sidecars: int) -> list[tuple[str, str, str]]:
    """Services spread over namespaces, sidecars spread over services; returns the pods."""
    docs: list[str] = []
    pods: list[tuple[str, str, str]] = []
    for n in range(NAMESPACES):
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{n}\n")
    for s in range(services):
        ns = f"bench-{s % NAMESPACES}"
        docs.append(
            f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: {ns}}}
spec:
  clusterIP: 10.96.{s // 256}.{s % 256}
  selector: {{app: svc-{s}}}
  ports:
  - {{name: http, port: {PORT}, targetPort: {PORT}}}
"""
        )
    for p in range(sidecars):
        s = p % services
        ns = f"bench-{s % NAMESPACES}"
        name = f"svc-{s}-{p // services}"
        ip = pod_ip(p)
        pods.append((name, ns, ip))
        docs.append(
            f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: svc-{s}, version: v1, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: default
  containers:
  - {{name: app, image: bench}}
status:
  phase: Running
  podIP: {ip}
"""
        )
    (root / "mesh.yaml").write_text("---\n".join(docs))
    write_virtual_service(root, weight=100)
    return pods


def write_virtual_service(root: Path, weight: int) -> None:
    """A VirtualService on svc-0 that every sidecar's port-8080 route configuration carries."""
    tmp = root / ".vs.tmp"
    tmp.write_text(
        f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-0, namespace: bench-0}}
spec:
  hosts: [svc-0.bench-0.svc.cluster.local]
  http:
  - route:
    - destination: {{host: svc-0.bench-0.svc.cluster.local}}
      weight: {weight}
    - destination: {{host: svc-1.bench-1.svc.cluster.local}}
      weight: {100 - weight}
"""
    )
    tmp.rename(root / "vs.yaml")


# --- simulated sidecars ------------------------------------------------------------------------


@dataclass
class Sidecar:
    node_id: str
    namespace: str
    got: dict[str, float] = field(default_factory=dict)  # type → first response time
    rds_times: list[float] = field(default_factory=list)  # every RDS response time
    clusters: int = 0
    error: str = ""  # how the last failed stream ended
    failures: int = 0  # streams that failed (each followed by a new one)


def _node(sc: Sidecar, ip: str, pod: str) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update({"NAMESPACE": sc.namespace, "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.24.0",
                 "LABELS": {"app": pod.rsplit("-", 1)[0]}, "INSTANCE_IPS": ip})
    return base_pb2.Node(id=sc.node_id, cluster=f"{pod}.{sc.namespace}", metadata=meta)


def _route_names(resources: list[discovery_pb2.Resource]) -> set[str]:
    names: set[str] = set()
    for r in resources:
        lis = listener_pb2.Listener()
        r.resource.Unpack(lis)
        for chain in lis.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
    return names


async def run_sidecar(channel: grpc.aio.Channel, sc: Sidecar, ip: str, pod: str, stop: asyncio.Event) -> None:
    """One sidecar: like Envoy, it opens a new stream (from scratch) when one fails."""
    while not stop.is_set():
        try:
            await _sidecar_stream(channel, sc, ip, pod, stop)
            return
        except grpc.aio.AioRpcError as err:
            if stop.is_set():
                return
            sc.error = f"{err.code().name}: {err.details()}"
            sc.failures += 1
            await asyncio.sleep(0.2)


async def _sidecar_stream(channel: grpc.aio.Channel, sc: Sidecar, ip: str, pod: str, stop: asyncio.Event) -> None:
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
    node = _node(sc, ip, pod)
    await queue.put(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CDS))
    await queue.put(discovery_pb2.DeltaDiscoveryRequest(type_url=LDS))

    async def requests():
        while True:
            item = await queue.get()
            if item is None:
                return
            yield item

    call = stub.DeltaAggregatedResources(requests())
    eds_names: set[str] = set()
    rds_names: set[str] = set()
    try:
        async for resp in call:
            now = time.monotonic()
            sc.got.setdefault(resp.type_url, now)
            await queue.put(discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
            if resp.type_url == CDS:
                sc.clusters = max(sc.clusters, len(resp.resources))
                new = {r.name for r in resp.resources if r.name.startswith("outbound|")} - eds_names
                if new:
                    eds_names |= new
                    await queue.put(discovery_pb2.DeltaDiscoveryRequest(type_url=EDS, resource_names_subscribe=sorted(new)))
            elif resp.type_url == LDS:
                new = _route_names(list(resp.resources)) - rds_names
                if new:
                    rds_names |= new
                    await queue.put(discovery_pb2.DeltaDiscoveryRequest(type_url=RDS, resource_names_subscribe=sorted(new)))
            elif resp.type_url == RDS:
                sc.rds_times.append(now)
            if stop.is_set():
                break
    finally:
        await queue.put(None)
        call.cancel()


async def run_clients(target: str, pods: list[tuple[str, str, str]], config_dir: Path, out: Path,
                      settle: float, timeout: float) -> None:
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])
                for _ in range(max(1, len(pods) // 100))]
    stop = asyncio.Event()
    sidecars = [Sidecar(f"sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local", ns) for name, ns, ip in pods]
    start = time.monotonic()
    tasks = [asyncio.create_task(run_sidecar(channels[i % len(channels)], sc, pods[i][2], pods[i][0], stop))
             for i, sc in enumerate(sidecars)]

    def complete(sc: Sidecar) -> bool:
        return all(t in sc.got for t in (CDS, EDS, LDS, RDS))

    deadline = start + timeout
    while time.monotonic() < deadline and not all(complete(s) for s in sidecars):
        await asyncio.sleep(0.05)
    synced = [s for s in sidecars if complete(s)]
    initial = [max(s.got.values()) - start for s in synced]
    await asyncio.sleep(settle)  # let ACKs land and any follow-up pushes finish

    before = {id(s): len(s.rds_times) for s in sidecars}
    changed_at = time.monotonic()
    write_virtual_service(config_dir, weight=90)
    deadline = changed_at + timeout
    while time.monotonic() < deadline and not all(len(s.rds_times) > before[id(s)] for s in synced):
        await asyncio.sleep(0.02)
    change = [s.rds_times[before[id(s)]] - changed_at for s in synced if len(s.rds_times) > before[id(s)]]
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    out.write_text(json.dumps({
        "sidecars": len(sidecars),
        "synced": len(synced),
        "clusters_per_sidecar": statistics.median([s.clusters for s in synced]) if synced else 0,
        "initial_all_s": max(initial) if initial else None,
        "initial_p50_s": statistics.median(initial) if initial else None,
        "change_received": len(change),
        "change_p50_s": statistics.median(change) if change else None,
        "change_p99_s": sorted(change)[int(len(change) * 0.99) - 1] if change else None,
        "change_max_s": max(change) if change else None,
        "errors": sorted({s.error for s in sidecars if s.error})[:5],
        "failed": sum(s.failures for s in sidecars),
    }))


# --- the discovery process -------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds and peak RSS (bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--sidecars", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=300.0, help="bound for each phase, seconds")
    ap.add_argument("--discovery-log", metavar="FILE", help="discovery's log (level info) here")
    ap.add_argument("--py-spy", metavar="FILE",
                    help="sample discovery with py-spy into FILE (collapsed stacks)")
    ap.add_argument("--client", nargs=3, metavar=("TARGET", "DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.client:  # the client side, in its own process
        target, config_dir, out = args.client
        pods = json.loads((Path(config_dir).parent / "pods.json").read_text())
        asyncio.run(run_clients(target, pods, Path(config_dir), Path(out), settle=2.0, timeout=args.timeout))
        return

    with tempfile.TemporaryDirectory(prefix="pistio-bench-") as tmp:
        root = Path(tmp)
        config_dir = root / "config"
        config_dir.mkdir()
        pods = write_config(config_dir, args.services, args.sidecars)
        (root / "pods.json").write_text(json.dumps(pods))  # beside, not in, the config
        ready = root / "ready.json"
        pistio = [sys.executable, "-m", "pistio.cli"]
        log = open(args.discovery_log, "wb") if args.discovery_log else subprocess.DEVNULL  # noqa: SIM115
        disc = subprocess.Popen(
            [*pistio, "discovery", "--config-dir", str(config_dir), "--grpc-addr", "127.0.0.1:0",
             "--http-addr", "127.0.0.1:0", "--ready-file", str(ready),
             "--log-level", "info" if args.discovery_log else "warning"],
            stdout=log, stderr=log,
        )
        spy = None
        try:
            deadline = time.monotonic() + args.timeout
            while not ready.exists():
                if disc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("discovery did not start")
                time.sleep(0.1)
            info = json.loads(ready.read_text())
            target = info["grpc_address"]
            cpu_start, _ = proc_stats(disc.pid)
            if args.py_spy:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(disc.pid), "--format", "raw",
                                        "--rate", "50", "-o", args.py_spy],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = root / "clients.json"
            t0 = time.monotonic()
            client_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, __file__, "--timeout", str(args.timeout),
                            "--client", target, str(config_dir), str(out)], check=True,
                           timeout=args.timeout * 3)
            wall = time.monotonic() - t0
            client_cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            client_cpu = (client_cpu1.ru_utime + client_cpu1.ru_stime
                          - client_cpu0.ru_utime - client_cpu0.ru_stime)
            cpu_end, hwm = proc_stats(disc.pid)
            res = json.loads(out.read_text())
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            disc.send_signal(signal.SIGTERM)
            try:
                disc.wait(10)
            except subprocess.TimeoutExpired:
                disc.kill()
                disc.wait()

    print(f"pistio discovery: {args.services} services, {args.sidecars} sidecars (delta ADS, loopback)")
    print(f"  sidecars fully synced:        {res['synced']}/{res['sidecars']} "
          f"({res['clusters_per_sidecar']:.0f} clusters each)")
    print(f"  initial full push:            {res['initial_all_s']:.2f} s to the last sidecar "
          f"(p50 {res['initial_p50_s']:.2f} s)")
    if res["change_p50_s"] is not None:
        print(f"  VirtualService change → RDS:  p50 {res['change_p50_s'] * 1000:.0f} ms, "
              f"p99 {res['change_p99_s'] * 1000:.0f} ms, max {res['change_max_s'] * 1000:.0f} ms "
              f"({res['change_received']} sidecars)")
    print(f"  discovery CPU:                {cpu_end - cpu_start:.1f} s over {wall:.1f} s of run")
    print(f"  discovery peak RSS:           {hwm / 2**20:.0f} MiB")
    print(f"  client (all sidecars) CPU:    {client_cpu:.1f} s")
    if res["failed"]:
        print(f"  sidecar streams re-opened:    {res['failed']} after errors: {'; '.join(res['errors'])}")


if __name__ == "__main__":
    main()
