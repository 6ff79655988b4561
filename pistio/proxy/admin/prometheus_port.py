"""Envoy's Prometheus port, 15090: ``/stats/prometheus`` on all addresses.

Istio's bootstrap adds a listener on 15090 that routes ``/stats/prometheus`` to the admin
endpoint, so Prometheus can scrape the proxy without reaching the localhost-only admin port.
Here the same exposition is served directly from the admin's stats; any other path is a 404.
(Istio's merged metrics on 15020, proxy plus application, belong to the agent and come later.)
"""

from __future__ import annotations

from pistio.proxy.admin.http_server import HttpServer, Request, Response, route_table
from pistio.proxy.admin.server import AdminServer

PROMETHEUS_PORT = 15090


class PrometheusServer:
    def __init__(self, admin: AdminServer) -> None:
        self._admin = admin
        self._http = HttpServer(route_table({"/stats/prometheus": self._serve}))

    async def _serve(self, request: Request) -> Response:
        return await self._admin._prometheus_handler(request)

    async def start(self, host: str = "0.0.0.0", port: int = PROMETHEUS_PORT) -> tuple[str, int]:
        return await self._http.start(host, port)

    async def close(self) -> None:
        await self._http.close()
