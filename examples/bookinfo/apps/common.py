"""HTTP plumbing shared by the four Bookinfo apps (stdlib only, so `python3 apps/x.py` runs
on any host Python 3.11+ without the venv)."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Istio's samples forward these so that the mesh can stitch one trace out of every hop and
# keep x-request-id for access logs (see productpage.py / LibertyRestEndpoint.java).
TRACING_HEADERS = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "sw8",
)


def env_port(*names: str, default: int) -> int:
    """The first of `names` that holds a plain port number.

    Kubernetes' service links also set e.g. REVIEWS_PORT=tcp://10.96.0.7:9080; such values
    are skipped rather than misread."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and 0 < int(value) < 65536:
            return int(value)
    return default


def service_base_url(service: str) -> str:
    """http://<host><.SERVICES_DOMAIN>:<port> as Istio's apps build it, plus our port env."""
    upper = service.upper()
    host = os.environ.get(f"{upper}_HOSTNAME") or service
    domain = os.environ.get("SERVICES_DOMAIN")
    if domain:
        host = f"{host}.{domain}"
    port = env_port(f"{upper}_PORT", f"{upper}_SERVICE_PORT", default=9080)
    return f"http://{host}:{port}"


def listen_port(default: int = 9080) -> int:
    """Istio's images take the port as argv[1]; we also read PORT."""
    if len(sys.argv) > 1 and sys.argv[1].isdigit():
        return int(sys.argv[1])
    return env_port("PORT", default=default)


def pick_headers(incoming: Mapping[str, str] | Any, names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        value = incoming.get(name)
        if value is not None:
            out[name] = value
    return out


def http_get(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes] | None:
    """GET on a fresh connection (Istio's apps do not pool either, so load spreads over
    versions); None on any connection error or timeout. `timeout` bounds the connect and
    each read, as requests' and JAX-RS' timeouts do."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path or "/", headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def get_json(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Any]:
    """(status, parsed body); status 500 / body None when unreachable or not JSON."""
    res = http_get(url, headers, timeout)
    if res is None:
        return 500, None
    status, body = res
    try:
        return status, json.loads(body)
    except ValueError:
        return (status if status != 200 else 500), None


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: a sidecar keeps its upstream connections open."""

    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "bookinfo"

    def send_body(self, status: int, body: bytes, content_type: str,
                  extra: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        self.send_body(status, json.dumps(obj).encode(), "application/json")

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(handler: type[BaseHTTPRequestHandler], default_port: int = 9080) -> None:
    # 0.0.0.0: a sidecar's inbound cluster reaches the app on the pod IP (or 127.0.0.1).
    host = os.environ.get("LISTEN_ADDRESS", "0.0.0.0")
    server = ThreadingHTTPServer((host, listen_port(default_port)), handler)
    server.daemon_threads = True
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
