"""Proxyless gRPC end to end: grpcio's own xDS client against ``pistio discovery``.

Two real gRPC servers (``v1``, ``v2``) run in this process on 127.0.0.1; a config directory
describes them as Pods behind Services (one Service per scenario, all selecting both pods,
so each scenario has its own VirtualService); ``pistio discovery`` serves it on ephemeral
ports. Each client scenario is a fresh process (grpcio reads ``GRPC_XDS_BOOTSTRAP`` once
per process) running ``grpc_xds_client.py`` against ``xds:///<service>:7070``, with a
bootstrap whose node metadata says ``GENERATOR=grpc``: the client gets API listeners named
``host:port``, routes, clusters and endpoints, and does its own routing, retries and faults.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.discovery_process import run_discovery
from tests.integration.echo_server import FAIL_FIRST_HEADER, EchoServer

HERE = Path(__file__).parent
CLIENT_SCRIPT = HERE / "grpc_xds_client.py"
NODE_ID = "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
PORT = 7070

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: default}
"""

# One Service per scenario; all select both echo pods.
SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {ip}
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 7070, targetPort: grpc}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

# The container port named ``grpc`` is the server's ephemeral port: the Service's
# ``targetPort: grpc`` resolves to it per pod.
POD = """
apiVersion: v1
kind: Pod
metadata:
  name: echo-{version}
  namespace: default
  labels: {{app: echo, version: {version}}}
spec:
  containers:
  - name: echo
    image: echo
    ports: [{{name: grpc, containerPort: {port}}}]
status: {{phase: Running, podIP: 127.0.0.1}}
"""

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}]
  http:
{http}
"""

WEIGHTED = """
  - route:
    - destination: {{host: {name}, subset: v1}}
      weight: {v1}
    - destination: {{host: {name}, subset: v2}}
      weight: {v2}
"""

HEADER_ROUTING = """
  - match:
    - headers:
        x-version: {exact: v2}
    route:
    - destination: {host: echo-header, subset: v2}
  - route:
    - destination: {host: echo-header, subset: v1}
"""

FAULT = """
  - match:
    - headers:
        x-fault: {exact: http}
    fault:
      abort:
        httpStatus: 403
        percentage: {value: 100}
    route:
    - destination: {host: echo-fault, subset: v1}
  - fault:
      abort:
        grpcStatus: RESOURCE_EXHAUSTED
        percentage: {value: 100}
    route:
    - destination: {host: echo-fault, subset: v1}
"""

RETRIES = """
  - retries:
      attempts: 3
      retryOn: unavailable
      perTryTimeout: 2s
    route:
    - destination: {host: echo-retry, subset: v1}
"""

# Istio's default retry policy (2 retries on unavailable, among others) applies to a
# route whose VirtualService says nothing about retries.
NO_RETRIES = """
  - route:
    - destination: {host: echo-noretry, subset: v1}
"""

SCENARIOS = {
    "echo": ("10.96.0.70", WEIGHTED.format(name="echo", v1=90, v2=10)),
    "echo-header": ("10.96.0.71", HEADER_ROUTING),
    "echo-fault": ("10.96.0.72", FAULT),
    "echo-retry": ("10.96.0.73", RETRIES),
    "echo-noretry": ("10.96.0.74", NO_RETRIES),
    "echo-live": ("10.96.0.75", WEIGHTED.format(name="echo-live", v1=90, v2=10)),
}


def write(path: Path, text: str) -> None:
    # Aside and renamed: the config store never reads half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def virtual_service(name: str, http: str) -> str:
    return VIRTUAL_SERVICE.format(name=name, http=http.strip("\n"))


@dataclass
class Mesh:
    config_dir: Path
    grpc_address: str
    http_address: str
    bootstrap: Path
    log_file: Path
    v1: EchoServer
    v2: EchoServer

    def log(self) -> str:
        return self.log_file.read_text()

    def client_env(self) -> dict[str, str]:
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(self.bootstrap))
        env.setdefault("GRPC_VERBOSITY", "error")
        return env

    def client_args(self, mode: str, service: str, *args: str) -> list[str]:
        target = f"xds:///{service}.default.svc.cluster.local:{PORT}"
        return [sys.executable, str(CLIENT_SCRIPT), mode, "--target", target, *args]

    def count(self, service: str, calls: int, *args: str) -> dict:
        """``calls`` calls from a fresh grpcio process; versions and status codes counted."""
        proc = subprocess.run(
            self.client_args("count", service, "--calls", str(calls), *args),
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert proc.returncode == 0, f"client failed:\n{proc.stderr}\n{self.log()[-3000:]}"
        return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("proxyless")
    config = base / "config"
    config.mkdir()
    v1, v2 = EchoServer("v1").start(), EchoServer("v2").start()
    try:
        write(config / "namespace.yaml", NAMESPACE)
        write(
            config / "pods.yaml",
            "---".join(POD.format(version=s.version, port=s.port) for s in (v1, v2)),
        )
        for name, (ip, http) in SCENARIOS.items():
            write(config / f"{name}-svc.yaml", SERVICE.format(name=name, ip=ip))
            write(config / f"{name}-vs.yaml", virtual_service(name, http))
        with run_discovery(config, base) as info:
            bootstrap = base / "bootstrap.json"
            bootstrap.write_text(json.dumps(grpc_bootstrap(info["grpc_address"])))
            yield Mesh(config, info["grpc_address"], info["http_address"], bootstrap,
                       base / "discovery.log", v1, v2)
    finally:
        v1.stop()
        v2.stop()


def grpc_bootstrap(server_uri: str) -> dict:
    """gRPC's xDS bootstrap (gRFC A27) as Istio's agent writes it for proxyless clients."""
    return {
        "xds_servers": [
            {
                "server_uri": server_uri,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": NODE_ID,
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default", "ISTIO_VERSION": "1.24.0"},
            "locality": {},
        },
    }


def test_weighted_split_90_10(mesh: Mesh) -> None:
    got = mesh.count("echo", 1000)
    assert got["codes"] == {"OK": 1000}, got
    share = got["versions"].get("v2", 0) / 10  # percent
    assert 5 <= share <= 15, got  # 10 % ± 5 points


def test_header_based_routing(mesh: Mesh) -> None:
    with_header = mesh.count("echo-header", 50, "--header", "x-version=v2")
    assert with_header["versions"] == {"v2": 50}, with_header
    without = mesh.count("echo-header", 50, "--header", "x-version=v3")
    assert without["versions"] == {"v1": 50}, without


def test_fault_abort(mesh: Mesh) -> None:
    before = mesh.v1.calls + mesh.v2.calls
    grpc_status = mesh.count("echo-fault", 20)
    assert grpc_status["codes"] == {"RESOURCE_EXHAUSTED": 20}, grpc_status
    # An HTTP status abort reaches the gRPC caller mapped as gRPC maps HTTP (403 →
    # PERMISSION_DENIED).
    http_status = mesh.count("echo-fault", 20, "--header", "x-fault=http")
    assert http_status["codes"] == {"PERMISSION_DENIED": 20}, http_status
    assert mesh.v1.calls + mesh.v2.calls == before, "aborted calls never reach a server"


def test_retry_on_unavailable(mesh: Mesh) -> None:
    # Two failed attempts, then success: the caller sees OK, the server three attempts.
    got = mesh.count("echo-retry", 10, "--key", "retry2", "--header", f"{FAIL_FIRST_HEADER}=2")
    assert got["codes"] == {"OK": 10}, got
    assert [mesh.v1.attempts[f"retry2-{i}".encode()] for i in range(10)] == [3] * 10
    # attempts: 3 means at most 4 attempts in all; a call failing 5 times gives up.
    got = mesh.count("echo-retry", 5, "--key", "retry5", "--header", f"{FAIL_FIRST_HEADER}=5")
    assert got["codes"] == {"UNAVAILABLE": 5}, got
    assert [mesh.v1.attempts[f"retry5-{i}".encode()] for i in range(5)] == [4] * 5


def test_default_retry_policy(mesh: Mesh) -> None:
    # No retries in the VirtualService: Istio's default of 2 retries, so 3 attempts.
    got = mesh.count("echo-noretry", 5, "--key", "noretry", "--header", f"{FAIL_FIRST_HEADER}=5")
    assert got["codes"] == {"UNAVAILABLE": 5}, got
    assert [mesh.v1.attempts[f"noretry-{i}".encode()] for i in range(5)] == [3] * 5


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line of a child, or "" after ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _watch_client(mesh: Mesh, service: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        mesh.client_args("watch", service, *args),
        env=mesh.client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_live_config_change_followed_within_a_second(mesh: Mesh) -> None:
    client = _watch_client(
        mesh, "echo-live", "--until", "v2", "--streak", "200", "--max-seconds", "8"
    )
    try:
        line = _read_line(client, 15)
        assert line == "ready", f"client not ready: {line!r}\n{client.stderr.read()}"
        write(
            mesh.config_dir / "echo-live-vs.yaml",
            virtual_service("echo-live", WEIGHTED.format(name="echo-live", v1=0, v2=100)),
        )
        written = time.time()
        out = _read_line(client, 10)
        assert out, f"no answer from the client\n{mesh.log()[-3000:]}"
        changes = json.loads(out)["changes"]
    finally:
        _stop(client)
    assert changes[-1][1] == "v2", changes
    # From the file write to the last switch to v2 (after which every answer is v2).
    followed = changes[-1][0] - written
    print(f"followed in {followed:.3f} s")
    assert followed < 1.0, f"routing followed {followed:.3f} s after the write: {changes}"


def test_proxy_status_lists_the_grpc_client(mesh: Mesh) -> None:
    client = _watch_client(mesh, "echo", "--until", "never", "--max-seconds", "10")
    try:
        line = _read_line(client, 15)
        assert line == "ready", f"client not ready: {line!r}"
        deadline = time.monotonic() + 5
        while True:  # the ACKs of the last responses may still be on their way
            status = subprocess.run(
                [
                    sys.executable, "-m", "pistio.cli", "proxy-status",
                    "--discovery-address", mesh.http_address,
                ],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            rows = [re.split(r"\s{2,}", x.strip()) for x in status.stdout.splitlines()[1:]]
            row = next((r for r in rows if r[0] == "client.default"), None)
            synced = row is not None and row[2:6] == ["SYNCED"] * 4
            if synced or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        _stop(client)
    assert row is not None, status.stdout
    # NAME, CLUSTER, CDS, LDS, EDS, RDS, ECDS, ISTIOD, VERSION
    assert row[2:6] == ["SYNCED"] * 4, status.stdout
    assert row[-1] == "1.24.0", status.stdout
