"""The pilot-agent's health port, 15021: ``/healthz/ready`` for kubelet readiness probes.

Istio's agent answers 200 once the proxy is ready to serve: its admin reports ``LIVE`` and it
has received its initial configuration from istiod (listeners and clusters). Until then it
answers 503 with the reason, for example ``config not received from XDS server (is Istiod
running?)``, so a pod does not receive traffic before its sidecar can route it.

The readiness check is a provider returning ``None`` when ready or the reason when not;
:func:`proxy_readiness` builds the usual one from "initial config received" and the admin's
server state. Port 15020 (merged Prometheus metrics, application probe rewriting) is a
separate, later piece.
"""

from __future__ import annotations

from collections.abc import Callable

from pistio.proxy.admin.http_server import HttpServer, Request, Response, route_table
from pistio.proxy.admin.server_state import LIVE, ServerState

HEALTH_PORT = 15021

Readiness = Callable[[], "str | None"]


def proxy_readiness(
    initial_config_received: Callable[[], bool], state: ServerState | None = None
) -> Readiness:
    """Ready when the initial xDS config arrived and (if given) the server state is LIVE."""

    def check() -> str | None:
        if not initial_config_received():
            return "config not received from XDS server (is Istiod running?)"
        if state is not None:
            current = state.state()
            if current != LIVE:
                return f"server is not live, current state is: {current}"
        return None

    return check


class HealthServer:
    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness
        self._http = HttpServer(route_table({"/healthz/ready": self._ready}))

    def _ready(self, request: Request) -> Response:
        reason = self._readiness()
        if reason is None:
            return Response(200, b"")
        return Response(503, reason + "\n")

    async def start(self, host: str = "0.0.0.0", port: int = HEALTH_PORT) -> tuple[str, int]:
        return await self._http.start(host, port)

    async def close(self) -> None:
        await self._http.close()

    @property
    def address(self) -> tuple[str, int] | None:
        return self._http.address
