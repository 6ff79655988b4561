"""In-process CPU cost of one request through the sidecar's HTTP path (not a test).

The worker's real objects (listener manager, connection manager, peer metadata exchange,
fault and CORS filters, router, cluster manager, HTTP/1.1 pool and codecs) compiled from the
same sidecar-like config as bench/static_xds.py serves (``outbound``: the default outbound
route with Istio's retry policy; ``inbound``: the default inbound route), driven
synchronously through in-memory transports: a keep-alive request goes into the downstream
codec, comes out of the upstream connection, a 1 KiB response goes back in and comes out
downstream. As between two sidecars, the peer's ``x-envoy-peer-metadata`` headers come with
the response (outbound) or the request (inbound). No sockets, no event
loop wake-ups: what is measured is the Python work per request and hop, which is what the
proxy adds on top of a bare relay (bench/dataplane.py measures the real thing).

    .venv/bin/python bench/proxy_path.py [--requests 5000] [--rounds 20] [--idle-gaps 0,1,10]

Prints the best and median microseconds of CPU (``time.process_time``) per request for each
kind, and the process's RSS. ``--packages pistio,pistio_old`` compares versions in one process
(batches interleaved, so a busy machine slows both alike): make ``pistio_old`` a copy of an
older ``pistio/`` tree with its ``pistio`` imports renamed, on ``PYTHONPATH``.
``--idle-gaps`` times single requests after the process slept that long: on a machine where
the caches go cold while a proxy waits (a VM between requests at 1000 rps), that, not the
CPU per request under load, is what a request's added latency is made of.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))
sys.path.append(str(ROOT / "bench"))

import static_xds  # noqa: E402
import uvloop  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402

from pistio.pilot.networking.route_translation import (  # noqa: E402
    build_default_inbound_route,
    build_default_outbound_route,
)
from tests.unit.proxy.http_fixtures import (  # noqa: E402
    eds_cluster,
    free_port,
    load_assignment,
    route_config,
)

BODY = b"x" * 1024


def node_metadata(app: str, ip: str) -> dict[str, Any]:
    """A bench pod's sidecar metadata, as the injector gives it."""
    return {
        "NAME": f"{app}-nl84dz6s8h-v6lm2", "NAMESPACE": "bench", "WORKLOAD_NAME": app,
        "SERVICE_ACCOUNT": "default", "CLUSTER_ID": "Kubernetes", "MESH_ID": "cluster.local",
        "APP_CONTAINERS": app, "INSTANCE_IPS": ip, "INTERCEPTION_MODE": "REDIRECT",
        "LABELS": {"app": app, "pod-template-hash": "nl84dz6s8h",
                   "security.istio.io/tlsMode": "istio"},
    }


def node_id(app: str, ip: str) -> str:
    return f"sidecar~{ip}~{app}-nl84dz6s8h-v6lm2.bench~bench.svc.cluster.local"


def peer_headers(pkg: str, app: str, ip: str) -> bytes:
    """The exchange headers a sidecar of ``app`` sends."""
    meta = importlib.import_module(f"{pkg}.proxy.telemetry.peer_metadata")
    value = meta.encode_peer_metadata(node_metadata(app, ip))
    return (b"x-envoy-peer-metadata-id: %s\r\nx-envoy-peer-metadata: %s\r\n"
            % (node_id(app, ip).encode(), value))


class MemoryTransport:
    """Just enough of a uvloop transport for the codecs."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def take(self) -> bytes:
        out = b"".join(self.written)
        self.written.clear()
        return out

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close


def _nothing() -> None:
    pass


def pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


class Path1:
    """One hop's data path built from package ``pkg`` (``pistio``, or a renamed copy of
    another version of it, to compare two versions in one process)."""

    def __init__(self, pkg: str, kind: str) -> None:
        self.pkg = pkg
        self.kind = kind

    def _m(self, name: str) -> Any:
        return importlib.import_module(f"{self.pkg}.{name}")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        m = self._m
        T = m("xds.types")
        # This hop is the client's sidecar (outbound) or the server's (inbound).
        client, server = ("client", "10.248.0.5"), ("server", "10.248.0.2")
        own, peer = (client, server) if self.kind == "outbound" else (server, client)
        m("proxy.telemetry.peer_metadata").set_local_node(node_id(*own), node_metadata(*own))
        extra = peer_headers(self.pkg, *peer)
        self.holder = m("proxy.runtime.snapshot").SnapshotHolder()
        self.store = m("proxy.stats.store").StatsStore()
        self.clusters = m("proxy.runtime.cluster_manager").ClusterManager(loop=loop,
                                                                          store=self.store)
        self.sweeper = m("proxy.http.timeouts").DeadlineSweeper(loop, 0.05)
        self.listeners = m("proxy.server.listener_manager").ListenerManager(
            loop, self.holder, self.clusters, self.store, self.sweeper)
        self.holder.subscribe(self.clusters.apply)
        self.holder.subscribe(self.listeners.apply)
        compiler = m("proxy.runtime.resource_compiler").ResourceCompiler()
        port = free_port()
        if self.kind == "outbound":
            route = build_default_outbound_route(static_xds.CLUSTER, "server:8080/*")
        else:
            route = build_default_inbound_route(static_xds.CLUSTER, "server:8080/*")
        listener = static_xds.listener(port, self.kind)
        rc = route_config("8080", [route])
        cluster = eds_cluster(static_xds.CLUSTER)
        cla = load_assignment(static_xds.CLUSTER, [9])
        snapshot = m("proxy.runtime.snapshot").build_snapshot(
            1,
            {cluster.name: compiler.compile(T.CLUSTER, cluster.name, pack(cluster))},
            {cla.cluster_name: compiler.compile(T.ENDPOINT, cla.cluster_name, pack(cla))},
            {listener.name: compiler.compile(T.LISTENER, listener.name, pack(listener))},
            {rc.name: compiler.compile(T.ROUTE, rc.name, pack(rc))},
        )
        self.holder.publish(snapshot)
        await self.listeners.wait_bound()

        runtime = next(iter(self.listeners.runtimes.values()))
        hcm = next(iter(runtime.managers.values()))
        runtime_cluster = self.clusters.get(static_xds.CLUSTER)
        host = runtime_cluster.lb.choose_host()
        pool = runtime_cluster.pools(loop).get((host.address, host.port))
        self.up_transport = MemoryTransport()
        self.upstream = m("proxy.http.http1_upstream").Http1ClientConnection(pool)
        self.upstream.connection_made(self.up_transport)
        pool.connections.add(self.upstream)
        pool.release(self.upstream)
        self.down_transport = MemoryTransport()
        info = m("proxy.access_log.stream_info").DownstreamConnectionInfo(
            ("127.0.0.1", port), ("127.0.0.1", 40000))
        protocol = hcm.connection(info)
        self.down_transport.protocol = protocol
        protocol.connection_made(self.down_transport)
        host = b"Host: 127.0.0.1:%d\r\n" % port
        response_head = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n"
                         % len(BODY))
        if self.kind == "outbound":
            self.request = b"GET / HTTP/1.1\r\n" + host + b"\r\n"
            self.response = response_head + extra + b"\r\n" + BODY
        else:
            self.request = b"GET / HTTP/1.1\r\n" + host + extra + b"\r\n"
            self.response = response_head + b"\r\n" + BODY
        # Complete exchanges are written when the loop's turn is over; this synchronous driver
        # ends the "turn" itself after each read (versions before deferred writes: no-op).
        try:
            self.turn_over = m("proxy.http.deferred_writes").deferred_writes(loop).flush_pending
        except ImportError:
            self.turn_over = _nothing
        self.run(2000)  # warm-up

    def run(self, n: int) -> float:
        """CPU microseconds per request over ``n`` requests."""
        down, up, upstream = self.down_transport, self.up_transport, self.upstream
        request, response = self.request, self.response
        turn_over = self.turn_over
        start = time.process_time()
        for _ in range(n):
            down.protocol.data_received(request)
            turn_over()
            if not up.written:
                raise RuntimeError("the request did not reach the upstream")
            up.written.clear()
            upstream.data_received(response)
            turn_over()
            if not down.written or up.closed or down.closed:
                raise RuntimeError("no response downstream, or a connection was closed")
            down.written.clear()
        return (time.process_time() - start) / n * 1e6

    def after_idle(self, gap_s: float, samples: int) -> list[float]:
        """Wall microseconds of single requests, each after ``gap_s`` seconds asleep: what
        a request costs when the proxy's caches have gone cold (a mesh at low load)."""
        out = []
        for _ in range(samples):
            if gap_s:
                time.sleep(gap_s)
            start = time.perf_counter()
            self.run(1)
            out.append((time.perf_counter() - start) * 1e6)
        return sorted(out)

    async def close(self) -> None:
        self.listeners.close()
        self.clusters.close()
        self.sweeper.close()
        await asyncio.sleep(0)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=20, help="batches per path")
    parser.add_argument("--kinds", default="outbound,inbound")
    parser.add_argument("--gc", choices=("default", "worker"), default="default",
                        help="worker: the GC settings of a proxy worker (tune_gc)")
    parser.add_argument("--packages", default="pistio",
                        help="comma-separated packages to compare, batches interleaved (a "
                             "renamed copy of another version must be importable)")
    parser.add_argument("--idle-gaps", default="",
                        help="comma-separated milliseconds: also time single requests each "
                             "after that long asleep (300 samples per gap), e.g. 0,1,10")
    args = parser.parse_args()
    paths = [Path1(pkg, kind) for kind in args.kinds.split(",")
             for pkg in args.packages.split(",")]
    for p in paths:
        await p.start()
    if args.gc == "worker":
        importlib.import_module("pistio.proxy.runtime.data_plane").tune_gc()
    gc_time = [0.0, 0, 0.0]  # seconds, collections, start

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[2] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[2]
            gc_time[1] += 1

    results: dict[Path1, list[float]] = {p: [] for p in paths}
    gc.callbacks.append(on_gc)
    try:
        for _ in range(args.rounds):
            for p in paths:
                results[p].append(p.run(args.requests))
    finally:
        gc.callbacks.remove(on_gc)
        for p in paths:
            await p.close()
    total = args.rounds * args.requests * len(paths)
    print(f"GC ({args.gc}): {gc_time[1]} collections, {gc_time[0] / total * 1e6:.2f} µs per "
          f"request")
    for p, us in results.items():
        print(f"{p.kind:9} {p.pkg:14} µs CPU per request: best {min(us):6.2f}  median "
              f"{statistics.median(us):6.2f}  ({args.rounds} x {args.requests})")
    print(f"RSS {rss_mb():.1f} MB")
    if args.idle_gaps:
        for kind in args.kinds.split(","):
            p = Path1(args.packages.split(",")[0], kind)
            await p.start()
            for gap in (float(g) for g in args.idle_gaps.split(",")):
                us = p.after_idle(gap / 1000, 300)
                print(f"{kind:9} after {gap:4g} ms idle: one request p50 {us[150]:7.1f} µs  "
                      f"p90 {us[270]:7.1f} µs (wall)")
            await p.close()


if __name__ == "__main__":
    uvloop.run(main())
