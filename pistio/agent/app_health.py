"""The pilot-agent's status port, 15020: application probes taken over from the kubelet.

Istio's injector rewrites an app container's ``httpGet``/``tcpSocket`` probes to
``httpGet :15020 /app-health/<container>/readyz|livez|startupz`` and hands the original probes
to the agent in ``ISTIO_KUBE_APP_PROBERS`` (JSON: URL path → ``{"httpGet": {...}}`` or
``{"tcpSocket": {...}}``, with ``timeoutSeconds``). The kubelet's probe then reaches the agent
(15020 is excluded from the inbound capture) and the agent performs the original probe
inside the pod, as Istio's status server does:

- to the pod IP (``INSTANCE_IP``; 127.0.0.1 without one), from source 127.0.0.6 so that the
  capture rules return it untouched instead of looping it through the proxy;
- HTTP: the request's headers are forwarded, ``Host`` keeps the probe's host with the app's
  port; the app's status code and (at most 10 KiB of) body are returned, a redirect becomes
  200, a failed request 500. HTTPS is not verified, like the kubelet;
- TCP: 200 when the connection opens, else 500;
- a path without a prober: 400 ``app prober config does not exists for <path>``.

``/healthz/ready`` answers the proxy's readiness here too (Istio serves it on both ports), and
``/stats/prometheus`` the merged metrics (``pistio.agent.metrics_merge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pistio.agent.health import Readiness
from pistio.proxy.admin.http_server import HttpServer, Request, Response

log = logging.getLogger("pistio.agent.app_health")

STATUS_PORT = 15020
PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
UPSTREAM_LOCAL_ADDRESS = "127.0.0.6"
MAX_BODY = 10 * 1024
DEFAULT_TIMEOUT = 1.0  # the kubelet's default timeoutSeconds

_PATH = re.compile(r"^/(app-health|app-lifecycle)/[^/]+/(livez|readyz|startupz|prestopz|poststartz)$")
_HOP_BY_HOP = {"host", "connection", "content-length", "transfer-encoding", "keep-alive",
               "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class AppProber:
    kind: str  # "http" | "tcp"
    port: int
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT


def _int_port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"invalid prober config for {where}, the port must be int type")
    return value


def parse_app_probers(text: str | None) -> dict[str, AppProber]:
    """``ISTIO_KUBE_APP_PROBERS`` → probers by URL path; :class:`ValueError` when malformed
    (Istio's agent refuses to start on it)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"failed to decode app prober err = {exc}, json string = {text}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"app probers must be a JSON object, got {text}")
    out: dict[str, AppProber] = {}
    for path, spec in raw.items():
        if not _PATH.match(path):
            raise ValueError(f"invalid path {path!r}, must be in form of regex pattern "
                             f"{_PATH.pattern}")
        spec = spec or {}
        kinds = [k for k in ("httpGet", "tcpSocket", "grpc") if spec.get(k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"{path}: invalid prober type, must be one of type httpGet, "
                             "tcpSocket or gRPC")
        timeout = float(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT)
        action = spec[kinds[0]]
        if kinds[0] == "grpc":
            raise ValueError(f"{path}: gRPC probes are not supported by pistio's agent yet")
        port = _int_port(action.get("port"), path)
        if kinds[0] == "tcpSocket":
            out[path] = AppProber("tcp", port, host=str(action.get("host") or ""),
                                  timeout=timeout)
            continue
        headers = tuple((str(h.get("name", "")), str(h.get("value", "")))
                        for h in action.get("httpHeaders") or [])
        out[path] = AppProber("http", port, path=str(action.get("path") or "/"),
                              host=str(action.get("host") or ""),
                              scheme=str(action.get("scheme") or "HTTP").upper(),
                              headers=headers, timeout=timeout)
    return out


def http_get(host: str, port: int, path: str, *, scheme: str = "HTTP",
             headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
             source: str | None = None, max_body: int = MAX_BODY) -> tuple[int, bytes]:
    """One blocking ``GET`` (run it in a thread): status and at most ``max_body`` bytes of
    body. Raises ``OSError``/``http.client.HTTPException`` when there is no response."""
    source_address = (source, 0) if source else None
    conn: http.client.HTTPConnection
    if scheme.upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                          source_address=source_address)
    try:
        sent = {k.lower() for k in (headers or {})}
        conn.putrequest("GET", path if path.startswith("/") else "/" + path,
                        skip_host="host" in sent, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if "connection" not in sent:
            conn.putheader("Connection", "close")  # probes do not keep connections (kubelet)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(max_body)
        return response.status, body
    finally:
        conn.close()


def _bind_source(destination: str) -> str | None:
    # 127.0.0.6 exists on every lo, but not for an IPv6 destination.
    return UPSTREAM_LOCAL_ADDRESS if ":" not in destination else None


class AppHealthServer:
    """The status port: ``/app-health/...``, ``/app-lifecycle/...`` and ``/healthz/ready``."""

    def __init__(self, probers: Mapping[str, AppProber] | str | None, *,
                 pod_ip: str | None = None, readiness: Readiness | None = None,
                 metrics: Callable[[Request], Awaitable[Response]] | None = None) -> None:
        self.probers = (parse_app_probers(probers) if probers is None or isinstance(probers, str)
                        else dict(probers))
        self.destination = pod_ip or "127.0.0.1"
        self._readiness = readiness
        # ``/stats/prometheus``: the merged metrics (pistio.agent.metrics_merge).
        self._metrics = metrics
        self._http = HttpServer(self._route)
        self._port = 0

    def _route(self, request: Request) -> Response | Any:
        if request.path == "/healthz/ready":
            return self._ready()
        if request.path == "/stats/prometheus" and self._metrics is not None:
            return self._metrics(request)
        if request.path.startswith(("/app-health/", "/app-lifecycle/")):
            return self._app_probe(request)
        return Response(404, "Not Found\n")

    def _ready(self) -> Response:
        reason = self._readiness() if self._readiness is not None else None
        return Response(200, b"") if reason is None else Response(503, reason + "\n")

    async def _app_probe(self, request: Request) -> Response:
        prober = self.probers.get(request.path)
        if prober is None:
            log.error("Prober does not exists url %s", request.path)
            return Response(400, f"app prober config does not exists for {request.path}")
        if prober.kind == "tcp":
            return await self._tcp(prober)
        return await self._http_get(request, prober)

    async def _tcp(self, prober: AppProber) -> Response:
        host = prober.host or self.destination
        source = _bind_source(host)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                host, prober.port, local_addr=(source, 0) if source else None), prober.timeout)
        except (TimeoutError, OSError):
            return Response(500, b"")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Response(200, b"")

    async def _http_get(self, request: Request, prober: AppProber) -> Response:
        host = prober.host or self.destination
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if name not in _HOP_BY_HOP:  # Go's canonical form, as Istio's agent sends them
                headers["-".join(part.capitalize() for part in name.split("-"))] = value
        # Host: the kubelet's, with the status port swapped for the app's.
        incoming = request.headers.get("host", "")
        name, sep, port = incoming.rpartition(":")
        if sep and port == str(self._port) and name:
            headers["Host"] = f"{name}:{prober.port}"
        elif incoming:
            headers["Host"] = incoming
        for key, value in prober.headers:  # the probe's own headers win (Host included)
            headers = {k: v for k, v in headers.items() if k.lower() != key.lower()}
            headers[key] = value
        try:
            status, body = await asyncio.to_thread(
                http_get, host, prober.port, prober.path, scheme=prober.scheme,
                headers=headers, timeout=prober.timeout, source=_bind_source(host))
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            log.warning("Request to probe app failed: %s, original URL path = %s, app URL "
                        "path = %s", exc, request.path, prober.path)
            return Response(500, b"")
        if 300 <= status < 400:  # a redirect without its Location would be illegal: 200
            return Response(200, b"")
        return Response(status, body)

    async def start(self, host: str = "0.0.0.0", port: int = STATUS_PORT) -> tuple[str, int]:
        address = await self._http.start(host, port)
        self._port = address[1]
        return address

    async def close(self) -> None:
        await self._http.close()

    @property
    def address(self) -> tuple[str, int] | None:
        return self._http.address
