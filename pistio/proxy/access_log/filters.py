"""Envoy's ``AccessLogFilter``: which finished streams an access logger writes.

Compiled once, when the listener is compiled, into a tree of small predicate objects; a stream
reaching an access logger asks ``matches(info)`` once. Supported filters (Envoy semantics):

- ``status_code_filter`` / ``duration_filter``: compare the response code (0 when none was
  sent) / the total duration in milliseconds with ``comparison.value.default_value``
  (``EQ``, ``GE``, ``LE``, ``NE``; pistio has no runtime layer, so the default always applies);
- ``not_health_check_filter``: true unless the stream was answered as a health check (pistio
  runs no ``envoy.filters.http.health_check``, so always true);
- ``response_flag_filter``: any of the named flags is set (any flag when the list is empty);
- ``grpc_status_filter``: the gRPC status (``grpc-status`` of trailers or headers, else mapped
  from the HTTP status as Envoy does) is in ``statuses`` (negated by ``exclude``);
- ``header_filter``: a ``HeaderMatcher`` on the request headers;
- ``runtime_filter``: ``percent_sampled`` of the streams, chosen by the ``x-request-id`` (stable
  across the proxies of one request) unless ``use_independent_randomness``;
- ``and_filter`` / ``or_filter``: their sub-filters, short-circuited;
- ``extension_filter`` ``envoy.access_loggers.extension_filters.cel``
  (``envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter``): a CEL expression over
  Envoy's attributes, logged only when it evaluates to ``true`` (errors count as false).

Anything else (``traceable_filter``, ``metadata_filter``, ``log_type_filter``, other
extensions) is refused with the field's path, so the listener is NACKed.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from envoy.config.accesslog.v3 import accesslog_pb2 as al
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.access_log.formatter import FormatError, TextFormatter, from_substitution_format
from pistio.proxy.access_log.stream_info import StreamInfo
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import compile_fraction, compile_header_matcher
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.http.http2_grpc import grpc_status_for_http

if TYPE_CHECKING:
    from pistio.proxy.cel import CelProgram

CEL_FILTER_NAME = "envoy.access_loggers.extension_filters.cel"
CEL_FILTER_TYPE = "type.googleapis.com/" + cel_pb2.ExpressionFilter.DESCRIPTOR.full_name

_ALLOWED = {
    "envoy.config.accesslog.v3.AccessLogFilter": frozenset({
        "status_code_filter", "duration_filter", "not_health_check_filter", "runtime_filter",
        "and_filter", "or_filter", "header_filter", "response_flag_filter",
        "grpc_status_filter", "extension_filter",
    }),
    "envoy.config.accesslog.v3.StatusCodeFilter": frozenset({"comparison"}),
    "envoy.config.accesslog.v3.DurationFilter": frozenset({"comparison"}),
    "envoy.config.accesslog.v3.ComparisonFilter": frozenset({"op", "value"}),
    "envoy.config.core.v3.RuntimeUInt32": frozenset({"default_value", "runtime_key"}),
    "envoy.config.accesslog.v3.RuntimeFilter": frozenset(
        {"runtime_key", "percent_sampled", "use_independent_randomness"}),
    "envoy.config.accesslog.v3.ResponseFlagFilter": frozenset({"flags"}),
    "envoy.config.accesslog.v3.GrpcStatusFilter": frozenset({"statuses", "exclude"}),
    "envoy.config.accesslog.v3.ExtensionFilter": frozenset({"name", "typed_config"}),
    "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter": frozenset({"expression"}),
}

# ComparisonFilter.Op
_COMPARE: dict[int, Callable[[int, int], bool]] = {
    al.ComparisonFilter.EQ: lambda a, b: a == b,
    al.ComparisonFilter.GE: lambda a, b: a >= b,
    al.ComparisonFilter.LE: lambda a, b: a <= b,
    al.ComparisonFilter.NE: lambda a, b: a != b,
}


class LogFilter:
    """A compiled ``AccessLogFilter``: ``matches(info)`` says whether the line is written."""

    __slots__ = ()

    def matches(self, info: StreamInfo) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class _Comparison(LogFilter):
    __slots__ = ("_value", "_compare", "_read")

    def __init__(self, read: Callable[[StreamInfo], int], op: int, value: int) -> None:
        self._read = read
        self._compare = _COMPARE[op]
        self._value = value

    def matches(self, info: StreamInfo) -> bool:
        return self._compare(self._read(info), self._value)


def _response_code(info: StreamInfo) -> int:
    return info.response_code


def _duration_ms(info: StreamInfo) -> int:
    end = info.last_downstream_tx_byte_sent
    if end is None:
        return 0
    return (end - info.start_monotonic_ns) // 1_000_000


class _Always(LogFilter):
    __slots__ = ()

    def matches(self, info: StreamInfo) -> bool:
        return True


class _All(LogFilter):
    __slots__ = ("_filters",)

    def __init__(self, filters: tuple[LogFilter, ...]) -> None:
        self._filters = filters

    def matches(self, info: StreamInfo) -> bool:
        return all(f.matches(info) for f in self._filters)


class _Any(LogFilter):
    __slots__ = ("_filters",)

    def __init__(self, filters: tuple[LogFilter, ...]) -> None:
        self._filters = filters

    def matches(self, info: StreamInfo) -> bool:
        return any(f.matches(info) for f in self._filters)


class _ResponseFlags(LogFilter):
    __slots__ = ("_mask",)

    def __init__(self, mask: int) -> None:
        self._mask = mask

    def matches(self, info: StreamInfo) -> bool:
        return bool(info.response_flags & self._mask)


def grpc_status_of(info: StreamInfo) -> int | None:
    """The response's grpc-status, else Envoy's httpToGrpcStatus of its HTTP status."""
    status = info.grpc_status()
    if status is not None or not info.response_code:
        return status
    return grpc_status_for_http(info.response_code)


class _GrpcStatus(LogFilter):
    __slots__ = ("_statuses", "_exclude")

    def __init__(self, statuses: frozenset[int], exclude: bool) -> None:
        self._statuses = statuses
        self._exclude = exclude

    def matches(self, info: StreamInfo) -> bool:
        status = grpc_status_of(info)
        if status is None:
            return False
        return (status in self._statuses) != self._exclude


class _Header(LogFilter):
    __slots__ = ("_name", "_matches_value")

    def __init__(self, name: bytes, matches_value: Callable[[str | None], bool]) -> None:
        self._name = name
        self._matches_value = matches_value

    def matches(self, info: StreamInfo) -> bool:
        headers = info.request_headers
        raw = None
        if headers is not None:
            raw = headers.get(self._name)
            if raw is None and self._name == b":authority":
                raw = getattr(headers, "authority", None) or None
        value = None if raw is None else raw.decode("latin-1") if raw.__class__ is bytes \
            else str(raw)
        return self._matches_value(value)


class _Sampled(LogFilter):
    __slots__ = ("_numerator", "_denominator", "_independent")

    def __init__(self, numerator: int, denominator: int, independent: bool) -> None:
        self._numerator = numerator
        self._denominator = denominator
        self._independent = independent

    def matches(self, info: StreamInfo) -> bool:
        request_id = None
        if not self._independent and info.request_headers is not None:
            request_id = info.request_headers.get(b"x-request-id")
        value = zlib.crc32(request_id) if request_id else random.getrandbits(32)
        return value % self._denominator < self._numerator


class CelFilter(LogFilter):
    """``envoy.access_loggers.extension_filters.cel``: log when the expression is ``true``."""

    __slots__ = ("program",)

    def __init__(self, program: CelProgram) -> None:
        self.program = program

    def matches(self, info: StreamInfo) -> bool:
        return self.program.evaluate(info) is True


# --- compilation ------------------------------------------------------------------------------


def compile_access_log_filter(msg: al.AccessLogFilter, path: str) -> LogFilter:
    """Compile ``msg`` (found at ``path``); raise ``ConfigError`` naming every problem."""
    problems: list[str] = []
    out = _compile(msg, path, problems)
    if problems:
        raise ConfigError(problems)
    return out


def _compile(msg: al.AccessLogFilter, path: str, problems: list[str]) -> LogFilter:
    which = msg.WhichOneof("filter_specifier")
    if which is None:
        problems.append(f"{path}: an access log filter needs one filter_specifier")
        return _Always()
    here = f"{path}.{which}"
    if which not in _ALLOWED["envoy.config.accesslog.v3.AccessLogFilter"]:
        problems.append(f"{here}: access log filter not supported by pistio")
        return _Always()
    sub: Any = getattr(msg, which)
    problems.extend(unsupported_fields(sub, _ALLOWED, here))
    if which in ("status_code_filter", "duration_filter"):
        comparison = sub.comparison
        if not sub.HasField("comparison"):
            problems.append(f"{here}.comparison: required")
        read = _response_code if which == "status_code_filter" else _duration_ms
        return _Comparison(read, comparison.op, comparison.value.default_value)
    if which == "not_health_check_filter":
        return _Always()
    if which == "runtime_filter":
        fraction = compile_fraction(sub.percent_sampled) if sub.HasField("percent_sampled") \
            else None
        numerator, denominator = (fraction.numerator, fraction.denominator) if fraction \
            else (0, 100)
        return _Sampled(numerator, denominator, sub.use_independent_randomness)
    if which in ("and_filter", "or_filter"):
        if len(sub.filters) < 2:
            problems.append(f"{here}.filters: needs at least 2 filters")
        children = tuple(_compile(f, f"{here}.filters[{i}]", problems)
                         for i, f in enumerate(sub.filters))
        return _All(children) if which == "and_filter" else _Any(children)
    if which == "header_filter":
        try:
            matcher = compile_header_matcher(sub.header, f"{here}.header")
        except ConfigError as err:
            problems.extend(err.problems)
            return _Always()
        return _Header(matcher.name.encode("latin-1"), matcher.matches_value)
    if which == "response_flag_filter":
        mask = 0
        for i, name in enumerate(sub.flags):
            try:
                mask |= rf.bit_for_name(name)
            except KeyError:
                problems.append(f"{here}.flags[{i}]: unknown response flag {name!r}")
        return _ResponseFlags(mask or ~0)
    if which == "grpc_status_filter":
        return _GrpcStatus(frozenset(int(s) for s in sub.statuses), sub.exclude)
    return _extension(sub, here, problems)


def _extension(ext: al.ExtensionFilter, path: str, problems: list[str]) -> LogFilter:
    url = ext.typed_config.type_url
    if url != CEL_FILTER_TYPE:
        problems.append(f"{path}: access log extension filter {ext.name!r} "
                        f"({url or 'no typed_config'}) is not supported by pistio")
        return _Always()
    config = cel_pb2.ExpressionFilter()
    ext.typed_config.Unpack(config)
    problems.extend(unsupported_fields(config, _ALLOWED, f"{path}.typed_config"))
    # cel-python (and its grammar) is loaded by the first listener that uses CEL, not at start.
    from pistio.proxy.cel import CelError, compile_expression

    try:
        program = compile_expression(config.expression)
    except CelError as err:
        problems.append(f"{path}.typed_config.expression: {err}")
        return _Always()
    return CelFilter(program)


# --- the logger itself ------------------------------------------------------------------------

_FILE_LOG_TYPE = "type.googleapis.com/" + file_pb2.FileAccessLog.DESCRIPTOR.full_name
_STREAM_LOG_TYPES = {
    "type.googleapis.com/" + stream_pb2.StdoutAccessLog.DESCRIPTOR.full_name:
        stream_pb2.StdoutAccessLog,
    "type.googleapis.com/" + stream_pb2.StderrAccessLog.DESCRIPTOR.full_name:
        stream_pb2.StderrAccessLog,
}
_LOGGER_ALLOWED = {
    "envoy.extensions.access_loggers.file.v3.FileAccessLog": frozenset(
        {"path", "format", "log_format"}),
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": frozenset({"log_format"}),
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog": frozenset({"log_format"}),
}


def check_access_logger(entry: al.AccessLog, path: str) -> list[str]:
    """Why an ``AccessLog`` entry's logger cannot run (type, fields, format), if it cannot.
    pistio writes ``envoy.access_loggers.file`` / ``stdout`` / ``stderr`` loggers."""
    typed = entry.typed_config
    url = typed.type_url if entry.HasField("typed_config") else ""
    here = f"{path}.typed_config"
    if url == _FILE_LOG_TYPE:
        msg: Any = file_pb2.FileAccessLog()
    elif url in _STREAM_LOG_TYPES:
        msg = _STREAM_LOG_TYPES[url]()
    else:
        return [f"{path}: access logger {entry.name!r} ({url or 'no typed_config'}) is not "
                "supported by pistio"]
    typed.Unpack(msg)
    problems = unsupported_fields(msg, _LOGGER_ALLOWED, here)
    if url == _FILE_LOG_TYPE and not msg.path:
        problems.append(f"{here}.path: required")
    try:
        if url == _FILE_LOG_TYPE and msg.WhichOneof("access_log_format") == "format":
            TextFormatter(msg.format)
        elif msg.HasField("log_format"):
            from_substitution_format(msg.log_format)
    except FormatError as err:
        problems.append(f"{here}.log_format: {err}")
    return problems
