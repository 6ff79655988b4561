"""The agent's status port (15020): application probes taken over from the kubelet, against a
real HTTP app and a real TCP listener on loopback; and the wiring in ``pistio proxy``."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pistio.agent.app_health import AppHealthServer, parse_app_probers

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[3]


class App:
    """An app with /healthz (status switchable), /redirect, /big, /slow; it records what it
    saw (path, Host, headers, peer address)."""

    def __init__(self) -> None:
        app = self
        self.status = 200
        self.seen: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                app.seen.append({"path": self.path, "host": self.headers.get("Host"),
                                 "headers": dict(self.headers), "peer": self.client_address[0]})
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                    body = b""
                elif self.path == "/big":
                    self.send_response(200)
                    body = b"x" * 50_000
                elif self.path == "/slow":
                    time.sleep(1.5)
                    self.send_response(200)
                    body = b"late"
                else:
                    self.send_response(app.status)
                    body = f"health {app.status}".encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    a = App()
    yield a
    a.close()


@pytest.fixture
def tcp_listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


async def aget(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(get, port, path, headers)


def probers_for(app_port: int, tcp_port: int, dead_port: int) -> str:
    return json.dumps({
        "/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": app_port,
                                               "httpHeaders": [{"name": "X-Probe",
                                                                "value": "yes"}]}},
        "/app-health/web/livez": {"httpGet": {"path": "/redirect", "port": app_port}},
        "/app-health/web/startupz": {"httpGet": {"path": "/big", "port": app_port}},
        "/app-health/slow/readyz": {"httpGet": {"path": "/slow", "port": app_port},
                                    "timeoutSeconds": 1},
        "/app-health/db/livez": {"tcpSocket": {"port": tcp_port}},
        "/app-health/gone/readyz": {"tcpSocket": {"port": dead_port}},
        "/app-health/down/readyz": {"httpGet": {"path": "/", "port": dead_port}},
    })


@pytest.mark.asyncio
async def test_app_probes(app, tcp_listener):
    ready_reason = ["config not received from XDS server (is Istiod running?)"]
    server = AppHealthServer(
        probers_for(app.port, tcp_listener.getsockname()[1], closed_port()),
        pod_ip="127.0.0.1", readiness=lambda: ready_reason[0])
    _, port = await server.start("127.0.0.1", 0)
    try:
        # HTTP: the app's code and body come back; headers are forwarded, Host gets the
        # app's port, the source is 127.0.0.6 (what the capture rules let through).
        status, body = await aget(port, "/app-health/web/readyz",
                                  {"Host": f"10.88.0.5:{port}", "User-Agent": "kube-probe/1.30"})
        assert (status, body) == (200, b"health 200")
        seen = app.seen[-1]
        assert seen["path"] == "/healthz"
        assert seen["host"] == f"10.88.0.5:{app.port}"
        assert seen["headers"]["User-Agent"] == "kube-probe/1.30"
        assert seen["headers"]["X-Probe"] == "yes"
        assert seen["peer"] == "127.0.0.6"

        app.status = 503  # a failing app: its 503 is the kubelet's answer
        assert await aget(port, "/app-health/web/readyz") == (503, b"health 503")
        app.status = 500
        assert (await aget(port, "/app-health/web/readyz"))[0] == 500
        app.status = 200

        assert await aget(port, "/app-health/web/livez") == (200, b"")  # redirect → 200
        status, body = await aget(port, "/app-health/web/startupz")
        assert status == 200 and len(body) == 10 * 1024  # body capped at 10 KiB

        t0 = time.monotonic()
        assert (await aget(port, "/app-health/slow/readyz"))[0] == 500  # timeoutSeconds 1
        assert time.monotonic() - t0 < 5  # /slow answers 200 after 1.5 s: the 500 is the timeout

        assert await aget(port, "/app-health/db/livez") == (200, b"")
        assert (await aget(port, "/app-health/gone/readyz"))[0] == 500
        assert (await aget(port, "/app-health/down/readyz"))[0] == 500  # app not listening

        status, body = await aget(port, "/app-health/nope/readyz")
        assert status == 400
        assert body == b"app prober config does not exists for /app-health/nope/readyz"
        assert (await aget(port, "/other"))[0] == 404

        # /healthz/ready: the proxy's readiness
        assert await aget(port, "/healthz/ready") == (
            503, b"config not received from XDS server (is Istiod running?)\n")
        ready_reason[0] = None
        assert await aget(port, "/healthz/ready") == (200, b"")
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "failed to decode app prober"),
        ('{"/bad/path": {"httpGet": {"port": 80}}}', "invalid path"),
        ('{"/app-health/a/readyz": {}}', "invalid prober type"),
        ('{"/app-health/a/readyz": {"httpGet": {"port": "http"}}}', "must be int type"),
        ('{"/app-health/a/readyz": {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}}',
         "invalid prober type"),
    ],
)
def test_malformed_probers(text, error):
    with pytest.raises(ValueError, match=error):
        parse_app_probers(text)


def test_probers_format():
    probers = parse_app_probers(
        '{"/app-health/hello/livez":{"httpGet":{"port":80}},'
        '"/app-lifecycle/hello/prestopz":{"tcpSocket":{"port":81}},'
        '"/app-health/hello/readyz":{"httpGet":{"path":"/r","port":3333,"scheme":"HTTPS"},'
        '"timeoutSeconds":3}}')
    assert probers["/app-health/hello/livez"].path == "/"
    assert probers["/app-lifecycle/hello/prestopz"].kind == "tcp"
    ready = probers["/app-health/hello/readyz"]
    assert (ready.port, ready.path, ready.scheme, ready.timeout) == (3333, "/r", "HTTPS", 3.0)
    assert parse_app_probers("") == {} and parse_app_probers(None) == {}


def _wait_ready_file(path: Path, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no ready file:\n{log.read_text()}")
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_proxy_serves_status_port(app, tmp_path):
    """``pistio proxy sidecar`` reads ISTIO_KUBE_APP_PROBERS and serves the status port (no
    discovery running: the probes work, /healthz/ready says why it is not ready)."""
    ready = tmp_path / "ready.json"
    log = tmp_path / "proxy.log"
    env = {**os.environ, "INSTANCE_IP": "127.0.0.1", "ISTIO_KUBE_APP_PROBERS": json.dumps(
        {"/app-health/web/readyz": {"httpGet": {"path": "/healthz", "port": app.port}}})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "proxy", "sidecar", "--discovery-address",
             f"127.0.0.1:{closed_port()}", "--concurrency", "1", "--admin-port", "0",
             "--prometheus-port", "0", "--health-port", "0", "--status-port", "0",
             "--ready-file", str(ready), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        info = _wait_ready_file(ready, proc, log)
        assert info["status"] and info["status"] not in (info["health"], info["admin"])
        assert get(info["status"], "/app-health/web/readyz") == (200, b"health 200")
        app.status = 503
        assert get(info["status"], "/app-health/web/readyz")[0] == 503
        status, body = get(info["status"], "/healthz/ready")
        assert status == 503 and b"config not received" in body
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_proxy_refuses_malformed_probers(tmp_path):
    env = {**os.environ, "ISTIO_KUBE_APP_PROBERS": '{"/nope": {}}'}
    result = subprocess.run(
        [sys.executable, "-m", "pistio.cli", "proxy", "sidecar", "--discovery-address",
         "127.0.0.1:1", "--status-port", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "ISTIO_KUBE_APP_PROBERS" in result.stderr
