"""Data-plane benchmark: HTTP/1.1 through two sidecar hops, against direct and HAProxy.

Four measurements in one run, all on 127.0.0.1, 1 KiB response bodies, keep-alive:

1. direct: wrk → upstream;
2. pistio: wrk → relay A → relay B → upstream (``python -m pistio.proxy.http.relay``,
   ``--workers 1``, A pinned to core 0 and B to core 1);
3. haproxy: wrk → haproxy A → haproxy B → upstream (``nbthread 1``, http mode, keep-alive on
   both sides, same pinning), configured to do the sidecar's per-request work too: add
   x-request-id when absent, x-forwarded-proto, overwrite ``server``;
4. with ``--router``, pistio router: wrk → ``pistio proxy router`` A → router B → upstream,
   each one process (``--concurrency 1``: the agent serves as its only worker) fed by its own
   static ADS server (bench/static_xds.py): an
   Istio sidecar's connection manager (fault, CORS, router) and default outbound (A, with
   Istio's default retry policy) and inbound (B) routes to an EDS cluster; CPU and RSS are
   the whole proxy's;
5. the same paths at a fixed 1000 requests/s (wrk's per-connection ``delay()`` hook) for
   the latency each pair of hops adds at p50/p90/p99.

For each proxy: CPU seconds per 1000 requests (utime+stime from /proc/<pid>/stat around the
measured run) and resident memory (VmRSS; VmHWM is the peak). The upstream is a tiny
uvloop + httptools server answering every request with 1 KiB (``UPSTREAM_SERVER PORT
BODY_BYTES [HOST]``, HOST 127.0.0.1 by default). Figures are printed as a table
with the pistio/haproxy ratios and the load average; nothing here is a timed test.

    .venv/bin/python bench/dataplane.py --duration 10 [--router] [--paths direct,router]

Every child process is started in its own session and killed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY_SIZE = 1024
FIXED_RATE = 1000

UPSTREAM_SERVER = """
import asyncio, sys
import httptools, uvloop
BODY = b"x" * int(sys.argv[2])
RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nContent-Type: text/plain\\r\\n\\r\\n"
            % len(BODY)) + BODY
class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
    def data_received(self, data):
        self.parser.feed_data(data)
    def on_message_complete(self):
        self.transport.write(RESPONSE)
async def main():
    loop = asyncio.get_running_loop()
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    await loop.create_server(Server, host, int(sys.argv[1]), backlog=1024)
    await asyncio.Event().wait()
uvloop.run(main())
"""

HAPROXY_CFG = """
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend in
    bind 127.0.0.1:{listen}
    http-request set-header x-request-id %[uuid] unless {{ req.hdr(x-request-id) -m found }}
    http-request set-header x-forwarded-proto http unless {{ req.hdr(x-forwarded-proto) -m found }}
    http-response set-header server istio-envoy
    default_backend out
backend out
    server s1 127.0.0.1:{upstream}
"""

PACED_LUA = """
-- Each connection waits a random 1..(2*mean-1) ms before each request, so the connections do
-- not fire in lock-step bursts: on average connections * 1000 / mean requests per second.
function delay()
   return math.random(1, 2 * {delay_ms} - 1)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def memory_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: str


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    errors = " ".join(
        line.strip() for line in out.splitlines() if "Socket errors" in line or "Non-2xx" in line
    )
    return WrkResult(rps, requests, pct["50"], pct["90"], pct["99"], errors)


class Processes:
    """Children started in their own sessions; all killed on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], core: int | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        if core is not None:
            os.sched_setaffinity(proc.pid, {core})
        return proc

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def run_wrk(port: int, duration: float, connections: int, script: str | None = None) -> WrkResult:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", "5s"]
    if script is not None:
        args += ["-s", script]
    args.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    return parse_wrk(out)


def start_router(procs: Processes, tmp: str, listen: int, upstream: int, kind: str,
                 core: int) -> int:
    """A ``pistio proxy router`` (one process at concurrency 1, pinned to ``core``) fed by a
    static ADS server; its pid once it serves ``listen``."""
    port_file = Path(tmp, f"xds-{kind}.port")
    procs.start([PYTHON, str(ROOT / "bench" / "static_xds.py"), "--listen-port", str(listen),
                 "--upstream-port", str(upstream), "--kind", kind, "--port-file",
                 str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("static xDS server did not start")
        time.sleep(0.05)
    agent = procs.start(
        ["taskset", "-c", str(core), PYTHON, "-m", "pistio.cli", "proxy", "router",
         "--discovery-address", f"127.0.0.1:{port_file.read_text()}",
         "--node-id", f"router~127.0.0.1~bench-{kind}.bench~bench.svc.cluster.local",
         "--concurrency", "1", "--admin-port", "0", "--prometheus-port", "0",
         "--health-port", "0", "--log-level", "warning"])
    wait_listening(listen, 30)
    return agent.pid


@dataclass
class PathResult:
    name: str
    load: WrkResult
    paced: WrkResult
    cpu_per_1000: list[float]
    rss_kb: list[tuple[int, int]]
    loadavg: tuple[float, float, float]


def measure(
    name: str,
    port: int,
    pids: list[int],
    duration: float,
    connections: int,
    paced_script: str,
) -> PathResult:
    run_wrk(port, 1, connections)  # warm-up: connections, pools, caches
    before = [cpu_seconds(p) for p in pids]
    load = run_wrk(port, duration, connections)
    after = [cpu_seconds(p) for p in pids]
    cpu = [(a - b) / load.requests * 1000 for a, b in zip(after, before, strict=True)]
    paced = run_wrk(port, duration, 10, paced_script)
    return PathResult(name, load, paced, cpu, [memory_kb(p) for p in pids], os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--router", action="store_true",
                        help="also measure two `pistio proxy router` hops (static xDS)")
    parser.add_argument("--paths", default="",
                        help="comma-separated subset of direct,relay,router,haproxy "
                             "(direct always runs: the others are relative to it)")
    args = parser.parse_args()
    paths = set(args.paths.split(",")) if args.paths else {"relay", "haproxy"}
    if args.router:
        paths.add("router")
    cores = sorted(os.sched_getaffinity(0))
    core_a, core_b = cores[0], cores[1 % len(cores)]

    procs = Processes()
    tmp = tempfile.TemporaryDirectory(prefix="pistio-bench-")
    results: list[PathResult] = []
    try:
        paced = Path(tmp.name, "paced.lua")
        # 10 connections, each waiting 10 ms on average between requests: about 1000 requests/s.
        paced.write_text(PACED_LUA.format(delay_ms=10 * 1000 // FIXED_RATE))

        upstream_port = free_port()
        procs.start([PYTHON, "-c", UPSTREAM_SERVER, str(upstream_port), str(BODY_SIZE)])
        wait_listening(upstream_port)
        results.append(
            measure("direct", upstream_port, [], args.duration, args.connections, str(paced))
        )

        if "router" in paths:
            rb_port, ra_port = free_port(), free_port()
            router_b = start_router(procs, tmp.name, rb_port, upstream_port, "inbound", core_b)
            router_a = start_router(procs, tmp.name, ra_port, rb_port, "outbound", core_a)
            results.append(measure("router x2", ra_port, [router_a, router_b], args.duration,
                                   args.connections, str(paced)))

        if "relay" in paths:
            b_port, a_port = free_port(), free_port()
            relay = [PYTHON, "-m", "pistio.proxy.http.relay", "--workers", "1"]
            relay_b = procs.start(relay + ["--listen", f"127.0.0.1:{b_port}", "--upstream",
                                           f"127.0.0.1:{upstream_port}"], core_b)
            relay_a = procs.start(relay + ["--listen", f"127.0.0.1:{a_port}", "--upstream",
                                           f"127.0.0.1:{b_port}"], core_a)
            wait_listening(b_port)
            wait_listening(a_port)
            results.append(measure("relay x2", a_port, [relay_a.pid, relay_b.pid],
                                   args.duration, args.connections, str(paced)))

        if "haproxy" in paths:
            hb_port, ha_port = free_port(), free_port()
            cfg_b = Path(tmp.name, "b.cfg")
            cfg_a = Path(tmp.name, "a.cfg")
            cfg_b.write_text(HAPROXY_CFG.format(listen=hb_port, upstream=upstream_port))
            cfg_a.write_text(HAPROXY_CFG.format(listen=ha_port, upstream=hb_port))
            hap_b = procs.start(["haproxy", "-db", "-f", str(cfg_b)], core_b)
            hap_a = procs.start(["haproxy", "-db", "-f", str(cfg_a)], core_a)
            wait_listening(hb_port)
            wait_listening(ha_port)
            results.append(measure("haproxy x2", ha_port, [hap_a.pid, hap_b.pid],
                                   args.duration, args.connections, str(paced)))
    finally:
        procs.close()
        tmp.cleanup()

    report(results, args)
    return 0


def report(results: list[PathResult], args: argparse.Namespace) -> None:
    direct = results[0]
    print(
        f"\nHTTP/1.1 keep-alive, {BODY_SIZE} B responses, wrk -t1 -c{args.connections} "
        f"-d{args.duration:g}s; paced: 10 connections at ~{FIXED_RATE} rps; "
        f"{os.cpu_count()} CPUs\n"
    )
    head = (
        f"{'path':<11} {'rps':>9} {'p50 ms':>7} {'p99 ms':>7} | {'paced rps':>9} "
        f"{'+p50 ms':>8} {'+p90 ms':>8} {'+p99 ms':>8} | {'cpu s/1000 req (A, B)':>22} "
        f"{'RSS MB (A, B)':>14} | load avg"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        added = (
            (
                r.paced.p50_ms - direct.paced.p50_ms,
                r.paced.p90_ms - direct.paced.p90_ms,
                r.paced.p99_ms - direct.paced.p99_ms,
            )
            if r is not direct
            else (0.0, 0.0, 0.0)
        )
        cpu = ", ".join(f"{c:.4f}" for c in r.cpu_per_1000) or "-"
        rss = ", ".join(f"{kb / 1024:.1f}" for kb, _ in r.rss_kb) or "-"
        print(
            f"{r.name:<11} {r.load.rps:>9.0f} {r.load.p50_ms:>7.3f} {r.load.p99_ms:>7.3f} | "
            f"{r.paced.rps:>9.0f} {added[0]:>8.3f} {added[1]:>8.3f} {added[2]:>8.3f} | "
            f"{cpu:>22} {rss:>14} | {' '.join(f'{x:.2f}' for x in r.loadavg)}"
        )
        if r.load.errors or r.paced.errors:
            print(f"{'':<11} errors: {r.load.errors} {r.paced.errors}")
    haproxy = next((r for r in results if r.name == "haproxy x2"), None)
    if haproxy is None:
        return
    cpu_h = sum(haproxy.cpu_per_1000) / 2
    for pistio in results[1:]:
        if pistio is haproxy:
            continue
        cpu_p = sum(pistio.cpu_per_1000) / 2
        print(
            f"\n{pistio.name}: /haproxy throughput {pistio.load.rps / haproxy.load.rps:.2f}   "
            f"/direct {pistio.load.rps / direct.load.rps:.2f}   "
            f"(haproxy/direct {haproxy.load.rps / direct.load.rps:.2f})"
        )
        print(
            f"  CPU s per 1000 requests per proxy: {cpu_p:.4f}, haproxy {cpu_h:.4f} "
            f"(ratio {cpu_p / cpu_h if cpu_h else float('nan'):.2f}); "
            f"peak RSS MB {max(h for _, h in pistio.rss_kb) / 1024:.1f}, "
            f"haproxy {max(h for _, h in haproxy.rss_kb) / 1024:.1f}"
        )

if __name__ == "__main__":
    sys.exit(main())
