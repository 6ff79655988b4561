"""Envoy's HTTP connection manager (``envoy.filters.network.http_connection_manager``) for the
HTTP/1.1 codec: one ``HttpConnectionManager`` per filter chain and config, one ``ActiveStream``
per request.

The codec (``http1_downstream``) parses requests, adds ``x-request-id`` and
``x-forwarded-proto``, writes ``server`` (the HCM's ``server_name``) and answers protocol
errors. For every request the connection manager then:

- reads the route table **once, at the start of the stream**, from the snapshot in force (by
  ``rds.route_config_name``, or the chain's inline ``route_config``): a config swap affects new
  streams only;
- runs the HTTP filters in order (fault, CORS), then the router, which is always last; a filter
  may stop the chain (a fault delay) and continue it later, or answer locally;
- runs response headers back through the encoder filters (CORS adds its headers);
- enforces ``stream_idle_timeout`` (Envoy's default 5 min; 408 ``stream timeout``, flag ``SI``,
  or a reset once the response began) and ``request_timeout`` (408 ``request timeout``
  until the request is complete);
- counts ``http.<stat_prefix>.downstream_rq_*`` and writes the access log at the end of the
  stream when the HCM configures one (``envoy.access_loggers.file``; nothing is logged per
  request otherwise).

The ``ActiveStream`` is also what the codec sees as the stream's "upstream": request body
pieces are queued on its ``out`` and handed to the router on ``flush``; that lets the router
buffer the body for retries and shadows and switch attempts without the codec knowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.filters import LogFilter
from pistio.proxy.access_log.formatter import (
    ENVOY_DEFAULT_FORMAT,
    AccessLogFormatter,
    TextFormatter,
    from_substitution_format,
)
from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo, StreamInfo
from pistio.proxy.config.listener_config import AccessLogConfig, HttpConnectionManagerConfig
from pistio.proxy.config.route_match import RequestView
from pistio.proxy.config.route_table import Route, RouteTable
from pistio.proxy.filters.http.chain import build_filter_chain
from pistio.proxy.filters.http.grpc_web import GrpcWebStream
from pistio.proxy.http.codec_options import HttpConnectionOptions
from pistio.proxy.http.flow_control import UPSTREAM_CONNECTING, WRITE_HIGH_WATER
from pistio.proxy.http.header_sanitizing import SIDECAR_UNTOUCHED, RequestTrust
from pistio.proxy.http.headers import Fields, RequestIdGenerator
from pistio.proxy.http.http1_downstream import Http1ServerConnection, Http1Stream
from pistio.proxy.http.http2_downstream import (
    H2_PREFACE,
    Http2ServerConnection,
    Http2Settings,
    Http2Stream,
)
from pistio.proxy.http.http2_grpc import is_grpc
from pistio.proxy.http.path_normalization import PathAction, PathNormalization
from pistio.proxy.http.timeouts import DeadlineSweeper
from pistio.proxy.router.router import RouterContext, RouterStream
from pistio.proxy.runtime.snapshot import SnapshotHolder
from pistio.proxy.stats.store import StatsStore
from pistio.proxy.tls.xfcc import xfcc_policy
from pistio.proxy.tracing import build_tracer

if TYPE_CHECKING:
    from pistio.proxy.stats.families import HttpConnectionManagerStats

log = logging.getLogger(__name__)
_INF = float("inf")
_MAX_PLANS = 4096
# HttpConnectionManager.CodecType
CODEC_AUTO = 0
CODEC_HTTP1 = 1
CODEC_HTTP2 = 2
DEFAULT_DOWNSTREAM_IDLE_TIMEOUT = 3600.0  # common_http_protocol_options.idle_timeout
STREAM_TIMEOUT_BODY = b"stream timeout"
REQUEST_TIMEOUT_BODY = b"request timeout"

_FILE_LOG_TYPES = {
    "type.googleapis.com/" + file_pb2.FileAccessLog.DESCRIPTOR.full_name: None,
    "type.googleapis.com/" + stream_pb2.StdoutAccessLog.DESCRIPTOR.full_name: "/dev/stdout",
    "type.googleapis.com/" + stream_pb2.StderrAccessLog.DESCRIPTOR.full_name: "/dev/stderr",
}


_STD_STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}


class AccessLogFile:
    """An ``envoy.access_loggers.file`` sink: lines are buffered and written at most once a
    second (Envoy's ``file_flush_interval``) or when 64 KiB are waiting."""

    _files: dict[str, AccessLogFile] = {}

    def __init__(self, path: str) -> None:
        self.path = path
        # The process's own streams are written as they are: reopening /dev/stdout by path
        # needs write permission on whatever it points to (a root-owned log file, for a
        # sidecar running as uid 1337).
        std = _STD_STREAMS.get(path)
        self._fd = std if std is not None else os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, path: str) -> AccessLogFile:
        sink = cls._files.get(path)
        if sink is None:
            sink = cls._files[path] = cls(path)
        return sink

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size > 64 * 1024:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data = "".join(self._lines).encode()
            self._lines = []
            self._size = 0
            os.write(self._fd, data)

    @classmethod
    def flush_all(cls) -> None:
        for sink in cls._files.values():
            sink.flush()


def build_access_loggers(
    configs: tuple[AccessLogConfig, ...]
) -> tuple[tuple[AccessLogFormatter, AccessLogFile, LogFilter | None], ...]:
    """The HCM's file/stdout/stderr access logs, each with its compiled filter (None: log
    every stream); other loggers were refused at compile."""
    out = []
    for cfg in configs:
        typed = cfg.typed_config
        if typed is None or typed.type_url not in _FILE_LOG_TYPES:
            continue
        path = _FILE_LOG_TYPES[typed.type_url]
        log_format = None
        which = None
        if path is None:
            msg = file_pb2.FileAccessLog()
            typed.Unpack(msg)
            path = msg.path
            which = msg.WhichOneof("access_log_format")
            if which == "log_format":
                log_format = msg.log_format
        else:
            msg = (stream_pb2.StdoutAccessLog() if path == "/dev/stdout"
                   else stream_pb2.StderrAccessLog())
            typed.Unpack(msg)
            if msg.HasField("log_format"):
                log_format = msg.log_format
        try:
            sink = AccessLogFile.open(path)
        except OSError as exc:
            # The rest of the listener still serves; the operator learns why nothing logs.
            log.error("access log %s cannot be opened: %s", path, exc)
            continue
        formatter = (TextFormatter(msg.format or ENVOY_DEFAULT_FORMAT)
                     if which == "format" else from_substitution_format(log_format))
        out.append((formatter, sink, cfg.filter))
    return tuple(out)


class HttpConnectionManager:
    """One filter chain's connection manager: the compiled per-config parts, shared by every
    connection accepted with that chain."""

    def __init__(
        self,
        config: HttpConnectionManagerConfig,
        listener_name: str,
        chain_index: int,
        holder: SnapshotHolder,
        router_context: RouterContext,
        sweeper: DeadlineSweeper,
        store: StatsStore,
        buffer_limit: int,
        request_ids: RequestIdGenerator,
        inline_routes: RouteTable | None = None,
        traffic_direction: int = 0,
    ) -> None:
        self.config = config
        # An inline route_config belongs to this version of the listener: connections
        # accepted under it keep it after a listener update (chain indexes may shift), as
        # Envoy's draining listeners do. RDS tables are looked up by name per stream instead.
        self.inline_routes = inline_routes
        # Set when a listener update replaces this manager: its connections close after their
        # current response (HTTP/1.1 ``connection: close``, HTTP/2 GOAWAY).
        self.draining = False
        self.listener_name = listener_name
        self.chain_index = chain_index
        self.holder = holder
        self.router_context = router_context
        self.sweeper = sweeper
        self.buffer_limit = buffer_limit
        self.request_ids = request_ids
        self.options = HttpConnectionOptions(
            max_headers_count=config.max_headers_count or 100,
            idle_timeout=config.idle_timeout or DEFAULT_DOWNSTREAM_IDLE_TIMEOUT,
            server_name=config.server_name.encode("latin-1"),
            generate_request_id=config.generate_request_id,
            headers_with_underscores=config.headers_with_underscores_action,
            max_requests_per_connection=config.max_requests_per_connection or 0,
            max_connection_duration=config.max_connection_duration or 0.0,
        )
        # The codecs' http1.* / http2.* counters (created when a setting can count in them).
        self.codec_stats = {p: store.codec(p) for p in ("http1", "http2")} if (
            config.headers_with_underscores_action) else {}
        self.filters, self.router_config = build_filter_chain(
            config, store, traffic_direction, f"{listener_name}[{chain_index}]")
        # Filters with an end-of-stream hook (istio.stats), run before the access log.
        self.stream_enders = tuple(f for f in self.filters if hasattr(f, "on_stream_end"))
        # Filter plans: a ``route_scoped`` filter decides from the route alone whether it has
        # anything to do (fault without a fault config, CORS without a policy); that is asked
        # once per route and cached here, and the stream skips the filter both ways.
        self.scoped = tuple(getattr(f, "route_scoped", False) for f in self.filters)
        # Encoder filters, last to first (filters whose encode_headers is a no-op left out).
        self.encoders = tuple(i for i in range(len(self.filters) - 1, -1, -1)
                              if getattr(self.filters[i], "encodes", True))
        self._plans: dict[int, tuple[Route | None, tuple[bool, ...]]] = {}
        self.stats: HttpConnectionManagerStats = store.http_connection_manager(
            config.stat_prefix)
        self.access_logs = build_access_loggers(config.access_logs)
        self.upgrade_types = frozenset(config.upgrade_types)
        self.stream_idle_timeout = config.stream_idle_timeout or 0.0
        self.request_timeout = config.request_timeout or 0.0
        self.rds_name = config.rds_route_config_name
        # http2_protocol_options: the listener compiles max_concurrent_streams; the windows
        # keep Envoy's defaults (256 MiB).
        self.http2_settings = Http2Settings.of(config.max_concurrent_streams)
        # normalize_path, merge_slashes, path_with_escaped_slashes_action; None: paths are
        # left as received.
        self.path_normalization = PathNormalization.from_settings(
            config.normalize_path, config.merge_slashes, config.path_with_escaped_slashes_action)
        # use_remote_address, xff_num_trusted_hops, internal_address_config, ...
        self.trust = RequestTrust.of(
            config.use_remote_address, config.xff_num_trusted_hops, config.skip_xff_append,
            config.internal_cidrs, config.internal_unix_sockets, config.generate_request_id,
            config.preserve_external_request_id)
        # x-forwarded-client-cert (pistio.proxy.tls.xfcc); None: left as received.
        self.xfcc = xfcc_policy(config.forward_client_cert_details,
                                config.set_current_client_cert_details)
        # The listener's traffic_direction (envoy.config.core.v3.TrafficDirection).
        self.traffic_direction = traffic_direction
        # pistio.proxy.tracing: None unless the HCM configures tracing with a provider.
        self.tracer = build_tracer(config.tracing, traffic_direction, router_context.loop,
                                   router_context.clusters, store)

    def plan_for(self, route: Route | None) -> tuple[bool, ...]:
        """Per filter position: does the filter run for ``route`` (always, unless it is
        route-scoped and says it has nothing to do there)."""
        key = id(route)
        entry = self._plans.get(key)
        if entry is not None and entry[0] is route:
            return entry[1]
        plan = tuple(not scoped or f.applies(route)  # type: ignore[union-attr]
                     for f, scoped in zip(self.filters, self.scoped, strict=True))
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()  # routes of replaced route tables
        self._plans[key] = (route, plan)
        return plan

    def route_table(self) -> RouteTable | None:
        if self.rds_name is None and self.inline_routes is not None:
            return self.inline_routes
        return self.holder.current.route_table(self.listener_name, self.chain_index,
                                               self.rds_name)

    def connection(self, downstream: DownstreamConnectionInfo | None = None,
                   alpn: str | None = None) -> asyncio.Protocol:
        """The codec for a new downstream connection (Envoy's ``codec_type``): HTTP/1.1 or
        HTTP/2 when configured so; AUTO picks HTTP/2 when TLS negotiated ALPN ``h2`` or the
        first bytes are the HTTP/2 connection preface (prior-knowledge h2c), else HTTP/1.1."""
        codec = self.config.codec_type
        if codec == CODEC_HTTP2 or (codec == CODEC_AUTO and alpn == "h2"):
            return self.http2_connection(downstream)
        if codec == CODEC_AUTO and alpn is None:
            return CodecSniffer(self, downstream)
        return self.http1_connection(downstream)

    def http1_connection(self, downstream: DownstreamConnectionInfo | None
                         ) -> Http1ServerConnection:
        conn = Http1ServerConnection(self, self.options, self.sweeper, self.request_ids)
        conn.downstream_info = downstream  # type: ignore[attr-defined]
        stats = self.stats
        stats.downstream_cx_total += 1
        stats.downstream_cx_http1_total += 1
        return conn

    def http2_connection(self, downstream: DownstreamConnectionInfo | None
                         ) -> Http2ServerConnection:
        conn = Http2ServerConnection(self, self.options, self.http2_settings, self.sweeper,
                                     self.request_ids)
        conn.downstream_info = downstream
        stats = self.stats
        stats.downstream_cx_total += 1
        stats.downstream_cx_http2_total += 1
        return conn

    # --- the codec's stream handler ---------------------------------------------------------------

    def on_request(self, stream: Http1Stream) -> None:
        stats = self.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_http1_total += 1
        stats.downstream_rq_active += 1
        active = ActiveStream(self, stream)
        policy = self.path_normalization
        if policy is None or policy.unchanged(stream.head.target) or active.normalize_path(
                policy):
            active.decode(0)

    def on_http2_request(self, stream: Http2Stream) -> None:
        stats = self.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_http2_total += 1
        stats.downstream_rq_active += 1
        active = ActiveStream(self, stream)  # type: ignore[arg-type]
        policy = self.path_normalization
        if policy is None or policy.unchanged(stream.head.target) or active.normalize_path(
                policy):
            active.decode(0)


class CodecSniffer(asyncio.Protocol):
    """``codec_type: AUTO`` without ALPN: reads until the first bytes tell the HTTP/2
    connection preface from an HTTP/1 request line, then hands the transport (and the bytes
    read) to that codec. Envoy's AUTO does the same on plaintext connections."""

    __slots__ = ("hcm", "downstream", "transport", "buffered")

    def __init__(self, hcm: HttpConnectionManager,
                 downstream: DownstreamConnectionInfo | None) -> None:
        self.hcm = hcm
        self.downstream = downstream
        self.transport: asyncio.BaseTransport | None = None
        self.buffered = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        data = self.buffered + data if self.buffered else data
        n = min(len(data), len(H2_PREFACE))
        if data[:n] == H2_PREFACE[:n]:
            if n < len(H2_PREFACE):
                self.buffered = data  # could still be the preface: wait for more
                return
            protocol: asyncio.Protocol = self.hcm.http2_connection(self.downstream)
        else:
            protocol = self.hcm.http1_connection(self.downstream)
        transport = self.transport
        assert transport is not None
        transport.set_protocol(protocol)  # type: ignore[attr-defined]
        protocol.connection_made(transport)
        protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class ActiveStream:
    """One request in the connection manager: its route, filters and router."""

    __slots__ = (
        "hcm", "stream", "info", "route_table", "_route", "_route_done", "_view", "router",
        "out", "held", "held_bytes", "finished", "deadline", "_request_deadline",
        "_replying", "_timer", "_on_end", "gate_paused", "last_activity", "grpc_web", "_plan",
        "span",
    )

    def __init__(self, hcm: HttpConnectionManager, stream: Http1Stream) -> None:
        self.hcm = hcm
        self.stream = stream
        downstream = getattr(stream.conn, "downstream_info", None)
        info = self.info = StreamInfo(downstream)
        version = stream.head.version
        info.protocol = ("HTTP/1.1" if version == "1.1" else "HTTP/2" if version == "2"
                         else "HTTP/1.0")
        info.request_headers = stream.head
        route_table = self.route_table = hcm.route_table()
        # Internal or external: x-forwarded-for, x-envoy-* sanitizing, the client address.
        # A sidecar's usual request (no x-forwarded-for, nothing to strip) skips the call.
        index = stream.head.index
        trust = hcm.trust
        if trust.use_remote_address or not SIDECAR_UNTOUCHED.isdisjoint(index) or (
                route_table is not None and route_table.internal_only_headers):
            view = trust.apply(
                stream.head, downstream,
                route_table.internal_only_headers if route_table is not None else (),
                hcm.options.forwarded_proto, hcm.request_ids)
            if view is not None:
                info.downstream = view
        if hcm.xfcc is not None:
            hcm.xfcc.apply(stream.head, downstream)
        # Trace context in, this hop's span ids out into the upstream request headers.
        tracer = hcm.tracer
        self.span = tracer.start(self) if tracer is not None else None
        self._route: Route | None = None
        self._route_done = False
        self._view: RequestView | None = None
        self.router: RouterStream | None = None
        self.out: list[bytes] = []
        self.held: list[bytes] = []  # request body received before the router took over
        self.held_bytes = 0
        self.finished = False
        self._replying = False
        self._timer: asyncio.TimerHandle | None = None
        self._on_end: list[Callable[[], None]] | None = None
        self.gate_paused = False
        # A gRPC-Web request's translation state (set by the grpc_web filter).
        self.grpc_web: GrpcWebStream | None = None
        self._plan: tuple[bool, ...] | None = None
        self.deadline = _INF
        self._request_deadline = _INF
        self.last_activity = stream.conn.loop.time()
        if hcm.request_timeout > 0 and not stream.request_done:
            self._request_deadline = stream.conn.loop.time() + hcm.request_timeout
        if hcm.stream_idle_timeout > 0 or self._request_deadline != _INF:
            self._touch()
            hcm.sweeper.watch(self)
        # The codec sends the request body here (and reports its end, and the client going
        # away) as if this were the upstream connection.
        stream.upstream = self  # type: ignore[assignment]

    def normalize_path(self, policy: PathNormalization) -> bool:
        """Apply the connection manager's path settings before anything reads the path (Envoy's
        ``maybeNormalizePath``); False when the stream was answered instead (400, or 307 to
        the unescaped path; a gRPC client cannot follow a redirect and gets the 400)."""
        head = self.stream.head
        target = head.target
        if target[:1] != b"/":
            return True  # authority-form (CONNECT), absolute-form, "*": not a path
        outcome = policy.apply_looked(target)  # the caller's policy.unchanged() said no
        if outcome is None:
            return True
        action, new_target = outcome
        if action is PathAction.CONTINUE:
            head.target = new_target
            return True
        stats = self.hcm.stats
        if action is PathAction.REDIRECT and not is_grpc(head.index.get(b"content-type")):
            stats.downstream_rq_redirected_with_normalized_path += 1
            self.send_local_reply(307, b"", [(b"location", new_target)],
                                  details="path_normalization_failed")
        else:
            stats.downstream_rq_failed_path_normalization += 1
            self.send_local_reply(400, b"", details="path_normalization_failed")
        return False

    # --- what filters and the router use -----------------------------------------------------------

    def request_view(self) -> RequestView:
        view = self._view
        if view is None:
            head = self.stream.head
            view = self._view = RequestView(
                head.method.decode("latin-1"),
                head.target.decode("latin-1"),
                head.authority.decode("latin-1"),
                head.index,
                "http",
            )
        return view

    def route(self) -> Route | None:
        """The route for this stream, found once (Envoy's cached route)."""
        if not self._route_done:
            self._route_done = True
            table = self.route_table
            self._route = table.route(self.request_view()) if table is not None else None
        return self._route

    def forwarded_proto(self) -> str:
        raw = self.stream.head.index.get(b"x-forwarded-proto")
        return raw.decode("latin-1") if raw else "http"

    def on_end(self, callback: Callable[[], None]) -> None:
        if self._on_end is None:
            self._on_end = []
        self._on_end.append(callback)

    def filter_plan(self) -> tuple[bool, ...]:
        """Which filters run for this stream's route (``HttpConnectionManager.plan_for``)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = self.hcm.plan_for(self.route())
        return plan

    def decode(self, position: int) -> None:
        """Run the decoder filters from ``position``, then the router."""
        hcm = self.hcm
        filters = hcm.filters
        scoped = hcm.scoped
        for i in range(position, len(filters)):
            if scoped[i] and not self.filter_plan()[i]:
                continue
            if not filters[i].decode_headers(self, i) or self.finished:
                return
        if self.finished:
            return
        router = self.router = RouterStream(self, self.hcm.router_context,
                                            self.hcm.router_config)
        router.decode_headers()

    def pause_decoding(self, delay: float, resume: Callable[[], None]) -> None:
        """A filter stops the chain for ``delay`` seconds, then ``resume`` runs."""
        self._timer = self.stream.conn.loop.call_later(delay, self._resume, resume)

    def _resume(self, resume: Callable[[], None]) -> None:
        self._timer = None
        if not self.finished:
            resume()

    def continue_decoding(self, position: int) -> None:
        self.decode(position)

    def take_held_body(self) -> list[bytes]:
        held = self.held
        self.held = []
        self.held_bytes = 0
        if self.gate_paused:
            self.gate_paused = False
            self.stream.conn.gate.resume(UPSTREAM_CONNECTING)
        return held

    def encode_headers(self, status: int, fields: Fields, upto: int | None = None) -> Fields:
        """Response headers through the encoder filters (last to first, as Envoy)."""
        hcm = self.hcm
        filters = hcm.filters
        scoped = hcm.scoped
        for i in hcm.encoders:
            if upto is not None and i >= upto:
                continue
            if scoped[i] and not self.filter_plan()[i]:
                continue
            fields = filters[i].encode_headers(self, status, fields)
        return fields

    def response_begins(self, status: int) -> None:
        self.info.response_code = status
        self.hcm.stats.record_response(status)

    def send_local_reply(
        self,
        status: int,
        body: bytes | None,
        fields: Fields | None = None,
        *,
        flag: int = 0,
        details: str | None = None,
        filter_position: int | None = None,
    ) -> None:
        """Answer from the proxy (Envoy's ``sendLocalReply``): the headers pass through the
        encoder filters before the one that answers, then the codec writes the reply."""
        if self.finished:
            return
        info = self.info
        info.response_flags |= flag
        info.response_code_details = details
        gw = self.grpc_web
        if gw is not None and (filter_position is None or gw.position <= filter_position):
            body, fields = gw.local_reply(status, body, fields or [])
        stream = self.stream
        if stream.response_started or stream.cancelled:
            # Too late for a reply: Envoy resets the stream.
            self._end_router()
            if not stream.cancelled:
                stream.conn.reset()
            self.finish()
            return
        fields = self.encode_headers(status, fields or [], filter_position)
        content_type = None
        for i, (name, value) in enumerate(fields):
            if name.lower() == b"content-type":
                # A replier (or encoder filter) chose the type: it replaces text/plain.
                content_type = value
                fields = fields[:i] + fields[i + 1:]
                break
        if body:
            info.local_reply_body = body.decode("latin-1")
            info.bytes_sent += len(body)
        self.response_begins(status)
        self._end_router()
        self._replying = True
        try:
            if fields:
                # The codec writes its ``server`` line into every local reply; our extra
                # headers ride along with it.
                conn = stream.conn
                saved = conn.server_line
                conn.server_line = saved + b"".join(
                    n + b": " + v + b"\r\n" for n, v in fields)
                try:
                    stream.send_local_reply(status, body, content_type)
                finally:
                    conn.server_line = saved
            else:
                stream.send_local_reply(status, body, content_type)
        finally:
            self._replying = False
        self.finish()

    def _end_router(self) -> None:
        router = self.router
        if router is not None:
            router.reset()

    def finish(self) -> None:
        """The stream is over: stats, access log, timers."""
        if self.finished:
            return
        self.finished = True
        hcm = self.hcm
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        hcm.sweeper.unwatch(self)
        if self.gate_paused:
            self.gate_paused = False
            self.stream.conn.gate.resume(UPSTREAM_CONNECTING)
        if self._on_end is not None:
            for callback in self._on_end:
                callback()
        stats = hcm.stats
        stats.downstream_rq_active -= 1
        info = self.info
        now = time.monotonic_ns()
        info.last_downstream_tx_byte_sent = now
        stats.downstream_rq_time.record((now - info.start_monotonic_ns) / 1e6)
        if self.stream.cancelled:
            info.response_flags |= rf.DOWNSTREAM_CONNECTION_TERMINATION
            stats.downstream_rq_rx_reset += 1
        if self.span is not None:
            hcm.tracer.finish(self.span, self)  # type: ignore[union-attr]
        if hcm.stream_enders:
            for f in hcm.stream_enders:
                f.on_stream_end(self)  # type: ignore[union-attr]
        if hcm.access_logs:
            for formatter, sink, log_filter in hcm.access_logs:
                if log_filter is None or log_filter.matches(info):
                    sink.write(formatter.format(info))
        # The router is done: drop it, which breaks the stream ↔ router reference cycle so
        # that the request's objects are freed at once rather than by the cyclic GC.
        self.router = None

    # --- deadlines (stream idle, request timeout) -------------------------------------------------

    def _touch(self) -> None:
        idle = self.hcm.stream_idle_timeout
        deadline = self.last_activity + idle if idle > 0 else _INF
        self.deadline = min(deadline, self._request_deadline)

    def on_deadline(self, now: float) -> None:
        if self.finished:
            return
        stream = self.stream
        if now >= self._request_deadline and not stream.request_done:
            self.hcm.stats.downstream_rq_timeout += 1
            self.send_local_reply(408, REQUEST_TIMEOUT_BODY, details="request_overall_timeout")
            return
        if stream.request_done:
            self._request_deadline = _INF
        idle = self.hcm.stream_idle_timeout
        if idle <= 0 or self.last_activity + idle > now:
            self._touch()
            return
        self.hcm.stats.downstream_rq_idle_timeout += 1
        self.send_local_reply(408, STREAM_TIMEOUT_BODY, flag=rf.STREAM_IDLE_TIMEOUT,
                              details="stream_idle_timeout")

    # --- the codec's view: this object is the stream's "upstream" ---------------------------------

    def flush(self) -> None:
        """Request body pieces the codec queued on ``out``."""
        pieces = self.out
        if not pieces:
            return
        self.out = []
        self.last_activity = self.stream.conn.loop.time()
        gw = self.grpc_web
        if gw is not None and gw.text_request:
            decoded = gw.decode_request(self, pieces)
            if not decoded:
                return  # a partial base64 group, or a 400 was sent
            pieces = decoded
        router = self.router
        if router is not None:
            router.on_request_body(pieces)
            return
        if self.finished:
            return
        self.held += pieces
        for piece in pieces:
            self.held_bytes += len(piece)
        if self.held_bytes > WRITE_HIGH_WATER and not self.gate_paused:
            self.gate_paused = True
            self.stream.conn.gate.pause(UPSTREAM_CONNECTING)

    def on_request_complete(self) -> None:
        self.flush()
        info = self.info
        info.last_downstream_rx_byte_received = time.monotonic_ns()
        router = self.router
        if router is not None:
            router.on_request_complete()

    def abort_stream(self) -> None:
        """The codec is done with the stream: the client went away, a local reply went out,
        or a protocol error closed the connection."""
        if self._replying or self.finished:
            return
        self._end_router()
        self.finish()

    def pause_reading_for_peer(self) -> None:
        up = self._upstream_connection()
        if up is not None:
            up.pause_reading_for_peer()

    def resume_reading_for_peer(self) -> None:
        up = self._upstream_connection()
        if up is not None:
            up.resume_reading_for_peer()

    def _upstream_connection(self) -> Any:
        router = self.router
        if router is None or router.attempt is None:
            return None
        return router.attempt.upstream

