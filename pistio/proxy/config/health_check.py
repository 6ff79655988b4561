"""Envoy's ``Cluster.health_checks`` (``envoy.config.core.v3.HealthCheck``) compiled into an
immutable ``HealthCheckConfig``.

pistio runs HTTP/1.1 checks (``http_health_check``) and TCP checks (``tcp_health_check``:
connect only when ``send`` and ``receive`` are empty, else send the bytes and expect every
``receive`` payload in order) with every timing knob of the message: ``timeout``,
``interval``, ``initial_jitter``, ``interval_jitter``, ``interval_jitter_percent``,
``unhealthy_threshold``, ``healthy_threshold``, ``reuse_connection``, ``no_traffic_interval``,
``no_traffic_healthy_interval``, ``unhealthy_interval``, ``unhealthy_edge_interval`` and
``healthy_edge_interval``. Every default is Envoy's. What it does not run is NACKed with the
field's path: gRPC, Redis/custom checkers, HTTP/2 or HTTP/3 health check codecs, ``send`` /
``receive`` payloads of HTTP checks, event logs, TLS options, transport socket match criteria,
``alt_port``, and more than one entry in ``health_checks`` (Envoy's own rule for years:
"Multiple health checks not supported"). The runtime lives in
``pistio.proxy.upstream.health_check``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2, health_check_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import compile_string_matcher
from pistio.proxy.config.unsupported import unsupported_fields

HealthCheck = health_check_pb2.HealthCheck

# Envoy's defaults.
DEFAULT_NO_TRAFFIC_INTERVAL = 60.0
DEFAULT_EXPECTED_STATUSES: tuple[tuple[int, int], ...] = ((200, 201),)  # [start, end)
HC_USER_AGENT = "Envoy/HC"

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.config.core.v3.HealthCheck": frozenset(
        {
            "timeout",
            "interval",
            "initial_jitter",
            "interval_jitter",
            "interval_jitter_percent",
            "unhealthy_threshold",
            "healthy_threshold",
            "reuse_connection",
            "http_health_check",
            "tcp_health_check",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
            # Only meaningful with an event log, which is refused: no effect either way.
            "always_log_health_check_failures",
            "always_log_health_check_success",
        }
    ),
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck": frozenset(
        {
            "host",
            "path",
            "request_headers_to_add",
            "request_headers_to_remove",
            "expected_statuses",
            "retriable_statuses",
            "codec_client_type",
            "service_name_matcher",
            "method",
        }
    ),
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck": frozenset({"send", "receive"}),
    "envoy.config.core.v3.HealthCheck.Payload": frozenset({"text", "binary"}),
    "envoy.config.core.v3.HeaderValueOption": frozenset(
        {"header", "append", "append_action", "keep_empty_value"}
    ),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value", "raw_value"}),
}

_METHODS = {
    base_pb2.METHOD_UNSPECIFIED: "GET",
    base_pb2.GET: "GET",
    base_pb2.HEAD: "HEAD",
    base_pb2.POST: "POST",
    base_pb2.PUT: "PUT",
    base_pb2.DELETE: "DELETE",
    base_pb2.OPTIONS: "OPTIONS",
    base_pb2.TRACE: "TRACE",
    base_pb2.PATCH: "PATCH",
}

# HeaderValueOption.HeaderAppendAction, as the health checker applies it.
APPEND = "append"  # APPEND_IF_EXISTS_OR_ADD
ADD_IF_ABSENT = "add_if_absent"
OVERWRITE = "overwrite"  # OVERWRITE_IF_EXISTS_OR_ADD
OVERWRITE_IF_EXISTS = "overwrite_if_exists"
_APPEND_ACTIONS = {
    base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD: APPEND,
    base_pb2.HeaderValueOption.ADD_IF_ABSENT: ADD_IF_ABSENT,
    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD: OVERWRITE,
    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS: OVERWRITE_IF_EXISTS,
}


@dataclass(frozen=True, slots=True)
class HttpHealthCheckConfig:
    """``HttpHealthCheck``: one HTTP/1.1 request per check."""

    path: str
    host: str = ""  # empty: the cluster's name (Envoy)
    method: str = "GET"
    # (lower-case name, value, action) in order; applied to the base request headers.
    request_headers: tuple[tuple[str, str, str], ...] = ()
    remove_headers: frozenset[str] = frozenset()
    expected_statuses: tuple[tuple[int, int], ...] = DEFAULT_EXPECTED_STATUSES
    retriable_statuses: tuple[tuple[int, int], ...] = ()
    # x-envoy-upstream-healthchecked-cluster must match this (its proto, for equality).
    service_name_matcher: bytes | None = None
    service_name_check: Callable[[str], bool] | None = field(default=None, compare=False)

    def expected(self, status: int) -> bool:
        return any(start <= status < end for start, end in self.expected_statuses)

    def retriable(self, status: int) -> bool:
        return any(start <= status < end for start, end in self.retriable_statuses)


@dataclass(frozen=True, slots=True)
class TcpHealthCheckConfig:
    """``TcpHealthCheck``: connect only when ``send`` and ``receive`` are empty."""

    send: bytes = b""
    receive: tuple[bytes, ...] = ()

    @property
    def connect_only(self) -> bool:
        return not self.send and not self.receive


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """One ``HealthCheck``; times in seconds."""

    timeout: float
    interval: float
    unhealthy_threshold: int
    healthy_threshold: int
    initial_jitter: float = 0.0
    interval_jitter: float = 0.0
    interval_jitter_percent: int = 0
    reuse_connection: bool = True
    no_traffic_interval: float = DEFAULT_NO_TRAFFIC_INTERVAL
    no_traffic_healthy_interval: float = DEFAULT_NO_TRAFFIC_INTERVAL
    unhealthy_interval: float = 0.0  # compiled to ``interval`` when unset
    unhealthy_edge_interval: float = 0.0  # ``unhealthy_interval`` when unset
    healthy_edge_interval: float = 0.0  # ``interval`` when unset
    http: HttpHealthCheckConfig | None = None
    tcp: TcpHealthCheckConfig | None = None


def _seconds(d: object) -> float:
    return d.seconds + d.nanos / 1e9  # type: ignore[attr-defined]


def compile_health_checks(
    checks: list[HealthCheck] | object, path: str, problems: list[str]
) -> HealthCheckConfig | None:
    """``Cluster.health_checks``: ``None`` when empty; problems are appended to ``problems``
    (``path`` names the cluster, e.g. ``"Cluster x: "``)."""
    checks = list(checks)  # type: ignore[call-overload]
    if not checks:
        return None
    if len(checks) > 1:
        problems.append(f"{path}health_checks: only one health check per cluster is supported")
    return _compile(checks[0], f"{path}health_checks[0]", problems)


def _compile(hc: HealthCheck, path: str, problems: list[str]) -> HealthCheckConfig | None:
    problems.extend(unsupported_fields(hc, _ALLOWED, path))
    start = len(problems)
    for name in ("timeout", "interval"):
        if not hc.HasField(name) or _seconds(getattr(hc, name)) <= 0:
            problems.append(f"{path}.{name}: required, and must be greater than 0")
    for name in ("unhealthy_threshold", "healthy_threshold"):
        if not hc.HasField(name):
            problems.append(f"{path}.{name}: required")
    kind = hc.WhichOneof("health_checker")
    http = tcp = None
    if kind == "http_health_check":
        http = _http(hc.http_health_check, f"{path}.http_health_check", problems)
    elif kind == "tcp_health_check":
        tcp = _tcp(hc.tcp_health_check, f"{path}.tcp_health_check", problems)
    elif kind is None:
        problems.append(f"{path}: needs http_health_check or tcp_health_check")
    for name in ("no_traffic_interval", "no_traffic_healthy_interval", "unhealthy_interval",
                 "unhealthy_edge_interval", "healthy_edge_interval"):
        if hc.HasField(name) and _seconds(getattr(hc, name)) <= 0:
            problems.append(f"{path}.{name}: must be greater than 0")
    if len(problems) > start:
        return None

    def secs(name: str, default: float) -> float:
        return _seconds(getattr(hc, name)) if hc.HasField(name) else default

    interval = _seconds(hc.interval)
    no_traffic = secs("no_traffic_interval", DEFAULT_NO_TRAFFIC_INTERVAL)
    unhealthy = secs("unhealthy_interval", interval)
    return HealthCheckConfig(
        timeout=_seconds(hc.timeout),
        interval=interval,
        unhealthy_threshold=max(1, hc.unhealthy_threshold.value),
        healthy_threshold=max(1, hc.healthy_threshold.value),
        initial_jitter=secs("initial_jitter", 0.0),
        interval_jitter=secs("interval_jitter", 0.0),
        interval_jitter_percent=hc.interval_jitter_percent,
        reuse_connection=hc.reuse_connection.value if hc.HasField("reuse_connection") else True,
        no_traffic_interval=no_traffic,
        no_traffic_healthy_interval=secs("no_traffic_healthy_interval", no_traffic),
        unhealthy_interval=unhealthy,
        unhealthy_edge_interval=secs("unhealthy_edge_interval", unhealthy),
        healthy_edge_interval=secs("healthy_edge_interval", interval),
        http=http,
        tcp=tcp,
    )


def _ranges(ranges: object, where: str, problems: list[str]) -> tuple[tuple[int, int], ...]:
    out = []
    for i, r in enumerate(ranges):  # type: ignore[attr-defined]
        if not (100 <= r.start < r.end <= 600):
            problems.append(f"{where}[{i}]: must be a range [start, end) within [100, 600)")
        out.append((r.start, r.end))
    return tuple(out)


def _http(
    h: HealthCheck.HttpHealthCheck, path: str, problems: list[str]
) -> HttpHealthCheckConfig:
    if not h.path:
        problems.append(f"{path}.path: required")
    if h.codec_client_type != 0:  # envoy.type.v3.CodecClientType.HTTP1
        problems.append(f"{path}.codec_client_type: only HTTP1 health checks are supported")
    method = _METHODS.get(h.method)
    if method is None:
        problems.append(f"{path}.method: {base_pb2.RequestMethod.Name(h.method)} is not "
                        "allowed for health checks")
        method = "GET"
    headers = []
    for i, opt in enumerate(h.request_headers_to_add):
        where = f"{path}.request_headers_to_add[{i}]"
        name = opt.header.key.lower()
        value = opt.header.raw_value.decode("latin-1") if opt.header.raw_value else (
            opt.header.value)
        if not name or name.startswith(":") or name == "host":
            problems.append(f"{where}.header.key: {opt.header.key!r} cannot be set on a health "
                            "check request (use http_health_check.host for the authority)")
            continue
        if "%" in value:
            problems.append(f"{where}.header.value: header formatters (%...%) are not supported "
                            "in health check requests")
            continue
        if not value and not opt.keep_empty_value:
            continue
        if opt.HasField("append"):
            action = APPEND if opt.append.value else OVERWRITE
        else:
            action = _APPEND_ACTIONS.get(opt.append_action, APPEND)
        headers.append((name, value, action))
    matcher = None
    check = None
    if h.HasField("service_name_matcher"):
        try:
            check = compile_string_matcher(h.service_name_matcher, f"{path}.service_name_matcher")
            matcher = h.service_name_matcher.SerializeToString(deterministic=True)
        except ConfigError as err:
            problems.extend(err.problems)
    return HttpHealthCheckConfig(
        path=h.path,
        host=h.host,
        method=method,
        request_headers=tuple(headers),
        remove_headers=frozenset(n.lower() for n in h.request_headers_to_remove),
        expected_statuses=_ranges(h.expected_statuses, f"{path}.expected_statuses", problems)
        or DEFAULT_EXPECTED_STATUSES,
        retriable_statuses=_ranges(h.retriable_statuses, f"{path}.retriable_statuses",
                                   problems),
        service_name_matcher=matcher,
        service_name_check=check,
    )


def _payload(p: HealthCheck.Payload, where: str, problems: list[str]) -> bytes:
    kind = p.WhichOneof("payload")
    if kind == "binary":
        return p.binary
    if kind == "text":
        try:
            return bytes.fromhex(p.text)
        except ValueError:
            problems.append(f"{where}.text: not a hex string")
            return b""
    problems.append(f"{where}: needs text or binary")
    return b""


def _tcp(t: HealthCheck.TcpHealthCheck, path: str, problems: list[str]) -> TcpHealthCheckConfig:
    send = _payload(t.send, f"{path}.send", problems) if t.HasField("send") else b""
    receive = tuple(
        _payload(p, f"{path}.receive[{i}]", problems) for i, p in enumerate(t.receive)
    )
    return TcpHealthCheckConfig(send, tuple(r for r in receive if r))
