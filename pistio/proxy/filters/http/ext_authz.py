"""Envoy's external authorization filter (``envoy.filters.http.ext_authz``) with an HTTP
authorization service (``http_service``), as Istio's CUSTOM action uses it.

When the filter is enabled for the request (``filter_enabled`` fraction and
``filter_enabled_metadata``: Istio's matches the ``istio_ext_authz_shadow_effective_policy_id``
that the RBAC shadow rules of the CUSTOM policy wrote), the request is held and a *check
request* goes to a host of ``server_uri.cluster``: the original method, ``path_prefix`` +
the original path, ``content-length: 0`` and no body, the request's ``Host``, ``:method``,
``:path``, ``Authorization`` and ``Content-Length`` plus the headers that
``authorization_request.allowed_headers`` matches, and ``headers_to_add``.

- **200**: allowed. The authorization response headers matched by
  ``allowed_upstream_headers`` replace the request's, ``allowed_upstream_headers_to_append``
  are appended; ``allowed_client_headers_on_success`` go on the downstream response.
  ``ext_authz.ok``.
- **Any other status**: denied with that status and the service's body; the service's
  headers matched by ``allowed_client_headers`` (all but ``Host`` when unset) go to the
  client. Flag ``UAEX``, details ``ext_authz_denied``, ``ext_authz.denied``.
- **No answer** (no host, connection failure, ``server_uri.timeout``): ``ext_authz.error``;
  with ``failure_mode_allow`` the request goes on (``ext_authz.failure_mode_allowed``),
  else a local reply with ``status_on_error`` (403 by default), details ``ext_authz_error``.

The check request is plain HTTP/1.1 on a new connection (the authorization service's
cluster must not need upstream TLS). The gRPC service and ``with_request_body`` are
refused (NACK).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import Fraction, compile_runtime_fraction
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.filters.matchers import (
    MetadataMatcher,
    compile_metadata_matcher,
    string_list_matcher,
)
from pistio.proxy.http.headers import HOP_BY_HOP, Fields

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.stats.store import Counter, StatsStore

EXT_AUTHZ_FILTER_NAME = "envoy.filters.http.ext_authz"
DEFAULT_TIMEOUT = 0.2  # Envoy's server_uri timeout is required; 200 ms is its common default
_DEFAULT_REQUEST_HEADERS = frozenset({b"host", b"authorization", b"content-length"})
_CLIENT_DEFAULTS = frozenset({"content-length", "www-authenticate", "location"})
_NOT_FORWARDED = HOP_BY_HOP | {b"content-length"}

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz": frozenset(
        {"http_service", "transport_api_version", "failure_mode_allow", "status_on_error",
         "filter_enabled", "filter_enabled_metadata", "stat_prefix"}
    ),
    "envoy.extensions.filters.http.ext_authz.v3.HttpService": frozenset(
        {"server_uri", "path_prefix", "authorization_request", "authorization_response"}
    ),
    "envoy.config.core.v3.HttpUri": frozenset({"uri", "cluster", "timeout"}),
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationRequest": frozenset(
        {"allowed_headers", "headers_to_add"}
    ),
    "envoy.extensions.filters.http.ext_authz.v3.AuthorizationResponse": frozenset(
        {"allowed_upstream_headers", "allowed_upstream_headers_to_append",
         "allowed_client_headers", "allowed_client_headers_on_success"}
    ),
    "envoy.config.core.v3.HeaderValue": frozenset({"key", "value"}),
}

NameCheck = Callable[[str], bool]


def _none(_: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ExtAuthzConfig:
    cluster: str
    timeout: float
    path_prefix: bytes
    allowed_request: NameCheck
    headers_to_add: tuple[tuple[bytes, bytes], ...]
    upstream: NameCheck
    upstream_append: NameCheck
    client: NameCheck | None  # None: every header but host
    client_on_success: NameCheck
    failure_mode_allow: bool
    status_on_error: int
    enabled: Fraction | None
    enabled_metadata: MetadataMatcher | None
    stat_prefix: str


def unpack_ext_authz(typed: Any, where: str) -> ExtAuthzConfig:
    msg = ext_authz_pb2.ExtAuthz()
    typed.Unpack(msg)
    return compile_ext_authz(msg, where)


def compile_ext_authz(msg: ext_authz_pb2.ExtAuthz, where: str) -> ExtAuthzConfig:
    problems = unsupported_fields(msg, _ALLOWED, where)
    if msg.HasField("grpc_service"):
        problems = [p for p in problems if ".grpc_service:" not in p]
        problems.append(f"{where}.grpc_service: the gRPC authorization service is not "
                        "supported by pistio (use an HTTP service: envoyExtAuthzHttp)")
    elif not msg.HasField("http_service"):
        problems.append(f"{where}: needs http_service")
    service = msg.http_service
    uri = service.server_uri
    if msg.HasField("http_service") and uri.WhichOneof("http_upstream_type") != "cluster":
        problems.append(f"{where}.http_service.server_uri.cluster: is required")
    timeout = DEFAULT_TIMEOUT
    if uri.HasField("timeout"):
        timeout = uri.timeout.seconds + uri.timeout.nanos / 1e9
    req, resp = service.authorization_request, service.authorization_response
    checks: dict[str, NameCheck] = {}
    for name, lst in (("allowed_headers", req.allowed_headers),
                      ("allowed_upstream_headers", resp.allowed_upstream_headers),
                      ("allowed_upstream_headers_to_append",
                       resp.allowed_upstream_headers_to_append),
                      ("allowed_client_headers", resp.allowed_client_headers),
                      ("allowed_client_headers_on_success",
                       resp.allowed_client_headers_on_success)):
        try:
            checks[name] = string_list_matcher(lst.patterns, f"{where}.http_service.{name}") \
                if lst.patterns else _none
        except ConfigError as err:
            problems.extend(err.problems)
    enabled_metadata = None
    if msg.HasField("filter_enabled_metadata"):
        try:
            enabled_metadata = compile_metadata_matcher(msg.filter_enabled_metadata,
                                                        f"{where}.filter_enabled_metadata")
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems)
    client = checks["allowed_client_headers"] if resp.allowed_client_headers.patterns else None
    return ExtAuthzConfig(
        cluster=uri.cluster,
        timeout=timeout or DEFAULT_TIMEOUT,
        path_prefix=service.path_prefix.encode("latin-1"),
        allowed_request=checks["allowed_headers"],
        headers_to_add=tuple((h.key.lower().encode("latin-1"), h.value.encode("latin-1"))
                             for h in req.headers_to_add),
        upstream=checks["allowed_upstream_headers"],
        upstream_append=checks["allowed_upstream_headers_to_append"],
        client=client,
        client_on_success=checks["allowed_client_headers_on_success"],
        failure_mode_allow=msg.failure_mode_allow,
        status_on_error=msg.status_on_error.code or 403,
        enabled=compile_runtime_fraction(msg.filter_enabled)
        if msg.HasField("filter_enabled") else None,
        enabled_metadata=enabled_metadata,
        stat_prefix=msg.stat_prefix,
    )


@dataclass(slots=True)
class CheckResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ExtAuthzFilter:
    __slots__ = ("name", "config", "ok", "denied", "error", "disabled", "failure_mode_allowed",
                 "_pending", "_on_success")

    def __init__(self, name: str, config: ExtAuthzConfig, store: StatsStore,
                 stat_prefix: str) -> None:
        self.name = name
        self.config = config
        prefix = f"http.{stat_prefix}.ext_authz."
        if config.stat_prefix:
            prefix += config.stat_prefix + "."
        self.ok: Counter = store.counter(prefix + "ok")
        self.denied: Counter = store.counter(prefix + "denied")
        self.error: Counter = store.counter(prefix + "error")
        self.disabled: Counter = store.counter(prefix + "disabled")
        self.failure_mode_allowed: Counter = store.counter(prefix + "failure_mode_allowed")
        self._pending: set[asyncio.Task[None]] = set()
        self._on_success: dict[int, Fields] = {}  # stream id → response headers to add

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        config = self.config
        if config.enabled is not None and not config.enabled.enabled(random.getrandbits(32)):
            return True
        if config.enabled_metadata is not None and \
                not config.enabled_metadata.matches(s.info.dynamic_metadata):
            self.disabled.value += 1
            return True
        task = s.stream.conn.loop.create_task(self._check(s, position))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        s.on_end(task.cancel)
        return False

    async def _check(self, s: ActiveStream, position: int) -> None:
        config = self.config
        try:
            async with asyncio.timeout(config.timeout):
                response = await self._call(s)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            response = None
        if s.finished:
            return
        if response is None:
            self.error.value += 1
            if config.failure_mode_allow:
                self.failure_mode_allowed.value += 1
                s.continue_decoding(position + 1)
                return
            s.send_local_reply(config.status_on_error, b"",
                               flag=rf.UNAUTHORIZED_EXTERNAL_SERVICE, details="ext_authz_error",
                               filter_position=position)
            return
        if response.status == 200:
            self.ok.value += 1
            self._allow(s, response)
            s.continue_decoding(position + 1)
            return
        self.denied.value += 1
        client = config.client
        fields = [(n, v) for n, v in response.headers
                  if n not in _NOT_FORWARDED and (
                      (client is None and n != b"host") or (client is not None and (
                          client(n.decode("latin-1")) or n.decode("latin-1") in _CLIENT_DEFAULTS)))]
        s.send_local_reply(response.status, response.body, fields,
                           flag=rf.UNAUTHORIZED_EXTERNAL_SERVICE, details="ext_authz_denied",
                           filter_position=position)

    def _allow(self, s: ActiveStream, response: CheckResponse) -> None:
        config = self.config
        head = s.stream.head
        on_success: Fields = []
        for name, value in response.headers:
            text = name.decode("latin-1")
            if name in _NOT_FORWARDED:
                continue
            if config.upstream(text):
                head.set(name, value)
            elif config.upstream_append(text):
                head.add(name, value)
            if config.client_on_success(text):
                on_success.append((name, value))
        if on_success:
            key = id(s)
            self._on_success[key] = on_success
            s.on_end(lambda: self._on_success.pop(key, None))

    async def _call(self, s: ActiveStream) -> CheckResponse | None:
        config = self.config
        runtime = s.hcm.router_context.clusters.get(config.cluster)
        host = runtime.lb.choose_host() if runtime is not None else None
        if host is None:
            return None
        head = s.stream.head
        lines = [head.method + b" " + config.path_prefix + head.target + b" HTTP/1.1\r\n",
                 b"content-length: 0\r\n"]
        allowed = config.allowed_request
        for name, value in head.fields:
            low = name.lower()
            if low in _NOT_FORWARDED and low != b"content-length":
                continue
            if low == b"content-length":
                continue
            if low in _DEFAULT_REQUEST_HEADERS or allowed(low.decode("latin-1")):
                lines.append(name + b": " + value + b"\r\n")
        if b"host" not in head.index and head.authority:
            lines.append(b"host: " + head.authority + b"\r\n")
        for name, value in config.headers_to_add:
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"connection: close\r\n\r\n")
        reader, writer = await asyncio.open_connection(host.address, host.port)
        try:
            writer.write(b"".join(lines))
            return await _read_response(reader)
        finally:
            writer.close()

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        extra = self._on_success.get(id(s))
        return [*fields, *extra] if extra else fields


async def _read_response(reader: asyncio.StreamReader) -> CheckResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError("bad status line from the authorization service")
    headers = []
    length = None
    chunked = False
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        headers.append((name, value))
    if length is not None:
        body = await reader.readexactly(length)
    elif chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.read()
    return CheckResponse(int(parts[1]), headers, body)
