"""The monitoring and debug HTTP port of ``pistio discovery`` (istiod's 15014).

Endpoints, as istiod serves them:

- ``/metrics``: Prometheus text format (see :mod:`pistio.pilot.metrics`);
- ``/debug/syncz``: per proxy, xDS versions and nonces sent and acknowledged;
- ``/debug/config_dump?proxyID=<node id | pod.namespace>``: an Envoy admin ``ConfigDump``
  (clusters, listeners, routes, endpoints) of what the proxy gets from the current push
  context, within its subscriptions; ``types=cds,lds`` narrows it;
- ``/debug/push_status``: the current push context and push counters;
- ``/debug/configz``: the config resources in force;
- ``/ready``: 200 once the first push context exists and ADS is serving.

A small HTTP/1.1 server on asyncio streams: one request per connection, GET and HEAD only,
bounded request size and read time. Debug traffic is rare and tiny; no framework needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from google.protobuf import json_format, timestamp_pb2

from pistio.pilot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pistio.pilot.metrics import discovery_metrics
from pistio.pilot.syncz import sync_rows
from pistio.xds import types as T
from pistio.xds.connection import Connection

if TYPE_CHECKING:
    from pistio.pilot.discovery import Discovery

log = logging.getLogger("pistio.debug")

MAX_REQUEST_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

# Dump sections by the short names accepted in ?types=.
_DUMP_TYPES = {"cds": T.CLUSTER, "lds": T.LISTENER, "rds": T.ROUTE, "eds": T.ENDPOINT}

Response = tuple[int, str, bytes]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def config_dump(discovery: Discovery, conn: Connection, types: set[str] | None = None) -> Any:
    """Envoy's admin ConfigDump for one connection: Clusters, Listeners, Routes, Endpoints."""
    wanted = types or set(_DUMP_TYPES.values())
    dump = config_dump_pb2.ConfigDump()

    def state_of(type_url: str) -> tuple[str, timestamp_pb2.Timestamp]:
        state = conn.watches.get(type_url)
        if state is None:
            return "", _timestamp(0)
        return state.version_sent, _timestamp(state.sent_at)

    if T.CLUSTER in wanted:
        version, updated = state_of(T.CLUSTER)
        clusters = config_dump_shared_pb2.ClustersConfigDump(version_info=version)
        for r in discovery.generate_for(conn, T.CLUSTER):
            clusters.dynamic_active_clusters.add(
                version_info=version, cluster=r.any, last_updated=updated
            )
        dump.configs.add().Pack(clusters)
    if T.LISTENER in wanted:
        version, updated = state_of(T.LISTENER)
        listeners = config_dump_shared_pb2.ListenersConfigDump(version_info=version)
        for r in discovery.generate_for(conn, T.LISTENER):
            entry = listeners.dynamic_listeners.add(name=r.name)
            entry.active_state.version_info = version
            entry.active_state.listener.CopyFrom(r.any)
            entry.active_state.last_updated.CopyFrom(updated)
        dump.configs.add().Pack(listeners)
    if T.ROUTE in wanted:
        version, updated = state_of(T.ROUTE)
        routes = config_dump_shared_pb2.RoutesConfigDump()
        for r in discovery.generate_for(conn, T.ROUTE):
            routes.dynamic_route_configs.add(
                version_info=version, route_config=r.any, last_updated=updated
            )
        dump.configs.add().Pack(routes)
    if T.ENDPOINT in wanted:
        version, updated = state_of(T.ENDPOINT)
        endpoints = config_dump_shared_pb2.EndpointsConfigDump()
        for r in discovery.generate_for(conn, T.ENDPOINT):
            endpoints.dynamic_endpoint_configs.add(
                version_info=version, endpoint_config=r.any, last_updated=updated
            )
        dump.configs.add().Pack(endpoints)
    return dump


class DebugServer:
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        self._server: asyncio.Server | None = None
        self.port = 0
        self._routes: dict[str, Callable[[dict[str, list[str]]], Response]] = {
            "/metrics": self._metrics,
            "/stats/prometheus": self._metrics,
            "/debug/syncz": self._syncz,
            "/debug/config_dump": self._config_dump,
            "/debug/push_status": self._push_status,
            "/debug/configz": self._configz,
            "/ready": self._ready,
            "/debug": self._index,
        }

    async def start(self, host: str = "127.0.0.1", port: int = 15014) -> int:
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=MAX_REQUEST_HEAD, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("debug HTTP listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # -- HTTP ------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            status, ctype, body, head_only = self._respond(head)
            reason = HTTPStatus(status).phrase
            headers = (
                f"HTTP/1.1 {status} {reason}\r\n"
                f"Content-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(headers.encode("latin-1") + (b"" if head_only else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, TEXT, b"bad request\n", False
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, TEXT, b"method not allowed\n", False
        url = urlsplit(target)
        handler = self._routes.get(url.path.rstrip("/") or "/")
        if handler is None:
            return 404, TEXT, f"no such endpoint {url.path}; see /debug\n".encode(), False
        try:
            status, ctype, body = handler(parse_qs(url.query))
        except Exception:
            log.exception("debug: %s failed", url.path)
            return 500, TEXT, b"internal error\n", False
        return status, ctype, body, method == "HEAD"

    # -- endpoints -------------------------------------------------------------

    def _metrics(self, _query: dict[str, list[str]]) -> Response:
        return 200, METRICS_CONTENT_TYPE, discovery_metrics(self.discovery).encode()

    def _syncz(self, _query: dict[str, list[str]]) -> Response:
        return _json(sync_rows(self.discovery))

    def _config_dump(self, query: dict[str, list[str]]) -> Response:
        proxy_id = (query.get("proxyID") or [""])[0]
        if not proxy_id:
            return 400, TEXT, b"You must provide a proxyID in the query string\n"
        conns = self.discovery.connections_for(proxy_id)
        if not conns:
            return 404, TEXT, f"Proxy not connected to this Pilot instance: {proxy_id}\n".encode()
        conn = max(conns, key=lambda c: c.info.connected_at)  # the latest stream
        types: set[str] | None = None
        if query.get("types"):
            names = {t.strip().lower() for v in query["types"] for t in v.split(",") if t.strip()}
            unknown = names - _DUMP_TYPES.keys()
            if unknown:
                return 400, TEXT, f"unknown types {sorted(unknown)}; use cds,lds,rds,eds\n".encode()
            types = {_DUMP_TYPES[n] for n in names}
        dump = config_dump(self.discovery, conn, types)
        body = json_format.MessageToJson(dump, indent=2)
        return 200, JSON, body.encode()

    def _push_status(self, _query: dict[str, list[str]]) -> Response:
        d = self.discovery
        ctx = d.push_context
        stats = d.server.stats
        kinds: dict[str, int] = {}
        if ctx is not None:
            for res in ctx.configs:
                kinds[res.kind] = kinds.get(res.kind, 0) + 1
        return _json(
            {
                "pushVersion": d.server.version,
                "pushContextVersion": ctx.version if ctx is not None else "",
                "services": len(ctx.services) if ctx is not None else 0,
                "configs": kinds,
                "connections": stats.connections,
                "fullPushes": stats.full_pushes,
                "edsPushes": stats.eds_pushes,
                "pushTriggers": dict(stats.push_triggers),
                "pushes": dict(stats.pushes),
                "rejects": dict(stats.rejects),
                "configRejected": dict(d.store.stats.rejected),
                "configParseErrors": d.store.stats.parse_errors,
                "uptimeSeconds": round(time.time() - d.started_at, 3),
            }
        )

    def _configz(self, _query: dict[str, list[str]]) -> Response:
        rows = []
        for res in self.discovery.store:
            rows.append(
                {
                    "kind": res.kind,
                    "group": res.group,
                    "namespace": res.namespace or "",
                    "name": res.name,
                    "source": str(res.source),
                }
            )
        return _json(rows)

    def _ready(self, _query: dict[str, list[str]]) -> Response:
        if self.discovery.ready:
            return 200, TEXT, b"ready\n"
        return 503, TEXT, b"not ready\n"

    def _index(self, _query: dict[str, list[str]]) -> Response:
        return 200, TEXT, ("\n".join(sorted(self._routes)) + "\n").encode()


def _json(value: Any) -> Response:
    return 200, JSON, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()
