"""Run the example apps as real processes on 127.0.0.1 for the example tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[3]
BOOKINFO = REPO / "examples" / "bookinfo"
CURL = REPO / "examples" / "curl"




@dataclass
class App:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def request(port: int, method: str, path: str, *, headers: Mapping[str, str] | None = None,
         body: bytes | None = None, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    conn = HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(port: int, path: str, **kw: Any) -> tuple[int, Any]:
    status, _, body = request(port, "GET", path, **kw)
    return status, json.loads(body)


class Apps:
    """Starts apps (stdlib-only: `python -S`, no site-packages) and kills them all at close."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.apps: list[App] = []

    def start(self, script: Path, env: Mapping[str, str], *, name: str | None = None,
              health: str = "/health", cwd: Path | None = None) -> App:
        port = free_port()
        name = name or script.stem
        log = self.log_dir / f"{name}-{port}.log"
        base = {k: v for k, v in os.environ.items()
                if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
        full_env = {**base, "LISTEN_ADDRESS": "127.0.0.1", "PORT": str(port), **env}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-S", str(script)], env=full_env,
                                    cwd=cwd or script.parent.parent, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        app = App(name, port, proc, log)
        self.apps.append(app)
        self._wait_ready(app, health)
        return app

    def _wait_ready(self, app: App, path: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if app.proc.poll() is not None:
                raise RuntimeError(f"{app.name} exited {app.proc.returncode}: {app.output()}")
            try:
                if request(app.port, "GET", path, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{app.name} not ready on :{app.port}: {app.output()}")

    def stop(self, app: App) -> None:
        if app.proc.poll() is None:
            app.proc.terminate()
            try:
                app.proc.wait(5)
            except subprocess.TimeoutExpired:
                app.proc.kill()
                app.proc.wait(5)

    def close(self) -> None:
        for app in self.apps:
            self.stop(app)
        self.apps.clear()


def upstream_env(**ports: int) -> dict[str, str]:
    """DETAILS_HOSTNAME=127.0.0.1 DETAILS_PORT=<p> ... for details=<p>, reviews=..., ..."""
    env: dict[str, str] = {}
    for service, port in ports.items():
        env[f"{service.upper()}_HOSTNAME"] = "127.0.0.1"
        env[f"{service.upper()}_PORT"] = str(port)
    return env


@dataclass
class Recorder:
    """A real HTTP server that records each request's headers and answers like details and
    ratings (after an optional delay): a stand-in upstream whose view we can inspect."""

    delay: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def headers_for(self, prefix: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p.startswith(prefix)]

    def __enter__(self) -> Recorder:
        recorder = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorder.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}))
                time.sleep(recorder.delay)
                if self.path.startswith("/ratings/"):
                    obj: Any = {"id": 0, "ratings": {"Reviewer1": 3, "Reviewer2": 1}}
                else:
                    obj = {"id": 0, "author": "Recorder", "year": 2000, "type": "hardcover",
                           "pages": 7, "publisher": "RecordPress", "language": "Latin",
                           "ISBN-10": "0000000000", "ISBN-13": "000-0000000000"}
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers: an upstream
    slower than any client timeout."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    """A port nothing listens on: connection refused, like a service that is down."""
    return free_port()
