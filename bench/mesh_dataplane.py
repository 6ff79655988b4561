"""Mesh data-plane benchmark: client → sidecar → sidecar → server in pods of a private node.

The real path of issue 5's benchmark: a private pistio node (``pistio up``, its own state
directory, bridge, pod subnet 10.248.<x>.0/24 and discovery port) runs two namespaces:

- ``bench`` (``istio-injection=enabled``): Deployment ``server`` (bench/dataplane.py's
  uvloop + httptools upstream, 1 KiB bodies, on 0.0.0.0:8080) behind two Services, ``server``
  and ``server-plaintext`` (a DestinationRule sets ``tls.mode: DISABLE`` for the latter), and
  a ``client`` pod that sleeps; both pods get a sidecar (concurrency 1, the default) and
  Istio's iptables capture;
- ``bench-plain`` (no injection): the same pods without sidecars.

Six paths, measured with wrk run inside a client pod (``ip netns exec``), HTTP/1.1
keep-alive, in ``--rounds`` rounds (3 by default) that interleave paths 1-5 (path 6 follows,
as many times): every figure reported is the median of its path's rounds, so a disturbance
on the two shared cores costs one round of each path instead of skewing a whole path:

1. direct: wrk → server pod IP:8080 (plain pods);
2. pistio x2 plaintext: wrk → ``server-plaintext.bench.svc.cluster.local:8080`` (ClusterIP,
   captured to the client sidecar's 15001) → server pod IP:8080 (captured to the server
   sidecar's 15006) → server;
3. haproxy x2 plaintext: wrk → haproxy A on 127.0.0.1 in the plain client pod → haproxy B on
   the plain server pod's IP → server on 127.0.0.1 (bench/dataplane.py's HAProxy config: one
   thread, keep-alive both sides, the sidecar's per-request header work);
4. pistio x2 mTLS: the same through ``server.bench.svc.cluster.local``, where auto mTLS makes
   the sidecar-to-sidecar hop mutual TLS (checked on the server sidecar's TLS counters);
5. haproxy x2 TLS: haproxy A → B over mutual TLS (ECDSA P-256 certificates from a throw-away
   CA, verified both ways), the rest as in 3;
6. pistio x2 plaintext +telemetry: path 2 with Istio's default telemetry in force: the
   standard metrics with peer metadata exchange on both sidecars, and tracing to the Zipkin
   addon (examples/addons/zipkin.yaml) at Istio's default 1% sampling.

Paths 2 and 4 run with telemetry off (a Telemetry in the ``bench`` namespace disables the
metrics and span reporting), so that both proxies do the same job as HAProxy; deleting that
Telemetry gives path 6, and its ratio to path 2 is the price of telemetry.

One core per proxy: the client-side sidecar (its one process at concurrency 1: the agent, which
serves as worker 0; every thread, ``taskset -a -p``)
and haproxy A on the first core, the server-side ones on the second; wrk and the servers are
not pinned. For each path: throughput with ``--connections`` connections, then the latency at a
fixed 1000 requests/s (bench/dataplane.py's paced wrk script, 10 connections) whose p50/p90/p99
minus direct's is what the two hops add; CPU seconds per 1000 requests per proxy (utime+stime
from /proc around the throughput run; a sidecar is all its processes), the whole host's busy
CPU per 1000 requests (/proc/stat), and RSS per proxy (the sum over its processes). Needs root;
run it as

    sudo .venv/bin/python bench/mesh_dataplane.py --duration 10

``pistio down`` always runs at the end (also on Ctrl-C or SIGTERM) and removes every
namespace, veth, bridge, iptables rule and process of the private node.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane import (  # noqa: E402  (bench/ is not a package)
    BODY_SIZE,
    CLK_TCK,
    FIXED_RATE,
    HAPROXY_CFG,
    PACED_LUA,
    UPSTREAM_SERVER,
    Processes,
    WrkResult,
    cpu_seconds,
    free_port,
    memory_kb,
    parse_wrk,
)

ROOT = Path(__file__).resolve().parent.parent
ZIPKIN_ADDON = ROOT / "examples" / "addons" / "zipkin.yaml"
PYTHON = sys.executable
MESH_NS = "bench"
PLAIN_NS = "bench-plain"
SERVER_PORT = 8080
# haproxy A listens on 127.0.0.1 in the plain client pod, B on the plain server pod's IP.
HAPROXY_PORTS = {"plaintext": (15100, 8081), "TLS": (15101, 8443)}
WORKER_MODULE = b"pistio.proxy.runtime.worker_process"
AGENT_ARGS = b"\0proxy\0sidecar\0"
PACED_CONNECTIONS = 10
TOOLS = ("ip", "iptables", "iptables-restore", "setpriv", "curl", "wrk", "haproxy", "taskset")

# bench/dataplane.py's HAProxy configuration with addresses instead of loopback ports.
_bind, _server = "bind 127.0.0.1:{listen}", "server s1 127.0.0.1:{upstream}"
assert _bind in HAPROXY_CFG and _server in HAPROXY_CFG, "bench/dataplane.py HAPROXY_CFG changed"
POD_HAPROXY_CFG = HAPROXY_CFG.replace(_bind, "bind {listen}").replace(_server,
                                                                      "server s1 {upstream}")

NAMESPACES = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {MESH_NS}
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: {PLAIN_NS}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: server
spec:
  selector:
    app: server
  ports:
  - name: http
    port: {port}
    targetPort: {port}
"""

# The same server pods without mutual TLS between the sidecars (auto mTLS is the default).
PLAINTEXT_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: server-plaintext
  namespace: {ns}
spec:
  host: server-plaintext.{ns}.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
"""

# Telemetry off in the mesh namespace: no stats filters, no span reporting (Istio's Telemetry
# API; deleting it restores the mesh defaults for the +telemetry path).
TELEMETRY_OFF = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: telemetry-off
  namespace: {ns}
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - disabled: true
  tracing:
  - disableSpanReporting: true
"""

# Per namespace: the upstream server's Deployment and a client pod that sleeps.
APPS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: server
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: server
  template:
    metadata:
      labels:
        app: server
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: server
        image: bench/upstream
        command: [python3, server.py, "{port}", "{body}", "0.0.0.0"]
        ports:
        - containerPort: {port}
        readinessProbe:
          tcpSocket:
            port: {port}
          periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: client
  template:
    metadata:
      labels:
        app: client
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: client
        image: bench/wrk
        command: [sleep, infinity]
"""


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: list[str], *, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done


def in_pod(netns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd]


# --- the private node ------------------------------------------------------------------------


@dataclass
class PrivateNode:
    name: str
    state_dir: Path
    env: dict[str, str]

    def pistio(self, *args: str, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([PYTHON, "-m", "pistio.cli", *args], env=self.env, timeout=timeout,
                   check=check)

    def netns(self, namespace: str, pod: str) -> str:
        return f"{self.name}-{namespace}-{pod}"

    def log_tail(self, chars: int = 3000) -> str:
        """The node's and discovery's logs, and every container's (logs/<ns>/<pod>/<c>.log)."""
        logs = self.state_dir / "logs"
        paths = [self.state_dir / "node.log", logs / "discovery.log",
                 *sorted(logs.glob("*/*/*.log"))[:20]]
        parts = []
        for path in paths:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def leftovers(self) -> list[str]:
        found = [line.split()[0] for line in
                 run(["ip", "netns", "list"], timeout=10).stdout.splitlines()
                 if line.startswith(f"{self.name}-")]
        if Path(f"/sys/class/net/{self.name}0").exists():
            found.append(f"bridge {self.name}0")
        return found


def _used_subnets() -> str:
    return (run(["ip", "-o", "-4", "addr"], timeout=10).stdout
            + run(["ip", "-4", "route"], timeout=10).stdout)


def make_node(base: Path) -> PrivateNode:
    used = _used_subnets()
    free = [x for x in range(256) if f"10.248.{x}." not in used]
    if not free:
        raise RuntimeError("no free 10.248.<x>.0/24 subnet for the bench node")
    x = secrets.choice(free)
    name = f"pb{secrets.token_hex(2)}"
    env = dict(os.environ)
    # Containers run `python3` from PATH: the venv's, which has uvloop and httptools.
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env.update({
        "PISTIO_STATE_DIR": str(base / "node"),
        "PISTIO_NODE_NAME": name,
        "PISTIO_BRIDGE": f"{name}0",
        "PISTIO_POD_CIDR": f"10.248.{x}.0/24",
        "PISTIO_SERVICE_CIDR": f"10.98.{x}.0/24",
        "PISTIO_NODE_DISCOVERY_HTTP": f"127.0.0.1:{free_port()}",
    })
    env["PISTIO_DISCOVERY_ADDRESS"] = env["PISTIO_NODE_DISCOVERY_HTTP"]
    return PrivateNode(name, base / "node", env)


@dataclass
class Pod:
    namespace: str
    app: str
    name: str
    ip: str
    netns: str


def pods(node: PrivateNode, namespace: str) -> dict[str, Pod]:
    items = json.loads(node.pistio("get", "pods", "-n", namespace, "-o", "json").stdout)
    found: dict[str, Pod] = {}
    for item in items["items"]:
        meta, status = item["metadata"], item.get("status", {})
        app = meta.get("labels", {}).get("app", "")
        ip = status.get("podIP", "")
        ipaddress.IPv4Address(ip)  # a running pod has one
        found[app] = Pod(namespace, app, meta["name"], ip, node.netns(namespace, meta["name"]))
    if set(found) != {"server", "client"}:
        raise RuntimeError(f"pods in {namespace}: {sorted(found)}, expected client and server")
    return found


# --- processes -------------------------------------------------------------------------------


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def host_busy_seconds() -> float:
    """CPU time the whole host spent not idle (every process, the kernel, softirqs)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle, iowait


def _user_system(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@dataclass
class Proxy:
    """One proxy: its processes (a sidecar at concurrency 1 and haproxy: one) and its core."""

    name: str
    pids: list[int]
    core: int
    worker: int  # the process that carries the requests

    def alive(self) -> bool:
        return all(Path(f"/proc/{p}").exists() for p in self.pids)

    def cpu(self) -> tuple[float, float, float]:
        """Seconds: (utime+stime of all processes, the worker's utime, the worker's stime)."""
        user, system = _user_system(self.worker)
        return sum(cpu_seconds(p) for p in self.pids), user, system

    def run_queue_wait(self) -> float:
        """Seconds the worker spent runnable but waiting for its CPU (/proc/<pid>/schedstat)."""
        return int(Path(f"/proc/{self.worker}/schedstat").read_text().split()[1]) / 1e9

    def rss_kb(self) -> tuple[int, int, int]:
        """(RSS of all processes, RSS of the worker, peak RSS of all)."""
        mem = [memory_kb(p) for p in self.pids]
        return sum(r for r, _ in mem), memory_kb(self.worker)[0], sum(h for _, h in mem)


def sidecar(netns: str, name: str, core: int) -> Proxy:
    """The pod's ``pistio proxy sidecar`` process: at concurrency 1 it is the whole proxy
    (agent and worker 0, no worker processes)."""
    pids = [int(p) for p in run(["ip", "netns", "pids", netns], timeout=10).stdout.split()]
    agents = [p for p in pids if AGENT_ARGS in _cmdline(p)]
    workers = [p for p in pids if WORKER_MODULE in _cmdline(p)]
    if len(agents) != 1 or workers:
        raise RuntimeError(f"{netns}: {len(agents)} proxy agent and {len(workers)} worker "
                           "processes, expected one agent alone (sidecar concurrency 1)")
    return Proxy(name, agents, core, agents[0])


def pin(proxy: Proxy) -> None:
    for pid in proxy.pids:  # -a: every thread (the agent runs gRPC threads)
        run(["taskset", "-a", "-p", "-c", str(proxy.core), str(pid)], timeout=10)


def check_path(netns: str, url: str, *, through_sidecars: bool, timeout: float = 20) -> None:
    """One request along the path must answer 200 with the 1 KiB body (and, through the
    sidecars, carry their response headers); retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = run(in_pod(netns, "curl", "-sS", "--max-time", "3", "-D", "-", "-o", "/dev/null",
                          "-w", "\n%{http_code} %{size_download}\n", url),
                   timeout=10, check=False)
        last = done.stdout + done.stderr
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines and lines[-1] == f"200 {BODY_SIZE}":
            headers = done.stdout.lower()
            # The server sends no `server` header; the client's outbound sidecar writes
            # Envoy's default ("envoy", the inbound one "istio-envoy").
            if not through_sidecars or ("\nserver: envoy" in headers
                                        and "x-envoy-upstream-service-time" in headers):
                return
            raise RuntimeError(f"{url} from {netns} did not go through the sidecars:\n{last}")
        time.sleep(0.2)
    raise RuntimeError(f"{url} from {netns}: no 200 with {BODY_SIZE} bytes in {timeout}s:\n"
                       f"{last}")


def proxy_stats(netns: str) -> dict[str, int]:
    """The sidecar's counters from its admin port (127.0.0.1:15000 in its pod)."""
    done = run(in_pod(netns, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:15000/stats"),
               timeout=15)
    stats = {}
    for line in done.stdout.splitlines():
        name, _, value = line.rpartition(": ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


def istio_requests(netns: str) -> int:
    """The sidecar's istio_requests_total, all series summed (0: no stats filter)."""
    done = run(in_pod(netns, "curl", "-sS", "--max-time", "5",
                      "http://127.0.0.1:15000/stats/prometheus"), timeout=15)
    return int(sum(float(line.rpartition(" ")[2]) for line in done.stdout.splitlines()
                   if line.startswith("istio_requests_total{")))


def tls_counts(netns: str) -> tuple[int, int]:
    """(TLS handshakes, connections the TLS inspector found plaintext) on a sidecar."""
    stats = proxy_stats(netns)
    return (sum(v for k, v in stats.items() if k.endswith(".ssl.handshake")),
            stats.get("tls_inspector.tls_not_found", 0))


def haproxy_tls_files(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a certificate + key (one PEM, as haproxy's ``crt`` wants) for each
    haproxy, both usable as client and server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
                ca: bool) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = builder("pistio-bench-ca", "pistio-bench-ca", ca_key, True).sign(ca_key, hashes.SHA256())
    files = {"ca": directory / "tls-ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("a", "b"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(f"haproxy-{who}", "pistio-bench-ca", key, False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"haproxy-{who}")]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        path = files[who] = directory / f"tls-{who}.pem"
        path.touch(mode=0o600)
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return files


# --- measuring -------------------------------------------------------------------------------


def wrk(netns: str, url: str, duration: int, connections: int,
        script: str | None = None) -> WrkResult:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if script is not None:
        args += ["-s", script]
    done = run(in_pod(netns, *args, url), timeout=duration + 30)
    return parse_wrk(done.stdout)


@dataclass
class PathResult:
    name: str
    load: WrkResult
    paced: WrkResult
    proxies: list[Proxy] = field(default_factory=list)
    # Per proxy: (all its processes, its worker's user time, its worker's system time).
    cpu_per_1000: list[tuple[float, float, float]] = field(default_factory=list)
    rss_kb: list[tuple[int, int, int]] = field(default_factory=list)  # (all, worker, peak)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    host_cpu_per_1000: float = 0.0
    kind: str = ""  # "plaintext" or "TLS": which proxies compare with which
    run_queue_wait: list[float] = field(default_factory=list)  # share of the throughput run
    note: str = ""
    rounds_rps: list[float] = field(default_factory=list)  # each round's throughput


def measure(name: str, netns: str, url: str, proxies: list[Proxy],
            args: argparse.Namespace, paced_script: str) -> PathResult:
    print(f"measuring {name}: {url} from {netns}", file=sys.stderr, flush=True)
    wrk(netns, url, 1, args.connections)  # warm-up: connections, pools, caches
    before, host_before = [p.cpu() for p in proxies], host_busy_seconds()
    waits, started = [p.run_queue_wait() for p in proxies], time.monotonic()
    load = wrk(netns, url, args.duration, args.connections)
    after, host_after = [p.cpu() for p in proxies], host_busy_seconds()
    elapsed = time.monotonic() - started
    waits = [(p.run_queue_wait() - w) / elapsed for p, w in zip(proxies, waits, strict=True)]
    cpu = [(a[0] - b[0], a[1] - b[1], a[2] - b[2]) for a, b in zip(after, before, strict=True)]
    cpu = [(t / load.requests * 1000, u / load.requests * 1000, s / load.requests * 1000)
           for t, u, s in cpu]
    paced = wrk(netns, url, args.duration, PACED_CONNECTIONS, paced_script)
    for proxy in proxies:
        if not proxy.alive():
            raise RuntimeError(f"{proxy.name}: a process {proxy.pids} exited during the run")
    return PathResult(name, load, paced, proxies, cpu, [p.rss_kb() for p in proxies],
                      os.getloadavg(), (host_after - host_before) / load.requests * 1000,
                      run_queue_wait=waits)


def median_of(runs: list[PathResult]) -> PathResult:
    """One path's rounds as one result: the median of every figure (throughput, latency,
    CPU per proxy, waits), the largest RSS; ``rounds_rps`` keeps each round's throughput."""
    first = runs[0]

    def wrk_median(results: list[WrkResult]) -> WrkResult:
        return WrkResult(
            statistics.median(w.rps for w in results),
            int(statistics.median(w.requests for w in results)),
            statistics.median(w.p50_ms for w in results),
            statistics.median(w.p90_ms for w in results),
            statistics.median(w.p99_ms for w in results),
            "; ".join(w.errors for w in results if w.errors))

    cpu = [tuple(statistics.median(r.cpu_per_1000[i][k] for r in runs) for k in range(3))
           for i in range(len(first.cpu_per_1000))]
    rss = [tuple(max(r.rss_kb[i][k] for r in runs) for k in range(3))
           for i in range(len(first.rss_kb))]
    waits = [statistics.median(r.run_queue_wait[i] for r in runs)
             for i in range(len(first.run_queue_wait))]
    return PathResult(
        first.name, wrk_median([r.load for r in runs]), wrk_median([r.paced for r in runs]),
        first.proxies, cpu, rss, runs[-1].loadavg,  # type: ignore[arg-type]
        statistics.median(r.host_cpu_per_1000 for r in runs), first.kind, waits,
        "; ".join(dict.fromkeys(r.note for r in runs if r.note)),
        [r.load.rps for r in runs])


def profile(netns: str, url: str, proxies: list[Proxy], args: argparse.Namespace) -> None:
    """A separate load run while py-spy samples each sidecar worker (not in the table)."""
    out = Path(args.profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    spies = []
    for proxy in proxies:
        spies.append(subprocess.Popen(
            [py_spy, "record", "--format", "raw", "--rate", "250", "--nonblocking",
             "--duration", str(args.duration), "--pid", str(proxy.worker),
             "--output", str(out / f"{proxy.name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        time.sleep(0.5)
        load = wrk(netns, url, args.duration, args.connections)
    finally:
        for spy in spies:
            try:
                spy.wait(timeout=args.duration + 20)
            except subprocess.TimeoutExpired:
                os.killpg(spy.pid, signal.SIGKILL)
                spy.wait(timeout=5)
    print(f"profile: {load.rps:.0f} rps under py-spy; collapsed stacks in {out}",
          file=sys.stderr)


# --- the report ------------------------------------------------------------------------------


def _per_proxy(r: PathResult) -> tuple[float, float]:
    """(mean CPU s/1000 req per proxy, largest RSS MB of a proxy)."""
    return (sum(c for c, _, _ in r.cpu_per_1000) / len(r.cpu_per_1000),
            max(a for a, _, _ in r.rss_kb) / 1024)


def report(results: list[PathResult], args: argparse.Namespace, command: str) -> None:
    direct = results[0]
    print(f"\n`{command}`\n")
    shared = " (wrk and the servers share the proxies' cores)" if len(args.cores) < 4 else ""
    print(f"HTTP/1.1 keep-alive, {BODY_SIZE} B responses, wrk -t1 -c{args.connections} "
          f"-d{args.duration}s inside the client pod, the median of {args.rounds} interleaved "
          f"rounds; paced: {PACED_CONNECTIONS} connections at "
          f"~{FIXED_RATE} rps; proxies pinned A → core {args.core_a}, B → core {args.core_b}; "
          f"{len(args.cores)} CPUs{shared}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in args.load_before)}\n")
    print("| path | rps | p50 ms | p99 ms | paced rps | +p50 ms | +p90 ms | +p99 ms "
          "| CPU s/1000 req A, B | host CPU s/1000 req | RSS MB A, B | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        added = ("-", "-", "-") if r is direct else (
            f"{r.paced.p50_ms - direct.paced.p50_ms:.3f}",
            f"{r.paced.p90_ms - direct.paced.p90_ms:.3f}",
            f"{r.paced.p99_ms - direct.paced.p99_ms:.3f}")
        cpu = ", ".join(f"{c:.4f}" for c, _, _ in r.cpu_per_1000) or "-"
        rss = ", ".join(f"{a / 1024:.1f}" for a, _, _ in r.rss_kb) or "-"
        print(f"| {r.name} | {r.load.rps:.0f} | {r.load.p50_ms:.3f} | {r.load.p99_ms:.3f} "
              f"| {r.paced.rps:.0f} | {added[0]} | {added[1]} | {added[2]} | {cpu} "
              f"| {r.host_cpu_per_1000:.4f} | {rss} "
              f"| {' '.join(f'{x:.2f}' for x in r.loadavg)} |")
    print("\n- host CPU: every process and the kernel (wrk, server, proxies, veth, "
          "iptables), from /proc/stat; +pNN: paced latency minus direct's")
    for r in results:
        if len(r.rounds_rps) > 1:
            print(f"- {r.name}: rps per round " + ", ".join(f"{x:.0f}" for x in r.rounds_rps))
    for r in results:
        for label, w in (("throughput run", r.load), ("paced run", r.paced)):
            if w.errors:
                print(f"- {r.name} {label}: **{w.errors}**")
        if r.note:
            print(f"- {r.name}: {r.note}")
    for r in results:
        if r.cpu_per_1000:
            split = ", ".join(f"{u:.4f} + {s:.4f}" for _, u, s in r.cpu_per_1000)
            waits = ", ".join(f"{w:.0%}" for w in r.run_queue_wait)
            print(f"- {r.name}: CPU s/1000 req of the serving process, user + system (A, B): "
                  f"{split}; it waited for its core {waits} of the throughput run")
    by_name = {r.name: r for r in results}
    for kind in HAPROXY_PORTS:
        pistio = next((r for n, r in by_name.items() if n.startswith("pistio")
                       and r.kind == kind), None)
        haproxy = by_name.get(f"haproxy x2 {kind}")
        if pistio is None or haproxy is None:
            continue
        cpu_p, rss_p = _per_proxy(pistio)
        cpu_h, rss_h = _per_proxy(haproxy)
        p90_p = pistio.paced.p90_ms - direct.paced.p90_ms
        p90_h = haproxy.paced.p90_ms - direct.paced.p90_ms
        print(f"\n{pistio.name} vs {haproxy.name}:\n")
        print(f"- throughput pistio/haproxy {pistio.load.rps / haproxy.load.rps:.2f} "
              f"(pistio/direct {pistio.load.rps / direct.load.rps:.2f}, "
              f"haproxy/direct {haproxy.load.rps / direct.load.rps:.2f})")
        print(f"- CPU s per 1000 requests per proxy: pistio {cpu_p:.4f}, haproxy {cpu_h:.4f} "
              f"(ratio {cpu_p / cpu_h if cpu_h else float('nan'):.2f})")
        print(f"- added p90 at {FIXED_RATE} rps (both hops): pistio {p90_p:.3f} ms, "
              f"haproxy {p90_h:.3f} ms")
        peak = ", ".join(f"{h / 1024:.1f}" for _, _, h in pistio.rss_kb)
        print(f"- RSS MB per proxy (largest): pistio {rss_p:.1f} (all its processes; peak A, B: "
              f"{peak}), haproxy {rss_h:.1f} (ratio {rss_p / rss_h if rss_h else float('nan'):.1f})")
        goals = [
            ("throughput >= 0.5 x haproxy", pistio.load.rps >= 0.5 * haproxy.load.rps),
            ("<= 0.05 CPU s/1000 req per proxy", cpu_p <= 0.05),
            ("< 0.3 ms added p90", p90_p < 0.3),
            ("< 30 MB RSS per proxy", rss_p < 30),
        ]
        print("- issue 5 aims: " + "; ".join(f"{g}: {'met' if ok else 'NOT met'}"
                                             for g, ok in goals))
    telemetry = by_name.get("pistio x2 plaintext +telemetry")
    plain = next((r for r in results if r.name.startswith("pistio") and r.kind == "plaintext"),
                 None)
    if telemetry is not None and plain is not None:
        cpu_t, rss_t = _per_proxy(telemetry)
        cpu_0, rss_0 = _per_proxy(plain)
        p90_t = telemetry.paced.p90_ms - direct.paced.p90_ms
        p90_0 = plain.paced.p90_ms - direct.paced.p90_ms
        print(f"\n{telemetry.name} vs {plain.name} (telemetry on / off):\n")
        print(f"- throughput {telemetry.load.rps / plain.load.rps:.2f} "
              f"({telemetry.load.rps:.0f} vs {plain.load.rps:.0f} rps)")
        print(f"- CPU s per 1000 requests per proxy {cpu_t / cpu_0:.2f}x "
              f"({cpu_t:.4f} vs {cpu_0:.4f})")
        print(f"- added p90 at {FIXED_RATE} rps: {p90_t:.3f} vs {p90_0:.3f} ms; "
              f"RSS MB per proxy {rss_t:.1f} vs {rss_0:.1f}")


# --- main ------------------------------------------------------------------------------------


def write_manifests(directory: Path) -> None:
    directory.mkdir()
    (directory / "server.py").write_text(UPSTREAM_SERVER)
    (directory / "00-namespaces.yaml").write_text(NAMESPACES)
    for ns in (MESH_NS, PLAIN_NS):
        docs = [SERVICE.format(name="server", ns=ns, port=SERVER_PORT),
                APPS.format(ns=ns, port=SERVER_PORT, body=BODY_SIZE)]
        if ns == MESH_NS:
            docs += [SERVICE.format(name="server-plaintext", ns=ns, port=SERVER_PORT),
                     PLAINTEXT_RULE.format(ns=ns)]
        (directory / f"10-{ns}.yaml").write_text("---\n".join(docs))
    (directory / "20-telemetry-off.yaml").write_text(TELEMETRY_OFF.format(ns=MESH_NS))


def measure_pistio(kind: str, mesh: dict[str, Pod], sidecars: list[Proxy],
                   args: argparse.Namespace, paced: str, checked: dict[str, PathResult]
                   ) -> PathResult:
    """The mesh path to ``server`` (auto mTLS) or ``server-plaintext`` (tls DISABLE), with
    the server sidecar's counters telling which one the sidecar-to-sidecar hop really was
    (read in the first round, which opens the connections; later rounds reuse them and
    carry the first round's verdict, kept in ``checked``)."""
    host = "server" if kind == "TLS" else "server-plaintext"
    url = f"http://{host}.{MESH_NS}.svc.cluster.local:{SERVER_PORT}/"
    first = checked.get(kind)
    before = tls_counts(mesh["server"].netns) if first is None else (0, 0)
    check_path(mesh["client"].netns, url, through_sidecars=True)
    result = measure(f"pistio x2 {kind}", mesh["client"].netns, url, sidecars, args, paced)
    result.kind = kind
    if first is not None:
        result.name, result.kind, result.note = first.name, first.kind, first.note
        return result
    checked[kind] = result
    handshakes, plaintext = (a - b for a, b in
                             zip(tls_counts(mesh["server"].netns), before, strict=True))
    if kind == "plaintext" and (handshakes or not plaintext):
        raise RuntimeError(f"{host}: the sidecars did not talk plaintext ({handshakes} TLS "
                           f"handshakes, {plaintext} plaintext connections on the server's)")
    if kind == "TLS":
        if handshakes:
            result.name = "pistio x2 mTLS"
        else:
            result.name, result.kind = "pistio x2 default", "plaintext?"
            result.note = (f"no TLS handshake on the server sidecar ({plaintext} plaintext "
                           "connections): auto mTLS is not in effect")
    return result


def measure_with_telemetry(node: PrivateNode, manifests: Path, mesh: dict[str, Pod],
                           sidecars: list[Proxy], args: argparse.Namespace,
                           paced: str) -> list[PathResult]:
    """Path 2 again (``--rounds`` times) once the telemetry-off Telemetry is deleted (the mesh
    defaults: metrics, peer metadata exchange, tracing at 1% to Zipkin), checked on the
    server sidecar."""
    node.pistio("delete", "-f", str(manifests / "20-telemetry-off.yaml"), timeout=60)
    url = f"http://server-plaintext.{MESH_NS}.svc.cluster.local:{SERVER_PORT}/"
    deadline = time.monotonic() + 30
    while True:  # the listener update reaches both sidecars within a push
        check_path(mesh["client"].netns, url, through_sidecars=True)
        if istio_requests(mesh["server"].netns) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    runs = []
    for _ in range(args.rounds):
        before = istio_requests(mesh["server"].netns)
        if not before:
            raise RuntimeError("+telemetry: no istio_requests_total on the server sidecar")
        result = measure("pistio x2 plaintext +telemetry", mesh["client"].netns, url, sidecars,
                         args, paced)
        result.kind = "telemetry"
        counted = istio_requests(mesh["server"].netns) - before
        if counted < result.load.requests:
            raise RuntimeError(f"+telemetry: the server sidecar counted {counted} of "
                               f"{result.load.requests} requests")
        runs.append(result)
    return runs


def start_haproxy(kind: str, plain: dict[str, Pod], procs: Processes, tls: dict[str, Path],
                  args: argparse.Namespace, base: Path) -> tuple[str, list[Proxy]]:
    port_a, port_b = HAPROXY_PORTS[kind]
    server_ip = plain["server"].ip
    listen_b, upstream_a = f"{server_ip}:{port_b}", f"{server_ip}:{port_b}"
    if kind == "TLS":
        listen_b += f" ssl crt {tls['b']} ca-file {tls['ca']} verify required"
        upstream_a += (f" ssl crt {tls['a']} ca-file {tls['ca']} verify required "
                       "verifyhost haproxy-b")
    cfg_a, cfg_b = base / f"haproxy-a-{kind}.cfg", base / f"haproxy-b-{kind}.cfg"
    cfg_b.write_text(POD_HAPROXY_CFG.format(listen=listen_b,
                                            upstream=f"127.0.0.1:{SERVER_PORT}"))
    cfg_a.write_text(POD_HAPROXY_CFG.format(listen=f"127.0.0.1:{port_a}", upstream=upstream_a))
    hap_b = procs.start(in_pod(plain["server"].netns, "haproxy", "-db", "-f", str(cfg_b)))
    hap_a = procs.start(in_pod(plain["client"].netns, "haproxy", "-db", "-f", str(cfg_a)))
    # `ip netns exec` execs haproxy: the child's pid is haproxy's.
    proxies = [Proxy("haproxy-A", [hap_a.pid], args.core_a, hap_a.pid),
               Proxy("haproxy-B", [hap_b.pid], args.core_b, hap_b.pid)]
    for proxy in proxies:
        pin(proxy)
    return f"http://127.0.0.1:{port_a}/", proxies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every path this many times, interleaved; report medians")
    parser.add_argument("--up-timeout", type=int, default=180,
                        help="seconds for `pistio up` to get every pod ready")
    parser.add_argument("--profile", metavar="DIR",
                        help="after measuring, sample each sidecar worker with py-spy during "
                             "one more throughput run of the mTLS mesh path (collapsed stacks)")
    args = parser.parse_args()
    if not 1 <= args.duration <= 600 or not 1 <= args.connections <= 1000 or not (
            1 <= args.rounds <= 20):
        parser.error("--duration 1..600, --connections 1..1000 and --rounds 1..20")
    if os.geteuid() != 0:
        print("bench/mesh_dataplane.py must run as root: it starts a private pistio node "
              "(network namespaces, a bridge, iptables). Try: "
              "sudo .venv/bin/python bench/mesh_dataplane.py", file=sys.stderr)
        return 2
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    args.cores = sorted(os.sched_getaffinity(0))
    args.core_a, args.core_b = args.cores[0], args.cores[1 % len(args.cores)]
    command = " ".join([Path(PYTHON).relative_to(ROOT).as_posix()
                        if Path(PYTHON).is_relative_to(ROOT) else PYTHON,
                        "bench/mesh_dataplane.py", *sys.argv[1:]])

    args.load_before = os.getloadavg()
    if args.load_before[0] > 0.5:
        print(f"note: load average {args.load_before[0]:.2f} before starting; other work on "
              "this host skews the figures", file=sys.stderr)
    signal.signal(signal.SIGTERM, _on_sigterm)
    base = Path(tempfile.mkdtemp(prefix="pistio-mesh-bench-"))
    manifests = base / "manifests"
    write_manifests(manifests)
    paced = base / "paced.lua"
    # 10 connections, each waiting 10 ms on average between requests: about 1000 requests/s.
    paced.write_text(PACED_LUA.format(delay_ms=PACED_CONNECTIONS * 1000 // FIXED_RATE))
    tls = haproxy_tls_files(base)

    node = make_node(base)
    procs = Processes()
    results: list[PathResult] = []
    failure: str | None = None
    clean = False
    try:
        print(f"starting node {node.name} ({node.env['PISTIO_POD_CIDR']}, state {node.state_dir})",
              file=sys.stderr, flush=True)
        node.pistio("up", "-f", str(manifests), "-f", str(ZIPKIN_ADDON),
                    "--timeout", str(args.up_timeout), timeout=args.up_timeout + 60)
        mesh, plain = pods(node, MESH_NS), pods(node, PLAIN_NS)
        sidecars = [sidecar(mesh["client"].netns, "sidecar-A", args.core_a),
                    sidecar(mesh["server"].netns, "sidecar-B", args.core_b)]
        for proxy in sidecars:
            pin(proxy)
        haproxies = {kind: start_haproxy(kind, plain, procs, tls, args, base)
                     for kind in HAPROXY_PORTS}

        direct_url = f"http://{plain['server'].ip}:{SERVER_PORT}/"
        check_path(plain["client"].netns, direct_url, through_sidecars=False)
        for url, _ in haproxies.values():
            check_path(plain["client"].netns, url, through_sidecars=False)
        # Rounds interleave the paths, so that a disturbance on the shared cores hits one
        # round of each rather than all of one path; each figure is the median of its rounds.
        rounds: dict[str, list[PathResult]] = {}
        checked: dict[str, PathResult] = {}
        for n in range(args.rounds):
            print(f"round {n + 1} of {args.rounds}", file=sys.stderr, flush=True)
            runs = [measure("direct", plain["client"].netns, direct_url, [], args, str(paced))]
            for kind, (url, proxies) in haproxies.items():
                runs.append(measure_pistio(kind, mesh, sidecars, args, str(paced), checked))
                runs.append(measure(f"haproxy x2 {kind}", plain["client"].netns, url, proxies,
                                    args, str(paced)))
                runs[-1].kind = kind
            for run_result in runs:
                rounds.setdefault(run_result.name, []).append(run_result)
        results.extend(median_of(runs) for runs in rounds.values())
        if istio_requests(mesh["server"].netns):
            raise RuntimeError("telemetry-off: the server sidecar still counts Istio metrics")
        results.append(median_of(measure_with_telemetry(node, manifests, mesh, sidecars, args,
                                                        str(paced))))

        if args.profile:
            mesh_url = f"http://server.{MESH_NS}.svc.cluster.local:{SERVER_PORT}/"
            profile(mesh["client"].netns, mesh_url, sidecars, args)
    except KeyboardInterrupt:
        failure = "interrupted"
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        failure = f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.close()
        if failure and failure != "interrupted":
            print(node.log_tail(), file=sys.stderr)
        try:
            done = node.pistio("down", timeout=180, check=False)
            left = node.leftovers()
            clean = done.returncode == 0 and not left
            if not clean:
                print(f"`pistio down` exited {done.returncode}: {done.stdout}{done.stderr}\n"
                      f"left on the host: {left}; rerun with "
                      f"PISTIO_STATE_DIR={node.state_dir} pistio down", file=sys.stderr)
        except subprocess.TimeoutExpired:
            print(f"`pistio down` timed out; rerun with PISTIO_STATE_DIR={node.state_dir} "
                  "pistio down", file=sys.stderr)
        if clean:
            shutil.rmtree(base, ignore_errors=True)

    if results:
        report(results, args, command)
    if failure:
        print(f"\nbench failed: {failure}", file=sys.stderr)
        return 1
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
