"""The node's supervisor running real containers in a real network namespace (root only).

Each test makes its own bare namespace (``ip netns add``, random name, lo up) joined to the
host by one veth pair in a free /24 of 10.250.0.0/16 — enough for the kubelet-style probes
that go from the host to the pod IP. No bridge, no default route, no forwarding; the
namespace, the veth and every process are gone after each test, even on failure.

The probe functions themselves are also checked without root against loopback servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pistio.node.pods.probes import Probe, run_probe
from pistio.node.pods.supervisor import ContainerRun, PodStatus, Supervisor
from tests.integration.root_guard import need_root

pytestmark = pytest.mark.timeout(120)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _need_root() -> None:
    need_root("create network namespaces", ("ip", "setpriv"))


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr}")
    return result


def _netns_pids(name: str) -> list[int]:
    out = _sh("ip", "netns", "pids", name, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Netns:
    name: str
    pod_ip: str
    host_ip: str


def _free_subnet() -> int:
    routes = _sh("ip", "-4", "route", "show").stdout
    for _ in range(200):
        third = random.randint(0, 255)
        if f"10.250.{third}." not in routes:
            return third
    raise AssertionError("no free /24 in 10.250.0.0/16")


@pytest.fixture
def netns() -> Iterator[Netns]:
    _need_root()
    tag = secrets.token_hex(4)
    name, host_end = f"pistio-sup-{tag}", f"psv{tag}"
    third = _free_subnet()
    ns = Netns(name, f"10.250.{third}.2", f"10.250.{third}.1")
    _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
            "netns", name)
        _sh("ip", "addr", "add", f"{ns.host_ip}/24", "dev", host_end)
        _sh("ip", "link", "set", host_end, "up")
        _sh("ip", "-n", name, "addr", "add", f"{ns.pod_ip}/24", "dev", "eth0")
        _sh("ip", "-n", name, "link", "set", "eth0", "up")
        yield ns
        left = [p for p in _netns_pids(name) if _alive(p)]
        assert not left, f"processes left in {name}: {left}"
    finally:
        for pid in _netns_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        _sh("ip", "netns", "del", name, check=False)  # takes the veth pair with it
        _sh("ip", "link", "del", host_end, check=False)
        shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)
    assert name not in _sh("ip", "netns", "list").stdout
    assert host_end not in _sh("ip", "-o", "link", "show").stdout


class Watch:
    """Snapshots of the pod's status at every on_change."""

    def __init__(self) -> None:
        self.sup: Supervisor | None = None
        self.history: list[tuple[float, PodStatus | None]] = []

    def __call__(self, key: str) -> None:
        assert self.sup is not None
        self.history.append((time.monotonic(), self.sup.status(key)))


def supervisor(tmp_path: Path, **kw) -> tuple[Supervisor, Watch]:
    watch = Watch()
    sup = Supervisor(tmp_path / "logs", watch, **kw)
    sup.probe_kill_grace = 1.0
    watch.sup = sup
    return sup, watch


async def wait_for(sup: Supervisor, key: str, pred: Callable[[PodStatus], bool],
                   timeout: float = 15, what: str = "") -> PodStatus:
    deadline = time.monotonic() + timeout
    status = sup.status(key)
    while time.monotonic() < deadline:
        status = sup.status(key)
        if status is not None and pred(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or pred}: {status}")


def run(name: str, *argv: str, **kw) -> ContainerRun:
    return ContainerRun(name=name, argv=list(argv), env={"PATH": PATH, **kw.pop("env", {})},
                        cwd=kw.pop("cwd", "/"), **kw)


FAST = {"period": 0.2, "timeout": 1.0}


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_crashing_container_restarts_with_backoff(netns: Netns, tmp_path: Path):
    sup, watch = supervisor(tmp_path, backoff_initial=0.2, backoff_max=0.8)
    key = "default/crasher"
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip,
                            [run("app", "sh", "-c", "echo boom; exit 3")])
        await wait_for(sup, key, lambda s: s.containers[0].restart_count >= 4, timeout=20,
                       what="4 restarts")
    finally:
        await sup.close()
    snaps = [(t, s.containers[0]) for t, s in watch.history if s is not None]
    waiting = [c for _, c in snaps if c.state == "waiting" and c.reason == "CrashLoopBackOff"]
    assert waiting, "never seen in CrashLoopBackOff"
    counts = [c.restart_count for c in waiting]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # rising
    assert any(c.state == "terminated" and c.reason == "Error" and c.exit_code == 3
               for _, c in snaps)
    # Back-off: the gaps between starts grow 0.2, 0.4, 0.8, then stay at the max. Only lower
    # bounds are checked (a slow machine makes gaps longer, never shorter); a start the
    # watcher missed only merges two gaps, which keeps every bound true.
    starts = sorted({c.started_at for _, c in snaps if c.started_at is not None})
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) >= 3, starts
    for gap, want in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=False):
        assert gap >= want - 0.05, gaps
    log = (tmp_path / "logs" / "default" / "crasher" / "app.log").read_text()
    assert log.count("boom") >= 4  # the fifth run may be stopped before it writes


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_probes_readiness_flips_and_liveness_restarts(netns: Netns, tmp_path: Path):
    sup, watch = supervisor(tmp_path, backoff_initial=0.2)
    flag = tmp_path / "ready"
    key = "default/probed"
    # An HTTP app on the pod IP, probed from the host through the veth.
    server = (
        "import http.server, os, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def log_message(self, *a): pass\n"
        "    def do_GET(self):\n"
        "        code = 200 if os.path.exists(sys.argv[1]) else 503\n"
        "        self.send_response(code); self.send_header('Content-Length', '0');"
        " self.end_headers()\n"
        "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
    )
    web = run("web", sys.executable, "-c", server, str(flag),
              readiness=Probe("http", 8080, path="/healthz", success_threshold=1,
                              failure_threshold=2, **FAST))
    worker = run("worker", "sleep", "300",
                 readiness=Probe("exec", command=("test", "-f", str(flag)),
                                 failure_threshold=1, **FAST))
    doomed = run("doomed", "sleep", "300",
                 liveness=Probe("tcp", 9, initial_delay=0.3, failure_threshold=2, **FAST))
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip, [web, worker, doomed])
        status = await wait_for(sup, key, lambda s: s.phase == "Running", what="running")
        assert not status.ready
        await asyncio.sleep(0.6)
        status = sup.status(key)
        assert status is not None
        by = {c.name: c for c in status.containers}
        assert not by["web"].ready and not by["worker"].ready

        flag.touch()
        await wait_for(sup, key, lambda s: all(
            c.ready for c in s.containers if c.name != "doomed"), what="ready after touch")
        flag.unlink()
        await wait_for(sup, key, lambda s: not any(
            c.ready for c in s.containers if c.name != "doomed"), what="unready after unlink")

        # Liveness: nothing listens on :9, so "doomed" is killed and restarted.
        status = await wait_for(
            sup, key, lambda s: {c.name: c for c in s.containers}["doomed"].restart_count >= 2,
            timeout=20, what="liveness restarts")
        by = {c.name: c for c in status.containers}
        assert by["web"].restart_count == 0 and by["worker"].restart_count == 0
    finally:
        await sup.close()
    assert any(s is not None and any("failed liveness probe" in c.message
                                     for c in s.containers) for _, s in watch.history)
    flips = [s.containers[1].ready for _, s in watch.history
             if s is not None and s.containers[1].name == "worker"]
    assert True in flips and flips[-1] is False
    log = (tmp_path / "logs" / "default" / "probed" / "doomed.log").read_text()
    assert "Container doomed failed liveness probe, will be restarted" in log


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_proxy_uid_with_ambient_capability_runs_the_venv_python(netns: Netns,
                                                                      tmp_path: Path):
    sup, _ = supervisor(tmp_path)
    key = "default/sidecar"
    code = ("import os, time\n"
            "print('ids', os.getuid(), os.getgid(), os.getgroups(), flush=True)\n"
            "time.sleep(300)\n")
    proxy = run("istio-proxy", sys.executable, "-c", code, uid=1337, gid=1337,
                ambient_caps=("dac_read_search",), sidecar=True)
    app = run("app", "sleep", "300")
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip, [app, proxy])
        status = await wait_for(sup, key, lambda s: s.ready, what="ready")
        assert [c.name for c in status.containers] == ["istio-proxy", "app"]  # sidecar first
        log = tmp_path / "logs" / "default" / "sidecar" / "istio-proxy.log"
        deadline = time.monotonic() + 15
        while "ids" not in log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "ids 1337 1337 []" in log.read_text(), log.read_text()
        pid = status.containers[0].pid
        assert pid is not None
        proc_status = Path(f"/proc/{pid}/status").read_text()
        assert "Uid:\t1337\t1337\t1337\t1337" in proc_status
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    finally:
        await sup.close()


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_environment_directory_and_logs(netns: Netns, tmp_path: Path):
    sup, _ = supervisor(tmp_path)
    key = "shop/env"
    work = tmp_path / "work"
    work.mkdir()
    script = ("echo out; echo err >&2; echo \"FOO=$FOO HOME=${HOME:-unset}\"; pwd; "
              "ip -4 -o addr show dev eth0; exec sleep 300")
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip,
                            [run("c", "sh", "-c", script, env={"FOO": "bar baz"}, cwd=work)])
        log = tmp_path / "logs" / "shop" / "env" / "c.log"
        deadline = time.monotonic() + 15
        while netns.pod_ip not in (log.read_text() if log.exists() else "") \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        text = log.read_text()
        assert "out\nerr\n" in text
        assert "FOO=bar baz HOME=unset" in text  # exactly the given environment
        assert str(work) in text
        assert netns.pod_ip in text  # inside the pod's namespace
    finally:
        await sup.close()


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_stop_pod_kills_the_process_groups(netns: Netns, tmp_path: Path):
    sup, watch = supervisor(tmp_path, backoff_initial=0.2)
    key = "default/family"
    # A parent with background children, and one that ignores SIGTERM (its sleep too).
    family = run("family", "sh", "-c", "sleep 300 & sleep 301 & wait")
    stubborn = run("stubborn", "sh", "-c", "trap '' TERM; sleep 302 & wait")
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip, [family, stubborn])
        await wait_for(sup, key, lambda s: s.ready, what="ready")
        deadline = time.monotonic() + 10
        while len(sup.pids(key)) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pids = sup.pids(key)
        assert len(pids) >= 5, pids
        assert set(pids) <= set(_netns_pids(netns.name))
        t0 = time.monotonic()
        await sup.stop_pod(key, grace=0.5)
        assert time.monotonic() - t0 < 5
        assert not [p for p in pids if _alive(p)]
        assert sup.status(key) is None
        await sup.stop_pod(key)  # idempotent
        await asyncio.sleep(0.6)  # longer than the back-off: nothing restarts
        assert not [p for p in _netns_pids(netns.name) if _alive(p)]
        assert watch.history[-1][1] is None
    finally:
        await sup.close()


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_exited_container_takes_its_group_along(netns: Netns, tmp_path: Path):
    """A container whose main process exits leaves no orphans (its cgroup would not)."""
    sup, _ = supervisor(tmp_path, backoff_initial=30)
    key = "default/orphans"
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip,
                            [run("c", "sh", "-c", "sleep 300 & sleep 0.3; exit 0")])
        status = await wait_for(sup, key, lambda s: s.containers[0].state != "running"
                                and s.containers[0].exit_code is not None, what="exit")
        assert status.containers[0].exit_code == 0
        await asyncio.sleep(0.1)
        assert not [p for p in _netns_pids(netns.name) if _alive(p)]
        status = sup.status(key)
        assert status is not None
        assert status.containers[0].reason == "CrashLoopBackOff"  # restartPolicy Always
    finally:
        await sup.close()


# ---- probe functions on loopback (no root)

class _Web:
    def __init__(self, status: int) -> None:
        code = status

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                if self.path == "/slow":
                    time.sleep(2)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("code", "ok"), [(200, True), (302, True), (399, True),
                                          (404, False), (503, False)])
async def test_http_probe_status_range(code: int, ok: bool):
    web = _Web(code)
    try:
        probe = Probe("http", web.port, path="/healthz", timeout=2)
        assert await run_probe(probe, pod_ip="127.0.0.1", netns="") is ok
    finally:
        web.close()


@pytest.mark.asyncio
async def test_probe_timeouts_and_tcp():
    web = _Web(200)
    try:
        t0 = time.monotonic()
        slow = Probe("http", web.port, path="/slow", timeout=0.5)
        assert await run_probe(slow, pod_ip="127.0.0.1", netns="") is False
        assert time.monotonic() - t0 < 1.5
        assert await run_probe(Probe("tcp", web.port), pod_ip="127.0.0.1", netns="")
    finally:
        web.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert await run_probe(Probe("tcp", port), pod_ip="127.0.0.1", netns="") is False
    t0 = time.monotonic()
    hang = Probe("exec", command=("sleep", "5"), timeout=0.3)
    assert await run_probe(hang, pod_ip="", netns="") is False
    assert time.monotonic() - t0 < 2
    assert await run_probe(Probe("exec", command=("true",)), pod_ip="", netns="")
    assert not await run_probe(Probe("exec", command=("false",)), pod_ip="", netns="")


def test_probe_from_spec():
    ports = [{"name": "http", "containerPort": 9080}]
    p = Probe.from_spec({"httpGet": {"path": "health", "port": "http",
                                     "httpHeaders": [{"name": "X", "value": "y"}]},
                         "initialDelaySeconds": 2, "periodSeconds": 3, "timeoutSeconds": 4,
                         "successThreshold": 1, "failureThreshold": 5}, ports)
    assert (p.kind, p.port, p.path, p.http_headers) == ("http", 9080, "/health", (("X", "y"),))
    assert (p.initial_delay, p.period, p.timeout, p.failure_threshold) == (2, 3, 4, 5)
    d = Probe.from_spec({"tcpSocket": {"port": 5432}})
    assert (d.kind, d.port, d.period, d.timeout, d.failure_threshold) == ("tcp", 5432, 10, 1, 3)
    assert Probe.from_spec({"exec": {"command": ["cat", "/x"]}}).command == ("cat", "/x")
    for bad in ({"httpGet": {"port": "nope"}}, {"grpc": {"port": 1}}, {},
                {"exec": {"command": []}}):
        with pytest.raises(ValueError):
            Probe.from_spec(bad, ports)


APP = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0"); self.end_headers()
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


@pytest.mark.asyncio
@pytest.mark.root
@pytest.mark.netns
async def test_injected_pod_probes_go_through_the_agent(netns: Netns, tmp_path: Path):
    """inject → env/argv → supervisor: the app's rewritten readiness probe goes host →
    pod IP:15020 (the agent, uid 1337) → 127.0.0.6 → the app; with no discovery the proxy
    itself stays unready, and so does the pod."""
    from pistio.node.pods.env import container_argv, container_env
    from pistio.node.pods.inject import inject

    repo = Path(__file__).resolve().parents[2]
    pod = {"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
           "spec": {"containers": [{
               "name": "web", "command": [sys.executable, "-c", APP],
               "ports": [{"name": "http", "containerPort": 8080}],
               "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                  "periodSeconds": 0.3}}]}}
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    injected = inject(pod, discovery_address=nowhere,
                      proxy_argv_prefix=[sys.executable, "-m", "pistio.cli"])
    runs = []
    for c in injected["spec"]["containers"]:
        env = container_env(injected, c, pod_ip=netns.pod_ip, host_ip=netns.host_ip)
        sidecar = c["name"] == "istio-proxy"
        security = c.get("securityContext") or {}
        runs.append(ContainerRun(
            name=c["name"], argv=container_argv(c, env), env=env, cwd=str(repo),
            uid=security.get("runAsUser"), gid=security.get("runAsGroup"),
            ambient_caps=("dac_read_search",) if sidecar else (),
            readiness=Probe.from_spec(c["readinessProbe"], c.get("ports")), sidecar=sidecar))
    assert runs[0].readiness is not None and runs[0].readiness.port == 15020
    sup, _ = supervisor(tmp_path)
    key = "default/web-1"
    try:
        await sup.start_pod(key, netns.name, netns.pod_ip, runs)
        status = await wait_for(sup, key, lambda s: {c.name: c for c in s.containers}[
            "web"].ready, timeout=30, what="app ready through the agent")
        by = {c.name: c for c in status.containers}
        assert by["istio-proxy"].state == "running" and not by["istio-proxy"].ready
        assert not status.ready
    finally:
        await sup.close()
    log = (tmp_path / "logs" / "default" / "web-1" / "istio-proxy.log").read_text()
    assert "Traceback" not in log, log
