"""Envoy's access log formatter: format strings with command operators, and JSON formats.

A format string mixes plain text with command operators ``%COMMAND(ARGUMENT):LENGTH%`` (Envoy
docs, "Access logging", format rules and command operators):

- ``COMMAND`` is upper-case letters, digits and ``_``; ``(ARGUMENT)`` is required by some
  commands (``REQ``), optional for others (``START_TIME``) and refused by the rest;
  ``:LENGTH`` truncates the value and is accepted only where Envoy accepts it;
- ``%%`` is a literal ``%``; a ``%`` that starts no valid command, an unknown command or a
  misplaced argument make the whole format invalid (the listener carrying it is NACKed);
- a value that is not available prints ``-`` (or nothing with ``omit_empty_values``).

A JSON format (``json_format``, a Struct) maps keys to format strings, nested structs, lists or
numbers, and prints one compact JSON object per line. A string made of exactly one operator
keeps the operator's type (``%RESPONSE_CODE%`` is the number 200, a missing value is ``null``);
anything else is rendered as text.

Formats are compiled once, when config arrives, into a tuple of literal strings and operator
callables; rendering a line is one call per operator and one ``str.join``. Operators read a
:class:`~pistio.proxy.access_log.stream_info.StreamInfo` and return ``str``, ``int``, a JSON-like
value or ``None`` (missing).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from pistio.proxy.access_log import response_flags
from pistio.proxy.access_log.stream_info import Address, StreamInfo
from pistio.proxy.access_log.time_format import TimeFormat, TimeFormatError

Operator = Callable[[StreamInfo], Any]

UNSPECIFIED = "-"

# Envoy's command grammar: %COMMAND(SUBCOMMAND):LENGTH% where SUBCOMMAND cannot contain ')'.
_COMMAND = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%")

# Command syntax: whether an argument is refused, optional or required; whether :LENGTH is.
_COMMAND_ONLY, _PARAMS_OPTIONAL, _PARAMS_REQUIRED = 0, 1, 2


class FormatError(ValueError):
    """An access log format Envoy would refuse; the message follows Envoy's wording."""


# --- value helpers ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A typed operator value as it appears in a text line."""
    if value.__class__ is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _decode(value: bytes) -> str:
    # Header bytes are logged as received; surrogateescape keeps non-UTF-8 bytes round-trippable.
    return value.decode("utf-8", "surrogateescape")


def format_address(address: Address | None) -> str | None:
    if address is None:
        return None
    if address.__class__ is str:
        return address  # type: ignore[return-value]
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address_without_port(address: Address | None) -> str | None:
    if address is None:
        return None
    if address.__class__ is str:
        host = address.rpartition(":")[0]  # type: ignore[union-attr]
        return host[1:-1] if host.startswith("[") else host
    return address[0]  # type: ignore[return-value]


def _address_port(address: Address | None) -> int | None:
    if address is None:
        return None
    if address.__class__ is str:
        port = address.rpartition(":")[2]  # type: ignore[union-attr]
        return int(port) if port.isdigit() else None
    return address[1]  # type: ignore[return-value]


def _truncate(max_length: int | None) -> Callable[[Any], Any]:
    if max_length is None:
        return lambda v: v
    return lambda v: v[:max_length] if v.__class__ is str else v


class ProxiedResponseHeaders:
    """The headers a proxied response went downstream with, as ``%RESP(...)%`` and CEL's
    ``response.headers`` read them: the upstream's fields after the encoder filters, plus the
    ``x-envoy-upstream-service-time`` the codec adds when it writes them. Built once per
    proxied response; looked up only when a log line or an expression asks."""

    __slots__ = ("fields", "service_time_ms")

    def __init__(self, fields: Sequence[tuple[bytes, bytes]], service_time_ms: int) -> None:
        self.fields = fields
        self.service_time_ms = service_time_ms

    def get(self, lower_name: bytes) -> bytes | None:
        if lower_name == b"x-envoy-upstream-service-time":
            return b"%d" % self.service_time_ms
        found = None
        for name, value in self.fields:
            if name.lower() == lower_name:
                found = value if found is None else found + b"," + value
        return found

    @property
    def index(self) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for name, _ in self.fields:
            key = name.lower()
            if key not in out:
                out[key] = self.get(key)  # type: ignore[assignment]
        out[b"x-envoy-upstream-service-time"] = b"%d" % self.service_time_ms
        return out


# --- operators --------------------------------------------------------------------------------

# Pseudo-headers that an HTTP/1 request record keeps as attributes rather than in its index.
_PSEUDO_ATTRIBUTES = {b":method": "method", b":path": "target", b":authority": "authority"}


def _header_lookup(name: bytes) -> Callable[[Any], bytes | None]:
    attr = _PSEUDO_ATTRIBUTES.get(name)
    if attr is None:
        return lambda headers: headers.get(name)

    def lookup(headers: Any) -> bytes | None:
        value = headers.get(name)
        if value is None:
            value = getattr(headers, attr, None) or None
        return value

    return lookup


def _parse_headers(command: str, argument: str) -> tuple[bytes, bytes | None]:
    names = argument.split("?")
    if len(names) > 2:
        raise FormatError(f"More than 1 alternative header specified in token: {argument}")
    if any("\n" in n or "\r" in n or "\0" in n for n in names):
        raise FormatError("Invalid header configuration. Format string contains newline.")
    main = names[0].lower().encode()
    alternative = names[1].lower().encode() if len(names) == 2 and names[1] else None
    return main, alternative


def _header_operator(
    slot: str, argument: str, max_length: int | None, strip_query: bool = False
) -> Operator:
    main, alternative = _parse_headers(slot, argument)
    get_headers = attrgetter(slot)
    get_main = _header_lookup(main)
    get_alternative = _header_lookup(alternative) if alternative is not None else None

    def op(info: StreamInfo) -> str | None:
        headers = get_headers(info)
        if headers is None:
            return None
        value = get_main(headers)
        if value is None and get_alternative is not None:
            value = get_alternative(headers)
        if value is None:
            return None
        text = _decode(value) if value.__class__ is bytes else str(value)
        if strip_query:
            text = text.partition("?")[0]
        return text if max_length is None else text[:max_length]

    return op


def _duration(end_slot: str, begin_slot: str = "start_monotonic_ns") -> Operator:
    get_end = attrgetter(end_slot)
    get_begin = attrgetter(begin_slot)

    def op(info: StreamInfo) -> int | None:
        end = get_end(info)
        if end is None:
            return None
        begin = get_begin(info)
        if begin is None:
            return None
        return (end - begin) // 1_000_000

    return op


def _optional(getter: Callable[[StreamInfo], Any]) -> Operator:
    """A string fact where Envoy treats the empty string as not available."""

    def op(info: StreamInfo) -> Any:
        return getter(info) or None

    return op


def _address_op(getter: Callable[[StreamInfo], Any], shape: str) -> Operator:
    render = {"full": format_address, "host": _address_without_port, "port": _address_port}[shape]
    return lambda info: render(getter(info))


def _upstream_cluster(info: StreamInfo) -> str | None:
    return info.upstream_cluster_observability_name or info.upstream_cluster or None


_GRPC_CAMEL = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)
_GRPC_SNAKE = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def _grpc_status(style: str) -> Operator:
    if style not in ("", "CAMEL_STRING", "SNAKE_STRING", "NUMBER"):
        raise FormatError("GrpcStatusFormatter only supports CAMEL_STRING, SNAKE_STRING or NUMBER.")

    def op(info: StreamInfo) -> Any:
        code = info.grpc_status()
        if code is None:
            return None
        if style == "NUMBER":
            return code
        names = _GRPC_SNAKE if style == "SNAKE_STRING" else _GRPC_CAMEL
        return names[code] if code < len(names) else str(code)

    return op


def _metadata_value(argument: str, max_length: int | None) -> Operator:
    namespace, _, rest = argument.partition(":")
    if not namespace:
        raise FormatError("DYNAMIC_METADATA requires parameters")
    path = tuple(rest.split(":")) if rest else ()

    def op(info: StreamInfo) -> Any:
        metadata = info.dynamic_metadata
        if not metadata:
            return None
        value: Any = metadata.get(namespace)
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        if value is None:
            return None
        if max_length is not None:
            return _text(value)[:max_length]
        return value

    return op


def _filter_state(argument: str, max_length: int | None) -> Operator:
    key, _, serialization = argument.partition(":")
    if not key:
        raise FormatError("Invalid filter state configuration, key cannot be empty.")
    if serialization not in ("", "PLAIN", "TYPED"):
        raise FormatError("Invalid filter state serialize type, only support PLAIN/TYPED.")

    def op(info: StreamInfo) -> str | None:
        state = info.filter_state
        value = state.get(key) if state else None
        if value is None:
            return None
        return value if max_length is None else value[:max_length]

    return op


def _environment(argument: str, max_length: int | None) -> Operator:
    # Read once when the format is compiled, as Envoy does; a missing variable prints "-".
    value = os.environ.get(argument)
    constant = UNSPECIFIED if value is None else value[:max_length] if max_length else value
    return lambda info: constant


def _start_time(argument: str, local: bool) -> Operator:
    try:
        fmt = TimeFormat(argument, local=local)
    except TimeFormatError as exc:
        raise FormatError(str(exc)) from exc
    render = fmt.render
    return lambda info: render(info.start_time_ns)


_HOSTNAME = socket.gethostname() or UNSPECIFIED

_ds = attrgetter("downstream")

# name -> (syntax, length allowed, factory(argument, max_length) -> operator)
_Factory = Callable[[str, "int | None"], Operator]


def _simple(op: Operator) -> tuple[int, bool, _Factory]:
    return (_COMMAND_ONLY, False, lambda argument, max_length: op)


_OPERATORS: dict[str, tuple[int, bool, _Factory]] = {
    "REQ": (_PARAMS_REQUIRED, True, lambda a, n: _header_operator("request_headers", a, n)),
    "RESP": (_PARAMS_REQUIRED, True, lambda a, n: _header_operator("response_headers", a, n)),
    "TRAILER": (_PARAMS_REQUIRED, True, lambda a, n: _header_operator("response_trailers", a, n)),
    "REQ_WITHOUT_QUERY": (
        _PARAMS_REQUIRED,
        True,
        lambda a, n: _header_operator("request_headers", a, n, strip_query=True),
    ),
    "START_TIME": (_PARAMS_OPTIONAL, False, lambda a, n: _start_time(a, local=False)),
    "START_TIME_LOCAL": (_PARAMS_OPTIONAL, False, lambda a, n: _start_time(a, local=True)),
    "DYNAMIC_METADATA": (_PARAMS_REQUIRED, True, _metadata_value),
    "FILTER_STATE": (_PARAMS_REQUIRED, True, _filter_state),
    "ENVIRONMENT": (_PARAMS_REQUIRED, True, _environment),
    "GRPC_STATUS": (_PARAMS_OPTIONAL, False, lambda a, n: _grpc_status(a)),
    "GRPC_STATUS_NUMBER": _simple(_grpc_status("NUMBER")),
    "PROTOCOL": _simple(_optional(attrgetter("protocol"))),
    "UPSTREAM_PROTOCOL": _simple(_optional(attrgetter("upstream_protocol"))),
    "RESPONSE_CODE": _simple(attrgetter("response_code")),
    "RESPONSE_CODE_DETAILS": _simple(_optional(attrgetter("response_code_details"))),
    "CONNECTION_TERMINATION_DETAILS": _simple(
        _optional(attrgetter("connection_termination_details"))
    ),
    "RESPONSE_FLAGS": _simple(lambda info: response_flags.to_short_string(info.response_flags)),
    "RESPONSE_FLAGS_LONG": _simple(lambda info: response_flags.to_long_string(info.response_flags)),
    "BYTES_RECEIVED": _simple(attrgetter("bytes_received")),
    "BYTES_SENT": _simple(attrgetter("bytes_sent")),
    "DURATION": _simple(_duration("last_downstream_tx_byte_sent")),
    "REQUEST_DURATION": _simple(_duration("last_downstream_rx_byte_received")),
    "REQUEST_TX_DURATION": _simple(_duration("last_upstream_tx_byte_sent")),
    "RESPONSE_DURATION": _simple(_duration("first_upstream_rx_byte_received")),
    "RESPONSE_TX_DURATION": _simple(
        _duration("last_downstream_tx_byte_sent", "first_upstream_rx_byte_received")
    ),
    "UPSTREAM_HOST": _simple(_address_op(attrgetter("upstream_host"), "full")),
    "UPSTREAM_REMOTE_ADDRESS": _simple(_address_op(attrgetter("upstream_host"), "full")),
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        _address_op(attrgetter("upstream_host"), "host")
    ),
    "UPSTREAM_REMOTE_PORT": _simple(_address_op(attrgetter("upstream_host"), "port")),
    "UPSTREAM_LOCAL_ADDRESS": _simple(_address_op(attrgetter("upstream_local_address"), "full")),
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": _simple(
        _address_op(attrgetter("upstream_local_address"), "host")
    ),
    "UPSTREAM_LOCAL_PORT": _simple(_address_op(attrgetter("upstream_local_address"), "port")),
    "UPSTREAM_CLUSTER": _simple(_upstream_cluster),
    "UPSTREAM_CLUSTER_RAW": _simple(_optional(attrgetter("upstream_cluster"))),
    "UPSTREAM_TRANSPORT_FAILURE_REASON": _simple(
        _optional(attrgetter("upstream_transport_failure_reason"))
    ),
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": _simple(attrgetter("attempt_count")),
    "UPSTREAM_CONNECTION_ID": _simple(attrgetter("upstream_connection_id")),
    "DOWNSTREAM_LOCAL_ADDRESS": _simple(
        _address_op(attrgetter("downstream.local_address"), "full")
    ),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": _simple(
        _address_op(attrgetter("downstream.local_address"), "host")
    ),
    "DOWNSTREAM_LOCAL_PORT": _simple(_address_op(attrgetter("downstream.local_address"), "port")),
    "DOWNSTREAM_REMOTE_ADDRESS": _simple(
        _address_op(attrgetter("downstream.remote_address"), "full")
    ),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        _address_op(attrgetter("downstream.remote_address"), "host")
    ),
    "DOWNSTREAM_REMOTE_PORT": _simple(_address_op(attrgetter("downstream.remote_address"), "port")),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": _simple(
        _address_op(attrgetter("downstream.direct_remote_address"), "full")
    ),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": _simple(
        _address_op(attrgetter("downstream.direct_remote_address"), "host")
    ),
    "DOWNSTREAM_DIRECT_REMOTE_PORT": _simple(
        _address_op(attrgetter("downstream.direct_remote_address"), "port")
    ),
    "REQUESTED_SERVER_NAME": _simple(_optional(attrgetter("downstream.requested_server_name"))),
    "DOWNSTREAM_PEER_URI_SAN": _simple(_optional(attrgetter("downstream.peer_uri_san"))),
    "DOWNSTREAM_LOCAL_URI_SAN": _simple(_optional(attrgetter("downstream.local_uri_san"))),
    "DOWNSTREAM_PEER_SUBJECT": _simple(_optional(attrgetter("downstream.peer_subject"))),
    "DOWNSTREAM_TLS_VERSION": _simple(_optional(attrgetter("downstream.tls_version"))),
    "CONNECTION_ID": _simple(lambda info: info.downstream.connection_id),
    "ROUTE_NAME": _simple(_optional(attrgetter("route_name"))),
    "VIRTUAL_CLUSTER_NAME": _simple(_optional(attrgetter("virtual_cluster_name"))),
    "LOCAL_REPLY_BODY": _simple(lambda info: info.local_reply_body or ""),
    "TRACE_ID": _simple(_optional(attrgetter("trace_id"))),
    "HOSTNAME": _simple(lambda info: _HOSTNAME),
    "UNIQUE_ID": _simple(lambda info: str(uuid.uuid4())),
}

SUPPORTED_COMMANDS = frozenset(_OPERATORS)


def _build_operator(command: str, argument: str | None, length: str | None) -> Operator:
    entry = _OPERATORS.get(command)
    if entry is None:
        raise FormatError(f"Not supported field in StreamInfo: {command}")
    syntax, length_allowed, factory = entry
    if syntax == _COMMAND_ONLY and (argument or length is not None):
        raise FormatError(f"{command} does not take any parameters or length")
    if syntax == _PARAMS_REQUIRED and not argument:
        raise FormatError(f"{command} requires parameters")
    if length is not None and not length_allowed:
        raise FormatError(f"{command} does not allow length to be specified.")
    return factory(argument or "", int(length) if length is not None else None)


def parse(fmt: str) -> list[str | Operator]:
    """Split a format string into literal text and operators, as Envoy's parser does."""
    parts: list[str | Operator] = []
    literal: list[str] = []
    pos = 0
    size = len(fmt)
    while pos < size:
        pct = fmt.find("%", pos)
        if pct < 0:
            literal.append(fmt[pos:])
            break
        literal.append(fmt[pos:pct])
        if fmt.startswith("%%", pct):
            literal.append("%")
            pos = pct + 2
            continue
        m = _COMMAND.match(fmt, pct)
        if m is None:
            raise FormatError(
                f"Incorrect configuration: {fmt}. Couldn't find valid command at position {pct}"
            )
        if literal:
            text = "".join(literal)
            if text:
                parts.append(text)
            literal = []
        parts.append(_build_operator(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    text = "".join(literal)
    if text:
        parts.append(text)
    return parts


class TextFormatter:
    """A compiled format string (``text_format_source`` / ``format``)."""

    __slots__ = ("_literals", "_operators", "_empty", "format_string")

    def __init__(self, fmt: str, omit_empty_values: bool = False) -> None:
        self.format_string = fmt
        self._empty = "" if omit_empty_values else UNSPECIFIED
        literals: list[str] = [""]
        operators: list[Operator] = []
        for part in parse(fmt):
            if isinstance(part, str):
                literals[-1] += part
            else:
                operators.append(part)
                literals.append("")
        # literals[i] precedes operators[i]; the last literal closes the line.
        self._literals = tuple(literals)
        self._operators = tuple(operators)

    def format(self, info: StreamInfo) -> str:
        literals = self._literals
        out = [literals[0]]
        append = out.append
        empty = self._empty
        i = 1
        for op in self._operators:
            value = op(info)
            if value is None:
                append(empty)
            elif value.__class__ is str:
                append(value)
            else:
                append(_text(value))
            append(literals[i])
            i += 1
        return "".join(out)


# --- JSON -------------------------------------------------------------------------------------

_Node = Callable[[StreamInfo], Any]
_OMIT = object()  # a value dropped from its map or list under omit_empty_values


def _string_node(fmt: str, omit_empty_values: bool) -> _Node:
    parts = parse(fmt)
    if not parts:
        return lambda info: ""
    if len(parts) == 1:
        only = parts[0]
        if isinstance(only, str):
            return lambda info: only
        # A lone operator keeps its type; missing is null (dropped when omitting empties).
        if omit_empty_values:
            return lambda info: _OMIT if (v := only(info)) is None else v
        return only
    text = TextFormatter.__new__(TextFormatter)
    text.format_string = fmt
    text._empty = "" if omit_empty_values else UNSPECIFIED
    literals: list[str] = [""]
    operators: list[Operator] = []
    for part in parts:
        if isinstance(part, str):
            literals[-1] += part
        else:
            operators.append(part)
            literals.append("")
    text._literals = tuple(literals)
    text._operators = tuple(operators)
    return text.format


def _compile_node(value: Any, omit_empty_values: bool) -> _Node:
    if isinstance(value, str):
        return _string_node(value, omit_empty_values)
    if isinstance(value, Mapping):
        entries = tuple((str(k), _compile_node(v, omit_empty_values)) for k, v in value.items())

        def render_map(info: StreamInfo) -> Any:
            out = {}
            for key, node in entries:
                v = node(info)
                if v is not _OMIT:
                    out[key] = v
            return out

        return render_map
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        items = tuple(_compile_node(v, omit_empty_values) for v in value)
        return lambda info: [v for node in items if (v := node(info)) is not _OMIT]
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
        return lambda info: number
    raise FormatError(
        "Only string values, nested structs, list values and number values are supported in "
        "structured access log format."
    )


class JsonFormatter:
    """A compiled ``json_format``: one compact JSON object per line, values typed."""

    __slots__ = ("_root", "_sort_keys")

    def __init__(
        self,
        json_format: Mapping[str, Any],
        omit_empty_values: bool = False,
        sort_properties: bool = False,
    ) -> None:
        if not isinstance(json_format, Mapping):
            raise FormatError("json_format must be a struct")
        self._root = _compile_node(json_format, omit_empty_values)
        self._sort_keys = sort_properties

    def format(self, info: StreamInfo) -> str:
        return (
            json.dumps(
                self._root(info),
                ensure_ascii=False,
                separators=(",", ":"),
                sort_keys=self._sort_keys,
            )
            + "\n"
        )


AccessLogFormatter = TextFormatter | JsonFormatter

# Envoy's format when an access log configures none.
ENVOY_DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

# Formatter extensions whose operators are built in here (Istio adds them to its log formats).
_BUILTIN_FORMATTER_EXTENSIONS = frozenset(
    {
        "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery",
    }
)


def from_substitution_format(config: Any | None) -> AccessLogFormatter:
    """Compile an ``envoy.config.core.v3.SubstitutionFormatString`` (an access logger's
    ``log_format``); ``None`` gives Envoy's default format. Raises :class:`FormatError` for a
    format Envoy would refuse or that uses a feature not supported here."""
    if config is None:
        return TextFormatter(ENVOY_DEFAULT_FORMAT)
    from google.protobuf import json_format

    for ext in config.formatters:
        if ext.typed_config.type_url not in _BUILTIN_FORMATTER_EXTENSIONS:
            raise FormatError(
                f"log_format.formatters: formatter extension {ext.name!r} "
                f"({ext.typed_config.type_url}) is not supported"
            )
    omit = config.omit_empty_values
    which = config.WhichOneof("format")
    if which == "json_format":
        return JsonFormatter(
            json_format.MessageToDict(config.json_format),
            omit_empty_values=omit,
            sort_properties=config.json_format_options.sort_properties,
        )
    if which == "text_format":
        return TextFormatter(config.text_format, omit)
    if which == "text_format_source":
        source = config.text_format_source
        kind = source.WhichOneof("specifier")
        if kind == "inline_string":
            return TextFormatter(source.inline_string, omit)
        if kind == "inline_bytes":
            return TextFormatter(source.inline_bytes.decode(), omit)
        raise FormatError(f"log_format.text_format_source.{kind} is not supported")
    return TextFormatter(ENVOY_DEFAULT_FORMAT, omit)
