"""A sidecar with Istio's outbound capture, in a network namespace of its own (root only).

Inside the namespace: ``pistio discovery`` with a Service ``httpbin`` (ClusterIP 10.99.0.5,
an address added to ``lo``) whose Pod has podIP 127.0.0.1, the upstream HTTP server on
127.0.0.1:8080, ``pistio proxy sidecar`` fed over ADS, and ``iptables`` rules after
``istio-iptables``: outbound TCP is REDIRECTed to 15001 except the proxy's own (owner uid or
gid 1337) and loopback destinations. ``curl http://10.99.0.5:8080/`` must then travel
virtualOutbound → hand-off to ``0.0.0.0_8080`` → route ``8080`` → cluster → 127.0.0.1:8080.

The proxy runs with gid 1337 (uid 0: the interpreter lives under a mode-700 home), which
``istio-iptables``' ``--gid-owner 1337`` exclusion matches. Nothing here touches the host's
network: the rules, addresses and sockets live and die with the namespace.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.root_guard import need_root
from tests.integration.test_discovery import pod, write

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
CLUSTER_IP = "10.99.0.5"
PORT = 8080
CLUSTER = "outbound|8080||httpbin.default.svc.cluster.local"

SERVICE = f"""
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default, labels: {{app: httpbin}}}}
spec:
  clusterIP: {CLUSTER_IP}
  selector: {{app: httpbin}}
  ports: [{{name: http, port: {PORT}}}]
"""

# istio-iptables' OUTPUT path, reduced to what this test needs (nat table of the namespace).
CAPTURE_RULES = (
    ("-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--gid-owner", "1337", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1/32", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"),
)


def _need_root() -> None:
    need_root("create a network namespace and iptables rules",
              ("ip", "iptables", "curl", "setpriv"))


def _sh(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never came:\n{log.read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)  # written whole by rename, but be kind to slow writers
    return json.loads(path.read_text())


def test_outbound_http_is_captured_and_routed_by_the_sidecar(tmp_path: Path) -> None:
    _need_root()
    ns = f"pcap-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen] = []

    def in_ns(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", ns, *args, timeout=timeout)

    def spawn(name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            # ``ip netns exec`` execs the command: the pid is the program's own.
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc, log

    created = _sh("ip", "netns", "add", ns)
    assert created.returncode == 0, created.stderr
    try:
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{CLUSTER_IP}/32", "dev", "lo"),
                    *(("iptables", "-t", "nat", *rule) for rule in CAPTURE_RULES)):
            done = in_ns(*cmd)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"

        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text("hello from httpbin\n")
        spawn("upstream", sys.executable, "-m", "http.server", str(PORT), "--bind",
              "127.0.0.1", "--directory", str(www))

        config = tmp_path / "config"
        config.mkdir()
        write(config / "services.yaml", SERVICE)
        write(config / "pods.yaml", "---".join([
            pod("httpbin-v1", "httpbin", "v1", "127.0.0.1"),
            pod("sleep-v1", "sleep", "v1", "10.99.0.9"),
        ]))
        discovery, discovery_log = spawn(
            "discovery", sys.executable, "-m", "pistio.cli", "discovery", "--config-dir",
            str(config), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--ready-file", str(tmp_path / "discovery.json"))
        grpc = _wait_file(tmp_path / "discovery.json", discovery, discovery_log)["grpc_address"]

        proxy, proxy_log = spawn(
            "proxy", "setpriv", "--regid", "1337", "--clear-groups",
            sys.executable, "-m", "pistio.cli", "proxy", "sidecar", "--discovery-address", grpc,
            "--concurrency", "2", "--pod", "sleep-v1", "--namespace", "default",
            "--ip", "10.99.0.9", "--ready-file", str(tmp_path / "proxy.json"))
        _wait_file(tmp_path / "proxy.json", proxy, proxy_log)

        # Until LDS has arrived and 15001 listens, the captured connection is refused.
        deadline = time.monotonic() + 20
        while True:
            got = in_ns("curl", "-s", "-o", "/dev/null", "-D", "-", "--max-time", "5",
                        f"http://{CLUSTER_IP}:{PORT}/index.html")
            if got.stdout.startswith("HTTP/1.1 200"):
                break
            assert proxy.poll() is None, proxy_log.read_text()
            assert time.monotonic() < deadline, (got.stdout, got.stderr, proxy_log.read_text())
            time.sleep(0.2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in got.stdout.splitlines()[1:] if line)}
        assert "x-envoy-upstream-service-time" in headers, got.stdout
        # The HCM's server_name replaced http.server's own "SimpleHTTP/0.6 Python/3.x".
        assert headers.get("server") in ("envoy", "istio-envoy"), got.stdout

        stats = in_ns("curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/stats").stdout

        def stat(name: str) -> int:
            found = re.search(rf"^{re.escape(name)}: (\d+)$", stats, re.M)
            return int(found.group(1)) if found else 0

        assert stat("listener.0.0.0.0_8080.downstream_cx_total") >= 1, stats
        assert stat(f"cluster.{CLUSTER}.upstream_rq_200") >= 1, stats
        assert stat("cluster.PassthroughCluster.upstream_cx_total") == 0, stats
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        deleted = _sh("ip", "netns", "del", ns)
        assert deleted.returncode == 0, deleted.stderr
    assert ns not in _sh("ip", "netns", "list").stdout
