"""The pilot-agent's merged metrics, ``:15020/stats/prometheus``.

Istio's injector points the pod's ``prometheus.io/*`` annotations at the agent's status port
and hands the application's original ones to the agent in ``ISTIO_PROMETHEUS_ANNOTATIONS``
(JSON ``{"scrape": "true", "port": "8080", "path": "/metrics"}``). One scrape of 15020 then
returns, in Istio's order: the agent's own metrics (``istio_agent_scrapes_total``,
``istio_agent_scrape_failures_total{type=...}``), the proxy's ``/stats/prometheus`` (Envoy
stats and the ``istio_*`` standard metrics) and the application's metrics fetched from
``http://localhost:<port><path>``. A part that cannot be fetched is left out and counted as a
scrape failure of its type (``envoy``, ``application``); the scrape itself still succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pistio.proxy.admin.http_server import Request, Response

log = logging.getLogger("pistio.agent.metrics")

PROMETHEUS_ANNOTATIONS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_TIMEOUT = 10.0
SCRAPE_TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"
MAX_APP_BODY = 10 * 1024 * 1024


@dataclass(frozen=True)
class AppScrape:
    port: int
    path: str = "/metrics"
    host: str = "127.0.0.1"


def parse_prometheus_annotations(text: str | None) -> AppScrape | None:
    """The app's scrape target from ``ISTIO_PROMETHEUS_ANNOTATIONS`` (None: no app metrics).
    :class:`ValueError` for a malformed value."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ValueError("expected a JSON object")
    if str(doc.get("scrape", "")).lower() != "true" or not doc.get("port"):
        return None
    try:
        port = int(doc["port"])
    except (TypeError, ValueError):
        raise ValueError(f"port {doc['port']!r} is not a number") from None
    path = str(doc.get("path") or "/metrics")
    return AppScrape(port, path if path.startswith("/") else "/" + path)


def _fetch(target: AppScrape, timeout: float) -> str:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("GET", target.path, headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read(MAX_APP_BODY + 1)
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        if len(body) > MAX_APP_BODY:
            raise OSError("metrics body too large")
        return body.decode("utf-8", "replace")
    finally:
        conn.close()


class MetricsMerger:
    """Serves the merged exposition; ``proxy_metrics`` gives the proxy's text."""

    def __init__(self, proxy_metrics: Callable[[], Awaitable[str]],
                 app: AppScrape | None) -> None:
        self.proxy_metrics = proxy_metrics
        self.app = app
        self.scrapes = 0
        self.failures = {"envoy": 0, "application": 0}

    def agent_metrics(self) -> str:
        lines = ["# TYPE istio_agent_scrapes_total counter\n",
                 f"istio_agent_scrapes_total {self.scrapes}\n",
                 "# TYPE istio_agent_scrape_failures_total counter\n"]
        lines += [f'istio_agent_scrape_failures_total{{type="{kind}"}} {n}\n'
                  for kind, n in self.failures.items()]
        return "".join(lines)

    async def render(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        self.scrapes += 1
        parts: list[str] = []
        envoy = ""
        try:
            envoy = await asyncio.wait_for(self.proxy_metrics(), timeout)
        except Exception as exc:  # noqa: BLE001 - any failure is a counted scrape error
            log.error("failed scraping envoy metrics: %s", exc)
            self.failures["envoy"] += 1
        app = ""
        if self.app is not None:
            try:
                app = await asyncio.to_thread(_fetch, self.app, timeout)
            except (OSError, http.client.HTTPException, TimeoutError) as exc:
                log.error("failed scraping application metrics: %s", exc)
                self.failures["application"] += 1
        parts.append(self.agent_metrics())
        for text in (envoy, app):
            if text:
                parts.append(text if text.endswith("\n") else text + "\n")
        return "".join(parts)

    async def handle(self, request: Request) -> Response:
        timeout = DEFAULT_TIMEOUT
        raw = request.headers.get(SCRAPE_TIMEOUT_HEADER)
        if raw:
            with contextlib.suppress(ValueError):
                timeout = max(0.1, float(raw) - 0.5)
        return Response(200, await self.render(timeout), CONTENT_TYPE)
