"""Applying a route's ``*_headers_to_remove`` / ``*_headers_to_add`` to a request or response.

Envoy's header parser removes first, then adds, level by level in the order the route hands
them over (``Route.request_header_mutations``). Each added header follows its
``append_action``: append another value, add only when absent, overwrite (adding when absent),
or overwrite only when present. An empty value is skipped unless ``keep_empty_value``.

Request headers live in the codec's ``RequestHead`` (fields plus a lower-cased index);
response headers are a plain field list whose names the upstream codec kept as received, so
lookups there compare lower-cased names.
"""

from __future__ import annotations

from pistio.proxy.config.route_action import AppendAction, HeaderMutation
from pistio.proxy.http.headers import Fields, RequestHead

_APPEND = AppendAction.APPEND_IF_EXISTS_OR_ADD
_IF_ABSENT = AppendAction.ADD_IF_ABSENT
_OVERWRITE = AppendAction.OVERWRITE_IF_EXISTS_OR_ADD


def mutate_request(head: RequestHead, levels: tuple[HeaderMutation, ...]) -> None:
    for level in levels:
        for name in level.remove:
            head.remove(name.encode("latin-1"))
        for h in level.add:
            if not h.value and not h.keep_empty_value:
                continue
            name = h.name.encode("latin-1")
            value = h.value.encode("latin-1")
            present = name in head.index
            action = h.action
            if action is _APPEND:
                head.add(name, value)
            elif action is _IF_ABSENT:
                if not present:
                    head.add(name, value)
            elif action is _OVERWRITE or present:
                head.set(name, value)


def mutate_response(fields: Fields, levels: tuple[HeaderMutation, ...]) -> Fields:
    """The response fields after the mutations (a new list only when something changes)."""
    for level in levels:
        if level.remove:
            drop = {n.encode("latin-1") for n in level.remove}
            fields = [(n, v) for n, v in fields if n.lower() not in drop]
        for h in level.add:
            if not h.value and not h.keep_empty_value:
                continue
            name = h.name.encode("latin-1")
            value = h.value.encode("latin-1")
            action = h.action
            if action is _APPEND:
                fields = [*fields, (name, value)]
                continue
            present = any(n.lower() == name for n, _ in fields)
            if action is _IF_ABSENT:
                if not present:
                    fields = [*fields, (name, value)]
            elif action is _OVERWRITE or present:
                fields = [(n, v) for n, v in fields if n.lower() != name]
                fields.append((name, value))
    return fields


def set_response_header(fields: Fields, name: bytes, value: bytes) -> Fields:
    """``fields`` with ``name`` (lower-case) replaced by one value."""
    out = [(n, v) for n, v in fields if n.lower() != name]
    out.append((name, value))
    return out


def response_header(fields: Fields, name: bytes) -> bytes | None:
    for n, v in fields:
        if n.lower() == name:
            return v
    return None
