"""The proxy's admin API on 127.0.0.1:15000, with Envoy's endpoints and semantics.

Endpoints (Envoy docs, "Administration interface"):

==========================  ======  ==========================================================
path                        method  what
==========================  ======  ==========================================================
``/``, ``/help``            GET     this list
``/config_dump``            GET     the ConfigDump JSON (``resource``, ``mask``, ``name_regex``,
                                    ``include_eds``)
``/clusters``               GET     clusters and hosts (text, or ``?format=json``)
``/stats``                  GET     ``name: value`` (``filter``, ``usedonly``, ``type``,
                                    ``format=json|prometheus``)
``/stats/prometheus``       GET     Prometheus exposition (``filter``, ``usedonly``)
``/logging``                POST    list / change log levels
``/ready``                  GET     200 ``LIVE`` or 503 with the state
``/server_info``            GET     ServerInfo JSON
``/memory``                 GET     Memory JSON
``/quitquitquit``           POST    respond, then shut down
``/drain_listeners``        POST    drain (``inboundonly``, ``graceful``)
``/healthcheck/fail``       POST    report DRAINING from now on
``/healthcheck/ok``         POST    back to LIVE
==========================  ======  ==========================================================

Endpoints that change server state answer 405 ``Method GET not allowed, POST required.`` to
any other method, as Envoy does. Unknown paths get 404 with the list.

Everything the admin shows comes from providers given at construction: a stats source (the
merged snapshot of the workers), a config dump provider, a clusters provider, the server state
and the actions (shutdown, drain). The admin process's own ``server.*`` gauges are refreshed
before each stats scrape.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pistio.proxy.admin import clusters as clusters_render
from pistio.proxy.admin.config_dump import ConfigDumpError, filter_config_dump
from pistio.proxy.admin.http_server import JSON, TEXT, HttpServer, Request, Response, route_table
from pistio.proxy.admin.logging_levels import USAGE, LogLevels
from pistio.proxy.admin.server_state import LIVE, STATE_NUMBERS, ServerState
from pistio.proxy.stats import prometheus, text_format
from pistio.proxy.stats.query import StatsQuery, StatsQueryError
from pistio.proxy.stats.snapshot import StatsSnapshot, merge_snapshots
from pistio.proxy.stats.store import StatsStore

ADMIN_HOST = "127.0.0.1"
ADMIN_PORT = 15000

StatsSource = Callable[[], "StatsSnapshot | Awaitable[StatsSnapshot]"]


@dataclass(frozen=True)
class _Endpoint:
    path: str
    help: str
    mutates: bool
    handler: Callable[[Request], Response | Awaitable[Response]]


def _memory_bytes() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes)."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * page
    except OSError:
        resident = 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return resident, peak


class AdminServer:
    """Envoy's admin endpoints over :class:`HttpServer`."""

    def __init__(
        self,
        state: ServerState,
        *,
        stats: StatsSource | None = None,
        config_dump: Callable[[], str] | None = None,
        clusters: Callable[[], Iterable[clusters_render.ClusterStatus]] | None = None,
        log_levels: LogLevels | None = None,
        on_quit: Callable[[], object] | None = None,
        on_drain_listeners: Callable[[bool, bool], object] | None = None,
    ) -> None:
        self.state = state
        self._stats = stats
        self._config_dump = config_dump
        self._clusters = clusters
        self.log_levels = log_levels or LogLevels()
        self._on_quit = on_quit
        self._on_drain = on_drain_listeners
        # The admin process's own stats (server.*), merged into every scrape.
        self.store = StatsStore()
        endpoints = [
            _Endpoint("/", "Admin home page", False, self._help),
            _Endpoint("/help", "print out list of admin commands", False, self._help),
            _Endpoint(
                "/config_dump", "dump current Envoy configs", False, self._config_dump_handler
            ),
            _Endpoint("/clusters", "upstream cluster status", False, self._clusters_handler),
            _Endpoint("/stats", "print server stats", False, self._stats_handler),
            _Endpoint(
                "/stats/prometheus",
                "print server stats in prometheus format",
                False,
                self._prometheus_handler,
            ),
            _Endpoint("/logging", "query/change logging levels", True, self._logging),
            _Endpoint("/ready", "print server state, return 200 if LIVE", False, self._ready),
            _Endpoint("/server_info", "print server version/status information", False, self._info),
            _Endpoint("/memory", "print current allocation/heap usage", False, self._memory),
            _Endpoint("/quitquitquit", "exit the server", True, self._quit),
            _Endpoint("/drain_listeners", "drain listeners", True, self._drain),
            _Endpoint(
                "/healthcheck/fail", "cause the server to fail health checks", True, self._hc_fail
            ),
            _Endpoint(
                "/healthcheck/ok", "cause the server to pass health checks", True, self._hc_ok
            ),
        ]
        self._endpoints = {e.path: e for e in endpoints}
        routes = {e.path: self._guard(e) for e in endpoints}
        self._http = HttpServer(route_table(routes, self._not_found))

    async def start(self, host: str = ADMIN_HOST, port: int = ADMIN_PORT) -> tuple[str, int]:
        return await self._http.start(host, port)

    async def close(self) -> None:
        await self._http.close()

    @property
    def address(self) -> tuple[str, int] | None:
        return self._http.address

    # --- plumbing ---------------------------------------------------------------------------
    def _guard(self, endpoint: _Endpoint) -> Callable[[Request], Response | Awaitable[Response]]:
        if not endpoint.mutates:
            return endpoint.handler

        def post_only(request: Request) -> Response | Awaitable[Response]:
            if request.method != "POST":
                return Response(405, f"Method {request.method} not allowed, POST required.")
            return endpoint.handler(request)

        return post_only

    def _help_text(self) -> str:
        lines = ["admin commands are:\n"]
        for e in sorted(self._endpoints.values(), key=lambda e: e.path):
            method = " (POST)" if e.mutates else ""
            lines.append(f"  {e.path}{method}: {e.help}\n")
        return "".join(lines)

    def _help(self, request: Request) -> Response:
        return Response(200, self._help_text())

    def _not_found(self, request: Request) -> Response:
        return Response(404, "invalid path. " + self._help_text())

    async def snapshot(self) -> StatsSnapshot:
        """The workers' merged stats plus the admin process's ``server.*``."""
        server = self.store.server()
        state = self.state.state()
        server.live = 1 if state == LIVE else 0
        server.state = STATE_NUMBERS[state]
        server.uptime = self.state.uptime_seconds()
        server.concurrency = self.state.concurrency
        resident, _ = _memory_bytes()
        server.memory_allocated = resident
        server.memory_physical_size = resident
        own = self.store.snapshot()
        if self._stats is None:
            return own
        result = self._stats()
        workers = await result if inspect.isawaitable(result) else result
        return merge_snapshots([workers, own])

    # --- endpoints --------------------------------------------------------------------------
    def _config_dump_handler(self, request: Request) -> Response:
        if self._config_dump is None:
            return Response(200, '{\n "configs": []\n}\n', JSON)
        try:
            body = filter_config_dump(self._config_dump(), request.params)
        except ConfigDumpError as exc:
            return Response(exc.status, str(exc) + "\n")
        return Response(200, body + "\n", JSON)

    async def _clusters_handler(self, request: Request) -> Response:
        items = list(self._clusters()) if self._clusters is not None else []
        if items and self._stats is not None:
            result = self._stats()
            workers = await result if inspect.isawaitable(result) else result
            if workers.hosts:
                clusters_render.overlay_worker_hosts(items, workers.hosts)
        if request.params.get("format") == "json":
            return Response(200, clusters_render.render_json(items) + "\n", JSON)
        return Response(200, clusters_render.render_text(items))

    async def _stats_handler(self, request: Request) -> Response:
        try:
            query = StatsQuery.from_params(request.params)
        except StatsQueryError as exc:
            return Response(400, f"{exc}\n")
        snap = await self.snapshot()
        fmt = request.params.get("format", "")
        if fmt == "json":
            return Response(200, text_format.render_json(snap, query), JSON)
        if fmt == "prometheus":
            return Response(200, prometheus.render_prometheus(snap, query), prometheus.CONTENT_TYPE)
        if fmt not in ("", "text"):
            return Response(404, "usage: /stats?format=(html|active-html|json|prometheus|text)\n")
        return Response(200, text_format.render_text(snap, query))

    async def _prometheus_handler(self, request: Request) -> Response:
        try:
            query = StatsQuery.from_params(request.params)
        except StatsQueryError as exc:
            return Response(400, f"{exc}\n")
        snap = await self.snapshot()
        return Response(200, prometheus.render_prometheus(snap, query), prometheus.CONTENT_TYPE)

    def _logging(self, request: Request) -> Response:
        if request.params and not self.log_levels.apply(request.params):
            return Response(404, USAGE + self.log_levels.listing())
        return Response(200, self.log_levels.listing())

    def _ready(self, request: Request) -> Response:
        state = self.state.state()
        return Response(200 if state == LIVE else 503, state + "\n")

    def _info(self, request: Request) -> Response:
        from envoy.admin.v3 import server_info_pb2
        from google.protobuf import json_format

        info = server_info_pb2.ServerInfo(
            version=self.state.version,
            state=server_info_pb2.ServerInfo.State.Value(self.state.state()),
            hot_restart_version="disabled",
        )
        uptime = self.state.uptime_seconds()
        info.uptime_current_epoch.seconds = uptime
        info.uptime_all_epochs.seconds = uptime
        info.command_line_options.concurrency = self.state.concurrency
        info.command_line_options.service_node = self.state.node_id
        info.command_line_options.service_cluster = self.state.node_cluster
        info.node.id = self.state.node_id
        info.node.cluster = self.state.node_cluster
        body = json_format.MessageToJson(
            info,
            preserving_proto_field_name=True,
            indent=1,
            always_print_fields_with_no_presence=True,
        )
        return Response(200, body + "\n", JSON)

    def _memory(self, request: Request) -> Response:
        resident, peak = _memory_bytes()
        body = {
            "allocated": str(resident),
            "heap_size": str(peak),
            "pageheap_unmapped": "0",
            "pageheap_free": "0",
            "total_thread_cache": "0",
            "total_physical_bytes": str(resident),
        }
        return Response(200, json.dumps(body, indent=1) + "\n", JSON)

    def _quit(self, request: Request) -> Response:
        return Response(200, "OK\n", TEXT, after_send=self._on_quit)

    def _drain(self, request: Request) -> Response:
        inbound_only = "inboundonly" in request.params
        graceful = "graceful" in request.params
        action = None
        if self._on_drain is not None:
            drain = self._on_drain

            def action() -> object:
                return drain(inbound_only, graceful)

        return Response(200, "OK\n", TEXT, after_send=action)

    def _hc_fail(self, request: Request) -> Response:
        self.state.health_check_failed = True
        return Response(200, "OK\n")

    def _hc_ok(self, request: Request) -> Response:
        self.state.health_check_failed = False
        return Response(200, "OK\n")
