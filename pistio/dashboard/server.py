"""The dashboard's HTTP server: the page, ``/api/graph``, ``/api/proxies`` and ``/healthz``.

A background thread refreshes the graph and the proxy list every ``interval`` seconds; the
handlers only hand out the latest snapshot, so any number of open pages cost one collection
per interval. A failure to collect (no node, Prometheus or the discovery unreachable) becomes
an ``error`` field the page shows; it never stops the server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from pistio.dashboard.graph import build_graph
from pistio.dashboard.proxies import proxies_snapshot
from pistio.dashboard.traffic import Traffic, TrafficSource

log = logging.getLogger("pistio.dashboard")

STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def static_file(name: str) -> bytes:
    return (resources.files("pistio.dashboard") / "static" / name).read_bytes()


class Dashboard:
    """The snapshots the API serves, and the loop that refreshes them."""

    def __init__(self, source: TrafficSource, discovery: str, interval: float,
                 window: str) -> None:
        self.source = source
        self.discovery = discovery
        self.interval = interval
        self.window = window
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._graph: dict[str, Any] = self._graph_payload(
            Traffic(warnings=["collecting the first samples"]))
        self._proxies: dict[str, Any] = {"timestamp": time.time(), "discovery": discovery,
                                         "proxies": [], "error": None}

    def graph(self) -> dict[str, Any]:
        with self._lock:
            return self._graph

    def proxies(self) -> dict[str, Any]:
        with self._lock:
            return self._proxies

    def _graph_payload(self, traffic: Traffic) -> dict[str, Any]:
        graph = build_graph(traffic.vectors) if traffic.error is None else \
            {"nodes": [], "edges": []}
        return {"timestamp": time.time(), "source": self.source.description,
                "window": self.window, "interval": self.interval, "error": traffic.error,
                "warnings": traffic.warnings, **graph}

    def refresh(self) -> None:
        try:
            traffic = self.source.collect()
        except Exception as exc:  # a bug in one collection must not end the dashboard
            log.exception("collecting metrics failed")
            traffic = Traffic(error=f"collecting metrics failed: {type(exc).__name__}: {exc}")
        graph = self._graph_payload(traffic)
        proxies = {"timestamp": time.time(), "discovery": self.discovery,
                   **proxies_snapshot(self.discovery)}
        with self._lock:
            self._graph, self._proxies = graph, proxies

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()


def make_handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pistio-dashboard"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, STATIC_TYPES["index.html"], static_file("index.html"))
            elif path.startswith("/static/") and path[8:] in STATIC_TYPES:
                self._send(200, STATIC_TYPES[path[8:]], static_file(path[8:]))
            elif path == "/api/graph":
                self._json(dashboard.graph())
            elif path == "/api/proxies":
                self._json(dashboard.proxies())
            elif path == "/healthz":
                self._json({"status": "ok"})
            else:
                self._json({"error": f"no such page: {path}"}, status=404)

        def _json(self, body: Any, status: int = 200) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the page polls every few seconds: no line per request

    return Handler


def serve(dashboard: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (port 0: any free port) and start the refresh loop; the caller serves."""
    server = ThreadingHTTPServer((host, port), make_handler(dashboard))
    server.daemon_threads = True
    threading.Thread(target=dashboard.run, name="dashboard-refresh", daemon=True).start()
    return server
