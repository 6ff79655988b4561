"""Envoy's attribute vocabulary ("Attributes" in Envoy's architecture docs) over a ``StreamInfo``.

A CEL expression names attributes by dot paths rooted at a few identifiers: ``request``,
``response``, ``connection``, ``source``, ``destination``, ``upstream``, ``xds``, ``metadata``
and ``filter_state``. Each root is a :class:`LazyAttributes` map: nothing is read from the
stream until the expression selects a field, so ``response.code >= 400`` reads one integer.

Types are Envoy's: ``response.code`` is an ``int``, ``response.flags`` an ``int`` bit-vector
(``pistio.proxy.access_log.response_flags``), ``connection.id`` and
``upstream.request_attempt_count`` are ``uint``, ``request.time`` a timestamp,
``request.duration`` a duration, ``request.headers`` a map of lower-case names to strings
(repeated headers comma-joined). An attribute the stream does not have (no response yet, no TLS,
no upstream) is *absent*: selecting it is a CEL error, as in Envoy; ``has()`` tests for it.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from celpy import celtypes

from pistio.proxy.access_log.formatter import format_address
from pistio.proxy.access_log.stream_info import StreamInfo

# A field: a getter of its plain Python value (``None``: absent) and the CEL type wrapping it.
# Plain values let a memoized program key on them without building CEL objects.
Getter = Callable[[StreamInfo], Any]
Field = tuple[Getter, Callable[[Any], Any]]

_UTC = datetime.UTC
# Pseudo-headers an HTTP/1 request record keeps as attributes rather than in its index.
_PSEUDO = {b":method": "method", b":path": "target", b":authority": "authority"}


def _header(headers: Any, name: bytes) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        attr = _PSEUDO.get(name)
        if attr is not None:
            value = getattr(headers, attr, None) or None
        if value is None:
            return None
    return value.decode("utf-8", "surrogateescape") if value.__class__ is bytes else str(value)


class _LookupMap(celtypes.MapType):
    """A CEL map whose entries are found by ``_lookup`` (``KeyError``: absent) rather than
    stored: selection, ``get``, ``in`` and ``contains`` all go through it."""

    def _lookup(self, key: Any) -> Any:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        return self._lookup(key)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self._lookup(key)
        except KeyError:
            if default is not None:
                return default
            raise

    def __contains__(self, key: object) -> bool:
        try:
            self._lookup(key)
        except (KeyError, TypeError):
            return False
        return True

    def contains(self, item: Any) -> celtypes.BoolType:
        return celtypes.BoolType(item in self)


class HeaderMap(_LookupMap):
    """A header record seen as CEL's ``map<string, string>``: single lookups go straight to the
    record; the full map is built only when the expression iterates or sizes it."""

    def __init__(self, headers: Any) -> None:
        super().__init__()
        self._headers = headers
        self._full = False

    def _lookup(self, key: Any) -> celtypes.StringType:
        if not isinstance(key, str):
            raise TypeError(f"no such overload: map<string, string>[{type(key).__name__}]")
        value = _header(self._headers, key.lower().encode("latin-1", "replace"))
        if value is None:
            raise KeyError(key)
        return celtypes.StringType(value)

    def plain(self, key: Any) -> str | None:
        """One header's value as a plain string (``None``: absent)."""
        if not isinstance(key, str):
            return None
        return _header(self._headers, key.lower().encode("latin-1", "replace"))

    def _materialize(self) -> None:
        if self._full:
            return
        self._full = True
        headers = self._headers
        items: dict[str, str] = {}
        index = getattr(headers, "index", None)
        if isinstance(index, Mapping):
            for name, value in index.items():
                items[name.decode("latin-1")] = value.decode("utf-8", "surrogateescape")
        for name, attr in _PSEUDO.items():
            value = getattr(headers, attr, None)
            if value and name.decode() not in items:
                items[name.decode()] = value.decode("utf-8", "surrogateescape")
        dict.update(self, {celtypes.StringType(k): celtypes.StringType(v)
                           for k, v in items.items()})

    def __iter__(self) -> Iterator[Any]:
        self._materialize()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._materialize()
        return dict.__len__(self)

    def keys(self) -> Any:
        self._materialize()
        return dict.keys(self)

    def items(self) -> Any:
        self._materialize()
        return dict.items(self)

    def values(self) -> Any:
        self._materialize()
        return dict.values(self)


class LazyAttributes(_LookupMap):
    """One attribute root (``request``, ``response``...): fields are computed on selection."""

    def __init__(self, info: StreamInfo, fields: Mapping[str, Field]) -> None:
        super().__init__()
        self._info = info
        self._getters = fields

    def _lookup(self, key: Any) -> Any:
        field = self._getters.get(key)
        if field is None:
            raise KeyError(key)
        value = field[0](self._info)
        if value is None:
            raise KeyError(key)
        return field[1](value)

    def _materialize(self) -> dict[Any, Any]:
        out = {}
        for name in self._getters:
            with contextlib.suppress(KeyError):
                out[celtypes.StringType(name)] = self._lookup(name)
        return out

    def __iter__(self) -> Iterator[Any]:
        return iter(self._materialize())

    def __len__(self) -> int:
        return len(self._materialize())

    def keys(self) -> Any:
        return self._materialize().keys()

    def items(self) -> Any:
        return self._materialize().items()

    def values(self) -> Any:
        return self._materialize().values()


# --- plain values -----------------------------------------------------------------------------


def _port(address: Any) -> int | None:
    if address is None:
        return None
    if address.__class__ is str:
        port = address.rpartition(":")[2]
        return int(port) if port.isdigit() else None
    return address[1]


def _request_header(name: bytes) -> Getter:
    def get(info: StreamInfo) -> str | None:
        return _header(info.request_headers, name)

    return get


def _path(info: StreamInfo) -> str | None:
    return _header(info.request_headers, b":path")


def _url_path(info: StreamInfo) -> str | None:
    path = _path(info)
    return None if path is None else path.partition("?")[0]


def _query(info: StreamInfo) -> str | None:
    path = _path(info)
    return None if path is None else path.partition("?")[2]


def _scheme(info: StreamInfo) -> str | None:
    if info.request_headers is None:
        return None
    scheme = _header(info.request_headers, b":scheme")
    if scheme is None:  # HTTP/1: the connection says it
        scheme = "https" if info.downstream.tls_version else "http"
    return scheme


def _request_time(info: StreamInfo) -> celtypes.TimestampType:
    seconds, nanos = divmod(info.start_time_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=_UTC)
    return celtypes.TimestampType(moment + datetime.timedelta(microseconds=nanos // 1000))


def _duration(begin: int | None, end: int | None) -> celtypes.DurationType | None:
    """Monotonic nanoseconds ``begin`` to ``end``; absent until both milestones happened."""
    if begin is None or end is None:
        return None
    seconds, nanos = divmod(end - begin, 1_000_000_000)
    return celtypes.DurationType(seconds=seconds, nanos=nanos)


def _request_size(info: StreamInfo) -> int:
    # Envoy: the content-length header when present, else the body bytes received.
    length = _header(info.request_headers, b"content-length")
    if length is not None and length.isdigit():
        return int(length)
    return info.bytes_received


def _headers_bytes(headers: Any) -> int:
    index = getattr(headers, "index", None)
    if isinstance(index, Mapping):
        return sum(len(k) + len(v) for k, v in index.items())
    return 0


def _headers_of(slot: str) -> Getter:
    def get(info: StreamInfo) -> HeaderMap | None:
        headers = getattr(info, slot)
        return None if headers is None else HeaderMap(headers)

    return get


def _mtls(info: StreamInfo) -> bool:
    ds = info.downstream
    return bool(ds.tls_version) and (
        ds.peer_certificate is not None or bool(ds.peer_uri_san) or bool(ds.peer_subject))


def _json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(k): _json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return celtypes.ListType([_json(v) for v in value])
    return celtypes.StringType(str(value))


_local_node: Any = None


def set_local_node(node: Mapping[str, Any] | None) -> None:
    """The proxy's own ``Node`` (id, cluster, metadata...) as JSON: ``xds.node``."""
    global _local_node
    _local_node = _json(dict(node)) if node is not None else None


def _or_none(value: Any) -> Any:
    return value or None


# --- the roots --------------------------------------------------------------------------------

_S = celtypes.StringType
_I = celtypes.IntType
_U = celtypes.UintType
_B = celtypes.BoolType


def _same(value: Any) -> Any:
    return value


_REQUEST: dict[str, Field] = {
    "path": (_path, _S),
    "url_path": (_url_path, _S),
    "host": (_request_header(b":authority"), _S),
    "scheme": (_scheme, _S),
    "method": (_request_header(b":method"), _S),
    "headers": (_headers_of("request_headers"), _same),
    "headers_bytes": (lambda info: None if info.request_headers is None
                      else _headers_bytes(info.request_headers), _I),
    "referer": (_request_header(b"referer"), _S),
    "useragent": (_request_header(b"user-agent"), _S),
    "time": (_request_time, _same),
    "id": (_request_header(b"x-request-id"), _S),
    "protocol": (lambda info: info.protocol or None, _S),
    "query": (_query, _S),
    "duration": (lambda info: _duration(info.start_monotonic_ns,
                                        info.last_downstream_tx_byte_sent), _same),
    "size": (_request_size, _I),
    "total_size": (lambda info: info.bytes_received + _headers_bytes(info.request_headers), _I),
}

_RESPONSE: dict[str, Field] = {
    # 0: no response was sent, so the attribute is absent.
    "code": (lambda info: info.response_code or None, _I),
    "code_details": (lambda info: info.response_code_details or None, _S),
    "flags": (lambda info: info.response_flags, _I),
    "grpc_status": (StreamInfo.grpc_status, _I),
    "headers": (_headers_of("response_headers"), _same),
    "headers_bytes": (lambda info: None if info.response_headers is None
                      else _headers_bytes(info.response_headers), _I),
    "trailers": (_headers_of("response_trailers"), _same),
    "size": (lambda info: info.bytes_sent, _I),
    "total_size": (lambda info: info.bytes_sent + _headers_bytes(info.response_headers), _I),
    "backend_latency": (lambda info: _duration(info.first_upstream_tx_byte_sent,
                                               info.last_upstream_rx_byte_received), _same),
}

_CONNECTION: dict[str, Field] = {
    "id": (lambda info: info.downstream.connection_id, _U),
    "mtls": (_mtls, _B),
    "requested_server_name": (lambda info: info.downstream.requested_server_name or None, _S),
    "tls_version": (lambda info: info.downstream.tls_version or None, _S),
    "subject_peer_certificate": (lambda info: info.downstream.peer_subject or None, _S),
    "uri_san_peer_certificate": (lambda info: info.downstream.peer_uri_san or None, _S),
    "uri_san_local_certificate": (lambda info: info.downstream.local_uri_san or None, _S),
    "termination_details": (lambda info: info.connection_termination_details or None, _S),
}

_SOURCE: dict[str, Field] = {
    "address": (lambda info: format_address(info.downstream.remote_address), _S),
    "port": (lambda info: _port(info.downstream.remote_address), _I),
}

_DESTINATION: dict[str, Field] = {
    "address": (lambda info: format_address(info.downstream.local_address), _S),
    "port": (lambda info: _port(info.downstream.local_address), _I),
}

_UPSTREAM: dict[str, Field] = {
    "address": (lambda info: format_address(info.upstream_host), _S),
    "port": (lambda info: _port(info.upstream_host), _I),
    "local_address": (lambda info: format_address(info.upstream_local_address), _S),
    "transport_failure_reason": (lambda info: info.upstream_transport_failure_reason or None,
                                 _S),
    "request_attempt_count": (lambda info: info.attempt_count, _U),
}

_XDS: dict[str, Field] = {
    "node": (lambda info: _local_node, _same),
    "cluster_name": (lambda info: info.upstream_cluster or None, _S),
    "route_name": (lambda info: info.route_name or None, _S),
}

_METADATA: dict[str, Field] = {
    "filter_metadata": (lambda info: _json(info.dynamic_metadata) if info.dynamic_metadata
                        else None, _same),
}


def _filter_state_fields(info: StreamInfo) -> dict[str, Field]:
    state = info.filter_state or {}
    return {k: (lambda _info, v=v: _json(v), _same) for k in state for v in (state[k],)}


FIELDS: dict[str, Mapping[str, Field]] = {
    "request": _REQUEST,
    "response": _RESPONSE,
    "connection": _CONNECTION,
    "source": _SOURCE,
    "destination": _DESTINATION,
    "upstream": _UPSTREAM,
    "xds": _XDS,
    "metadata": _METADATA,
}

ROOTS = frozenset({*FIELDS, "filter_state"})

# Attributes that differ on nearly every request: memoizing on them would only miss.
VOLATILE = frozenset({
    ("request", "time"), ("request", "duration"), ("request", "id"), ("connection", "id"),
    ("source", "port"), ("response", "backend_latency"), ("request", "total_size"),
    ("response", "total_size"),
})


def root(info: StreamInfo, name: str) -> LazyAttributes:
    """The CEL value of the attribute root ``name`` for a stream."""
    fields = FIELDS.get(name)
    if fields is None:  # filter_state: its keys are the stream's
        fields = _filter_state_fields(info)
    return LazyAttributes(info, fields)


def plain_attribute(info: StreamInfo, name: str, field: Any) -> Any:
    """``name.field`` as a plain Python value (no CEL objects for scalars), ``None`` if absent."""
    fields = FIELDS.get(name)
    if fields is None:
        value = (info.filter_state or {}).get(field)
        return value if isinstance(value, str | int) else _json(value)
    entry = fields.get(field)
    return None if entry is None else entry[0](info)


def _plain_header(slot: str) -> Callable[[StreamInfo, Any], str | None]:
    def get(info: StreamInfo, key: Any) -> str | None:
        if not isinstance(key, str):
            return None
        return _header(getattr(info, slot), key.lower().encode("latin-1", "replace"))

    return get


# ``root.field[key]`` read without building the map: one header of a request or response.
PLAIN_MAP_ENTRIES: dict[tuple[str, str], Callable[[StreamInfo, Any], str | None]] = {
    ("request", "headers"): _plain_header("request_headers"),
    ("response", "headers"): _plain_header("response_headers"),
    ("response", "trailers"): _plain_header("response_trailers"),
}
